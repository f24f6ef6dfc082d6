"""The state directory's shared files, kept in object storage too, so that every replica can take them up.

Each replica keeps working in its own state directory. What another replica may need is also put in the
shared storage, under its path relative to the state directory, before the store records it:
    uploads/TENANT/...            an upload's bytes, before it is recorded as received
    snapshots/TENANT/UPLOAD/...   a published snapshot, its snapshot.json last (a snapshot without it is
                                  not whole yet, and no replica takes it)
    tenants/TENANT/results/...    each receipt as it is written
A replica that needs a snapshot it does not have (it took over an upload or a delivery, or shows a change set)
reads it in place (`locate_folder`: polars reads the byte ranges it needs). Other files it fetches into its own
state directory first (an upload's bytes, a tenant's results/): a folder into a staging folder beside it,
renamed into place whole.

The store records the path where the replica that wrote a file keeps it, and replicas need not share one
state directory path: a recorded upload or snapshot is found here by its last three parts (AREA/TENANT/NAME,
the layout of uploads/, quarantine/ and snapshots/), below this replica's own state directory (`here`).

`NO_MIRROR` stands for a daemon alone on its state directory ([storage] kind = "local"): nothing is copied
and everything is where it was written. Every method blocks: callers run them in threads.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from daemon.objects.interface import ObjectMissing, ObjectStorage

RECORDED_AREAS = ("uploads", "quarantine", "snapshots")  # STATE/AREA/TENANT/NAME: what the store records paths of
FETCH_PREFIX = ".fetch-"  # a folder being fetched; left by a crash, it is removed at the next fetch of its folder
STALE_SECONDS = 60.0  # a local copy the storage no longer has is removed once it is this old (not being pushed)


@dataclass(frozen=True, slots=True)
class RemoteFolder:
    """A snapshot (or another written-once folder) in the shared storage, read in place: polars fetches the
    byte ranges it needs (the Parquet footer, then the columns asked for) and nothing lands on local disk.
    Made by Mirror.locate_folder; it pickles, so a worker process can be handed one as it is a Path."""

    name: str  # the folder's own name: a snapshot's upload id
    sources: dict[str, str]  # each file's name relative to the folder ('users.parquet', 'changes/counts.json')
    options: dict[str, str] | None = field(repr=False)  # polars' storage_options: they hold the secret

    def has(self, name: str) -> bool:
        return name in self.sources

    def scan(self, name: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.sources[name], storage_options=self.options, glob=False)


class Mirror:
    def __init__(self, storage: ObjectStorage, root: Path) -> None:
        self.storage = storage
        self.root = Path(root).resolve()
        self._guard = threading.Lock()
        self._fetching: dict[Path, list] = {}  # folder -> [its lock, how many threads want it]: one fetch at a time

    def key(self, path: Path) -> str:
        """The key of a file or folder of this state directory, or of an upload or snapshot another replica
        recorded under its own; ValueError for anything else."""
        path = Path(path)
        try:
            relative = path.resolve().relative_to(self.root)
        except ValueError:
            parts = path.parts
            if len(parts) >= 4 and parts[-3] in RECORDED_AREAS and ".." not in parts[-2:]:
                return "/".join(parts[-3:])
            raise ValueError(f"{path} is not in the state directory {self.root}") from None
        if relative == Path("."):
            raise ValueError(f"{path} is the state directory itself, not a file in it")
        return relative.as_posix()

    def here(self, path: Path) -> Path:
        """Where this replica keeps a file the store recorded (perhaps under another replica's directory)."""
        return self.root / self.key(path)

    def push_file(self, path: Path, as_path: Path | None = None) -> None:
        """The file, under its own key or under the key of `as_path` (where it will be once renamed)."""
        self.storage.put_file(self.key(as_path or path), path)

    def push_folder(self, folder: Path, last: str, as_folder: Path | None = None) -> None:
        """Every file below `folder`, and `last` (a file directly in it) after all the others; under the
        folder's own keys or under `as_folder`'s."""
        folder = Path(folder)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / last)
        for path in [*files, folder / last]:
            self.push_file(path, as_folder / path.relative_to(folder) if as_folder is not None else None)

    def fetch_file(self, path: Path) -> Path | None:
        """Where the recorded file is here: it was, or it is fetched now. None when the storage has none."""
        local = self.here(path)
        if local.exists():
            return local
        try:
            _download(self.storage, self.key(path), local)
        except ObjectMissing:
            return None
        return local

    def fetch_folder(self, folder: Path, last: str) -> Path | None:
        """Where the recorded folder is here, whole: it was, or it is fetched now. None when the storage has no
        whole copy (no `last` file: its writer has not finished, or it never existed)."""
        folder = self.here(folder)
        if folder.exists():
            return folder
        with self._guard:
            entry = self._fetching.setdefault(folder, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:  # a second thread wanting the same folder waits for the first one's fetch
                return folder if folder.exists() else self._fetch_folder(folder, last)
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._fetching[folder]

    def _fetch_folder(self, folder: Path, last: str) -> Path | None:
        prefix = self.key(folder) + "/"
        if self.storage.info(prefix + last) is None:
            return None
        for leftover in folder.parent.glob(f"{FETCH_PREFIX}{folder.name}-*"):  # a crashed fetch's (none runs now)
            shutil.rmtree(leftover, ignore_errors=True)
        staging = folder.parent / f"{FETCH_PREFIX}{folder.name}-{secrets.token_hex(4)}"
        try:
            for found in self.storage.list(prefix):
                _download(self.storage, found.key, staging / found.key[len(prefix):])
            try:
                os.rename(staging, folder)
            except OSError:
                if not folder.exists():  # not another thread's fetch that won: a real failure
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def push_newest(self, path: Path, keep: int) -> None:
        """Push a file, then remove from the storage all but the `keep` newest files beside it (their names
        sort by age: upload ids), as the writer did here."""
        self.push_file(path)
        prefix = self.key(path.parent) + "/"
        beside = [info.key for info in self.storage.list(prefix) if "/" not in info.key[len(prefix):]]
        for old in beside[: max(0, len(beside) - keep)]:
            self.storage.delete(old)

    def scan_file(self, path: Path) -> pl.LazyFrame | None:
        """A Parquet file of this state directory, scanned where it is: here, else in place in the storage;
        None when neither has it."""
        if path.is_file():
            return pl.scan_parquet(path)
        key = self.key(path)
        if self.storage.info(key) is None:
            return None
        source, options = self.storage.polars_source(key)
        return pl.scan_parquet(source, storage_options=options, glob=False)

    def locate_folder(self, folder: Path, last: str) -> Path | RemoteFolder | None:
        """Where a recorded written-once folder (a snapshot) is read from: here, when this replica has it;
        else in place in the storage, by range reads, when the storage has it whole; else None."""
        here = self.here(folder)
        if here.exists():
            return here
        prefix = self.key(folder) + "/"
        found = self.storage.list(prefix)
        if not any(info.key == prefix + last for info in found):
            return None
        sources, options = {}, None
        for info in found:
            sources[info.key[len(prefix):]], options = self.storage.polars_source(info.key)
        return RemoteFolder(here.name, sources, options)

    def drop_file(self, path: Path) -> None:
        self.storage.delete(self.key(path))

    def drop_all_but(self, folder: Path, kept: set[str]) -> None:
        """Remove from the storage everything below `folder` but the entries (files or folders) named in
        `kept`."""
        prefix = self.key(folder) + "/"
        for info in self.storage.list(prefix):
            if info.key[len(prefix):].split("/", 1)[0] not in kept:
                self.storage.delete(info.key)

    def drop_folder(self, folder: Path) -> None:
        self.storage.delete_prefix(self.key(folder) + "/")

    def sync_folder(self, folder: Path) -> int:
        """Bring a folder's files up to the storage's: newer or missing ones fetched, ones the storage no
        longer has removed (once older than STALE_SECONDS, so that one being written here now stays).
        Sub-folders included. Returns how many files changed."""
        folder = Path(folder)
        prefix = self.key(folder) + "/"
        remote = {found.key[len(prefix):]: found for found in self.storage.list(prefix)}
        changed = 0
        for name, found in remote.items():
            local = folder / name
            stamp = datetime.fromisoformat(found.modified).timestamp()
            try:
                current = local.stat()
            except FileNotFoundError:
                current = None
            if current is not None and current.st_size == found.size and current.st_mtime >= stamp:
                continue
            try:
                _download(self.storage, found.key, local)
            except ObjectMissing:  # removed since the listing
                continue
            os.utime(local, (stamp, stamp))
            changed += 1
        if folder.exists():
            cutoff = datetime.now().timestamp() - STALE_SECONDS
            for local in folder.rglob("*"):
                name = local.relative_to(folder).as_posix()
                if local.is_file() and name not in remote and local.stat().st_mtime < cutoff:
                    local.unlink(missing_ok=True)
                    changed += 1
        return changed


def _download(storage: ObjectStorage, key: str, local: Path) -> None:
    local.parent.mkdir(parents=True, exist_ok=True)
    storage.download(key, local)


class _NoMirror(Mirror):
    """One daemon on its own state directory: every file is where it was written, nothing is copied."""

    def __init__(self) -> None:
        pass

    def push_file(self, path: Path, as_path: Path | None = None) -> None:
        pass

    def push_folder(self, folder: Path, last: str, as_folder: Path | None = None) -> None:
        pass

    def here(self, path: Path) -> Path:
        return Path(path)

    def fetch_file(self, path: Path) -> Path | None:
        return Path(path)  # where it was written, or gone for every reader alike: no other copy exists

    def fetch_folder(self, folder: Path, last: str) -> Path | None:
        return Path(folder)

    def locate_folder(self, folder: Path, last: str) -> Path | RemoteFolder | None:
        return Path(folder)

    def push_newest(self, path: Path, keep: int) -> None:
        pass

    def scan_file(self, path: Path) -> pl.LazyFrame | None:
        return pl.scan_parquet(path) if Path(path).is_file() else None

    def drop_file(self, path: Path) -> None:
        pass

    def drop_folder(self, folder: Path) -> None:
        pass

    def drop_all_but(self, folder: Path, kept: set[str]) -> None:
        pass

    def sync_folder(self, folder: Path) -> int:
        return 0


NO_MIRROR: Mirror = _NoMirror()
