"""What every store provides, whichever database keeps it: the methods intake, the outbox, receipts, health
and the command line call, with the rules an implementation must keep (see the package docstring for the
tables and the transactions that span them).

`Store` (SQLite, daemon/store/__init__.py) and `PostgresStore` (daemon/store/postgres.py) implement it; the same
contract tests (tests/store/) run against both.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from daemon.store.admin_users import AdminCredentials, AdminUser
from daemon.store.api_clients import ApiClient, ApiCredentials, TokenGrant
from daemon.store.records import Decision, Delivery, DeliveryState, SnapshotRecord, State, Upload
from daemon.store.sftp_state import LoginFailure, SharedBan


@runtime_checkable
class StoreInterface(Protocol):
    """Every method blocks (a commit waits for the disk) and is safe to call from several threads; the
    daemon calls them from a worker thread. Times are text as `stamp` writes them (UTC, milliseconds, `Z`),
    taken once per write from `daemon.store.now`. Every write is one transaction: after a crash the last
    committed state is exactly where an upload or a delivery resumes.

    `targets` names each tenant's delivery targets (a reload replaces it): an upload that becomes a
    tenant's current snapshot gets one delivery per target, in the same transaction.
    """

    targets: dict[str, list[str]]
    replica: str  # this process's name among the replicas sharing the store (its claims carry it)
    lease_seconds: float  # how long a claim lasts unless renewed
    shared: bool  # several replicas may use it (PostgreSQL): their SFTP servers share keys and bans through it

    # -- uploads and their states -------------------------------------------------------------------

    def add(
        self, upload_id: str, tenant: str, name: str, sha256: str, size: int, path: str, judge: bool = True
    ) -> Upload:
        """Record a new upload: `received`, or with `judge`, `duplicate` when it has the bytes of the tenant's
        current upload. Intake passes judge=False and asks `judge_duplicate` when the upload's turn comes, since
        the uploads ahead of it may change which upload is current."""
        ...

    def judge_duplicate(self, upload_id: str) -> Upload:
        """A received upload with the same bytes as its tenant's current upload becomes a duplicate (nothing
        else happens to it); any other stays as it is. Bytes an older upload had are a real upload: sending
        last week's export again takes the roster back to it."""
        ...

    def earlier_with_same_bytes(self, upload: Upload) -> Upload | None:
        """The newest upload of the tenant before `upload` with the same sha256 that was not itself a duplicate."""
        ...

    def set_state(
        self,
        upload_id: str,
        state: State,
        detail: str | None = None,
        path: str | None = None,
        result: dict | None = None,
    ) -> Upload:
        """Move an upload to `state` in one transaction; with `path`, record where its file now lives, with
        `result`, the validation result the state was decided on. A new state's receipt is not written yet; a
        final state ends the lease. Refused when another replica claimed the upload (see `claim_upload`)."""
        ...

    def claim_upload(self, upload_id: str) -> Upload:
        """This replica's turn to process an unfinished upload, until its lease lapses (`lease_seconds` from now)
        unless renewed. Refused when the upload is final already, when another replica holds a lease on it that
        has not lapsed (a lapsed one is taken over), or when an older upload of its tenant is unfinished: a
        tenant's uploads are processed one at a time, in arrival order, across every replica."""
        ...

    def renew_upload(self, upload_id: str) -> bool:
        """Extend this replica's lease on an upload it is processing; False when the lease is not its own any
        more (another replica took the upload over) or the upload is final."""
        ...

    def mark_answered(self, upload_id: str) -> None:
        """The receipt for the upload's current state is written: a restart need not write it again."""
        ...

    def result(self, upload_id: str) -> dict | None:
        """The validation result the upload's state was decided on (None: not validated)."""
        ...

    def unanswered(self, tenant: str | None = None, state: State | None = None) -> list[Upload]:
        """Uploads in a final state (or in `state`) whose receipt is not written yet, oldest first: a crash
        cut it short, or a decision on another upload moved them (held ones superseded)."""
        ...

    def states(self, upload_ids: list[str]) -> dict[str, State]:
        """The recorded state of each of `upload_ids` that is recorded."""
        ...

    def get(self, upload_id: str) -> Upload:
        """The upload; KeyError when there is none."""
        ...

    def unfinished(self) -> list[Upload]:
        """Uploads a crash interrupted, oldest first: they resume from their recorded state."""
        ...

    def stuck(self, since: str) -> list[Upload]:
        """Uploads still received or validating whose state last changed before `since`, oldest first."""
        ...

    def recent(self, tenant: str, limit: int = 20) -> list[Upload]:
        """The tenant's newest uploads, newest first."""
        ...

    def uploads_in(self, states: list[State], tenants: list[str] | None = None, limit: int = 100) -> list[Upload]:
        """The newest `limit` uploads in one of `states` (held ones, say), of `tenants` or all, newest first."""
        ...

    def last_detail(self, upload_id: str) -> str | None:
        """What the latest transition of an upload says about it (same content as ..., approved by ...)."""
        ...

    def history(self, upload_id: str) -> list[tuple[str, str, str | None]]:
        """(state, at, detail) of every state the upload was in, oldest first."""
        ...

    # -- snapshots and operators' decisions on them ----------------------------------------------------

    def record_snapshot(
        self, upload_id: str, snapshot: SnapshotRecord, state: State, result: dict, check_base: bool = True
    ) -> Upload:
        """Catalogue a published snapshot and move its upload to `accepted` or `held`, in one transaction.

        An accepted upload becomes the tenant's current snapshot: every older held upload of the tenant is
        superseded, a pending rebaseline is used up, and a delivery is queued for each of the tenant's
        targets. With `check_base`, raises StaleBase (recording nothing) when the snapshot was diffed against
        one that is no longer the tenant's current one; Refused (recording nothing) when another replica
        claimed the upload since.
        """
        ...

    def current_snapshot(self, tenant: str) -> SnapshotRecord | None:
        """The snapshot the next upload of `tenant` is diffed against: its newest accepted one."""
        ...

    def snapshot(self, upload_id: str) -> SnapshotRecord | None:
        """The snapshot made from the upload (None: none was)."""
        ...

    def snapshots(self, tenant: str) -> list[tuple[SnapshotRecord, Upload]]:
        """Every snapshot of `tenant` with its upload, newest first (pruned ones included, marked)."""
        ...

    def mark_pruned(self, upload_id: str) -> None:
        """The snapshot's folder was deleted by retention; its record stays for `rosterd snapshots`."""
        ...

    def decide(self, upload_id: str, approve: bool, operator: str) -> Upload:
        """An admin's decision on a held upload: approved (accepted, now current) or discarded.

        Only the newest held upload of a tenant may be approved: an older one was diffed against a snapshot
        that the newer one also builds on, so approving it would leave the newer one's change set stale.
        Approving supersedes the older held ones. Raises Refused with the reason when the decision cannot be
        taken (and records nothing).
        """
        ...

    def request_rebaseline(self, tenant: str, operator: str) -> str:
        """Take the tenant's next upload as a fresh baseline; returns the time of the request."""
        ...

    def rebaseline_requested(self, tenant: str) -> tuple[str, str] | None:
        """(when, by whom) if the next upload of `tenant` is to be taken as a fresh baseline."""
        ...

    # -- deliveries (the outbox) -----------------------------------------------------------------------

    def open_heads(self) -> list[Delivery]:
        """Each target's oldest open delivery (pending, in flight or failed).

        Only that one may go: it blocks the newer ones of its target, so a target gets its changes in upload
        order.
        """
        ...

    def claim_delivery(self, delivery_id: str) -> Delivery:
        """Mark a delivery in flight for this replica until its lease lapses (`lease_seconds` from now) and count
        the attempt; record the base it goes out against: the upload of the target's newest delivered delivery
        before it (None: the target has nothing yet). Refused when it is not open any more, or another replica
        holds a lease on it that has not lapsed; a lapsed one is taken over."""
        ...

    def renew_delivery(self, delivery_id: str) -> bool:
        """Extend this replica's lease on a delivery it is sending; False when the lease is not its own any more
        (it lapsed and another replica took the delivery over): the attempt should stop."""
        ...

    def finish_delivery(
        self,
        delivery_id: str,
        state: DeliveryState,
        error: str | None = None,
        result: dict | None = None,
        next_attempt_at: str | None = None,
    ) -> Delivery:
        """Record the outcome of an attempt: delivered, failed (retried at `next_attempt_at`) or dead. Refused
        when another replica took the delivery over meanwhile: its attempt is the one that counts."""
        ...

    def resume_deliveries(self) -> int:
        """At start: deliveries this replica's last run left in flight, and any whose lease lapsed, are pending
        again (their receivers drop repeats by idempotency key); those another live replica is sending are left
        to it. Returns how many."""
        ...

    def replay_delivery(self, delivery_id: str, operator: str, force: bool = False) -> Delivery:
        """Re-queue a delivery (an operator's `rosterd replay`). Refused while it is in flight, and, without
        `force`, when a newer delivery of the same target went out already: replaying the older one would send
        the roster as it was then and undo part of the newer one."""
        ...

    def queue_dated(self, tenant: str, target: str, day: str, since: str) -> Delivery | None:
        """For a target whose scope moves classes by date: once a day, a delivery of the tenant's current
        snapshot, so classes that entered or left the scope today go out without waiting for an upload. Only
        when the target got no delivery since `since` (the day's start in its time zone, as UTC text)."""
        ...

    def counts(self) -> dict[str, dict[tuple[str, ...], int]]:
        """For metrics and `rosterd status`: uploads per (tenant, state), deliveries per (tenant, target, state)."""
        ...

    def target_history(self, tenant: str, target: str) -> tuple[Delivery | None, Delivery | None]:
        """A target's newest delivered delivery and its newest one that failed or died (for `rosterd status`)."""
        ...

    def disable_target(self, tenant: str, target: str, reason: str) -> None:
        """A receiver said it wants nothing more (HTTP 410): its deliveries wait until `rosterd enable-target`."""
        ...

    def pause_target(self, tenant: str, target: str, operator: str) -> str | None:
        """An operator holds a target's deliveries (as a 410 does) until `enable_target`; recorded as a decision.
        Returns when, or None when the target was disabled or paused already."""
        ...

    def enable_target(self, tenant: str, target: str, operator: str = "unknown") -> str | None:
        """Take a target off the disabled list (a 410's or a pause); returns when, or None when it was not on it."""
        ...

    def disabled_targets(self) -> dict[tuple[str, str], tuple[str, str]]:
        """(tenant, target) -> (when, why) for every disabled target."""
        ...

    def delivery(self, delivery_id: str) -> Delivery:
        """The delivery; KeyError when there is none."""
        ...

    def deliveries(self, tenant: str | None = None, upload_id: str | None = None, limit: int = 100) -> list[Delivery]:
        """Deliveries newest first, of one tenant or upload or all."""
        ...

    def snapshots_for_deliveries(self, tenant: str) -> set[str]:
        """Upload ids whose snapshots the outbox still needs: those of open deliveries, and each target's newest
        delivered one (the next delivery to that target is diffed against it)."""
        ...

    # -- decisions, for receipts and the daemon's log -----------------------------------------------------

    def decisions(self, upload_id: str) -> list[Decision]:
        """The decisions that bear on an upload, oldest first: its own (approved, discarded, replays of its
        deliveries, the rebaseline it used up) and each target enabled while a delivery of it waited for that
        target (queued by then, and delivered only after it or not yet)."""
        ...

    def unlogged_decisions(self) -> list[Decision]:
        """Decisions the running daemon has not logged yet, oldest first."""
        ...

    def mark_logged(self, decision_ids: list[int]) -> None:
        """The running daemon logged these decisions: each is logged once."""
        ...

    # -- OneRoster API clients and their tokens ---------------------------------------------------------
    # Neither a client's secret nor a token is ever given to the store: only an argon2 hash of the secret and
    # the sha256 of the token. Token times (`at`, `expires_at`) are the caller's clock, as `stamp` text.

    def add_api_client(self, client_id: str, tenant: str, target: str, secret_hash: str) -> ApiClient:
        """A new client of a tenant's api target; Refused when the id is taken."""
        ...

    def revoke_api_client(self, client_id: str) -> ApiClient:
        """End a client: from this commit on, none of its tokens is good and it gets no new one. Refused when
        there is no such client or it was revoked already."""
        ...

    def api_clients(self, tenant: str | None = None) -> list[ApiClient]:
        """Clients of one tenant or all, by tenant, target and age (revoked ones included, marked)."""
        ...

    def api_credentials(self, client_id: str) -> ApiCredentials | None:
        """The client and its secret's hash, for the token endpoint (None: no such client)."""
        ...

    def record_token(self, token_sha256: str, client_id: str, scopes: list[str], expires_at: str, at: str) -> None:
        """Keep a token just issued at `at` (its client was used then); tokens expired by `at` are deleted."""
        ...

    def token_lookup(self, token_sha256: str, at: str) -> TokenGrant | None:
        """What the token grants, when it is good at `at`: known, not expired, and its client not revoked."""
        ...

    def touch_last_used(self, client_id: str, at: str, unless_since: str | None = None) -> None:
        """The client was used at `at`; with `unless_since`, nothing is written when a use at that time or
        later is recorded already (so a crawl does not commit once per page)."""
        ...

    # -- admin console accounts -------------------------------------------------------------------------
    # No password is ever given to the store: only its argon2id hash. The TOTP secret is kept as given (base32):
    # the login check needs it in clear.

    def add_admin_user(self, name: str, role: str, tenant: str | None, password_hash: str,
                       totp_secret: str | None = None) -> AdminUser:  # fmt: skip
        """A new account: role admin or viewer with no tenant, or district with one (ValueError otherwise);
        Refused when the name is taken, by a disabled account too."""
        ...

    def admin_user(self, name: str) -> AdminUser | None:
        """The account of that name, disabled or not (None: no such account)."""
        ...

    def admin_credentials(self, name: str) -> AdminCredentials | None:
        """The account with its password hash and TOTP secret, for the login check (None: no such account)."""
        ...

    def admin_users(self) -> list[AdminUser]:
        """Every account by name, disabled ones included (marked)."""
        ...

    def set_admin_password(self, name: str, password_hash: str) -> AdminUser:
        """Replace the account's password hash; Refused when there is no such account."""
        ...

    def set_admin_totp(self, name: str, totp_secret: str | None) -> AdminUser:
        """Turn TOTP on with this secret, or off with None; Refused when there is no such account."""
        ...

    def disable_admin_user(self, name: str) -> AdminUser:
        """From this commit on the account cannot log in; Refused when there is no such account or it was
        disabled already."""
        ...

    # -- the store itself -------------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """A real write and commit: fails when the database or its disk no longer takes writes."""
        ...

    # -- what the replicas' SFTP servers share (used when `shared`) -----------------------------------------
    # Times here are unix seconds, the defender's clock.

    def host_key(self, name: str, private_key: str) -> str:
        """The host key every replica presents under `name` (OpenSSH private key text): the one stored, or
        `private_key` when none is yet (the first replica to start gives the cluster its keys)."""
        ...

    def record_login_failures(self, failures: list[LoginFailure], forget_before: float) -> None:
        """Failed logins this replica saw (tagged with its name); failures older than `forget_before` go."""
        ...

    def login_failures_since(self, since: float) -> list[LoginFailure]:
        """Failed logins the other replicas saw at `since` or later, oldest first."""
        ...

    def record_ban(self, ban: SharedBan) -> None:
        """A ban this replica decided; kept when it ends later than the one stored for the address."""
        ...

    def bans(self, ending_after: float) -> list[SharedBan]:
        """Every ban ending after `ending_after` (bans in force, and recent ones a repeat ban counts from)."""
        ...

    def hold_alone(self) -> bool:
        """Hold the store for this process alone for as long as it stays open; False when another process holds
        it. SQLite: the daemon's lock on its state directory does this already, so True. PostgreSQL: a session
        lock on one connection, given up when the store closes or the process dies."""
        ...

    def close(self) -> None:
        """Release the database; the store is not used after."""
        ...
