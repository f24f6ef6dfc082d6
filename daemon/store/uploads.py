"""The uploads table, with each upload's state history (transitions) and the validation result its final state
was decided on (validations): all three are keyed by the upload and written in the same transactions.

Every function takes the connection of a transaction or read the caller holds (daemon/store/connection.py)
and the time `at` the caller decided for it, so that one transaction writes one time into every table.
Arrival order is rowid order, which breaks ties within a millisecond.
"""

from __future__ import annotations

import json

from daemon.store.records import State, Upload
from daemon.store.sql import Db, Row, placeholders

UPLOADS = """
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    received_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    answered_at TEXT,
    claimed_by TEXT,  -- the replica processing it, or that processed it last
    lease_until TEXT  -- claimed and unfinished: the claim lapses then unless the replica renews it
);
CREATE INDEX IF NOT EXISTS uploads_by_tenant ON uploads (tenant, received_at);
CREATE INDEX IF NOT EXISTS uploads_by_hash ON uploads (tenant, sha256);
CREATE INDEX IF NOT EXISTS uploads_by_state ON uploads (state, received_at);
"""
TRANSITIONS = """
CREATE TABLE IF NOT EXISTS transitions (
    upload_id TEXT NOT NULL REFERENCES uploads (id),
    state TEXT NOT NULL,
    at TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS transitions_by_upload ON transitions (upload_id);
"""
VALIDATIONS = """
CREATE TABLE IF NOT EXISTS validations (
    upload_id TEXT PRIMARY KEY REFERENCES uploads (id),
    result TEXT NOT NULL  -- the validator's result as JSON, findings already cut to what a receipt shows
);
"""


TRANSITION = "INSERT INTO transitions (upload_id, state, at, detail) VALUES (?, ?, ?, ?)"


def insert(db: Db, upload: Upload, detail: str | None) -> None:
    """A new upload and the first line of its history."""
    db.execute(
        "INSERT INTO uploads (id, tenant, name, sha256, size, path, state, received_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (upload.id, upload.tenant, upload.name, upload.sha256, upload.size, upload.path, upload.state,
         upload.received_at, upload.updated_at),
    )  # fmt: skip
    db.execute(TRANSITION, (upload.id, upload.state, upload.received_at, detail))


def move(
    db: Db, upload_id: str, state: State, at: str, detail: str | None, path: str | None = None
) -> None:
    """The new state (its receipt not yet written), where the file now lives when `path` is given, and one
    more line of history."""
    db.execute("UPDATE uploads SET state = ?, updated_at = ?, path = COALESCE(?, path), answered_at = NULL, "
               "lease_until = CASE WHEN ? THEN NULL ELSE lease_until END WHERE id = ?",
               (state, at, path, state.final, upload_id))  # fmt: skip
    db.execute(TRANSITION, (upload_id, state, at, detail))


def same_content_as(current: Upload) -> str:
    """The history's detail for a duplicate: which upload it repeats."""
    return f"same content as {current.id}, the upload the current roster came from"


def mark_answered(db: Db, upload_id: str, at: str) -> None:
    db.execute("UPDATE uploads SET answered_at = ? WHERE id = ?", (at, upload_id))


def get(db: Db, upload_id: str) -> Upload | None:
    row = db.execute("SELECT * FROM uploads WHERE id = ?", (upload_id,)).fetchone()
    return None if row is None else as_upload(row)


def earlier_with_same_bytes(db: Db, upload: Upload) -> Upload | None:
    """The newest upload of the tenant before `upload` with the same sha256 that was not itself a duplicate."""
    row = db.execute(
        "SELECT * FROM uploads WHERE tenant = ? AND sha256 = ? AND state != ? AND rowid < (SELECT rowid "
        "FROM uploads WHERE id = ?) ORDER BY rowid DESC LIMIT 1",
        (upload.tenant, upload.sha256, State.DUPLICATE, upload.id),
    ).fetchone()  # fmt: skip
    return None if row is None else as_upload(row)


def held_before(db: Db, tenant: str, upload_id: str) -> list[str]:
    """The tenant's held uploads that arrived before `upload_id`."""
    rows = db.execute(
        "SELECT id FROM uploads WHERE tenant = ? AND state = ? AND rowid < (SELECT rowid FROM uploads WHERE id = ?)",
        (tenant, State.HELD, upload_id),
    ).fetchall()
    return [r["id"] for r in rows]


def held_after(db: Db, tenant: str, upload_id: str) -> str | None:
    """The first of the tenant's held uploads that arrived after `upload_id` (None: there is none)."""
    row = db.execute(
        "SELECT id FROM uploads WHERE tenant = ? AND state = ? AND rowid > (SELECT rowid FROM uploads WHERE id = ?) "
        "ORDER BY rowid", (tenant, State.HELD, upload_id),
    ).fetchone()  # fmt: skip
    return None if row is None else row["id"]


