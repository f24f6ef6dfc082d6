"""What the store hands out and takes in, whatever database keeps it: the records, their states, the refusals,
the clock and the ids. Nothing here knows SQL, so a second implementation returns the very same records."""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum


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
    claimed_by: str | None = None  # the replica processing it, or that processed it last
    lease_until: str | None = None  # while claimed and unfinished: the claim lapses then unless renewed


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


class DeliveryState(StrEnum):
    PENDING = "pending"  # waits for its turn (per target, deliveries go out in upload order)
    IN_FLIGHT = "in_flight"  # a worker is sending it; a restart puts it back to pending (at least once)
    DELIVERED = "delivered"
    FAILED = "failed"  # the last attempt failed; retried at next_attempt_at
    DEAD = "dead"  # given up: a permanent failure, or retries beyond the configured age; `rosterd replay` re-queues

    @property
    def open(self) -> bool:
        return self in OPEN_DELIVERY_STATES


# The states in which a delivery still blocks the newer ones of its target.
OPEN_DELIVERY_STATES = (DeliveryState.PENDING, DeliveryState.IN_FLIGHT, DeliveryState.FAILED)


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
    claimed_by: str | None = None  # the replica sending it (in flight), or that sent it last
    lease_until: str | None = None  # while in flight: the replica's claim lapses then unless renewed


LEASE_SECONDS = 60.0  # how long a replica's claim (a delivery, an upload) lasts unless renewed (every third)


class Action(StrEnum):
    """An operator's decision, as `rosterd` commands record it."""

    APPROVED = "approved"  # a held upload was applied (`rosterd approve`)
    DISCARDED = "discarded"  # a held upload was dropped (`rosterd discard`)
    REBASELINE = "rebaseline"  # the tenant's next upload is a fresh baseline (`rosterd rebaseline`)
    REPLAYED = "replayed"  # a delivery was queued again (`rosterd replay`)
    TARGET_ENABLED = "target_enabled"  # a disabled target may be sent to again (`rosterd enable-target`)
    TARGET_PAUSED = "target_paused"  # an operator paused a target (admin console): its deliveries wait


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


class StaleBase(Exception):
    """A snapshot was diffed against one that stopped being the tenant's current one meanwhile."""


class StoreUnavailable(Exception):
    """The configured database cannot be used: not reachable, the login refused, or its schema does not match
    this rosterd. The message says which and what to do (never a password)."""


class Refused(Exception):
    """An operator's request that the recorded states do not allow; the message says why."""


def now() -> str:
    return stamp(datetime.now(UTC))


def later(at: str, seconds: float) -> str:
    """`at` (a stamp) plus `seconds`, as a stamp."""
    return stamp(datetime.fromisoformat(at) + timedelta(seconds=seconds))


def this_host() -> str:
    """The default name of a replica: the machine's name (a daemon adds its SFTP port)."""
    return socket.gethostname()


def stamp(moment: datetime) -> str:
    """A time as the database keeps it: UTC, milliseconds, `Z` (text order is time order)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_upload_id() -> str:
    """Sortable by arrival and readable in a receipt: u-20261123T150102Z-3f9a1c."""
    return _new_id("u")


def new_delivery_id() -> str:
    """Like an upload's id, with `d-`: d-20261123T150102Z-3f9a1c."""
    return _new_id("d")


def _new_id(prefix: str) -> str:
    return f"{prefix}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
