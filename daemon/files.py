"""Files written whole: a reader sees the old file or the new one, never half of either. Blocking.

`write_whole` is the one way rosterd writes a small file in place: beside it under a hidden temporary name,
fsynced, given its mode, renamed over it (or, `exclusive`, linked to its name only where none exists), the
folder fsynced where a crash must not lose the rename. `fsync_file` and `fsync_dir` are for what others write
(polars' Parquet files, a staging folder renamed into place).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_whole(
    path: Path, data: str | bytes, *, mode: int | None = 0o600, exclusive: bool = False, sync_dir: bool = False,
    temp_prefix: str | None = None,
) -> None:
    """Write `data` (text as UTF-8) to `path` whole or not at all.

    `mode`: the file's permissions exactly; None for those a plain open gives (0666 less the umask).
    `exclusive`: publish only where `path` does not exist yet (FileExistsError if it does: someone else was
    first), never over it. `sync_dir`: fsync the folder too, so the new name survives a crash; not needed
    inside a folder that is itself fsynced and renamed into place later. `temp_prefix`: the temporary file's
    name is this and a random part (for a folder whose readers skip names with that prefix) instead of
    `.NAME.<random>.tmp`.

    The temporary file is made with O_EXCL and O_NOFOLLOW (never through a link someone planted) and removed
    on failure."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    token = secrets.token_hex(6)
    temp = path.with_name(f"{temp_prefix}{token}" if temp_prefix else f".{path.name}.{token}.tmp")
    fd = os.open(temp, _CREATE, 0o666 if mode is None else 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            if mode is not None:
                os.fchmod(out.fileno(), mode)
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            os.link(temp, path)  # fails where the name exists: the first writer's file stays
            os.unlink(temp)
        else:
            os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def replace_text(path: Path, text: str, mode: int = 0o600) -> None:
    """write_whole for text, with the mode given positionally (the older name, kept for its callers)."""
    write_whole(path, text, mode=mode)


def fsync_file(path: Path) -> None:
    """Flush a file another writer made (a Parquet file from polars) to the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