def unanswered(db: Db, states: list[State], tenant: str | None) -> list[Upload]:
    """Uploads in one of `states` whose receipt is not written yet (of `tenant`, or all), oldest first."""
    rows = db.execute(
        f"SELECT * FROM uploads WHERE answered_at IS NULL AND state IN ({placeholders(len(states))}) "
        "AND (? IS NULL OR tenant = ?) ORDER BY received_at, id",
        (*states, tenant, tenant),
    ).fetchall()
    return [as_upload(r) for r in rows]


def states(db: Db, upload_ids: list[str]) -> dict[str, State]:
    if not upload_ids:
        return {}
    rows = db.execute(f"SELECT id, state FROM uploads WHERE id IN ({placeholders(len(upload_ids))})",
                      upload_ids).fetchall()  # fmt: skip
    return {r["id"]: State(r["state"]) for r in rows}


def claim(db: Db, upload_id: str, replica: str, lease_until: str) -> None:
    db.execute("UPDATE uploads SET claimed_by = ?, lease_until = ? WHERE id = ?", (replica, lease_until, upload_id))


def renew(db: Db, upload_id: str, replica: str, lease_until: str) -> bool:
    """Extend `replica`'s claim on an unfinished upload; False when the claim is not its own any more."""
    cursor = db.execute("UPDATE uploads SET lease_until = ? WHERE id = ? AND claimed_by = ? AND state IN (?, ?)",
                        (lease_until, upload_id, replica, State.RECEIVED, State.VALIDATING))  # fmt: skip
    return cursor.rowcount > 0


def first_unfinished(db: Db, tenant: str) -> Upload | None:
    """The tenant's oldest upload still received or validating: the only one that may be processed now."""
    row = db.execute("SELECT * FROM uploads WHERE tenant = ? AND state IN (?, ?) ORDER BY rowid LIMIT 1",
                     (tenant, State.RECEIVED, State.VALIDATING)).fetchone()  # fmt: skip
    return None if row is None else as_upload(row)


def unfinished(db: Db) -> list[Upload]:
    """Uploads still received or validating, oldest first."""
    rows = db.execute(
        "SELECT * FROM uploads WHERE state IN (?, ?) ORDER BY received_at, id", (State.RECEIVED, State.VALIDATING)
    ).fetchall()
    return [as_upload(r) for r in rows]


def recent(db: Db, tenant: str, limit: int) -> list[Upload]:
    rows = db.execute(
        "SELECT * FROM uploads WHERE tenant = ? ORDER BY received_at DESC, id DESC LIMIT ?", (tenant, limit)
    ).fetchall()
    return [as_upload(r) for r in rows]


def in_states(db: Db, states: list[State], tenants: list[str] | None, limit: int) -> list[Upload]:
    """The newest uploads in one of `states`, of `tenants` (None: all), newest first."""
    if not states or tenants == []:
        return []
    where = f"state IN ({placeholders(len(states))})"
    params: list = [str(s) for s in states]
    if tenants is not None:
        where += f" AND tenant IN ({placeholders(len(tenants))})"
        params += tenants
    rows = db.execute(f"SELECT * FROM uploads WHERE {where} ORDER BY received_at DESC, id DESC LIMIT ?",
                      (*params, limit)).fetchall()  # fmt: skip
    return [as_upload(r) for r in rows]


def history(db: Db, upload_id: str) -> list[tuple[str, str, str | None]]:
    """(state, at, detail) of each transition, oldest first."""
    rows = db.execute(
        "SELECT state, at, detail FROM transitions WHERE upload_id = ? ORDER BY rowid", (upload_id,)
    ).fetchall()
    return [(r["state"], r["at"], r["detail"]) for r in rows]


def counts(db: Db) -> dict[tuple[str, ...], int]:
    """Uploads per (tenant, state)."""
    rows = db.execute("SELECT tenant, state, COUNT(*) AS n FROM uploads GROUP BY tenant, state").fetchall()
    return {(r["tenant"], r["state"]): r["n"] for r in rows}


def keep_result(db: Db, upload_id: str, result: dict) -> None:
    """The validation result an upload's state was decided on (replacing an earlier one)."""
    db.execute("INSERT INTO validations (upload_id, result) VALUES (?, ?) ON CONFLICT (upload_id) DO UPDATE SET "
               "result = excluded.result", (upload_id, json.dumps(result)))  # fmt: skip


def result(db: Db, upload_id: str) -> dict | None:
    row = db.execute("SELECT result FROM validations WHERE upload_id = ?", (upload_id,)).fetchone()
    return None if row is None else json.loads(row["result"])


def as_upload(row: Row) -> Upload:
    return Upload(**{k: row[k] for k in row.keys() if k != "rowid"} | {"state": State(row["state"])})
