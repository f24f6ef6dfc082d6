"""Objects as files under one folder (STATE/objects): the storage of a single replica.

A key is a path below the root, folders made as needed and removed again when a delete leaves them empty, so
the tree holds only what is stored. Every path is resolved and must stay inside the root: a key cannot climb
out with '..' (check_key refuses it) nor through a symbolic link that points elsewhere. Files are written
under a partial name and renamed into place (partials.py), so a reader on another thread sees an old object
or a new one, never a half.
"""

from __future__ import annotations

import builtins
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from daemon.files import write_whole
from daemon.objects.interface import (
    PARTIAL_PREFIX, ObjectInfo, ObjectMissing, check_key, check_prefix, check_range, utc_text,
)
from daemon.objects.partials import copy_into, is_partial

# A delete_prefix on another thread may remove a folder between a put's mkdir and its write: the put makes the
# folder again, this many times at the most.
_FOLDER_ATTEMPTS = 5


class LocalStorage:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        """Where `key` lives; ValueError when it would lead outside the root (through '..' or a link)."""
        path = self.root / check_key(key)
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"the object key {key!r} leads outside the storage's folder")
        return path

    def _write(self, key: str, write: Callable[[Path], None]) -> None:
        path = self._path(key)
        for attempt in range(_FOLDER_ATTEMPTS):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write(path)
                return
            # the folder went away under us (mkdir says FileExistsError when it goes between its own two
            # steps), or a file holds a folder's name (a key that is also another key's folder: that stays)
            except (FileNotFoundError, FileExistsError):
                if attempt == _FOLDER_ATTEMPTS - 1:
                    raise

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda path: write_whole(path, data, sync_dir=True, temp_prefix=PARTIAL_PREFIX))

    def put_file(self, key: str, local_path: Path) -> None:
        with open(local_path, "rb") as source:  # opened first: a missing file makes no folders
            self._write(key, lambda path: copy_into(path, source))

    def _open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(key) from None

    def get_bytes(self, key: str) -> bytes:
        with self._open(key) as source:
            return source.read()

    def get_range(self, key: str, start: int, length: int) -> bytes:
        check_range(start, length)
        with self._open(key) as source:
            source.seek(start)
            return source.read(length)

    def download(self, key: str, local_path: Path) -> None:
        with self._open(key) as source:
            copy_into(Path(local_path), source)

    def info(self, key: str) -> ObjectInfo | None:
        try:
            found = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(found.st_mode):  # a folder is not an object
            return None
        return ObjectInfo(key, found.st_size, _modified(found.st_mtime))

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        check_prefix(prefix)
        folder = self.root / prefix.rpartition("/")[0]  # the deepest folder every match is below
        if not folder.resolve().is_relative_to(self.root):  # a link to elsewhere: nothing of ours is there
            return []
        found = []
        for parent, _, files in os.walk(folder):
            for name in files:
                path = Path(parent, name)
                key = path.relative_to(self.root).as_posix()
                if is_partial(name) or not key.startswith(prefix) or path.is_symlink():
                    continue
                try:
                    found_stat = path.stat()
                except FileNotFoundError:  # deleted by another thread while we walked
                    continue
                found.append(ObjectInfo(key, found_stat.st_size, _modified(found_stat.st_mtime)))
        return sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):  # gone, or a folder (not an object)
            return
        self._prune(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        removed = 0
        for info in self.list(prefix):
            path = self.root / info.key
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
            self._prune(path.parent)
        return removed

    def _prune(self, folder: Path) -> None:
        """Remove `folder` and its parents up to the root while they are empty."""
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone, or another thread's put is filling it)
                return
            folder = folder.parent

    def polars_source(self, key: str) -> tuple[str, dict[str, str] | None]:
        return str(self._path(key)), None

    def close(self) -> None:
        """Nothing to let go of: files are opened and closed per call."""


def _modified(mtime: float) -> str:
    return utc_text(datetime.fromtimestamp(mtime, UTC))
