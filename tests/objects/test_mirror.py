"""The mirror: a replica's state directory files in the shared storage, and fetched by another replica whose
state directory is elsewhere. Run on both storages (conftest.py); two folders stand for two replicas."""

from __future__ import annotations

import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from daemon.generator.churn import Churn, churn
from daemon.generator.generate import DistrictSpec, generate, write_zip
from daemon.objects import ObjectStorage
from daemon.objects.mirror import NO_MIRROR, STALE_SECONDS, Mirror, RemoteFolder
from daemon.snapshots import storage as snapshots
from daemon.snapshots.job import TenantRules, UploadJob, run_job


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


def parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


USERS = pl.DataFrame({"sourcedId": [f"u{n}" for n in range(1000)], "givenName": ["Ann", "Bo"] * 500})
ADDED = pl.DataFrame({"sourcedId": ["u7"], "givenName": ["Bo"]})


def test_another_replicas_snapshot_is_read_in_place_and_nothing_lands_on_this_disk(tmp_path: Path, storage) -> None:
    alpha, beta = replicas(tmp_path, storage)
    recorded = snapshot_folder(alpha.root, {"users.parquet": parquet(USERS), "orgs.parquet": parquet(USERS.head(2)),
                                            "changes/users.added.parquet": parquet(ADDED),
                                            "changes/counts.json": b"{}", "snapshot.json": b"{}"})  # fmt: skip
    alpha.push_folder(recorded, "snapshot.json")
    located = beta.locate_folder(recorded, "snapshot.json")
    assert isinstance(located, RemoteFolder) and located.name == "u-1"
    frames, files = snapshots.scan_frames(located)
    assert sorted(frames) == ["orgs", "users"] and files == {}  # nothing here to link to
    assert_frame_equal(frames["users"].collect(), USERS)
    assert_frame_equal(frames["users"].slice(998, 5).collect(), USERS.tail(2))
    assert snapshots.has_file(located, "changes/counts.json") and not snapshots.has_file(located, "changes/x")
    assert_frame_equal(snapshots.scan_file(located, "changes/users.added.parquet").collect(), ADDED)
    assert not (beta.root / "snapshots").exists()
    assert "secret" not in repr(located).lower()  # the storage options (the secret key) are left out of its text
    assert alpha.locate_folder(recorded, "snapshot.json") == recorded  # its writer reads its own copy


def test_a_snapshot_without_its_last_file_is_not_located(tmp_path: Path, storage) -> None:
    alpha, beta = replicas(tmp_path, storage)
    recorded = snapshot_folder(alpha.root, {"users.parquet": parquet(USERS), "snapshot.json": b"{}"})
    alpha.push_file(recorded / "users.parquet")  # the writer died before snapshot.json
    assert beta.locate_folder(recorded, "snapshot.json") is None
    assert beta.locate_folder(alpha.root / "snapshots" / "north" / "u-9", "snapshot.json") is None


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
    assert NO_MIRROR.locate_folder(recorded, "snapshot.json") == recorded
    assert NO_MIRROR.sync_folder(recorded) == 0


def test_a_delta_is_merged_onto_a_base_read_in_place_as_onto_a_local_one(tmp_path: Path, s3) -> None:
    """The worker's job (validate, merge, diff, write) with its base snapshot in the bucket gives the snapshot
    it gives with the base on this disk: same counts, same rows, same base named."""
    spec = DistrictSpec(schools=2, students_per_school=30, teachers_per_school=3, enrollments_per_student=3)
    day1 = generate(spec)
    day2 = churn(day1, spec.version, Churn(withdrawn=2, arrivals=1, new_emails=1))
    write_zip(day1, tmp_path / "day1.zip", spec.version)
    write_zip(day2.delta, tmp_path / "day2.zip", spec.version, mode="delta")
    alpha, beta = replicas(tmp_path, s3)
    base = snapshots.final_folder(alpha.root, "north", "u-1")
    base.parent.mkdir(parents=True)
    first = run_job(UploadJob(tmp_path / "day1.zip", base, None, TenantRules()))
    assert first.snapshot is not None
    alpha.push_folder(base, snapshots.META_FILE)
    located = beta.locate_folder(base, snapshots.META_FILE)
    assert isinstance(located, RemoteFolder)

    here = run_job(UploadJob(tmp_path / "day2.zip", tmp_path / "here", base, TenantRules()))
    remote = run_job(UploadJob(tmp_path / "day2.zip", tmp_path / "remote", located, TenantRules()))
    assert remote.snapshot == here.snapshot and remote.snapshot.base_upload_id == "u-1"
    assert {e: c for e, c in remote.snapshot.changes.items() if any(c.values())} == {
        e: c for e, c in day2.expected.items() if any(c.values())}  # fmt: skip
    written, expected = snapshots.read_frames(tmp_path / "remote"), snapshots.read_frames(tmp_path / "here")
    assert sorted(written) == sorted(expected)
    for entity, frame in expected.items():
        assert_frame_equal(written[entity], frame)
    assert not (beta.root / "snapshots").exists()


def test_findings_files_are_pushed_with_the_newest_kept_and_read_in_place(tmp_path: Path, storage) -> None:
    alpha, beta = replicas(tmp_path, storage)
    folder = alpha.root / "findings" / "north"
    folder.mkdir(parents=True)
    for n in range(1, 5):
        (folder / f"u-{n}.parquet").write_bytes(parquet(ADDED.with_columns(pl.lit(n).alias("n"))))
        alpha.push_newest(folder / f"u-{n}.parquet", keep=2)
    assert [info.key for info in storage.list("findings/")] == ["findings/north/u-3.parquet",
                                                                "findings/north/u-4.parquet"]  # fmt: skip
    there = beta.root / "findings" / "north"
    assert beta.scan_file(there / "u-4.parquet").collect()["n"].to_list() == [4]
    assert beta.scan_file(there / "u-1.parquet") is None  # pushed out by the newer ones
    assert not there.exists()  # read in place, never copied here
    assert NO_MIRROR.scan_file(folder / "u-1.parquet").collect()["n"].to_list() == [1]
    assert NO_MIRROR.scan_file(there / "u-4.parquet") is None


def test_threads_fetching_the_same_folder_at_once_each_get_it_whole(tmp_path: Path, storage) -> None:
    """The API's read threads, or a CERS and a webhook delivery of one upload, may want the same folder at the
    same moment: each must get it whole, never another's half-fetched copy."""
    alpha, beta = replicas(tmp_path, storage)
    files = {f"{n:02d}.parquet": bytes([n]) * 2000 for n in range(30)} | {"snapshot.json": b"{}"}
    recorded = snapshot_folder(alpha.root, files)
    alpha.push_folder(recorded, "snapshot.json")
    start = threading.Barrier(8)

    def fetch(_n: int) -> dict[str, bytes]:
        start.wait()
        here = beta.fetch_folder(recorded, "snapshot.json")
        assert here is not None
        return {p.name: p.read_bytes() for p in here.iterdir()}

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(fetch, range(8)))
    assert got == [files] * 8
    assert [p.name for p in (beta.root / "snapshots" / "north").iterdir()] == ["u-1"]  # no staging folder left
