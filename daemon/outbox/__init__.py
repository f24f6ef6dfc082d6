"""The outbox: durable deliveries of accepted change sets to each tenant's targets.

When an upload becomes a tenant's current snapshot, the same transaction queues one delivery per target
(daemon/store). The outbox sends them: per target, the oldest open delivery goes first and blocks the newer ones,
so a target sees the tenant's rosters in upload order; different targets go in parallel. A delivery carries
the snapshot it brings the target to and the snapshot the target had (the last one delivered to it), so a
target sends exactly what changed in between, and a delivery that died is made good by the next one.

A failed attempt is retried with exponential backoff and jitter until the delivery is older than the
configured age; then, or at once on a permanent failure (the receiver refused the data or the credential),
it is dead: logged as an error and written into the upload's receipt. A stop or crash leaves a delivery in
flight; the next start sends it again (at least once: the idempotency key lets the receiver drop repeats).

Replicas sharing a store share its outbox. A replica sends a delivery under a lease (daemon/store) that it
renews every third of the lease while the attempt runs, so a target's delivery goes out from one replica at a
time. A replica that dies stops renewing; once its lease lapses, another replica takes the delivery over and
sends it again, with the same idempotency key. A replica that finds it lost its lease (a long pause) stops its
attempt and records nothing: the other replica's attempt is the one that counts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from daemon.objects.mirror import NO_MIRROR, Mirror
from daemon.snapshots.storage import META_FILE, Folder
from daemon.store import Delivery, DeliveryState, Refused, StoreInterface, now, stamp


@dataclass(frozen=True, slots=True)
class Job:
    """What a target needs for one attempt of one delivery."""

    delivery: Delivery
    snapshot: Folder  # the snapshot this delivery brings the target to (here, or read in place from the bucket)
    base: Folder | None  # the snapshot the target has already (None: nothing yet, send everything)
    pool: Executor  # for CPU work (polars): never on the event loop


@dataclass(frozen=True, slots=True)
class Outcome:
    state: DeliveryState  # DELIVERED, FAILED (retry) or DEAD (permanent)
    error: str | None = None
    result: dict | None = None  # what the receiver answered, kept with the delivery and shown in the receipt
    retry_after: float | None = None  # seconds the receiver asked us to wait (Retry-After)
    disable_target: bool = False  # the receiver wants nothing more (HTTP 410): hold its deliveries


def delivered(result: dict | None = None) -> Outcome:
    return Outcome(DeliveryState.DELIVERED, result=result)


def retry(error: str, result: dict | None = None, after: float | None = None) -> Outcome:
    return Outcome(DeliveryState.FAILED, error=error, result=result, retry_after=after)


def permanent(error: str, result: dict | None = None, disable_target: bool = False) -> Outcome:
    return Outcome(DeliveryState.DEAD, error=error, result=result, disable_target=disable_target)


class Target(Protocol):
    tenant: str
    name: str

    async def deliver(self, job: Job) -> Outcome: ...

    def next_open(self, now: datetime) -> datetime | None:
        """None when the target may be sent to now; else when its delivery window next opens."""

    def dated_zone(self) -> str | None:
        """The time zone of the target's days when its scope moves classes by date (daily deliveries), else None."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_seconds: float = 30.0
    max_seconds: float = 3600.0
    give_up_seconds: float = 72 * 3600.0
    poll_seconds: float = 5.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Wait before the next attempt: doubling from `first_seconds` up to `max_seconds`, jittered into its
        upper half so that many failing deliveries do not come back in step; never less than `retry_after`."""
        ceiling = min(self.max_seconds, self.first_seconds * 2 ** max(0, attempts - 1))
        return max(ceiling * self.rng.uniform(0.5, 1.0), retry_after or 0.0)


class Outbox:
    def __init__(
        self,
        store: StoreInterface,
        targets: dict[tuple[str, str], Target],
        pool: Executor,
        policy: RetryPolicy,
        log: Callable[..., None],
        on_change: Callable[[Delivery], Awaitable[None]] | None = None,
        on_attempt: Callable[[Delivery, DeliveryState, float], None] | None = None,
        mirror: Mirror = NO_MIRROR,
    ) -> None:
        self.store = store
        self.mirror = mirror  # snapshots another replica made are fetched from it before they are sent
        self.targets = targets  # (tenant, target name) -> Target
        self.pool = pool
        self.policy = policy
        self.log = log  # log(level, event, **fields)
        self.on_change = on_change  # told after each recorded outcome (the receipt is rewritten)
        self.on_attempt = on_attempt  # (delivery, recorded state, seconds the attempt took): for metrics
        self._wake = asyncio.Event()
        self._running: dict[tuple[str, str], asyncio.Task] = {}
        self._loop_task: asyncio.Task | None = None
        self._stopping = False  # the dispatcher's own way out, should a cancel go astray

    async def start(self) -> None:
        resumed = await asyncio.to_thread(self.store.resume_deliveries)
        if resumed:
            self.log("info", "delivery.resumed", count=resumed)
        self._stopping = False
        self._loop_task = asyncio.create_task(self._dispatch_forever(), name="outbox")

    def kick(self) -> None:
        """New deliveries may be due (an upload was accepted or approved)."""
        self._wake.set()

    async def stop(self, grace_seconds: float = 0.0) -> None:
        """Stop sending: nothing new starts, deliveries under way get up to `grace_seconds` to finish. One cut
        off mid-way stays in flight in the database and goes again at the next start (at least once)."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._running:
            _done, cut = await asyncio.wait(set(self._running.values()), timeout=grace_seconds)
            for task in cut:
                task.cancel()
            await asyncio.gather(*cut, return_exceptions=True)
        for target in self.targets.values():
            await target.close()

    async def update_targets(self, targets: dict[tuple[str, str], Target]) -> None:
        """A reload: the targets as configured now. A delivery under way finishes with the target it began with."""
        old, self.targets = self.targets, dict(targets)
        for key, target in old.items():
            if key not in self._running:
                await target.close()
        self.kick()

    async def idle(self) -> None:
        """Wait until nothing is being sent (tests and benchmarks)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
            # From 3.12 a gather of tasks that have ended returns without yielding: yield here, or _finished
            # (scheduled by the task's end) never runs to clear _running and this loop holds the event loop.
            await asyncio.sleep(0)

    async def _dispatch_forever(self) -> None:
        while not self._stopping:
            self._wake.clear()
            await self._queue_dated()
            ready, wake_at = self._open_targets(await asyncio.to_thread(self.store.disabled_targets))
            at = now()
            for head in await asyncio.to_thread(self.store.open_heads):
                key = (head.tenant, head.target)
                if key not in ready or key in self._running:
                    continue  # a closed window, a disabled target, or its delivery is under way here
                if head.state is DeliveryState.IN_FLIGHT:  # another replica sends it, or died sending it
                    lapses = datetime.fromisoformat(head.lease_until) if head.lease_until else None
                    if lapses is not None and head.lease_until >= at:
                        wake_at = lapses if wake_at is None else min(wake_at, lapses)
                        continue
                if head.next_attempt_at > at:  # a retry waiting for its time
                    due = datetime.fromisoformat(head.next_attempt_at)
                    wake_at = due if wake_at is None else min(wake_at, due)
                    continue
                task = asyncio.create_task(self._attempt(head), name=f"delivery-{head.id}")
                self._running[key] = task
                task.add_done_callback(lambda _t, key=key: self._finished(key))
            sleep = self.policy.poll_seconds  # a replay or approval from the command line is seen this soon
            if wake_at is not None:
                sleep = min(sleep, max(0.05, (wake_at - datetime.now(UTC)).total_seconds()))
            await self._wait_for_wake(sleep)

    async def _wait_for_wake(self, seconds: float) -> None:
        """Until kick(), a delivery's end or a stop, or `seconds` pass. Not asyncio.wait_for: on 3.11 it drops a
        cancel that arrives just after the event was set, and the dispatcher went on after stop() cancelled it."""
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _queue_dated(self) -> None:
        """Targets whose scope moves classes by date get a delivery of the current snapshot each day (once,
        and only when nothing else went to them that day)."""
        for (tenant, name), target in self.targets.items():
            zone = target.dated_zone()
            if zone is None:
                continue
            local = datetime.now(ZoneInfo(zone))
            start = local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
            since = stamp(start)
            queued = await asyncio.to_thread(self.store.queue_dated, tenant, name, local.date().isoformat(), since)
            if queued is not None:
                self.log("info", "delivery.queued", tenant=tenant, target=name, upload_id=queued.upload_id,
                         delivery_id=queued.id, reason="the day changed: classes may enter or leave the scope")  # fmt: skip

    def _open_targets(self, disabled: dict) -> tuple[set[tuple[str, str]], datetime | None]:
        """The targets that may be sent to now (not disabled, inside their window, not paused), and the
        soonest time a closed window opens."""
        at = datetime.now(UTC)
        ready, soonest = set(), None
        for key, target in self.targets.items():
            if key in disabled:
                continue
            opens = target.next_open(at)
            if opens is None:
                ready.add(key)
            elif soonest is None or opens < soonest:
                soonest = opens
        return ready, soonest

    def _finished(self, key: tuple[str, str]) -> None:
        self._running.pop(key, None)
        self._wake.set()  # the next delivery of that target may be due now

    async def _attempt(self, delivery: Delivery) -> None:
        target = self.targets[(delivery.tenant, delivery.target)]
        try:
            delivery = await asyncio.to_thread(self.store.claim_delivery, delivery.id)
        except Refused as refused:  # another replica claimed or finished it since the heads were read
            self.log("info", "delivery.skipped", delivery_id=delivery.id, tenant=delivery.tenant,
                     target=delivery.target, reason=str(refused))  # fmt: skip
            return
        fields = {"tenant": delivery.tenant, "target": delivery.target, "upload_id": delivery.upload_id,
                  "delivery_id": delivery.id, "attempt": delivery.attempts}  # fmt: skip
        self.log("info", "delivery.started", base_upload_id=delivery.base_upload_id, replica=delivery.claimed_by,
                 **fields)  # fmt: skip
        began = time.monotonic()
        sending = asyncio.create_task(self._run(target, delivery), name=f"send-{delivery.id}")
        try:
            outcome = await self._while_leased(delivery, sending)
        except asyncio.CancelledError:
            sending.cancel()
            raise  # stopping: the delivery stays in flight and is resumed at the next start
        except Exception as exc:  # a bug in a target must not stop the outbox: the delivery is retried
            self.log("error", "delivery.crashed", error=repr(exc), **fields)
            outcome = retry(f"internal error: {exc!r}")
        if outcome is None:
            self.log("warning", "delivery.lease_lost", **fields)
            return
        try:
            state = await self._record(delivery, outcome, fields)
        except Refused as refused:  # the lease lapsed during a pause and another replica took it over
            self.log("warning", "delivery.lease_lost", reason=str(refused), **fields)
            return
        if self.on_attempt is not None:
            self.on_attempt(delivery, state, time.monotonic() - began)

    async def _while_leased(self, delivery: Delivery, sending: asyncio.Task) -> Outcome | None:
        """The attempt's outcome, renewing the lease every third of it meanwhile; None (the attempt cancelled)
        when a renewal finds the lease gone to another replica."""
        every = self.store.lease_seconds / 3
        while True:
            done, _pending = await asyncio.wait({sending}, timeout=every)
            if done:
                return sending.result()
            try:
                kept = await asyncio.to_thread(self.store.renew_delivery, delivery.id)
            except Exception as exc:  # the store is unreachable for now: the lease may still hold, go on
                self.log("warning", "delivery.lease_not_renewed", delivery_id=delivery.id, error=repr(exc))
                continue
            if not kept:
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
                return None

    async def _run(self, target: Target, delivery: Delivery) -> Outcome:
        snapshot = await asyncio.to_thread(self.store.snapshot, delivery.upload_id)
        if snapshot is None or snapshot.pruned_at is not None:
            return permanent(f"the snapshot of {delivery.upload_id} is no longer kept")
        folder = await asyncio.to_thread(self.mirror.locate_folder, Path(snapshot.path), META_FILE)
        if folder is None:
            return retry(f"the snapshot of {delivery.upload_id} is not in the shared storage (yet)")
        base = None
        if delivery.base_upload_id is not None:
            record = await asyncio.to_thread(self.store.snapshot, delivery.base_upload_id)
            if record is not None and record.pruned_at is None:
                base = await asyncio.to_thread(self.mirror.locate_folder, Path(record.path), META_FILE)
        job = Job(delivery, folder, base, self.pool)
        return await target.deliver(job)

    async def _record(self, delivery: Delivery, outcome: Outcome, fields: dict) -> DeliveryState:
        state, next_at = outcome.state, None
        if state is DeliveryState.FAILED:
            age = (datetime.now(UTC) - datetime.fromisoformat(delivery.created_at)).total_seconds()
            wait = self.policy.delay(delivery.attempts, outcome.retry_after)
            if age + wait > self.policy.give_up_seconds:
                state = DeliveryState.DEAD
            else:
                next_at = stamp(datetime.now(UTC) + timedelta(seconds=wait))
        recorded = await asyncio.to_thread(self.store.finish_delivery, delivery.id, state, outcome.error,
                                           outcome.result, next_at)  # fmt: skip
        if state is DeliveryState.DELIVERED:
            self.log("info", "delivery.delivered", **fields)
        elif state is DeliveryState.FAILED:
            self.log("warning", "delivery.failed", error=outcome.error, next_attempt_at=next_at, **fields)
        else:
            self.log("error", "delivery.dead", error=outcome.error, **fields)
        if outcome.disable_target:
            await asyncio.to_thread(self.store.disable_target, delivery.tenant, delivery.target, outcome.error or "")
            self.log("error", "target.disabled", reason=outcome.error, **fields)
        if self.on_change is not None:
            await self.on_change(recorded)
        return state
