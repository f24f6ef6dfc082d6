"""The outbox's tables: deliveries (one row per snapshot to send to one target, with its attempts and outcome)
and disabled_targets (targets whose receiver said it wants nothing more, until an operator enables them).

Per target, deliveries go out in the order they were queued (rowid order): only a target's oldest open
delivery may be sent, and a delivery goes out against the upload of the target's newest delivered one before
it. Functions take the caller's connection and time (see daemon/store/uploads.py).
"""

from __future__ import annotations

import json

from daemon.store.records import OPEN_DELIVERY_STATES, Delivery, DeliveryState, new_delivery_id
from daemon.store.sql import Db, Row

DELIVERIES = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    target TEXT NOT NULL,
    upload_id TEXT NOT NULL REFERENCES uploads (id),
    idempotency_key TEXT NOT NULL UNIQUE,  -- stable across attempts and restarts: the receiver drops repeats
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    delivered_at TEXT,
    base_upload_id TEXT,  -- the snapshot the target had when this went out (NULL: nothing, all of it was sent)
    last_error TEXT,
    result TEXT,  -- JSON: what the target answered (import ids, files, findings)
    claimed_by TEXT,  -- the replica sending it (in flight), or that sent it last
    lease_until TEXT  -- in flight: the claim lapses then unless the replica renews it
);
CREATE INDEX IF NOT EXISTS deliveries_by_target ON deliveries (tenant, target, state);
"""
DISABLED_TARGETS = """
CREATE TABLE IF NOT EXISTS disabled_targets (
    tenant TEXT NOT NULL,
    target TEXT NOT NULL,
    disabled_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (tenant, target)
);
"""


def idempotency_key(tenant: str, target: str, upload_id: str, day: str | None = None) -> str:
    """One key per upload and target (and per day for a dated delivery): queuing it twice queues it once."""
    return f"{tenant}.{target}.{upload_id}" + (f".{day}" if day is not None else "")


def queue(db: Db, tenant: str, target: str, upload_id: str, key: str, at: str) -> str | None:
    """A pending delivery of `upload_id` to `target`; returns its id, or None when `key` was queued before."""
    delivery_id = new_delivery_id()
    cursor = db.execute(
        "INSERT INTO deliveries (id, tenant, target, upload_id, idempotency_key, state, attempts, next_attempt_at, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
        (delivery_id, tenant, target, upload_id, key, DeliveryState.PENDING, at, at, at),
    )  # fmt: skip
    return delivery_id if cursor.rowcount else None


def queued_since(db: Db, tenant: str, target: str, since: str) -> bool:
    row = db.execute("SELECT 1 FROM deliveries WHERE tenant = ? AND target = ? AND created_at >= ?",
                     (tenant, target, since)).fetchone()  # fmt: skip
    return row is not None


def get(db: Db, delivery_id: str) -> Delivery | None:
    row = db.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    return None if row is None else as_delivery(row)


def open_heads(db: Db) -> list[Delivery]:
    """Each target's oldest open delivery (pending, in flight or failed)."""
    rows = db.execute(
        "SELECT * FROM deliveries d WHERE rowid = (SELECT MIN(rowid) FROM deliveries o WHERE o.tenant = "
        "d.tenant AND o.target = d.target AND o.state IN (?, ?, ?)) ORDER BY rowid", OPEN_DELIVERY_STATES,
    ).fetchall()  # fmt: skip
    return [as_delivery(r) for r in rows]


def claim(db: Db, delivery_id: str, at: str, replica: str, lease_until: str) -> None:
    """In flight for `replica` until `lease_until`, one more attempt, and the base it goes out against: the
    upload of the target's newest delivered delivery before it (NULL: the target has nothing yet)."""
    row = db.execute("SELECT rowid, * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    base = db.execute(
        "SELECT upload_id FROM deliveries WHERE tenant = ? AND target = ? AND state = ? AND rowid < ? "
        "ORDER BY rowid DESC LIMIT 1", (row["tenant"], row["target"], DeliveryState.DELIVERED, row["rowid"]),
    ).fetchone()  # fmt: skip
    db.execute(
        "UPDATE deliveries SET state = ?, attempts = attempts + 1, updated_at = ?, base_upload_id = ?, "
        "claimed_by = ?, lease_until = ? WHERE id = ?",
        (DeliveryState.IN_FLIGHT, at, base["upload_id"] if base else None, replica, lease_until, delivery_id),
    )  # fmt: skip


def renew(db: Db, delivery_id: str, replica: str, lease_until: str) -> bool:
    """The replica's claim on a delivery it is sending lasts until `lease_until`; False when the claim is no
    longer its own (it lapsed and another replica took the delivery over, or the attempt was recorded)."""
    cursor = db.execute("UPDATE deliveries SET lease_until = ? WHERE id = ? AND state = ? AND claimed_by = ?",
                        (lease_until, delivery_id, DeliveryState.IN_FLIGHT, replica))  # fmt: skip
    return cursor.rowcount > 0


def finish(
    db: Db,
    delivery_id: str,
    state: DeliveryState,
    at: str,
    error: str | None,
    result: dict | None,
    next_attempt_at: str | None,
) -> None:
    """An attempt's outcome; `result` and `next_attempt_at` stay as they were when not given. The lease ends."""
    db.execute(
        "UPDATE deliveries SET state = ?, updated_at = ?, last_error = ?, result = COALESCE(?, result), "
        "next_attempt_at = COALESCE(?, next_attempt_at), delivered_at = CASE WHEN ? THEN ? ELSE delivered_at "
        "END, lease_until = NULL WHERE id = ?",
        (state, at, error, json.dumps(result) if result is not None else None, next_attempt_at,
         state is DeliveryState.DELIVERED, at, delivery_id),
    )  # fmt: skip


