"""The one SQLite connection every table module works through: how it is opened, the schema it is given, the
columns added since the first release, and the lock and transactions that make one connection safe to share
between threads."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from daemon.store import admin_users, api_clients, decisions, deliveries, heartbeat, sftp_state, snapshots, uploads

# Every table, in the order the first schema created them, so that a database made today is laid out as one
# made before the store was split into modules; tables added later come after them.
SCHEMA = "".join([uploads.UPLOADS, uploads.TRANSITIONS, snapshots.SNAPSHOTS, snapshots.REBASELINES,
                  deliveries.DELIVERIES, deliveries.DISABLED_TARGETS, heartbeat.HEARTBEAT, uploads.VALIDATIONS,
                  decisions.DECISIONS, api_clients.API_CLIENTS, api_clients.API_TOKENS,
                  admin_users.ADMIN_USERS, sftp_state.HOST_KEYS, sftp_state.LOGIN_FAILURES,
                  sftp_state.BANS])  # fmt: skip

# Columns a database made by an older rosterd lacks: (table, column, type, since when the column exists).
ADDED_COLUMNS = (
    ("uploads", "answered_at", "TEXT", "receipts are tracked"),
    ("snapshots", "samples", "TEXT", "receipts keep their change-set examples"),
    ("deliveries", "claimed_by", "TEXT", "replicas lease deliveries"),
    ("deliveries", "lease_until", "TEXT", "replicas lease deliveries"),
    ("uploads", "claimed_by", "TEXT", "replicas lease uploads"),
    ("uploads", "lease_until", "TEXT", "replicas lease uploads"),
)


class Database:
    """One connection shared by every thread, and the lock that lets one thread use it at a time.

    In WAL mode, so readers in other processes (`rosterd status`) never block the daemon, and with
    synchronous=FULL, so a recorded state survives a power cut.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.connection.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=FULL")
        with self._lock:
            self.connection.executescript(SCHEMA)
            _add_missing_columns(self.connection)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: every statement inside commits together or not at all. IMMEDIATE takes the
        write lock at the start, so a read inside it cannot be overtaken by another process's write."""
        with self._lock:
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield self.connection
            except BaseException:
                self.connection.execute("ROLLBACK")
                raise
            self.connection.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection for reading, held by this thread alone meanwhile."""
        with self._lock:
            yield self.connection

    def hold_alone(self) -> bool:
        """The daemon locks its state directory, and this file lives in it: nothing more to hold."""
        return True

    def close(self) -> None:
        with self._lock:
            self.connection.close()


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a database from an older rosterd up to the current schema (CREATE ... IF NOT EXISTS leaves an
    existing table as it was)."""
    for table, column, kind, _since in ADDED_COLUMNS:
        present = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
