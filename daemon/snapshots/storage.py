"""Snapshots on disk: one Parquet file per entity in a folder per upload, written whole or not at all.

    STATE/snapshots/<tenant>/<upload_id>/users.parquet, enrollments.parquet, ...   the roster after the upload
    STATE/snapshots/<tenant>/<upload_id>/changes/                                  the change set that led here
    STATE/snapshots/<tenant>/<upload_id>/snapshot.json                             version and counts (SnapshotMeta)

A worker process writes a snapshot into a staging folder beside its final place; the daemon records it in
the catalog (daemon/store) and renames the folder into place. A staging folder left by a crash is simply
written again when the upload is processed again. Every function here blocks: callers run them in a
worker process or thread.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import polars as pl

from daemon.files import fsync_dir, fsync_file, write_whole
from daemon.objects.mirror import RemoteFolder

META_FILE = "snapshot.json"
# zstd at its fastest level: about a sixth less CPU than its default level for 3% more bytes, and writing is a
# good part of the time from an upload to its snapshot. No statistics: nothing reads with predicates.
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1, "statistics": False}
CHANGES_FOLDER = "changes"
STAGING_PREFIX = ".staging-"


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot is, besides its rows: made by the worker's job, written to its folder's snapshot.json, and
    recorded by the Processor as the store's SnapshotRecord (same field names)."""

    version: str  # the OneRoster version of the upload
    rows: dict[str, int]  # rows per entity
    changes: dict[str, dict[str, int]]  # added/updated/deleted per entity
    holds: list[dict]  # the hold thresholds crossed (empty: none)
    base_upload_id: str | None  # the snapshot it was diffed against (None: a first snapshot or a rebaseline)


# snapshot.json names the base upload `base`, as it always has: renamed here, and only here.
_FILE_NAMES = {"base_upload_id": "base"}


def tenant_folder(state_dir: Path, tenant: str) -> Path:
    return state_dir / "snapshots" / tenant


def final_folder(state_dir: Path, tenant: str, upload_id: str) -> Path:
    return tenant_folder(state_dir, tenant) / upload_id


def staging_folder(state_dir: Path, tenant: str, upload_id: str) -> Path:
    return tenant_folder(state_dir, tenant) / f"{STAGING_PREFIX}{upload_id}"


def write_frames(
    folder: Path, frames: Mapping[str, pl.DataFrame | pl.LazyFrame], carried: Mapping[str, Path] | None = None
) -> None:
    """One Parquet file per entity, each fsynced. `folder` is created (its parent must exist).

    `carried` names entities that are unchanged from an earlier snapshot, with that snapshot's file: those
    are hard-linked (Parquet files are never changed once written), not rewritten. A LazyFrame is streamed
    to its file, so a scanned snapshot is never held in memory whole.
    """
    folder.mkdir(exist_ok=True)
    for entity, frame in frames.items():
        path = folder / f"{entity}.parquet"
        source = (carried or {}).get(entity)
        if source is not None:
            _link_or_copy(source, path)
        elif isinstance(frame, pl.LazyFrame):
            frame.sink_parquet(path, **PARQUET_OPTIONS)
        else:
            frame.write_parquet(path, **PARQUET_OPTIONS)
        fsync_file(path)


Folder = Path | RemoteFolder  # a snapshot folder here, or one read in place from the shared storage


def as_folder(folder: Folder | str) -> Folder:
    """A folder as handed to a worker process (a path's text, a Path or a RemoteFolder), as a Folder."""
    return folder if isinstance(folder, RemoteFolder) else Path(folder)


def has_file(folder: Folder, name: str) -> bool:
    """Whether the folder holds the file `name` ('changes/users.added.parquet')."""
    return folder.has(name) if isinstance(folder, RemoteFolder) else (folder / name).is_file()


def scan_file(folder: Folder, name: str) -> pl.LazyFrame:
    """One Parquet file of the folder, scanned (nothing read yet)."""
    return folder.scan(name) if isinstance(folder, RemoteFolder) else pl.scan_parquet(folder / name)


def read_frames(folder: Path) -> dict[str, pl.DataFrame]:
    return {path.stem: pl.read_parquet(path) for path in sorted(folder.glob("*.parquet"))}


def scan_frames(folder: Folder | str) -> tuple[dict[str, pl.LazyFrame], dict[str, Path]]:
    """A stored snapshot as LazyFrames (nothing read yet), with the local file behind each entity (none for a
    snapshot read in place from the shared storage: it has no file here to link to)."""
    folder = as_folder(folder)
    if isinstance(folder, RemoteFolder):
        entities = sorted(name for name in folder.sources if name.endswith(".parquet") and "/" not in name)
        return {name.removesuffix(".parquet"): folder.scan(name) for name in entities}, {}
    files = {path.stem: path for path in sorted(folder.glob("*.parquet"))}
    return {entity: pl.scan_parquet(path) for entity, path in files.items()}, files


def row_count(frame: pl.DataFrame | pl.LazyFrame) -> int:
    """Rows of a frame; for a scanned Parquet file, from its metadata."""
    return frame.select(pl.len()).collect().item() if isinstance(frame, pl.LazyFrame) else frame.height


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed: a copy does as well
        shutil.copyfile(source, target)


def write_meta(folder: Path, meta: SnapshotMeta) -> None:
    shown = {_FILE_NAMES.get(name, name): value for name, value in asdict(meta).items()}
    write_whole(folder / META_FILE, json.dumps(shown, indent=1, sort_keys=True) + "\n", mode=None)


def read_meta(folder: Path) -> SnapshotMeta:
    data = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    return SnapshotMeta(**{f.name: data[_FILE_NAMES.get(f.name, f.name)] for f in fields(SnapshotMeta)})


def clear(folder: Path) -> None:
    """Remove a staging or final folder (a crashed attempt, a pruned snapshot); missing is fine."""
    shutil.rmtree(folder, ignore_errors=True)


def publish(staging: Path, final: Path) -> None:
    """Move a complete staging folder into place. A final folder already there comes from an attempt that a
    crash cut short before it was recorded (the catalog only names published folders), so it is replaced."""
    fsync_dir(staging)
    if final.exists():
        clear(final)
    os.rename(staging, final)
    fsync_dir(final.parent)

