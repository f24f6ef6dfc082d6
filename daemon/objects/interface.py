"""What every object storage offers, whether it keeps objects in the state directory or in an S3 bucket.

Several replicas of rosterd share uploads, snapshots and change sets through S3-compatible storage; one replica
alone keeps them on its own disk. The layers above ask for an `ObjectStorage` and never learn which of the two
they were given, so both must behave the same: the contract tests in tests/objects run every case on both.

A key is a relative, '/'-separated name ("snapshots/north/u-1/users.parquet"). Both implementations check it
with `check_key`, the local one because a key becomes a path under its root, the S3 one so that a key that
works on one storage works on the other. One difference stays: S3 takes "a" and "a/b" side by side, a folder
cannot, so no key should be another key's folder (rosterd's layout never asks for that).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

# The local storage writes an object under this name first and renames it into place; keys may not use it, so
# a half-written file is never taken for an object.
PARTIAL_PREFIX = ".partial-"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str  # relative to the storage (without an S3 storage's prefix)
    size: int  # bytes
    modified: str  # when it was last written, UTC, e.g. "2026-12-07T16:15:21.000Z"


class ObjectMissing(KeyError):
    """No object under the key (`.key`). A KeyError, so that a caller that treats the storage as a mapping
    catches it as one."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no object {self.key!r}"


class StorageError(Exception):
    """The storage refused or failed a request for a reason other than a missing object (credentials, network,
    a full disk on the server). The message says which request and why, and never holds a secret."""


@runtime_checkable
class ObjectStorage(Protocol):
    """Objects written whole, read whole or in ranges. Every method blocks (callers run them in threads) and
    may be called from several threads at once."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing what was there: a reader sees the old object or the new one."""

    def put_file(self, key: str, local_path: Path) -> None:
        """Store a local file under `key`, whole or not at all; it is streamed, never read into memory."""

    def get_bytes(self, key: str) -> bytes:
        """The whole object; ObjectMissing if there is none."""

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """`length` bytes from `start`; fewer (or none) where the object ends sooner. ObjectMissing if none."""

    def download(self, key: str, local_path: Path) -> None:
        """Copy the object to a local file, which appears whole or not at all. ObjectMissing if none."""

    def info(self, key: str) -> ObjectInfo | None:
        """The object's size and time, or None where there is none."""

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every object whose key starts with `prefix` (a plain string prefix, as S3 takes it), sorted by key."""

    def delete(self, key: str) -> None:
        """Remove the object; one already gone is fine."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with `prefix`; how many there were."""

    def polars_source(self, key: str) -> tuple[str, dict[str, str] | None]:
        """The source and storage_options that polars' scan_parquet and read_parquet take to read the object in
        place, fetching only the byte ranges they need. Pass glob=False too: a key is a name, not a pattern."""

    def close(self) -> None:
        """Let go of connections; the storage is not used after."""


def check_key(key: str) -> str:
    """`key` when it is a valid key; ValueError naming it otherwise.

    Refused: empty keys, absolute ones, backslashes (a Windows path, or an attempt to escape a folder on a
    system that reads them as separators), NUL (no filesystem takes it), empty, '.' and '..' segments (the
    same object under two names, or a way out of the local root) and the local storage's partial prefix."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"an object key may not be empty (got {key!r})")
    if key.startswith("/") or "\\" in key or "\0" in key:
        raise ValueError(f"an object key is relative and holds no backslash or NUL (got {key!r})")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"an object key has no empty, '.' or '..' segments (got {key!r})")
        if segment.startswith(PARTIAL_PREFIX):
            raise ValueError(f"an object key's segments may not start with {PARTIAL_PREFIX!r} (got {key!r})")
    return key


def check_prefix(prefix: str) -> str:
    """`prefix` when it may start a key: empty (everything), or a key's beginning, which may end with '/'."""
    if prefix == "":
        return prefix
    check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def check_range(start: int, length: int) -> None:
    """ValueError unless a range read's start and length are whole numbers of 0 or more."""
    if start < 0 or length < 0:
        raise ValueError(f"a range starts at 0 or later and has a length of 0 or more (got {start}, {length})")


def utc_text(moment: datetime) -> str:
    """A time as ObjectInfo shows it: UTC, milliseconds, 'Z' (the form the store uses for its time stamps)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
