"""The heartbeat table: one row, rewritten by the readiness check as proof that the store still takes writes
(a read would succeed on a full disk or a database another process holds locked)."""

from __future__ import annotations

from daemon.store.sql import Db

HEARTBEAT = """
CREATE TABLE IF NOT EXISTS heartbeat (  -- one row, written by the readiness check: proof the store takes writes
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at TEXT NOT NULL
);
"""


def beat(db: Db, at: str) -> None:
    db.execute("INSERT INTO heartbeat (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at", (at,))
