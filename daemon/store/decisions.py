"""The decisions table: what operators decided (approve, discard, rebaseline, replay, enable a target), when
and who, for receipts and for the daemon's log. A decision is written in the transaction that carries it out,
so one is recorded exactly when it took effect. Functions take the caller's connection and time (see
daemon/store/uploads.py).
"""

from __future__ import annotations

from daemon.store.records import Action, Decision
from daemon.store.sql import Db, Row

DECISIONS = """
CREATE TABLE IF NOT EXISTS decisions (  -- what operators decided, when and who: for receipts and the daemon's log
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,
    tenant TEXT NOT NULL,
    upload_id TEXT,  -- the upload it bears on (NULL: a rebaseline not used yet, an enabled target)
    delivery_id TEXT,
    target TEXT,
    operator TEXT NOT NULL,
    at TEXT NOT NULL,
    logged_at TEXT  -- when the running daemon logged it (NULL: not yet)
);
CREATE INDEX IF NOT EXISTS decisions_by_upload ON decisions (upload_id);
CREATE INDEX IF NOT EXISTS decisions_unlogged ON decisions (id) WHERE logged_at IS NULL;
"""


def record(
    db: Db,
    action: Action,
    tenant: str,
    operator: str,
    at: str,
    upload_id: str | None = None,
    delivery_id: str | None = None,
    target: str | None = None,
) -> None:
    db.execute("INSERT INTO decisions (action, tenant, upload_id, delivery_id, target, operator, at) VALUES "
               "(?, ?, ?, ?, ?, ?, ?)", (action, tenant, upload_id, delivery_id, target, operator, at))  # fmt: skip


def attach_rebaseline(db: Db, tenant: str, upload_id: str) -> None:
    """The tenant's rebaseline request now bears on the upload taken as the fresh baseline it asked for."""
    db.execute("UPDATE decisions SET upload_id = ? WHERE tenant = ? AND action = ? AND upload_id IS NULL",
               (upload_id, tenant, Action.REBASELINE))  # fmt: skip


def bearing_on(db: Db, upload_id: str) -> list[Decision]:
    """The upload's own decisions, and each target enabled or paused while a delivery of it waited for that
    target (queued by then, and delivered only after it or not yet), oldest first."""
    rows = db.execute(
        "SELECT * FROM decisions d WHERE d.upload_id = ? OR (d.action IN (?, ?) AND EXISTS (SELECT 1 FROM "
        "deliveries x WHERE x.upload_id = ? AND x.tenant = d.tenant AND x.target = d.target AND "
        "x.created_at <= d.at AND (x.delivered_at IS NULL OR x.delivered_at > d.at))) ORDER BY d.id",
        (upload_id, Action.TARGET_ENABLED, Action.TARGET_PAUSED, upload_id),
    ).fetchall()  # fmt: skip
    return [as_decision(r) for r in rows]


def unlogged(db: Db) -> list[Decision]:
    rows = db.execute("SELECT * FROM decisions WHERE logged_at IS NULL ORDER BY id").fetchall()
    return [as_decision(r) for r in rows]


def mark_logged(db: Db, decision_ids: list[int], at: str) -> None:
    db.executemany("UPDATE decisions SET logged_at = ? WHERE id = ?", [(at, i) for i in decision_ids])


def as_decision(row: Row) -> Decision:
    return Decision(**{k: row[k] for k in row.keys()} | {"action": Action(row["action"])})
