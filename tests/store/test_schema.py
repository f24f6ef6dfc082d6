"""The database file: the tables a new one gets, and a database made by an older rosterd brought up to date
with its rows kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from daemon.store import State, Store

# The tables the package docstring names, each with the module that owns it.
TABLES = {"uploads", "transitions", "validations", "snapshots", "rebaselines", "deliveries", "disabled_targets",
          "decisions", "heartbeat", "api_clients", "api_tokens", "admin_users", "host_keys", "login_failures", "bans"}  # fmt: skip

# How a rosterd from before receipts were tracked made these two tables: no answered_at, no samples.
OLD_UPLOADS = """CREATE TABLE uploads (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT
NULL, size INTEGER NOT NULL, path TEXT NOT NULL, state TEXT NOT NULL, received_at TEXT NOT NULL, updated_at TEXT
NOT NULL)"""
OLD_SNAPSHOTS = """CREATE TABLE snapshots (upload_id TEXT PRIMARY KEY REFERENCES uploads (id), tenant TEXT NOT NULL,
version TEXT NOT NULL, path TEXT NOT NULL, base_upload_id TEXT, rows TEXT NOT NULL, changes TEXT NOT NULL, holds
TEXT NOT NULL, created_at TEXT NOT NULL, pruned_at TEXT)"""


def columns(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def test_a_new_database_has_every_table_in_wal_mode(tmp_path: Path) -> None:
    Store(tmp_path / "state" / "rosterd.db").close()  # the state directory is made when missing
    with sqlite3.connect(tmp_path / "state" / "rosterd.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert tables - {"sqlite_sequence"} == TABLES


def test_a_database_from_an_older_rosterd_gains_the_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "rosterd.db"
    with sqlite3.connect(path) as db:
        db.execute(OLD_UPLOADS)
        db.execute(OLD_SNAPSHOTS)
        db.execute("INSERT INTO uploads VALUES ('u-1', 'north', 'day1.zip', 'ab', 3, '/u-1', 'accepted', "
                   "'2026-12-01T00:00:00.000Z', '2026-12-01T00:00:01.000Z')")  # fmt: skip
        db.execute("INSERT INTO snapshots VALUES ('u-1', 'north', '1.1', '/s/u-1', NULL, '{}', '{}', '[]', "
                   "'2026-12-01T00:00:01.000Z', NULL)")  # fmt: skip
    store = Store(path)
    old = store.get("u-1")
    assert (old.state, old.answered_at) == (State.ACCEPTED, None)  # its receipt is due again: the safe side
    assert store.current_snapshot("north").samples is None
    store.close()
    assert columns(path, "uploads")[-3:] == ["answered_at", "claimed_by", "lease_until"]
    assert columns(path, "snapshots")[-1] == "samples"
    Store(path).close()  # a second start finds nothing to add
    assert columns(path, "uploads").count("answered_at") == 1 and columns(path, "uploads").count("claimed_by") == 1
