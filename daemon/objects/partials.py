"""Local files written whole from a stream: the local storage's objects and every download.

daemon.files.write_whole does the same for bytes already in memory; an object may be a snapshot's Parquet
file of hundreds of MiB, so here the content is streamed into the partial file by a callback. The partial file
sits in the same folder as its final name (a rename is atomic only within one filesystem), is made with O_EXCL
and O_NOFOLLOW (never through a link someone planted), fsynced, renamed over the final name, and the folder
fsynced so that the new name survives a crash. On any failure the partial file is removed.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from daemon.files import fsync_dir
from daemon.objects.interface import PARTIAL_PREFIX

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_streamed(path: Path, fill: Callable[[BinaryIO], None], mode: int = 0o600) -> None:
    """Create or replace `path` with what `fill` writes to the open file it is given."""
    partial = path.with_name(f"{PARTIAL_PREFIX}{secrets.token_hex(8)}")
    fd = os.open(partial, _CREATE, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def copy_into(path: Path, source: BinaryIO) -> None:
    """Replace `path` with a copy of the open file `source` from its start, whole or not at all."""
    source.seek(0)
    write_streamed(path, lambda out: shutil.copyfileobj(source, out, 1 << 20))


def is_partial(name: str) -> bool:
    return name.startswith(PARTIAL_PREFIX)
