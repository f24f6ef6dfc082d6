"""The snapshot catalogue (snapshots: one row per published snapshot folder) and the rebaseline requests
(rebaselines: a tenant whose next snapshot is to be a fresh baseline, diffed against nothing).

A tenant's current snapshot is its newest snapshot whose upload is accepted; it is what the next upload is
diffed against and what dated deliveries send. Functions take the caller's connection and time (see
daemon/store/uploads.py).
"""

from __future__ import annotations

import json

from daemon.store.records import SnapshotRecord, State, Upload
from daemon.store.uploads import as_upload
from daemon.store.sql import Db, Row

SNAPSHOTS = """
CREATE TABLE IF NOT EXISTS snapshots (
    upload_id TEXT PRIMARY KEY REFERENCES uploads (id),
    tenant TEXT NOT NULL,
    version TEXT NOT NULL,
    path TEXT NOT NULL,
    base_upload_id TEXT,  -- the snapshot this one was diffed against; NULL: first snapshot or rebaseline
    rows TEXT NOT NULL,  -- JSON: rows per entity
    changes TEXT NOT NULL,  -- JSON: added/updated/deleted per entity
    holds TEXT NOT NULL,  -- JSON: the hold thresholds crossed (empty list: none)
    created_at TEXT NOT NULL,
    pruned_at TEXT,
    samples TEXT  -- JSON: the change set's example rows, as the receipt shows them (NULL: none kept)
);
CREATE INDEX IF NOT EXISTS snapshots_by_tenant ON snapshots (tenant, created_at);
"""
REBASELINES = """
CREATE TABLE IF NOT EXISTS rebaselines (
    tenant TEXT PRIMARY KEY,
    requested_at TEXT NOT NULL,
    requested_by TEXT NOT NULL
);
"""

# A tenant's current snapshot: its newest accepted one (rowid breaks ties within a millisecond).
CURRENT_SNAPSHOT = (
    "SELECT s.* FROM snapshots s JOIN uploads u ON u.id = s.upload_id WHERE s.tenant = ? AND u.state = ? "
    "ORDER BY s.created_at DESC, s.rowid DESC LIMIT 1"
)
# The upload a tenant's current snapshot came from.
CURRENT_UPLOAD = f"SELECT * FROM uploads WHERE id = (SELECT upload_id FROM ({CURRENT_SNAPSHOT}) AS newest)"


def current(db: Db, tenant: str) -> SnapshotRecord | None:
    row = db.execute(CURRENT_SNAPSHOT, (tenant, State.ACCEPTED)).fetchone()
    return None if row is None else as_snapshot(row)


def current_upload(db: Db, tenant: str) -> Upload | None:
    """The upload the tenant's current roster came from: the one a duplicate repeats."""
    row = db.execute(CURRENT_UPLOAD, (tenant, State.ACCEPTED)).fetchone()
    return None if row is None else as_upload(row)


def insert(db: Db, upload_id: str, snapshot: SnapshotRecord, at: str) -> None:
    """Catalogue a published snapshot (replacing an earlier record of the same upload: a snapshot made again)."""
    db.execute(
        "INSERT INTO snapshots (upload_id, tenant, version, path, base_upload_id, rows, changes, holds, "
        "created_at, samples) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (upload_id) DO UPDATE SET "
        "tenant = excluded.tenant, version = excluded.version, path = excluded.path, base_upload_id = "
        "excluded.base_upload_id, rows = excluded.rows, changes = excluded.changes, holds = excluded.holds, "
        "created_at = excluded.created_at, samples = excluded.samples, pruned_at = NULL",
        (upload_id, snapshot.tenant, snapshot.version, snapshot.path, snapshot.base_upload_id,
         json.dumps(snapshot.rows), json.dumps(snapshot.changes), json.dumps(snapshot.holds), at,
         json.dumps(snapshot.samples) if snapshot.samples else None),
    )  # fmt: skip


def get(db: Db, upload_id: str) -> SnapshotRecord | None:
    row = db.execute("SELECT * FROM snapshots WHERE upload_id = ?", (upload_id,)).fetchone()
    return None if row is None else as_snapshot(row)


def upload_ids(db: Db, tenant: str) -> list[str]:
    """The uploads of every snapshot of `tenant`, newest snapshot first (pruned ones included)."""
    rows = db.execute(
        "SELECT upload_id FROM snapshots WHERE tenant = ? ORDER BY created_at DESC, rowid DESC", (tenant,)
    ).fetchall()
    return [r["upload_id"] for r in rows]


def mark_pruned(db: Db, upload_id: str, at: str) -> None:
    db.execute("UPDATE snapshots SET pruned_at = ? WHERE upload_id = ?", (at, upload_id))


def request_rebaseline(db: Db, tenant: str, operator: str, at: str) -> None:
    db.execute("INSERT INTO rebaselines (tenant, requested_at, requested_by) VALUES (?, ?, ?) ON CONFLICT (tenant) "
               "DO UPDATE SET requested_at = excluded.requested_at, requested_by = excluded.requested_by",
               (tenant, at, operator))  # fmt: skip


def rebaseline_requested(db: Db, tenant: str) -> tuple[str, str] | None:
    """(when, by whom) if the next upload of `tenant` is to be taken as a fresh baseline."""
    row = db.execute("SELECT * FROM rebaselines WHERE tenant = ?", (tenant,)).fetchone()
    return None if row is None else (row["requested_at"], row["requested_by"])


def use_up_rebaseline(db: Db, tenant: str) -> bool:
    """Forget the tenant's rebaseline request once a snapshot is accepted; True when there was one."""
    return db.execute("DELETE FROM rebaselines WHERE tenant = ?", (tenant,)).rowcount > 0


def as_snapshot(row: Row) -> SnapshotRecord:
    return SnapshotRecord(
        tenant=row["tenant"], version=row["version"], path=row["path"], base_upload_id=row["base_upload_id"],
        rows=json.loads(row["rows"]), changes=json.loads(row["changes"]), holds=json.loads(row["holds"]),
        upload_id=row["upload_id"], created_at=row["created_at"], pruned_at=row["pruned_at"],
        samples=json.loads(row["samples"]) if row["samples"] else None,
    )  # fmt: skip