def resume(db: Db, at: str, replica: str) -> int:
    """Deliveries in flight that no live replica is sending are pending again, due at `at`: those `replica`
    claimed before it restarted, and those whose lease has lapsed. Returns how many."""
    cursor = db.execute(
        "UPDATE deliveries SET state = ?, next_attempt_at = ?, lease_until = NULL WHERE state = ? AND "
        "(claimed_by IS NULL OR claimed_by = ? OR lease_until IS NULL OR lease_until < ?)",
        (DeliveryState.PENDING, at, DeliveryState.IN_FLIGHT, replica, at),
    )  # fmt: skip
    return cursor.rowcount


def newer_delivered(db: Db, delivery_id: str) -> str | None:
    """The newest delivered delivery of the same target queued after `delivery_id` (None: there is none)."""
    row = db.execute(
        "SELECT d.id FROM deliveries d JOIN deliveries given ON given.id = ? WHERE d.tenant = given.tenant AND "
        "d.target = given.target AND d.state = ? AND d.rowid > given.rowid ORDER BY d.rowid DESC LIMIT 1",
        (delivery_id, DeliveryState.DELIVERED),
    ).fetchone()  # fmt: skip
    return None if row is None else row["id"]


def requeue(db: Db, delivery_id: str, reason: str, at: str) -> None:
    """Pending again as if queued at `at`, its attempts counted from zero (the age limit starts over)."""
    db.execute(
        "UPDATE deliveries SET state = ?, attempts = 0, next_attempt_at = ?, updated_at = ?, last_error = ?, "
        "created_at = ? WHERE id = ?",
        (DeliveryState.PENDING, at, at, reason, at, delivery_id),
    )  # fmt: skip


def newest(db: Db, tenant: str | None, upload_id: str | None, limit: int) -> list[Delivery]:
    """Deliveries newest first, of one tenant or upload or all."""
    rows = db.execute(
        "SELECT * FROM deliveries WHERE (? IS NULL OR tenant = ?) AND (? IS NULL OR upload_id = ?) "
        "ORDER BY rowid DESC LIMIT ?", (tenant, tenant, upload_id, upload_id, limit),
    ).fetchall()  # fmt: skip
    return [as_delivery(r) for r in rows]


def last_delivered(db: Db, tenant: str, target: str) -> Delivery | None:
    row = db.execute(
        "SELECT * FROM deliveries WHERE tenant = ? AND target = ? AND state = ? ORDER BY delivered_at DESC, "
        "rowid DESC LIMIT 1", (tenant, target, DeliveryState.DELIVERED),
    ).fetchone()  # fmt: skip
    return None if row is None else as_delivery(row)


def last_failed(db: Db, tenant: str, target: str) -> Delivery | None:
    """The target's newest delivery that failed or died with an error."""
    row = db.execute(
        "SELECT * FROM deliveries WHERE tenant = ? AND target = ? AND last_error IS NOT NULL AND state IN "
        "(?, ?) ORDER BY updated_at DESC, rowid DESC LIMIT 1",
        (tenant, target, DeliveryState.FAILED, DeliveryState.DEAD),
    ).fetchone()  # fmt: skip
    return None if row is None else as_delivery(row)


def counts(db: Db) -> dict[tuple[str, ...], int]:
    """Deliveries per (tenant, target, state)."""
    rows = db.execute(
        "SELECT tenant, target, state, COUNT(*) AS n FROM deliveries GROUP BY tenant, target, state"
    ).fetchall()
    return {(r["tenant"], r["target"], r["state"]): r["n"] for r in rows}


def snapshots_needed(db: Db, tenant: str) -> set[str]:
    """Upload ids of the tenant's open deliveries, and of each target's newest delivered one."""
    rows = db.execute(
        "SELECT upload_id FROM deliveries WHERE tenant = ? AND state IN (?, ?, ?) UNION "
        "SELECT upload_id FROM deliveries d WHERE tenant = ? AND rowid = (SELECT MAX(rowid) FROM deliveries o "
        "WHERE o.tenant = d.tenant AND o.target = d.target AND o.state = ?)",
        (tenant, *OPEN_DELIVERY_STATES, tenant, DeliveryState.DELIVERED),
    ).fetchall()  # fmt: skip
    return {r["upload_id"] for r in rows}


def disable_target(db: Db, tenant: str, target: str, reason: str, at: str) -> None:
    db.execute("INSERT INTO disabled_targets (tenant, target, disabled_at, reason) VALUES (?, ?, ?, ?) ON CONFLICT "
               "(tenant, target) DO UPDATE SET disabled_at = excluded.disabled_at, reason = excluded.reason",
               (tenant, target, at, reason))  # fmt: skip


def enable_target(db: Db, tenant: str, target: str) -> bool:
    """Off the disabled list; True when it was on it."""
    cursor = db.execute("DELETE FROM disabled_targets WHERE tenant = ? AND target = ?", (tenant, target))
    return cursor.rowcount > 0


def disabled_targets(db: Db) -> dict[tuple[str, str], tuple[str, str]]:
    """(tenant, target) -> (when, why) for every disabled target."""
    rows = db.execute("SELECT * FROM disabled_targets").fetchall()
    return {(r["tenant"], r["target"]): (r["disabled_at"], r["reason"]) for r in rows}


def as_delivery(row: Row) -> Delivery:
    fields = {k: row[k] for k in row.keys() if k != "rowid"}
    result = json.loads(fields["result"]) if fields["result"] else None
    return Delivery(**fields | {"state": DeliveryState(fields["state"]), "result": result})
