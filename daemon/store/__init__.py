"""SQLite: every upload, its state and the time of each transition.

One database file under the state directory, in WAL mode so readers (`rosterd status`) never block the
daemon. Each state change is one transaction that updates the upload and appends to its history, so after a
crash the last committed state is exactly where the upload resumes. A final state is committed together with
the validation result it was decided on, and `answered_at` is set once the receipt is written: an upload that
reached its final state but whose receipt a crash cut short gets that receipt at the next start, from the
stored result, without being validated again.

Every method blocks (SQLite commits fsync); the daemon calls them from a worker thread.
"""

from __future__ import annotations

import json
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
    ACCEPTED = "accepted"  # its snapshot is (or was) the tenant's current one
    HELD = "held"  # its change set crossed a hold threshold: waits for `rosterd approve` or `discard`
    SUPERSEDED = "superseded"  # was held when a newer upload of the tenant was accepted
    DISCARDED = "discarded"  # was held, and an admin discarded it
    DUPLICATE = "duplicate"  # same sha256 as the tenant's current upload (its current roster): nothing else happens
    FAILED = "failed"  # rosterd could not finish it (a worker died twice, a bug): not the district's doing

    @property
    def final(self) -> bool:
        """Intake is done with it (held waits for an admin, not for intake)."""
        return self not in (State.RECEIVED, State.VALIDATING)


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
    answered_at: str | None = None  # when the receipt for the current final state was written


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
    updated_at TEXT NOT NULL,
    answered_at TEXT
);
CREATE INDEX IF NOT EXISTS uploads_by_tenant ON uploads (tenant, received_at);
CREATE INDEX IF NOT EXISTS uploads_by_hash ON uploads (tenant, sha256);
CREATE TABLE IF NOT EXISTS transitions (
    upload_id TEXT NOT NULL REFERENCES uploads (id),
    state TEXT NOT NULL,
    at TEXT NOT NULL,
    detail TEXT
);
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
CREATE TABLE IF NOT EXISTS rebaselines (
    tenant TEXT PRIMARY KEY,
    requested_at TEXT NOT NULL,
    requested_by TEXT NOT NULL
);
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
    result TEXT  -- JSON: what the target answered (import ids, files, findings)
);
CREATE INDEX IF NOT EXISTS deliveries_by_target ON deliveries (tenant, target, state);
CREATE TABLE IF NOT EXISTS disabled_targets (
    tenant TEXT NOT NULL,
    target TEXT NOT NULL,
    disabled_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (tenant, target)
);
CREATE TABLE IF NOT EXISTS heartbeat (  -- one row, written by the readiness check: proof the store takes writes
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS validations (
    upload_id TEXT PRIMARY KEY REFERENCES uploads (id),
    result TEXT NOT NULL  -- the validator's result as JSON, findings already cut to what a receipt shows
);
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


# A tenant's current snapshot: its newest accepted one (rowid breaks ties within a millisecond).
CURRENT_SNAPSHOT = (
    "SELECT s.* FROM snapshots s JOIN uploads u ON u.id = s.upload_id WHERE s.tenant = ? AND u.state = ? "
    "ORDER BY s.created_at DESC, s.rowid DESC LIMIT 1"
)
# The upload a tenant's current snapshot came from.
CURRENT_UPLOAD = f"SELECT * FROM uploads WHERE id = (SELECT upload_id FROM ({CURRENT_SNAPSHOT}))"


def now() -> str:
    return stamp(datetime.now(UTC))


def stamp(moment: datetime) -> str:
    """A time as the database keeps it: UTC, milliseconds, `Z` (text order is time order)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_upload_id() -> str:
    """Sortable by arrival and readable in a receipt: u-20261123T150102Z-3f9a1c."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"u-{stamp}-{secrets.token_hex(3)}"


class DeliveryState(StrEnum):
    PENDING = "pending"  # waits for its turn (per target, deliveries go out in upload order)
    IN_FLIGHT = "in_flight"  # a worker is sending it; a restart puts it back to pending (at least once)
    DELIVERED = "delivered"
    FAILED = "failed"  # the last attempt failed; retried at next_attempt_at
    DEAD = "dead"  # given up: a permanent failure, or retries beyond the configured age; `rosterd replay` re-queues

    @property
    def open(self) -> bool:
        return self in (DeliveryState.PENDING, DeliveryState.IN_FLIGHT, DeliveryState.FAILED)


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    tenant: str
    target: str
    upload_id: str
    idempotency_key: str
    state: DeliveryState
    attempts: int
    next_attempt_at: str
    created_at: str
    updated_at: str
    delivered_at: str | None
    base_upload_id: str | None
    last_error: str | None
    result: dict | None


class Action(StrEnum):
    """An operator's decision, as `rosterd` commands record it."""

    APPROVED = "approved"  # a held upload was applied (`rosterd approve`)
    DISCARDED = "discarded"  # a held upload was dropped (`rosterd discard`)
    REBASELINE = "rebaseline"  # the tenant's next upload is a fresh baseline (`rosterd rebaseline`)
    REPLAYED = "replayed"  # a delivery was queued again (`rosterd replay`)
    TARGET_ENABLED = "target_enabled"  # a disabled target may be sent to again (`rosterd enable-target`)


@dataclass(frozen=True, slots=True)
class Decision:
    id: int
    action: Action
    tenant: str
    upload_id: str | None  # the upload it bears on (None: a rebaseline not used yet, an enabled target)
    delivery_id: str | None
    target: str | None
    operator: str
    at: str  # when it was decided (UTC)
    logged_at: str | None  # when the running daemon logged it


class Store:
    """The uploads table. Safe to share between threads (one connection, one lock).

    `targets` names each tenant's delivery targets: an upload that becomes a tenant's current snapshot gets
    one delivery per target, in the same transaction.
    """

    def __init__(self, path: Path, targets: dict[str, list[str]] | None = None) -> None:
        self.targets = dict(targets or {})
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a recorded state survives a power cut
        with self._lock:
            self._db.executescript(SCHEMA)
            columns = {row["name"] for row in self._db.execute("PRAGMA table_info(uploads)")}
            if "answered_at" not in columns:  # a database from before receipts were tracked
                self._db.execute("ALTER TABLE uploads ADD COLUMN answered_at TEXT")
            columns = {row["name"] for row in self._db.execute("PRAGMA table_info(snapshots)")}
            if "samples" not in columns:  # a database from before receipts kept their change-set examples
                self._db.execute("ALTER TABLE snapshots ADD COLUMN samples TEXT")

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

    def add(
        self, upload_id: str, tenant: str, name: str, sha256: str, size: int, path: str, judge: bool = True
    ) -> Upload:
        """Record a new upload: `received`, or with `judge`, `duplicate` when it has the bytes of the tenant's
        current upload. Intake passes judge=False and asks `judge_duplicate` when the upload's turn comes, since
        the uploads ahead of it may change which upload is current."""
        at = now()
        with self._tx() as db:
            current = db.execute(CURRENT_UPLOAD, (tenant, State.ACCEPTED)).fetchone() if judge else None
            same = current is not None and current["sha256"] == sha256
            state = State.DUPLICATE if same else State.RECEIVED
            db.execute(
                "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (upload_id, tenant, name, sha256, size, path, state, at, at),
            )
            detail = _same_as(current) if same else None
            db.execute("INSERT INTO transitions VALUES (?, ?, ?, ?)", (upload_id, state, at, detail))
        return self.get(upload_id)

    def judge_duplicate(self, upload_id: str) -> Upload:
        """A received upload with the same bytes as its tenant's current upload becomes a duplicate (nothing
        else happens to it); any other stays as it is. Bytes an older upload had are a real upload: sending
        last week's export again takes the roster back to it."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM uploads WHERE id = ?", (upload_id,)).fetchone()
            if row["state"] == State.RECEIVED:
                current = db.execute(CURRENT_UPLOAD, (row["tenant"], State.ACCEPTED)).fetchone()
                if current is not None and current["sha256"] == row["sha256"] and current["id"] != upload_id:
                    self._move(db, upload_id, State.DUPLICATE, now(), _same_as(current))
        return self.get(upload_id)

    def earlier_with_same_bytes(self, upload: Upload) -> Upload | None:
        """The newest upload of the tenant before `upload` with the same sha256 that was not itself a duplicate."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM uploads WHERE tenant = ? AND sha256 = ? AND state != ? AND rowid < (SELECT rowid "
                "FROM uploads WHERE id = ?) ORDER BY rowid DESC LIMIT 1",
                (upload.tenant, upload.sha256, State.DUPLICATE, upload.id),
            ).fetchone()  # fmt: skip
        return None if row is None else _upload(row)

    def set_state(
        self,
        upload_id: str,
        state: State,
        detail: str | None = None,
        path: str | None = None,
        result: dict | None = None,
    ) -> Upload:
        """Move an upload to `state` in one transaction; with `path`, record where its file now lives, with
        `result`, the validation result the state was decided on."""
        with self._tx() as db:
            self._move(db, upload_id, state, now(), detail, path)
            if result is not None:
                _keep_result(db, upload_id, result)
        return self.get(upload_id)

    def mark_answered(self, upload_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE uploads SET answered_at = ? WHERE id = ?", (now(), upload_id))

    def result(self, upload_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM validations WHERE upload_id = ?", (upload_id,)).fetchone()
        return None if row is None else json.loads(row["result"])

    def unanswered(self, tenant: str | None = None, state: State | None = None) -> list[Upload]:
        """Uploads in a final state (or in `state`) whose receipt is not written yet, oldest first: a crash
        cut it short, or a decision on another upload moved them (held ones superseded)."""
        states = [state] if state is not None else [s for s in State if s.final]
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM uploads WHERE answered_at IS NULL AND state IN ({','.join('?' * len(states))}) "
                "AND (? IS NULL OR tenant = ?) ORDER BY received_at, id",
                (*states, tenant, tenant),
            ).fetchall()
        return [_upload(r) for r in rows]

    def states(self, upload_ids: list[str]) -> dict[str, State]:
        """The recorded state of each of `upload_ids` that is recorded."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, state FROM uploads WHERE id IN ({','.join('?' * len(upload_ids))})", upload_ids
            ).fetchall()
        return {r["id"]: State(r["state"]) for r in rows}

    def get(self, upload_id: str) -> Upload:
        with self._lock:
            row = self._db.execute("SELECT * FROM uploads WHERE id = ?", (upload_id,)).fetchone()
        if row is None:
            raise KeyError(upload_id)
        return _upload(row)

    def unfinished(self) -> list[Upload]:
        """Uploads a crash interrupted, oldest first: they resume from their recorded state."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM uploads WHERE state IN (?, ?) ORDER BY received_at, id",
                (State.RECEIVED, State.VALIDATING),
            ).fetchall()
        return [_upload(r) for r in rows]

    def stuck(self, since: str) -> list[Upload]:
        """Uploads still received or validating whose state last changed before `since`, oldest first."""
        return [u for u in self.unfinished() if u.updated_at < since]

    def heartbeat(self) -> None:
        """A real write and commit: fails when the database or its disk no longer takes writes."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO heartbeat VALUES (1, ?)", (now(),))

    def recent(self, tenant: str, limit: int = 20) -> list[Upload]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM uploads WHERE tenant = ? ORDER BY received_at DESC, id DESC LIMIT ?", (tenant, limit)
            ).fetchall()
        return [_upload(r) for r in rows]

    def last_detail(self, upload_id: str) -> str | None:
        """What the latest transition of an upload says about it (same content as ..., approved by ...)."""
        history = self.history(upload_id)
        return history[-1][2] if history else None

    def history(self, upload_id: str) -> list[tuple[str, str, str | None]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, at, detail FROM transitions WHERE upload_id = ? ORDER BY rowid", (upload_id,)
            ).fetchall()
        return [(r["state"], r["at"], r["detail"]) for r in rows]

    # -- snapshots ---------------------------------------------------------------------------------

    def record_snapshot(
        self, upload_id: str, snapshot: SnapshotRecord, state: State, result: dict, check_base: bool = True
    ) -> Upload:
        """Catalogue a published snapshot and move its upload to `accepted` or `held`, in one transaction.

        An accepted upload becomes the tenant's current snapshot: every older held upload of the tenant is
        superseded, and a pending rebaseline is used up. With `check_base`, raises StaleBase (recording
        nothing) when the snapshot was diffed against one that is no longer the tenant's current one.
        """
        assert state in (State.ACCEPTED, State.HELD)
        at = now()
        with self._tx() as db:
            if check_base:
                current = db.execute(CURRENT_SNAPSHOT, (snapshot.tenant, State.ACCEPTED)).fetchone()
                if (current["upload_id"] if current else None) != snapshot.base_upload_id:
                    raise StaleBase(upload_id)
            db.execute(
                "INSERT OR REPLACE INTO snapshots (upload_id, tenant, version, path, base_upload_id, rows, changes, "
                "holds, created_at, samples) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (upload_id, snapshot.tenant, snapshot.version, snapshot.path, snapshot.base_upload_id,
                 json.dumps(snapshot.rows), json.dumps(snapshot.changes), json.dumps(snapshot.holds), at,
                 json.dumps(snapshot.samples) if snapshot.samples else None),
            )  # fmt: skip
            self._move(db, upload_id, state, at, None)
            _keep_result(db, upload_id, result)
            if state is State.ACCEPTED:
                self._accepted(db, upload_id, snapshot.tenant, at)
        return self.get(upload_id)

    def _accepted(self, db: sqlite3.Connection, upload_id: str, tenant: str, at: str) -> None:
        older_held = db.execute(  # rowid: arrival order, even within one millisecond
            "SELECT id FROM uploads WHERE tenant = ? AND state = ? AND rowid < (SELECT rowid FROM uploads WHERE id = ?)",
            (tenant, State.HELD, upload_id),
        ).fetchall()
        for row in older_held:
            self._move(db, row["id"], State.SUPERSEDED, at, f"superseded by {upload_id}")
        used = db.execute("DELETE FROM rebaselines WHERE tenant = ?", (tenant,)).rowcount
        fresh = db.execute("SELECT base_upload_id FROM snapshots WHERE upload_id = ?", (upload_id,)).fetchone()
        if used and fresh is not None and fresh["base_upload_id"] is None:  # taken as the fresh baseline asked for
            db.execute("UPDATE decisions SET upload_id = ? WHERE tenant = ? AND action = ? AND upload_id IS NULL",
                       (upload_id, tenant, Action.REBASELINE))  # fmt: skip
        for target in self.targets.get(tenant, []):
            db.execute(
                "INSERT OR IGNORE INTO deliveries (id, tenant, target, upload_id, idempotency_key, state, attempts, "
                "next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                (new_delivery_id(), tenant, target, upload_id, f"{tenant}.{target}.{upload_id}",
                 DeliveryState.PENDING, at, at, at),
            )  # fmt: skip

    def _move(
        self, db: sqlite3.Connection, upload_id: str, state: State, at: str, detail: str | None, path: str | None = None
    ) -> None:
        """Within a transaction: the new state (its receipt not yet written), where the file now lives when
        `path` is given, and one more line of history."""
        db.execute("UPDATE uploads SET state = ?, updated_at = ?, path = COALESCE(?, path), answered_at = NULL "
                   "WHERE id = ?", (state, at, path, upload_id))  # fmt: skip
        db.execute("INSERT INTO transitions VALUES (?, ?, ?, ?)", (upload_id, state, at, detail))

    def current_snapshot(self, tenant: str) -> SnapshotRecord | None:
        """The snapshot the next upload of `tenant` is diffed against: its newest accepted one."""
        with self._lock:
            row = self._db.execute(CURRENT_SNAPSHOT, (tenant, State.ACCEPTED)).fetchone()
        return None if row is None else _snapshot(row)

    def snapshot(self, upload_id: str) -> SnapshotRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM snapshots WHERE upload_id = ?", (upload_id,)).fetchone()
        return None if row is None else _snapshot(row)

    def snapshots(self, tenant: str) -> list[tuple[SnapshotRecord, Upload]]:
        """Every snapshot of `tenant` with its upload, newest first (pruned ones included, marked)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT upload_id FROM snapshots WHERE tenant = ? ORDER BY created_at DESC, rowid DESC", (tenant,)
            ).fetchall()
        return [(self.snapshot(r["upload_id"]), self.get(r["upload_id"])) for r in rows]  # type: ignore[misc]

    def mark_pruned(self, upload_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE snapshots SET pruned_at = ? WHERE upload_id = ?", (now(), upload_id))

    def decide(self, upload_id: str, approve: bool, operator: str) -> Upload:
        """An admin's decision on a held upload: approved (accepted, now current) or discarded.

        Only the newest held upload of a tenant may be approved: an older one was diffed against a snapshot
        that the newer one also builds on, so approving it would leave the newer one's change set stale.
        Approving supersedes the older held ones. Raises Refused with the reason when the decision cannot be
        taken.
        """
        at = now()
        with self._tx() as db:
            row = db.execute("SELECT rowid, * FROM uploads WHERE id = ?", (upload_id,)).fetchone()
            if row is None:
                raise Refused(f"no upload {upload_id}")
            if row["state"] != State.HELD:
                raise Refused(f"upload {upload_id} is {row['state']}, not held")
            action = Action.APPROVED if approve else Action.DISCARDED
            detail = f"{action} by {operator}"
            _decided(db, action, row["tenant"], operator, at, upload_id=upload_id)
            if approve:
                newer = db.execute(
                    "SELECT id FROM uploads WHERE tenant = ? AND state = ? AND rowid > ? ORDER BY rowid",
                    (row["tenant"], State.HELD, row["rowid"]),
                ).fetchone()
                if newer is not None:
                    raise Refused(f"upload {newer['id']} of {row['tenant']} is newer and held too: approve or discard "
                                  "that one (approving it supersedes this one)")  # fmt: skip
                self._move(db, upload_id, State.ACCEPTED, at, detail)
                self._accepted(db, upload_id, row["tenant"], at)
            else:
                self._move(db, upload_id, State.DISCARDED, at, detail)
        return self.get(upload_id)

    def request_rebaseline(self, tenant: str, operator: str) -> str:
        """Take the tenant's next upload as a fresh baseline; returns the time of the request."""
        at = now()
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO rebaselines VALUES (?, ?, ?)", (tenant, at, operator))
            _decided(db, Action.REBASELINE, tenant, operator, at)
        return at

    def rebaseline_requested(self, tenant: str) -> tuple[str, str] | None:
        """(when, by whom) if the next upload of `tenant` is to be taken as a fresh baseline."""
        with self._lock:
            row = self._db.execute("SELECT * FROM rebaselines WHERE tenant = ?", (tenant,)).fetchone()
        return None if row is None else (row["requested_at"], row["requested_by"])

    # -- deliveries (the outbox) -----------------------------------------------------------------------

    def open_heads(self) -> list[Delivery]:
        """Each target's oldest open delivery (pending, in flight or failed).

        Only that one may go: it blocks the newer ones of its target, so a target gets its changes in upload
        order.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM deliveries d WHERE rowid = (SELECT MIN(rowid) FROM deliveries o WHERE o.tenant = "
                "d.tenant AND o.target = d.target AND o.state IN (?, ?, ?)) ORDER BY rowid", _OPEN,
            ).fetchall()  # fmt: skip
        return [_delivery(r) for r in rows]

    def claim_delivery(self, delivery_id: str) -> Delivery:
        """Mark a delivery in flight and count the attempt; record the base it goes out against: the upload of
        the target's newest delivered delivery before it (None: the target has nothing yet)."""
        with self._tx() as db:
            row = db.execute("SELECT rowid, * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            base = db.execute(
                "SELECT upload_id FROM deliveries WHERE tenant = ? AND target = ? AND state = ? AND rowid < ? "
                "ORDER BY rowid DESC LIMIT 1", (row["tenant"], row["target"], DeliveryState.DELIVERED, row["rowid"]),
            ).fetchone()  # fmt: skip
            db.execute(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, updated_at = ?, base_upload_id = ? "
                "WHERE id = ?", (DeliveryState.IN_FLIGHT, now(), base["upload_id"] if base else None, delivery_id),
            )  # fmt: skip
        return self.delivery(delivery_id)

    def finish_delivery(
        self,
        delivery_id: str,
        state: DeliveryState,
        error: str | None = None,
        result: dict | None = None,
        next_attempt_at: str | None = None,
    ) -> Delivery:
        """Record the outcome of an attempt: delivered, failed (retried at `next_attempt_at`) or dead."""
        at = now()
        with self._tx() as db:
            db.execute(
                "UPDATE deliveries SET state = ?, updated_at = ?, last_error = ?, result = COALESCE(?, result), "
                "next_attempt_at = COALESCE(?, next_attempt_at), delivered_at = CASE WHEN ? THEN ? ELSE delivered_at "
                "END WHERE id = ?",
                (state, at, error, json.dumps(result) if result is not None else None, next_attempt_at,
                 state is DeliveryState.DELIVERED, at, delivery_id),
            )  # fmt: skip
        return self.delivery(delivery_id)

    def resume_deliveries(self) -> int:
        """At start: deliveries a stop or crash left in flight are sent again (their receivers drop repeats by
        idempotency key). Returns how many."""
        with self._tx() as db:
            cursor = db.execute("UPDATE deliveries SET state = ?, next_attempt_at = ? WHERE state = ?",
                                (DeliveryState.PENDING, now(), DeliveryState.IN_FLIGHT))  # fmt: skip
        return cursor.rowcount

    def replay_delivery(self, delivery_id: str, operator: str, force: bool = False) -> Delivery:
        """Re-queue a delivery (an operator's `rosterd replay`). Refused while it is in flight, and, without
        `force`, when a newer delivery of the same target went out already: replaying the older one would send
        the roster as it was then and undo part of the newer one."""
        with self._tx() as db:
            row = db.execute("SELECT rowid, * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
            if row is None:
                raise Refused(f"no delivery {delivery_id}")
            if row["state"] == DeliveryState.IN_FLIGHT:
                raise Refused(f"delivery {delivery_id} is being sent right now")
            newer = db.execute(
                "SELECT id FROM deliveries WHERE tenant = ? AND target = ? AND state = ? AND rowid > ? "
                "ORDER BY rowid DESC LIMIT 1", (row["tenant"], row["target"], DeliveryState.DELIVERED, row["rowid"]),
            ).fetchone()  # fmt: skip
            if newer is not None and not force:
                raise Refused(
                    f"delivery {newer['id']} to {row['target']} is newer and delivered: replaying {delivery_id} would "
                    f"send the roster as of {row['upload_id']} and undo part of it. Replay {newer['id']} instead, "
                    "or pass --force"
                )
            at = now()
            db.execute(
                "UPDATE deliveries SET state = ?, attempts = 0, next_attempt_at = ?, updated_at = ?, last_error = ?, "
                "created_at = ? WHERE id = ?",
                (DeliveryState.PENDING, at, at, f"replay requested by {operator}", at, delivery_id),
            )  # fmt: skip
            _decided(db, Action.REPLAYED, row["tenant"], operator, at, upload_id=row["upload_id"],
                     delivery_id=delivery_id, target=row["target"])  # fmt: skip
        return self.delivery(delivery_id)

    def queue_dated(self, tenant: str, target: str, day: str, since: str) -> Delivery | None:
        """For a target whose scope moves classes by date: once a day, a delivery of the tenant's current
        snapshot, so classes that entered or left the scope today go out without waiting for an upload. Only
        when the target got no delivery since `since` (the day's start in its time zone, as UTC text)."""
        with self._tx() as db:
            current = db.execute(CURRENT_SNAPSHOT, (tenant, State.ACCEPTED)).fetchone()
            if current is None:
                return None
            recent = db.execute("SELECT 1 FROM deliveries WHERE tenant = ? AND target = ? AND created_at >= ?",
                                (tenant, target, since)).fetchone()  # fmt: skip
            if recent is not None:
                return None
            delivery_id, at = new_delivery_id(), now()
            cursor = db.execute(
                "INSERT OR IGNORE INTO deliveries (id, tenant, target, upload_id, idempotency_key, state, attempts, "
                "next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                (delivery_id, tenant, target, current["upload_id"], f"{tenant}.{target}.{current['upload_id']}.{day}",
                 DeliveryState.PENDING, at, at, at),
            )  # fmt: skip
        return self.delivery(delivery_id) if cursor.rowcount else None

    def counts(self) -> dict[str, dict[tuple[str, ...], int]]:
        """For metrics and `rosterd status`: uploads per (tenant, state), deliveries per (tenant, target, state)."""
        with self._lock:
            uploads = self._db.execute("SELECT tenant, state, COUNT(*) AS n FROM uploads GROUP BY tenant, state").fetchall()
            deliveries = self._db.execute(
                "SELECT tenant, target, state, COUNT(*) AS n FROM deliveries GROUP BY tenant, target, state"
            ).fetchall()
        return {"uploads": {(r["tenant"], r["state"]): r["n"] for r in uploads},
                "deliveries": {(r["tenant"], r["target"], r["state"]): r["n"] for r in deliveries}}  # fmt: skip

    def target_history(self, tenant: str, target: str) -> tuple[Delivery | None, Delivery | None]:
        """A target's newest delivered delivery and its newest one that failed or died (for `rosterd status`)."""
        with self._lock:
            good = self._db.execute(
                "SELECT * FROM deliveries WHERE tenant = ? AND target = ? AND state = ? ORDER BY delivered_at DESC, "
                "rowid DESC LIMIT 1", (tenant, target, DeliveryState.DELIVERED),
            ).fetchone()  # fmt: skip
            bad = self._db.execute(
                "SELECT * FROM deliveries WHERE tenant = ? AND target = ? AND last_error IS NOT NULL AND state IN "
                "(?, ?) ORDER BY updated_at DESC, rowid DESC LIMIT 1",
                (tenant, target, DeliveryState.FAILED, DeliveryState.DEAD),
            ).fetchone()  # fmt: skip
        return (_delivery(good) if good else None, _delivery(bad) if bad else None)

    def disable_target(self, tenant: str, target: str, reason: str) -> None:
        """A receiver said it wants nothing more (HTTP 410): its deliveries wait until `rosterd enable-target`."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO disabled_targets VALUES (?, ?, ?, ?)", (tenant, target, now(), reason))

    def enable_target(self, tenant: str, target: str, operator: str = "unknown") -> str | None:
        """Take a target off the disabled list; returns when, or None when it was not on it."""
        at = now()
        with self._tx() as db:
            cursor = db.execute("DELETE FROM disabled_targets WHERE tenant = ? AND target = ?", (tenant, target))
            if cursor.rowcount:
                _decided(db, Action.TARGET_ENABLED, tenant, operator, at, target=target)
        return at if cursor.rowcount else None

    def decisions(self, upload_id: str) -> list[Decision]:
        """The decisions that bear on an upload, oldest first: its own (approved, discarded, replays of its
        deliveries, the rebaseline it used up) and each target enabled while a delivery of it waited for that
        target (queued by then, and delivered only after it or not yet)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM decisions d WHERE d.upload_id = ? OR (d.action = ? AND EXISTS (SELECT 1 FROM "
                "deliveries x WHERE x.upload_id = ? AND x.tenant = d.tenant AND x.target = d.target AND "
                "x.created_at <= d.at AND (x.delivered_at IS NULL OR x.delivered_at > d.at))) ORDER BY d.id",
                (upload_id, Action.TARGET_ENABLED, upload_id),
            ).fetchall()  # fmt: skip
        return [_decision(r) for r in rows]

    def unlogged_decisions(self) -> list[Decision]:
        """Decisions the running daemon has not logged yet, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM decisions WHERE logged_at IS NULL ORDER BY id").fetchall()
        return [_decision(r) for r in rows]

    def mark_logged(self, decision_ids: list[int]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE decisions SET logged_at = ? WHERE id = ?", [(now(), i) for i in decision_ids])

    def disabled_targets(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(tenant, target) -> (when, why) for every disabled target."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM disabled_targets").fetchall()
        return {(r["tenant"], r["target"]): (r["disabled_at"], r["reason"]) for r in rows}

    def delivery(self, delivery_id: str) -> Delivery:
        with self._lock:
            row = self._db.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
        if row is None:
            raise KeyError(delivery_id)
        return _delivery(row)

    def deliveries(self, tenant: str | None = None, upload_id: str | None = None, limit: int = 100) -> list[Delivery]:
        """Deliveries newest first, of one tenant or upload or all."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM deliveries WHERE (? IS NULL OR tenant = ?) AND (? IS NULL OR upload_id = ?) "
                "ORDER BY rowid DESC LIMIT ?", (tenant, tenant, upload_id, upload_id, limit),
            ).fetchall()  # fmt: skip
        return [_delivery(r) for r in rows]

    def snapshots_for_deliveries(self, tenant: str) -> set[str]:
        """Upload ids whose snapshots the outbox still needs: those of open deliveries, and each target's newest
        delivered one (the next delivery to that target is diffed against it)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT upload_id FROM deliveries WHERE tenant = ? AND state IN (?, ?, ?) UNION "
                "SELECT upload_id FROM deliveries d WHERE tenant = ? AND rowid = (SELECT MAX(rowid) FROM deliveries o "
                "WHERE o.tenant = d.tenant AND o.target = d.target AND o.state = ?)",
                (tenant, *_OPEN, tenant, DeliveryState.DELIVERED),
            ).fetchall()  # fmt: skip
        return {r["upload_id"] for r in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()


class StaleBase(Exception):
    """A snapshot was diffed against one that stopped being the tenant's current one meanwhile."""


class Refused(Exception):
    """An operator's request that the recorded states do not allow; the message says why."""


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    tenant: str
    version: str
    path: str  # the snapshot's folder
    base_upload_id: str | None  # the snapshot it was diffed against (None: first snapshot or rebaseline)
    rows: dict[str, int]  # rows per entity
    changes: dict[str, dict[str, int]]  # added/updated/deleted per entity
    holds: list[dict]  # the hold thresholds crossed
    upload_id: str = ""
    created_at: str = ""
    pruned_at: str | None = None
    samples: dict | None = None  # the change set's example rows per entity and action, as a receipt shows them


def _snapshot(row: sqlite3.Row) -> SnapshotRecord:
    return SnapshotRecord(
        tenant=row["tenant"], version=row["version"], path=row["path"], base_upload_id=row["base_upload_id"],
        rows=json.loads(row["rows"]), changes=json.loads(row["changes"]), holds=json.loads(row["holds"]),
        upload_id=row["upload_id"], created_at=row["created_at"], pruned_at=row["pruned_at"],
        samples=json.loads(row["samples"]) if row["samples"] else None,
    )  # fmt: skip


def _same_as(current: sqlite3.Row) -> str:
    return f"same content as {current['id']}, the upload the current roster came from"


def _decided(db: sqlite3.Connection, action: Action, tenant: str, operator: str, at: str, **about: str | None) -> None:
    """Within a decision's own transaction: record it (`about`: upload_id, delivery_id, target)."""
    db.execute("INSERT INTO decisions (action, tenant, upload_id, delivery_id, target, operator, at) VALUES "
               "(?, ?, ?, ?, ?, ?, ?)", (action, tenant, about.get("upload_id"), about.get("delivery_id"),
                                         about.get("target"), operator, at))  # fmt: skip


def _decision(row: sqlite3.Row) -> Decision:
    return Decision(**{k: row[k] for k in row.keys()} | {"action": Action(row["action"])})


_OPEN = (DeliveryState.PENDING, DeliveryState.IN_FLIGHT, DeliveryState.FAILED)


def new_delivery_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"d-{stamp}-{secrets.token_hex(3)}"


def _delivery(row: sqlite3.Row) -> Delivery:
    fields = {k: row[k] for k in row.keys() if k != "rowid"}
    result = json.loads(fields["result"]) if fields["result"] else None
    return Delivery(**fields | {"state": DeliveryState(fields["state"]), "result": result})


def _keep_result(db: sqlite3.Connection, upload_id: str, result: dict) -> None:
    db.execute("INSERT OR REPLACE INTO validations VALUES (?, ?)", (upload_id, json.dumps(result)))


def _upload(row: sqlite3.Row) -> Upload:
    return Upload(**{k: row[k] for k in row.keys()} | {"state": State(row["state"])})
