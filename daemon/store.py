"""SQLite: every upload, its state and the time of each transition.

One database file under the state directory, in WAL mode so readers (`rosterd status`) never block the
daemon. Each state change is one transaction that updates the upload and appends to its history, so after a
crash the last committed state is exactly where the upload resumes.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path


class State(StrEnum):
    RECEIVED = "received"  # moved out of the inbox, hashed, recorded
    VALIDATING = "validating"
    REJECTED = "rejected"
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # same sha256 as an earlier upload of the tenant: nothing else happens

    @property
    def final(self) -> bool:
        return self in (State.REJECTED, State.ACCEPTED, State.DUPLICATE)


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    tenant: str
    name: str  # the file name the uploader chose
    sha256: str
    size: int
    path: str  # where the daemon keeps the file (state directory)
    state: State
    received_at: str
    updated_at: str


SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    received_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_by_tenant ON uploads (tenant, received_at);
CREATE INDEX IF NOT EXISTS uploads_by_hash ON uploads (tenant, sha256);
CREATE TABLE IF NOT EXISTS transitions (
    upload_id TEXT NOT NULL REFERENCES uploads (id),
    state TEXT NOT NULL,
    at TEXT NOT NULL,
    detail TEXT
);
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_upload_id() -> str:
    """Sortable by arrival and readable in a receipt: u-20261123T150102Z-3f9a1c."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"u-{stamp}-{secrets.token_hex(3)}"


class Store:
    """The uploads table. Safe to share between threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a recorded state survives a power cut
        with self._lock:
            self._db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add(self, upload_id: str, tenant: str, name: str, sha256: str, size: int, path: str) -> Upload:
        """Record a new upload: `received`, or `duplicate` when the tenant sent the same bytes before."""
        at = now()
        with self._tx() as db:
            earlier = db.execute(
                "SELECT id FROM uploads WHERE tenant = ? AND sha256 = ? AND state != ? LIMIT 1",
                (tenant, sha256, State.DUPLICATE),
            ).fetchone()
            state = State.DUPLICATE if earlier else State.RECEIVED
            db.execute(
                "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (upload_id, tenant, name, sha256, size, path, state, at, at),
            )
            detail = f"same content as {earlier['id']}" if earlier else None
            db.execute("INSERT INTO transitions VALUES (?, ?, ?, ?)", (upload_id, state, at, detail))
        return self.get(upload_id)

    def set_state(self, upload_id: str, state: State, detail: str | None = None, path: str | None = None) -> Upload:
        """Move an upload to `state` (and, with `path`, record where its file now lives) in one transaction."""
        at = now()
        with self._tx() as db:
            db.execute("UPDATE uploads SET state = ?, updated_at = ?, path = COALESCE(?, path) WHERE id = ?",
                       (state, at, path, upload_id))  # fmt: skip
            db.execute("INSERT INTO transitions VALUES (?, ?, ?, ?)", (upload_id, state, at, detail))
        return self.get(upload_id)

    def get(self, upload_id: str) -> Upload:
        with self._lock:
            row = self._db.execute("SELECT * FROM uploads WHERE id = ?", (upload_id,)).fetchone()
        if row is None:
            raise KeyError(upload_id)
        return _upload(row)

    def exists(self, upload_id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM uploads WHERE id = ?", (upload_id,)).fetchone() is not None

    def unfinished(self) -> list[Upload]:
        """Uploads a crash interrupted, oldest first: they resume from their recorded state."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM uploads WHERE state IN (?, ?) ORDER BY received_at, id",
                (State.RECEIVED, State.VALIDATING),
            ).fetchall()
        return [_upload(r) for r in rows]

    def recent(self, tenant: str, limit: int = 20) -> list[Upload]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM uploads WHERE tenant = ? ORDER BY received_at DESC, id DESC LIMIT ?", (tenant, limit)
            ).fetchall()
        return [_upload(r) for r in rows]

    def history(self, upload_id: str) -> list[tuple[str, str, str | None]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, at, detail FROM transitions WHERE upload_id = ? ORDER BY rowid", (upload_id,)
            ).fetchall()
        return [(r["state"], r["at"], r["detail"]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _upload(row: sqlite3.Row) -> Upload:
    return Upload(**{k: row[k] for k in row.keys()} | {"state": State(row["state"])})
