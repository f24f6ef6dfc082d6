"""Blocking file work inside one tenant root; callers run these in a worker thread.

Every operation opens the area directory relative to the root with O_NOFOLLOW and then works on a
single name relative to that directory (`dir_fd`), never on a joined path string. Names reach here
already checked to be one component, so no symlink, `..` or absolute path can be followed: a link
placed on disk by someone else is refused, not followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.sftp.paths import AREAS, HIDDEN_PREFIX, INBOX, RESULT_FOLDERS, RESULTS, TEMP_PREFIX

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WRITEBACK_BYTES = 32 * 1024 * 1024  # written stretches of an upload of this size are sent on to the disk at once


class NotRegularFile(Exception):
    """The name exists but is a link, directory, device or pipe: refused, never followed."""


def prepare_root(root: Path) -> None:
    """Create the tenant's areas if missing; refuse an area that is a symlink or not a directory."""
    root.mkdir(parents=True, exist_ok=True, mode=0o750)
    for area in AREAS:
        with contextlib.suppress(FileExistsError):
            (root / area).mkdir(mode=0o750)
        with area_dir(root, area):
            pass


@contextlib.contextmanager
def area_dir(root: Path, area: str) -> Iterator[int]:
    """An area's folder, opened one component at a time (`results/cers`), never through a link."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in area.split("/"):
            inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    try:
        yield fd
    finally:
        os.close(fd)


def folder_stats(root: Path, area: str, folders: tuple[str, ...] = RESULT_FOLDERS) -> list[tuple[str, os.stat_result]]:
    """The folders of an area a client may open (those of `folders` that exist and are real folders)."""
    if area != RESULTS:
        return []
    found = []
    with area_dir(root, area) as fd:
        for name in folders:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    found.append((name, st))
    return found


def area_stat(root: Path, area: str) -> os.stat_result:
    with area_dir(root, area) as fd:
        return os.fstat(fd)


def entry_stat(root: Path, area: str, name: str) -> os.stat_result:
    """lstat of a regular file; FileNotFoundError when absent, NotRegularFile when anything else."""
    with area_dir(root, area) as fd:
        return _regular_lstat(fd, name)


def _regular_lstat(dir_fd: int, name: str) -> os.stat_result:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(name)
    return st


def list_area(root: Path, area: str) -> list[tuple[str, os.stat_result]]:
    """The regular files a client may see; the server's hidden files and anything else are left out."""
    with area_dir(root, area) as fd:
        names = os.listdir(fd)
        listed = []
        for name in sorted(names):
            if name.startswith(HIDDEN_PREFIX):
                continue
            try:
                listed.append((name, _regular_lstat(fd, name)))
            except (FileNotFoundError, NotRegularFile):
                continue
        return listed


def open_for_reading(root: Path, area: str, name: str) -> int:
    with area_dir(root, area) as dir_fd:
        # O_NONBLOCK: a FIFO planted in results/ must not hang the open; it is refused just below.
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(name)
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass
class TempFile:
    """An upload in progress: a hidden file in the inbox, published by renaming it."""

    dir_fd: int
    fd: int
    name: str


def create_temp(root: Path) -> TempFile:
    with area_dir(root, INBOX) as borrowed:
        dir_fd = os.dup(borrowed)  # kept for the upload's life: the rename happens in this same directory
    try:
        name = TEMP_PREFIX + secrets.token_hex(8)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640, dir_fd=dir_fd)
    except BaseException:
        os.close(dir_fd)
        raise
    return TempFile(dir_fd, fd, name)


