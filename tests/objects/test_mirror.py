"""The mirror: a replica's state directory files in the shared storage, and fetched by another replica whose
state directory is elsewhere. Run on both storages (conftest.py); two folders stand for two replicas."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from daemon.objects import ObjectStorage
from daemon.objects.mirror import NO_MIRROR, STALE_SECONDS, Mirror


def replicas(tmp_path: Path, storage: ObjectStorage) -> tuple[Mirror, Mirror]:
    return Mirror(storage, tmp_path / "alpha" / "state"), Mirror(storage, tmp_path / "beta" / "state")


def snapshot_folder(root: Path, files: dict[str, bytes]) -> Path:
    folder = root / "snapshots" / "north" / "u-1"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_a_snapshot_pushed_by_one_replica_is_fetched_whole_by_another(tmp_path: Path, storage) -> None:
    alpha, beta = replicas(tmp_path, storage)
    recorded = snapshot_folder(alpha.root, {"users.parquet": b"U" * 10, "changes/users.parquet": b"C",
                                            "snapshot.json": b"{}"})  # fmt: skip
    alpha.push_folder(recorded, "snapshot.json")
    here = beta.fetch_folder(recorded, "snapshot.json")  # the path alpha recorded, under alpha's directory
    assert here == beta.root / "snapshots" / "north" / "u-1"
    assert {p.relative_to(here).as_posix(): p.read_bytes() for p in here.rglob("*") if p.is_file()} == {
        "users.parquet": b"U" * 10, "changes/users.parquet": b"C", "snapshot.json": b"{}"}  # fmt: skip
    assert list(here.parent.iterdir()) == [here]  # no staging folder left beside it


def test_a_snapshot_without_its_last_file_is_not_taken(tmp_path: Path, storage) -> None:
    alpha, beta = replicas(tmp_path, storage)
    recorded = snapshot_folder(alpha.root, {"users.parquet": b"U"})
    alpha.push_file(recorded / "users.parquet")  # the writer died before snapshot.json
    assert beta.fetch_folder(recorded, "snapshot.json") is None
    assert not (beta.root / "snapshots" / "north" / "u-1").exists()


def test_an_upload_is_fetched_and_dropped_by_its_recorded_path(tmp_path: Path, storage) -> None:
    alpha, beta = replicas(tmp_path, storage)
    kept = alpha.root / "uploads" / "north" / "u-1.zip"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"PK-bytes")
    alpha.push_file(kept)
    assert beta.fetch_file(kept).read_bytes() == b"PK-bytes"
    beta.drop_file(kept)
    assert alpha.fetch_file(alpha.root / "uploads" / "north" / "u-2.zip") is None


def test_paths_outside_the_state_directory_and_its_recorded_areas_are_refused(tmp_path: Path, storage) -> None:
    alpha, _beta = replicas(tmp_path, storage)
    for path in (tmp_path / "elsewhere" / "etc" / "passwd", alpha.root, Path("/x/uploads/north/../..")):
        with pytest.raises(ValueError):
            alpha.key(path)


def test_a_results_folder_follows_the_storage(tmp_path: Path, storage) -> None:
    alpha, beta = replicas(tmp_path, storage)
    written = alpha.root / "tenants" / "north" / "results"
    written.mkdir(parents=True)
    (written / "latest.json").write_text('{"state": "received"}')
    alpha.push_file(written / "latest.json")
    mine = beta.root / "tenants" / "north" / "results"
    mine.mkdir(parents=True)
    (mine / "fresh.json").write_text("being written here")  # new here, not in the storage: kept
    (mine / "pruned.json").write_text("old")
    old = time.time() - STALE_SECONDS - 5
    os.utime(mine / "pruned.json", (old, old))  # gone from the storage long ago: removed
    assert beta.sync_folder(mine) == 2
    assert (mine / "latest.json").read_text() == '{"state": "received"}'
    assert sorted(p.name for p in mine.iterdir()) == ["fresh.json", "latest.json"]
    assert beta.sync_folder(mine) == 0  # nothing changed since
    (written / "latest.json").write_text('{"state": "accepted", "more": true}')
    alpha.push_file(written / "latest.json")
    assert beta.sync_folder(mine) == 1
    assert (mine / "latest.json").read_text() == '{"state": "accepted", "more": true}'


def test_without_shared_storage_everything_is_where_it_was_recorded(tmp_path: Path) -> None:
    recorded = tmp_path / "state" / "snapshots" / "north" / "u-1"
    assert NO_MIRROR.fetch_folder(recorded, "snapshot.json") == recorded == NO_MIRROR.here(recorded)
    assert NO_MIRROR.sync_folder(recorded) == 0
