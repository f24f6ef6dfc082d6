"""The state directory's shared files, kept in object storage too, so that every replica can take them up.

Each replica keeps working in its own state directory (the same path on every replica, as the store records
absolute paths). What another replica may need is also put in the shared storage, under its path relative to
the state directory, before the store records it:
    uploads/TENANT/...            an upload's bytes, before it is recorded as received
    snapshots/TENANT/UPLOAD/...   a published snapshot, its snapshot.json last (a snapshot without it is
                                  not whole yet, and no replica takes it)
    tenants/TENANT/results/...    each receipt as it is written
A replica that needs one it does not have (it took over an upload, a delivery, or a tenant's listing) fetches
it into its own state directory first: a folder into a staging folder beside it, renamed into place whole.

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

FETCH_PREFIX = ".fetch-"  # a folder being fetched; left by a crash, it is removed at the next fetch of its folder
STALE_SECONDS = 60.0  # a local copy the storage no longer has is removed once it is this old (not being pushed)


class Mirror:
    def __init__(self, storage: ObjectStorage, root: Path) -> None:
        self.storage = storage
        self.root = Path(root).resolve()

    def key(self, path: Path) -> str:
        """The key of a file or folder of the state directory; ValueError for a path outside it."""
        relative = Path(path).resolve().relative_to(self.root)  # ValueError when outside
        if relative == Path("."):
            raise ValueError(f"{path} is the state directory itself, not a file in it")
        return relative.as_posix()

    def push_file(self, path: Path) -> None:
        self.storage.put_file(self.key(path), path)

    def push_folder(self, folder: Path, last: str) -> None:
        """Every file below `folder`, and `last` (a file directly in it) after all the others."""
        folder = Path(folder)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p != folder / last)
        for path in files:
            self.push_file(path)
        self.push_file(folder / last)

    def fetch_file(self, path: Path) -> bool:
        """The file is here: it was, or it is fetched now. False when the storage has none either."""
        path = Path(path)
        if path.exists():
            return True
        try:
            self.storage.download(self.key(path), path)
        except ObjectMissing:
            return False
        return True

    def fetch_folder(self, folder: Path, last: str) -> bool:
        """The folder is here, whole: it was, or it is fetched now. False when the storage has no whole copy
        (no `last` file: its writer has not finished, or it never existed)."""
        folder = Path(folder)
        if folder.exists():
            return True
        prefix = self.key(folder) + "/"
        if self.storage.info(prefix + last) is None:
            return False
        for leftover in folder.parent.glob(f"{FETCH_PREFIX}{folder.name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = folder.parent / f"{FETCH_PREFIX}{folder.name}-{secrets.token_hex(4)}"
        try:
            for found in self.storage.list(prefix):
                self.storage.download(found.key, staging / found.key[len(prefix):])
            try:
                os.rename(staging, folder)
            except OSError:
                if not folder.exists():  # not another thread's fetch that won: a real failure
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True

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
                self.storage.download(found.key, local)
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


class _NoMirror(Mirror):
    """One daemon on its own state directory: every file is where it was written, nothing is copied."""

    def __init__(self) -> None:
        pass

    def push_file(self, path: Path) -> None:
        pass

    def push_folder(self, folder: Path, last: str) -> None:
        pass

    def fetch_file(self, path: Path) -> bool:
        return Path(path).exists()

    def fetch_folder(self, folder: Path, last: str) -> bool:
        return Path(folder).exists()

    def drop_file(self, path: Path) -> None:
        pass

    def drop_folder(self, folder: Path) -> None:
        pass

    def sync_folder(self, folder: Path) -> int:
        return 0


NO_MIRROR: Mirror = _NoMirror()