def write_at(fd: int, chunks: list[bytes], offset: int) -> None:
    """Write contiguous `chunks` from `offset` with one pwritev (a short write is finished off). Blocking.

    Each time the writes pass a WRITEBACK_BYTES boundary, the stretch before it is sent on to the disk
    (fadvise DONTNEED starts writeback of dirty pages, and lets the kernel drop them once clean): the disk
    works while the network does, the fsync before publishing has little left to do, and a large upload
    does not push everything else out of the page cache.
    """
    start = offset
    total = sum(len(chunk) for chunk in chunks)
    written = os.pwritev(fd, chunks, offset)
    offset += written
    if written < total:
        rest = memoryview(b"".join(chunks))[written:]
        while rest:
            done = os.pwrite(fd, rest, offset)
            rest, offset = rest[done:], offset + done
    boundary = offset - offset % WRITEBACK_BYTES
    if boundary > start and boundary >= WRITEBACK_BYTES:
        os.posix_fadvise(fd, boundary - WRITEBACK_BYTES, WRITEBACK_BYTES, os.POSIX_FADV_DONTNEED)


def publish(temp: TempFile, final_name: str) -> int:
    """fsync, rename over `final_name` and fsync the directory; returns the size. Closes the temp."""
    try:
        size = os.fstat(temp.fd).st_size
        os.fsync(temp.fd)
        os.close(temp.fd)
        temp.fd = -1
        _refuse_non_regular(temp.dir_fd, final_name)
        os.replace(temp.name, final_name, src_dir_fd=temp.dir_fd, dst_dir_fd=temp.dir_fd)
        os.fsync(temp.dir_fd)
        return size
    except BaseException:
        discard(temp)
        raise
    finally:
        _close_quietly(temp)


def discard(temp: TempFile) -> None:
    """Close and remove an upload that will not be published. Never raises for a missing file."""
    if temp.fd >= 0:
        os.close(temp.fd)
        temp.fd = -1
    if temp.dir_fd >= 0:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp.name, dir_fd=temp.dir_fd)
    _close_quietly(temp)


def _close_quietly(temp: TempFile) -> None:
    if temp.dir_fd >= 0:
        os.close(temp.dir_fd)
        temp.dir_fd = -1


def _refuse_non_regular(dir_fd: int, name: str) -> None:
    """Renaming over a directory or link would replace something the client never uploaded."""
    with contextlib.suppress(FileNotFoundError):
        _regular_lstat(dir_fd, name)


def remove_entry(root: Path, area: str, name: str) -> None:
    with area_dir(root, area) as fd:
        _regular_lstat(fd, name)
        os.unlink(name, dir_fd=fd)


def rename_entry(root: Path, area: str, old: str, new: str, *, overwrite: bool) -> int:
    """Rename within one area; returns the file's size. Plain SFTP rename never overwrites."""
    with area_dir(root, area) as fd:
        size = _regular_lstat(fd, old).st_size
        try:
            _regular_lstat(fd, new)
        except FileNotFoundError:
            pass
        else:
            if not overwrite:
                raise FileExistsError(errno.EEXIST, "File already exists")
        os.rename(old, new, src_dir_fd=fd, dst_dir_fd=fd)
        os.fsync(fd)
        return size


def set_times(root: Path, area: str, name: str, atime: int, mtime: int) -> None:
    with area_dir(root, area) as fd:
        _regular_lstat(fd, name)
        os.utime(name, (atime, mtime), dir_fd=fd, follow_symlinks=False)


def inbox_figures(root: Path) -> tuple[int, int]:
    """Bytes held in the inbox, and free bytes on its disk.

    The server's unfinished uploads are left out of the first: the session layer counts their bytes as
    they are written (limits.py), and a temp file's size on disk lags behind what was written to it.
    """
    with area_dir(root, INBOX) as fd:
        total = 0
        for name in os.listdir(fd):
            if name.startswith(TEMP_PREFIX):
                continue
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
        vfs = os.fstatvfs(fd)
        return total, vfs.f_bavail * vfs.f_frsize


def remove_orphans(root: Path) -> list[str]:
    """Temp files left by a server that died mid-upload; none can be in flight before we listen."""
    with area_dir(root, INBOX) as fd:
        removed = []
        for name in os.listdir(fd):
            if name.startswith(TEMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
                    removed.append(name)
        return removed
