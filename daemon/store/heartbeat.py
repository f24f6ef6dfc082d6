"""The heartbeat table: one row, rewritten by the readiness check as proof that the store still takes writes
(a read would succeed on a full disk or a database another process holds locked)."""

from __future__ import annotations

import sqlite3

HEARTBEAT = """
CREATE TABLE IF NOT EXISTS heartbeat (  -- one row, written by the readiness check: proof the store takes writes
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at TEXT NOT NULL
);
"""


def beat(db: sqlite3.Connection, at: str) -> None:
    db.execute("INSERT OR REPLACE INTO heartbeat VALUES (1, ?)", (at,))
