"""The store: every upload, its state and the time of each transition, the snapshot catalogue, the outbox's
deliveries and operators' decisions, in one SQLite database file under the state directory, or in PostgreSQL
(`[store] url`; daemon/store/postgres.py), through the same methods and table modules.

WAL mode lets readers (`rosterd status`) never block the daemon. Each state change is one transaction that
updates the upload and appends to its history, so after a crash the last committed state is exactly where
the upload resumes. A final state is committed together with the validation result it was decided on, and
`answered_at` is set once the receipt is written: an upload that reached its final state but whose receipt a
crash cut short gets that receipt at the next start, from the stored result, without being validated again.
Every method blocks (SQLite commits fsync); the daemon calls them from a worker thread.

Modules (callers import only from `daemon.store`):
    records.py      the records, states and refusals every store hands out, the clock (`now`, `stamp`), ids
    interface.py    StoreInterface: the methods and rules any store provides (SQLite here, PostgreSQL below)
    sql.py          what a table module needs of a connection (`execute`, rows by column name), and the SQL
                    both databases read alike
    connection.py   the one SQLite connection: pragmas, the schema (from the table modules), added columns,
                    the lock, and the transaction every write runs in
    postgres.py     PostgresStore: Store's methods over a pool of PostgreSQL connections, the advisory locks
                    that order writes across processes, `migrate`
    postgres_schema.py  the PostgreSQL schema as numbered migrations
    uploads.py      uploads, transitions (each upload's state history), validations (the result its state
                    was decided on)
    snapshots.py    snapshots (the catalogue of published snapshot folders), rebaselines (pending requests)
    deliveries.py   deliveries (the outbox), disabled_targets (receivers that said 410)
    decisions.py    decisions (what operators decided, when, who; whether the daemon logged it yet)
    heartbeat.py    heartbeat (one row rewritten by the readiness check)
    api_clients.py  api_clients (vendors' client ids and secret hashes), api_tokens (bearer tokens as sha256)
    admin_users.py  admin_users (admin console accounts: role, tenant, password hash, TOTP secret)
    __init__.py     Store: the one object callers hold; each method is one read or one transaction composed
                    from the table modules, with the time of a write taken once (here, from `now`)

Transactions that span tables (each commits whole or not at all):
    add, judge_duplicate    read the tenant's current upload (snapshots joined to uploads), write an upload
                            and its history
    set_state               uploads, transitions, and validations when a result is given
    record_snapshot         snapshots, uploads, transitions, validations; when accepted, also `_make_current`
    decide                  decisions, uploads, transitions; approving also `_make_current`
    _make_current           (inside the two above) older held uploads superseded (uploads, transitions), the
                            rebaseline used up (rebaselines) and its decision tied to this upload
                            (decisions), one delivery queued per configured target (deliveries)
    request_rebaseline      rebaselines, decisions
    replay_delivery         deliveries, decisions
    enable_target           disabled_targets, decisions
    queue_dated             reads the current snapshot, writes deliveries
    record_token            api_tokens (expired ones deleted, the new one added), api_clients (last use)
A read that joins tables (current snapshot: snapshots and uploads; decisions: decisions and deliveries;
counts: uploads and deliveries; snapshots: snapshots and uploads; token_lookup: api_tokens and api_clients)
runs under one lock, so it sees one state.

The PostgreSQL store (postgres.py) is this class over another connection, so it has every method, record,
refusal and transaction above by construction. What it adds is what one process got from SQLite for free:
    - writes one at a time across processes (an advisory lock taken first in every write transaction);
    - the order SQLite's rowid gives, as a generated `rowid` column: uploads by arrival, transitions by
      writing, deliveries per target by queuing, snapshots within a millisecond;
    - text that sorts as bytes (COLLATE "C"), so the times of `daemon.store.now` sort as time;
    - the schema from numbered migrations only, checked at open.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from daemon.store import admin_users as admin_users_table
from daemon.store import api_clients as api_clients_table
from daemon.store import decisions as decisions_table
from daemon.store import deliveries as deliveries_table
from daemon.store import heartbeat as heartbeat_table
from daemon.store import sftp_state as sftp_table
from daemon.store import snapshots as snapshots_table
from daemon.store import uploads as uploads_table
from daemon.store.admin_users import AdminCredentials, AdminUser
from daemon.store.api_clients import ApiClient, ApiCredentials, TokenGrant
from daemon.store.connection import Database
from daemon.store.interface import StoreInterface
from daemon.store.records import (
    Action,
    Decision,
    Delivery,
    DeliveryState,
    Refused,
    SnapshotRecord,
    StaleBase,
    State,
    StoreUnavailable,
    Upload,
    new_delivery_id,
    LEASE_SECONDS,
    later,
    new_upload_id,
    now,
    stamp,
    this_host,
)
from daemon.store.sftp_state import LoginFailure, SharedBan
from daemon.store.sql import Db

__all__ = ["Action", "AdminCredentials", "AdminUser", "ApiClient", "ApiCredentials", "Decision", "Delivery",
           "DeliveryState", "LoginFailure", "Refused", "SharedBan", "SnapshotRecord", "StaleBase", "State", "Store",
           "StoreInterface", "StoreUnavailable", "TokenGrant", "Upload", "new_delivery_id", "new_upload_id", "now",
           "open_store", "stamp"]  # fmt: skip

if TYPE_CHECKING:
    from daemon.store.postgres import PostgresDatabase

Found = TypeVar("Found")


class Store(StoreInterface):
    """The SQLite store (the method docstrings are StoreInterface's). Safe to share between threads: one
    connection, one lock. PostgresStore (postgres.py) keeps these methods and replaces the connection.

    The time of a write is read here, from this module's `now`, once per transaction, and the table modules
    write that one time everywhere (a test moves the store's clock by patching `daemon.store.now`).
    """

    def __init__(self, path: Path, targets: dict[str, list[str]] | None = None) -> None:
        database = Database(path)
        self._begin(database, targets, shared=False)  # one daemon's file: host keys and bans stay in its state
        self._db = database.connection  # the raw connection, for a test that tunes it (busy_timeout)

    def _begin(self, database: Database | PostgresDatabase, targets: dict[str, list[str]] | None,
               shared: bool) -> None:  # fmt: skip
        """What every store holds, whichever database: its connection, the targets, this replica's name and
        lease, and whether replicas share it."""
        self.targets = dict(targets or {})
        self.replica, self.lease_seconds = this_host(), LEASE_SECONDS
        self.shared = shared
        self._database = database

    # -- uploads and their states -------------------------------------------------------------------

    def add(
        self, upload_id: str, tenant: str, name: str, sha256: str, size: int, path: str, judge: bool = True
    ) -> Upload:
        at = now()
        with self._database.transaction() as db:
            current = snapshots_table.current_upload(db, tenant) if judge else None
            repeated = current if current is not None and current.sha256 == sha256 else None
            state = State.DUPLICATE if repeated else State.RECEIVED
            upload = Upload(upload_id, tenant, name, sha256, size, path, state, received_at=at, updated_at=at)
            uploads_table.insert(db, upload, uploads_table.same_content_as(repeated) if repeated else None)
        return self.get(upload_id)

    def judge_duplicate(self, upload_id: str) -> Upload:
        at = now()
        with self._database.transaction() as db:
            self._check_claim(db, upload_id)
            upload = _required(uploads_table.get(db, upload_id), upload_id)
            current = snapshots_table.current_upload(db, upload.tenant) if upload.state is State.RECEIVED else None
            if current is not None and current.sha256 == upload.sha256 and current.id != upload_id:
                uploads_table.move(db, upload_id, State.DUPLICATE, at, uploads_table.same_content_as(current))
        return self.get(upload_id)

    def earlier_with_same_bytes(self, upload: Upload) -> Upload | None:
        with self._database.read() as db:
            return uploads_table.earlier_with_same_bytes(db, upload)

    def set_state(
        self,
        upload_id: str,
        state: State,
        detail: str | None = None,
        path: str | None = None,
        result: dict | None = None,
    ) -> Upload:
        at = now()
        with self._database.transaction() as db:
            self._check_claim(db, upload_id)
            uploads_table.move(db, upload_id, state, at, detail, path)
            if result is not None:
                uploads_table.keep_result(db, upload_id, result)
        return self.get(upload_id)

    def claim_upload(self, upload_id: str) -> Upload:
        at = now()
        with self._database.transaction() as db:
            upload = _required(uploads_table.get(db, upload_id), upload_id)
            if upload.state.final:
                raise Refused(f"upload {upload_id} is {upload.state} already")
            if self._held_elsewhere(upload.claimed_by, upload.lease_until, at):
                raise Refused(f"upload {upload_id} is being processed by {upload.claimed_by} (its lease runs "
                              f"until {upload.lease_until})")  # fmt: skip
            first = uploads_table.first_unfinished(db, upload.tenant)
            if first is not None and first.id != upload_id:
                raise Refused(f"upload {first.id} of {upload.tenant} arrived earlier and is not finished: a "
                              "tenant's uploads are processed one at a time, in arrival order")  # fmt: skip
            uploads_table.claim(db, upload_id, self.replica, later(at, self.lease_seconds))
        return self.get(upload_id)

    def renew_upload(self, upload_id: str) -> bool:
        at = now()
        with self._database.transaction() as db:
            return uploads_table.renew(db, upload_id, self.replica, later(at, self.lease_seconds))

    def _check_claim(self, db: Db, upload_id: str) -> None:
        """Within a write that moves an upload: refused when another replica claimed it since (this one's
        lease lapsed and the other took the upload over, or finished it)."""
        upload = _required(uploads_table.get(db, upload_id), upload_id)
        if self._claimed_elsewhere(upload.claimed_by):
            raise Refused(f"upload {upload_id} was taken over by {upload.claimed_by}: this replica's outcome is "
                          "not recorded")  # fmt: skip

    def _claimed_elsewhere(self, claimed_by: str | None) -> bool:
        """An upload or delivery another replica claimed last (this one's claim, if it had one, is gone)."""
        return claimed_by not in (None, self.replica)

    def _held_elsewhere(self, claimed_by: str | None, lease_until: str | None, at: str) -> bool:
        """Another replica claimed it, and its lease has not lapsed at `at`: not this replica's to take."""
        return self._claimed_elsewhere(claimed_by) and (lease_until or "") >= at

    def mark_answered(self, upload_id: str) -> None:
        at = now()
        with self._database.transaction() as db:
            uploads_table.mark_answered(db, upload_id, at)

    def result(self, upload_id: str) -> dict | None:
        with self._database.read() as db:
            return uploads_table.result(db, upload_id)

    def unanswered(self, tenant: str | None = None, state: State | None = None) -> list[Upload]:
        states = [state] if state is not None else [s for s in State if s.final]
        with self._database.read() as db:
            return uploads_table.unanswered(db, states, tenant)

    def states(self, upload_ids: list[str]) -> dict[str, State]:
        with self._database.read() as db:
            return uploads_table.states(db, upload_ids)

    def get(self, upload_id: str) -> Upload:
        with self._database.read() as db:
            return _required(uploads_table.get(db, upload_id), upload_id)

    def unfinished(self) -> list[Upload]:
        with self._database.read() as db:
            return uploads_table.unfinished(db)

    def stuck(self, since: str) -> list[Upload]:
        return [u for u in self.unfinished() if u.updated_at < since]

    def recent(self, tenant: str, limit: int = 20) -> list[Upload]:
        with self._database.read() as db:
            return uploads_table.recent(db, tenant, limit)

    def uploads_in(self, states: list[State], tenants: list[str] | None = None, limit: int = 100) -> list[Upload]:
        with self._database.read() as db:
            return uploads_table.in_states(db, states, tenants, limit)

    def last_detail(self, upload_id: str) -> str | None:
        history = self.history(upload_id)
        return history[-1][2] if history else None

    def history(self, upload_id: str) -> list[tuple[str, str, str | None]]:
        with self._database.read() as db:
            return uploads_table.history(db, upload_id)

    # -- snapshots and operators' decisions on them ----------------------------------------------------

    def record_snapshot(
        self, upload_id: str, snapshot: SnapshotRecord, state: State, result: dict, check_base: bool = True
    ) -> Upload:
        assert state in (State.ACCEPTED, State.HELD)
        at = now()
        with self._database.transaction() as db:
            self._check_claim(db, upload_id)
            if check_base:
                current = snapshots_table.current(db, snapshot.tenant)
                if (current.upload_id if current else None) != snapshot.base_upload_id:
                    raise StaleBase(upload_id)
            snapshots_table.insert(db, upload_id, snapshot, at)
            uploads_table.move(db, upload_id, state, at, None)
            uploads_table.keep_result(db, upload_id, result)
            if state is State.ACCEPTED:
                self._make_current(db, upload_id, snapshot.tenant, at)
        return self.get(upload_id)

    def _make_current(self, db: Db, upload_id: str, tenant: str, at: str) -> None:
        """Within the transaction that accepts an upload: it is the tenant's current snapshot now, so the
        older held uploads can never be approved (superseded), a pending rebaseline is used up (its decision
        now bears on this upload when this is the fresh baseline it asked for), and each of the tenant's
        targets gets a delivery of it."""
        for held in uploads_table.held_before(db, tenant, upload_id):
            uploads_table.move(db, held, State.SUPERSEDED, at, f"superseded by {upload_id}")
        rebaseline_used = snapshots_table.use_up_rebaseline(db, tenant)
        fresh = snapshots_table.get(db, upload_id)
        if rebaseline_used and fresh is not None and fresh.base_upload_id is None:
            decisions_table.attach_rebaseline(db, tenant, upload_id)
        for target in self.targets.get(tenant, []):
            key = deliveries_table.idempotency_key(tenant, target, upload_id)
            deliveries_table.queue(db, tenant, target, upload_id, key, at)

    def current_snapshot(self, tenant: str) -> SnapshotRecord | None:
        with self._database.read() as db:
            return snapshots_table.current(db, tenant)

    def snapshot(self, upload_id: str) -> SnapshotRecord | None:
        with self._database.read() as db:
            return snapshots_table.get(db, upload_id)

    def snapshots(self, tenant: str) -> list[tuple[SnapshotRecord, Upload]]:
        with self._database.read() as db:
            ids = snapshots_table.upload_ids(db, tenant)
            return [(_required(snapshots_table.get(db, i), i), _required(uploads_table.get(db, i), i)) for i in ids]

    def mark_pruned(self, upload_id: str) -> None:
        at = now()
        with self._database.transaction() as db:
            snapshots_table.mark_pruned(db, upload_id, at)

    def decide(self, upload_id: str, approve: bool, operator: str) -> Upload:
        at = now()
        with self._database.transaction() as db:
            upload = uploads_table.get(db, upload_id)
            if upload is None:
                raise Refused(f"no upload {upload_id}")
            if upload.state is not State.HELD:
                raise Refused(f"upload {upload_id} is {upload.state}, not held")
            action = Action.APPROVED if approve else Action.DISCARDED
            decisions_table.record(db, action, upload.tenant, operator, at, upload_id=upload_id)
            if approve:
                self._approve(db, upload, f"{action} by {operator}", at)
            else:
                uploads_table.move(db, upload_id, State.DISCARDED, at, f"{action} by {operator}")
        return self.get(upload_id)

    def _approve(self, db: Db, upload: Upload, detail: str, at: str) -> None:
        """Within `decide`'s transaction: accept a held upload, unless a newer one of its tenant is held too
        (its change set builds on the same base, so this one would leave it stale)."""
        newer = uploads_table.held_after(db, upload.tenant, upload.id)
        if newer is not None:
            raise Refused(f"upload {newer} of {upload.tenant} is newer and held too: approve or discard that one "
                          "(approving it supersedes this one)")  # fmt: skip
        uploads_table.move(db, upload.id, State.ACCEPTED, at, detail)
        self._make_current(db, upload.id, upload.tenant, at)

    def request_rebaseline(self, tenant: str, operator: str) -> str:
        at = now()
        with self._database.transaction() as db:
            snapshots_table.request_rebaseline(db, tenant, operator, at)
            decisions_table.record(db, Action.REBASELINE, tenant, operator, at)
        return at

    def rebaseline_requested(self, tenant: str) -> tuple[str, str] | None:
        with self._database.read() as db:
            return snapshots_table.rebaseline_requested(db, tenant)

    # -- deliveries (the outbox) -----------------------------------------------------------------------

    def open_heads(self) -> list[Delivery]:
        with self._database.read() as db:
            return deliveries_table.open_heads(db)

    def claim_delivery(self, delivery_id: str) -> Delivery:
        at = now()
        with self._database.transaction() as db:
            delivery = _required(deliveries_table.get(db, delivery_id), delivery_id)
            if delivery.state is DeliveryState.IN_FLIGHT and self._held_elsewhere(delivery.claimed_by,
                                                                                  delivery.lease_until, at):  # fmt: skip
                raise Refused(f"delivery {delivery_id} is being sent by {delivery.claimed_by} (its lease runs "
                              f"until {delivery.lease_until})")  # fmt: skip
            if not delivery.state.open:
                raise Refused(f"delivery {delivery_id} is {delivery.state} already")
            deliveries_table.claim(db, delivery_id, at, self.replica, later(at, self.lease_seconds))
        return self.delivery(delivery_id)

    def renew_delivery(self, delivery_id: str) -> bool:
        at = now()
        with self._database.transaction() as db:
            return deliveries_table.renew(db, delivery_id, self.replica, later(at, self.lease_seconds))

    def finish_delivery(
        self,
        delivery_id: str,
        state: DeliveryState,
        error: str | None = None,
        result: dict | None = None,
        next_attempt_at: str | None = None,
    ) -> Delivery:
        at = now()
        with self._database.transaction() as db:
            delivery = _required(deliveries_table.get(db, delivery_id), delivery_id)
            if self._claimed_elsewhere(delivery.claimed_by):
                raise Refused(f"delivery {delivery_id} was taken over by {delivery.claimed_by}: this attempt's "
                              "outcome is not recorded")  # fmt: skip
            deliveries_table.finish(db, delivery_id, state, at, error, result, next_attempt_at)
        return self.delivery(delivery_id)

    def resume_deliveries(self) -> int:
        at = now()
        with self._database.transaction() as db:
            return deliveries_table.resume(db, at, self.replica)

    def replay_delivery(self, delivery_id: str, operator: str, force: bool = False) -> Delivery:
        at = now()
        with self._database.transaction() as db:
            delivery = deliveries_table.get(db, delivery_id)
            if delivery is None:
                raise Refused(f"no delivery {delivery_id}")
            if delivery.state is DeliveryState.IN_FLIGHT:
                raise Refused(f"delivery {delivery_id} is being sent right now")
            newer = deliveries_table.newer_delivered(db, delivery_id)
            if newer is not None and not force:
                raise Refused(
                    f"delivery {newer} to {delivery.target} is newer and delivered: replaying {delivery_id} would "
                    f"send the roster as of {delivery.upload_id} and undo part of it. Replay {newer} instead, "
                    "or pass --force"
                )
            deliveries_table.requeue(db, delivery_id, f"replay requested by {operator}", at)
            decisions_table.record(db, Action.REPLAYED, delivery.tenant, operator, at, upload_id=delivery.upload_id,
                             delivery_id=delivery_id, target=delivery.target)  # fmt: skip
        return self.delivery(delivery_id)

    def queue_dated(self, tenant: str, target: str, day: str, since: str) -> Delivery | None:
        at = now()
        with self._database.transaction() as db:
            current = snapshots_table.current(db, tenant)
            if current is None or deliveries_table.queued_since(db, tenant, target, since):
                return None
            key = deliveries_table.idempotency_key(tenant, target, current.upload_id, day)
            delivery_id = deliveries_table.queue(db, tenant, target, current.upload_id, key, at)
        return None if delivery_id is None else self.delivery(delivery_id)

    def counts(self) -> dict[str, dict[tuple[str, ...], int]]:
        with self._database.read() as db:
            return {"uploads": uploads_table.counts(db), "deliveries": deliveries_table.counts(db)}

    def target_history(self, tenant: str, target: str) -> tuple[Delivery | None, Delivery | None]:
        with self._database.read() as db:
            return deliveries_table.last_delivered(db, tenant, target), deliveries_table.last_failed(db, tenant, target)

    def disable_target(self, tenant: str, target: str, reason: str) -> None:
        at = now()
        with self._database.transaction() as db:
            deliveries_table.disable_target(db, tenant, target, reason, at)

    def pause_target(self, tenant: str, target: str, operator: str) -> str | None:
        at = now()
        with self._database.transaction() as db:
            if (tenant, target) in deliveries_table.disabled_targets(db):
                return None
            deliveries_table.disable_target(db, tenant, target, f"paused by {operator}", at)
            decisions_table.record(db, Action.TARGET_PAUSED, tenant, operator, at, target=target)
        return at

    def enable_target(self, tenant: str, target: str, operator: str = "unknown") -> str | None:
        at = now()
        with self._database.transaction() as db:
            enabled = deliveries_table.enable_target(db, tenant, target)
            if enabled:
                decisions_table.record(db, Action.TARGET_ENABLED, tenant, operator, at, target=target)
        return at if enabled else None

    def disabled_targets(self) -> dict[tuple[str, str], tuple[str, str]]:
        with self._database.read() as db:
            return deliveries_table.disabled_targets(db)

    def delivery(self, delivery_id: str) -> Delivery:
        with self._database.read() as db:
            return _required(deliveries_table.get(db, delivery_id), delivery_id)

    def deliveries(self, tenant: str | None = None, upload_id: str | None = None, limit: int = 100) -> list[Delivery]:
        with self._database.read() as db:
            return deliveries_table.newest(db, tenant, upload_id, limit)

    def snapshots_for_deliveries(self, tenant: str) -> set[str]:
        with self._database.read() as db:
            return deliveries_table.snapshots_needed(db, tenant)

    # -- decisions, for receipts and the daemon's log -----------------------------------------------------

    def decisions(self, upload_id: str) -> list[Decision]:
        with self._database.read() as db:
            return decisions_table.bearing_on(db, upload_id)

    def unlogged_decisions(self) -> list[Decision]:
        with self._database.read() as db:
            return decisions_table.unlogged(db)

    def mark_logged(self, decision_ids: list[int]) -> None:
        at = now()
        with self._database.transaction() as db:
            decisions_table.mark_logged(db, decision_ids, at)

    # -- OneRoster API clients and their tokens ---------------------------------------------------------

    def add_api_client(self, client_id: str, tenant: str, target: str, secret_hash: str) -> ApiClient:
        at = now()
        with self._database.transaction() as db:
            if api_clients_table.get(db, client_id) is not None:
                raise Refused(f"an api client {client_id} exists already")
            api_clients_table.insert(db, client_id, tenant, target, secret_hash, at)
            return _required(api_clients_table.get(db, client_id), client_id)

    def revoke_api_client(self, client_id: str) -> ApiClient:
        at = now()
        with self._database.transaction() as db:
            client = api_clients_table.get(db, client_id)
            if client is None:
                raise Refused(f"no api client {client_id}")
            if client.revoked_at is not None:
                raise Refused(f"api client {client_id} was revoked already, at {client.revoked_at}")
            api_clients_table.revoke(db, client_id, at)
            return _required(api_clients_table.get(db, client_id), client_id)

    def api_clients(self, tenant: str | None = None) -> list[ApiClient]:
        with self._database.read() as db:
            return api_clients_table.listed(db, tenant)

    def api_credentials(self, client_id: str) -> ApiCredentials | None:
        with self._database.read() as db:
            return api_clients_table.credentials(db, client_id)

    def record_token(self, token_sha256: str, client_id: str, scopes: list[str], expires_at: str, at: str) -> None:
        with self._database.transaction() as db:
            api_clients_table.record_token(db, token_sha256, client_id, scopes, expires_at, at)
            api_clients_table.touch(db, client_id, at, at)

    def token_lookup(self, token_sha256: str, at: str) -> TokenGrant | None:
        with self._database.read() as db:
            return api_clients_table.token(db, token_sha256, at)

    def touch_last_used(self, client_id: str, at: str, unless_since: str | None = None) -> None:
        with self._database.transaction() as db:
            api_clients_table.touch(db, client_id, at, unless_since or at)

    # -- admin console accounts -------------------------------------------------------------------------

    def add_admin_user(self, name: str, role: str, tenant: str | None, password_hash: str,
                       totp_secret: str | None = None) -> AdminUser:  # fmt: skip
        if role not in admin_users_table.ROLES or (role == "district") != (tenant is not None):
            raise ValueError(f"role {role!r} with tenant {tenant!r}: a district account has a tenant, no other does")
        at = now()
        with self._database.transaction() as db:
            if admin_users_table.get(db, name) is not None:
                raise Refused(f"an admin user {name} exists already")
            admin_users_table.insert(db, name, role, tenant, password_hash, totp_secret, at)
            return _required(admin_users_table.get(db, name), name)

    def admin_user(self, name: str) -> AdminUser | None:
        with self._database.read() as db:
            return admin_users_table.get(db, name)

    def admin_credentials(self, name: str) -> AdminCredentials | None:
        with self._database.read() as db:
            return admin_users_table.credentials(db, name)

    def admin_users(self) -> list[AdminUser]:
        with self._database.read() as db:
            return admin_users_table.listed(db)

    def set_admin_password(self, name: str, password_hash: str) -> AdminUser:
        with self._database.transaction() as db:
            _existing_admin_user(db, name)
            admin_users_table.set_password(db, name, password_hash)
            return _required(admin_users_table.get(db, name), name)

    def set_admin_totp(self, name: str, totp_secret: str | None) -> AdminUser:
        with self._database.transaction() as db:
            _existing_admin_user(db, name)
            admin_users_table.set_totp(db, name, totp_secret)
            return _required(admin_users_table.get(db, name), name)

    def disable_admin_user(self, name: str) -> AdminUser:
        at = now()
        with self._database.transaction() as db:
            user = _existing_admin_user(db, name)
            if user.disabled_at is not None:
                raise Refused(f"admin user {name} was disabled already, at {user.disabled_at}")
            admin_users_table.disable(db, name, at)
            return _required(admin_users_table.get(db, name), name)

    # -- what the replicas' SFTP servers share ------------------------------------------------------------

    def host_key(self, name: str, private_key: str) -> str:
        at = now()
        with self._database.transaction() as db:
            return sftp_table.host_key(db, name, private_key, at)

    def record_login_failures(self, failures: list[LoginFailure], forget_before: float) -> None:
        with self._database.transaction() as db:
            sftp_table.record_failures(db, failures, forget_before)

    def login_failures_since(self, since: float) -> list[LoginFailure]:
        with self._database.read() as db:
            return sftp_table.failures_since(db, since, self.replica)

    def record_ban(self, ban: SharedBan) -> None:
        with self._database.transaction() as db:
            sftp_table.record_ban(db, ban)

    def bans(self, ending_after: float) -> list[SharedBan]:
        with self._database.read() as db:
            return sftp_table.bans(db, ending_after)

    # -- the store itself -------------------------------------------------------------------------------

    def heartbeat(self) -> None:
        at = now()
        with self._database.transaction() as db:
            heartbeat_table.beat(db, at)

    def hold_alone(self) -> bool:
        return self._database.hold_alone()

    def close(self) -> None:
        self._database.close()


def open_store(state_dir: Path, targets: dict[str, list[str]], url: str | None = None,
               password: str | None = None) -> StoreInterface:  # fmt: skip
    """The store a configuration names: SQLite in the state directory (no url), or PostgreSQL at `url`
    (StoreUnavailable when it cannot be used)."""
    if url is None:
        return Store(state_dir / "rosterd.db", targets)
    from daemon.store.postgres import PostgresStore  # psycopg is loaded only where it is used

    return PostgresStore(url, password, targets)


def _existing_admin_user(db: Db, name: str) -> AdminUser:
    user = admin_users_table.get(db, name)
    if user is None:
        raise Refused(f"no admin user {name}")
    return user


def _required(found: Found | None, key: str) -> Found:
    """A record looked up by its id: KeyError when there is none, as a dict says it."""
    if found is None:
        raise KeyError(key)
    return found
