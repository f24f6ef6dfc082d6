"""The state directory's shared files, kept in object storage too, so that every replica can take them up.

Each replica keeps working in its own state directory. What another replica may need is also put in the
shared storage, under its path relative to the state directory, before the store records it:
    uploads/TENANT/...            an upload's bytes, before it is recorded as received
    snapshots/TENANT/UPLOAD/...   a published snapshot, its snapshot.json last (a snapshot without it is
                                  not whole yet, and no replica takes it)
    tenants/TENANT/results/...    each receipt as it is written
A replica that needs one it does not have (it took over an upload, a delivery, or a tenant's listing) fetches
it into its own state directory first: a folder into a staging folder beside it, renamed into place whole.

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
from datetime import datetime
from pathlib import Path

from daemon.objects.interface import ObjectMissing, ObjectStorage

RECORDED_AREAS = ("uploads", "quarantine", "snapshots")  # STATE/AREA/TENANT/NAME: what the store records paths of
FETCH_PREFIX = ".fetch-"  # a folder being fetched; left by a crash, it is removed at the next fetch of its folder
STALE_SECONDS = 60.0  # a local copy the storage no longer has is removed once it is this old (not being pushed)


class Mirror:
    def __init__(self, storage: ObjectStorage, root: Path) -> None:
        self.storage = storage
        self.root = Path(root).resolve()

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

    def push_file(self, path: Path) -> None:
        self.storage.put_file(self.key(path), path)

    def push_folder(self, folder: Path, last: str) -> None:
        """Every file below `folder`, and `last` (a file directly in it) after all the others."""
        folder = Path(folder)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / last)
        for path in files:
            self.push_file(path)
        self.push_file(folder / last)

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
        prefix = self.key(folder) + "/"
        if self.storage.info(prefix + last) is None:
            return None
        for leftover in folder.parent.glob(f"{FETCH_PREFIX}{folder.name}-*"):
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

    def drop_file(self, path: Path) -> None:
        self.storage.delete(self.key(path))

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

    def push_file(self, path: Path) -> None:
        pass

    def push_folder(self, folder: Path, last: str) -> None:
        pass

    def here(self, path: Path) -> Path:
        return Path(path)

    def fetch_file(self, path: Path) -> Path | None:
        return Path(path)  # where it was written, or gone for every reader alike: no other copy exists

    def fetch_folder(self, folder: Path, last: str) -> Path | None:
        return Path(folder)

    def drop_file(self, path: Path) -> None:
        pass

    def drop_folder(self, folder: Path) -> None:
        pass

    def sync_folder(self, folder: Path) -> int:
        return 0


NO_MIRROR: Mirror = _NoMirror()
