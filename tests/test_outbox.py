"""The outbox: one delivery per target for each accepted upload, in upload order per target, retried with
backoff up to an age, dead on a permanent failure, resumed after a restart, replayed on request.

The targets here are scripted stand-ins for a receiver (they answer with the outcomes a test lists); the
outbox, the store and the retry policy are the real ones.
"""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon import store as store_module
from daemon.outbox import Job, Outbox, Outcome, RetryPolicy, delivered, permanent, retry
from daemon.store import DeliveryState, Refused, State, Store, stamp
from tests.test_snapshot_store import record, upload


class ScriptedTarget:
    """Answers each attempt with the next scripted outcome (delivered once the script runs out)."""

    def __init__(self, tenant: str, name: str, script: list[Outcome] | None = None, hold: asyncio.Event | None = None):
        self.tenant, self.name = tenant, name
        self.script = list(script or [])
        self.jobs: list[Job] = []
        self.began: list[datetime] = []  # when each attempt began
        self.hold = hold  # when set: each attempt waits for it (to stop the outbox mid-delivery)
        self.opens = None  # when set: the target's window is closed until then
        self.zone = None  # when set: the target gets a delivery each day (its scope moves classes by date)

    async def deliver(self, job: Job) -> Outcome:
        self.jobs.append(job)
        self.began.append(datetime.now(UTC))
        if self.hold is not None:
            await self.hold.wait()
        return self.script.pop(0) if self.script else delivered({"ok": True})

    def next_open(self, now):
        return self.opens if self.opens is not None and now < self.opens else None

    def dated_zone(self):
        return self.zone

    async def close(self) -> None:
        pass


def policy(**overrides) -> RetryPolicy:
    fields = {"first_seconds": 0.05, "max_seconds": 0.2, "give_up_seconds": 60.0, "poll_seconds": 0.05,
              "rng": random.Random(7)} | overrides  # fmt: skip
    return RetryPolicy(**fields)


@pytest.fixture
def store(tmp_path: Path):
    opened = Store(tmp_path / "rosterd.db", {"north": ["cers", "vendor"]})
    yield opened
    opened.close()


async def run(store: Store, targets: list[ScriptedTarget], tmp_path: Path, until, **policy_fields) -> list:
    """Run an outbox until `until()` holds (or 400 looks, 10 s at the least, pass); return the log lines."""
    lines: list = []
    with ThreadPoolExecutor(1) as pool:
        outbox = Outbox(store, {(t.tenant, t.name): t for t in targets}, pool,
                        policy(**policy_fields), lambda level, event, **f: lines.append((level, event, f)))  # fmt: skip
        await outbox.start()
        try:
            for _ in range(400):
                if await asyncio.to_thread(until):
                    break
                await asyncio.sleep(0.025)
            else:
                raise AssertionError(f"not reached; log: {lines}")
            await outbox.idle()
        finally:
            await outbox.stop()
    return lines


def states(store: Store, target: str) -> list[tuple[str, DeliveryState]]:
    return [(d.upload_id, d.state) for d in reversed(store.deliveries("north")) if d.target == target]


def test_an_accepted_upload_queues_one_delivery_per_target_and_a_held_one_none(store: Store) -> None:
    first, held = upload(store, 1), upload(store, 2)
    record(store, first)
    record(store, held, held=True)
    made = store.deliveries("north")
    assert sorted((d.target, d.upload_id, d.state) for d in made) == [
        ("cers", first, DeliveryState.PENDING), ("vendor", first, DeliveryState.PENDING)]  # fmt: skip
    assert {d.idempotency_key for d in made} == {f"north.cers.{first}", f"north.vendor.{first}"}
    store.decide(held, approve=True, operator="ops")  # approving makes it current: its deliveries are queued
    assert [d.upload_id for d in store.deliveries("north") if d.target == "cers"] == [held, first]


async def test_deliveries_go_out_in_upload_order_each_against_the_last_delivered(store: Store, tmp_path: Path) -> None:
    ids = [upload(store, n) for n in (1, 2, 3)]
    for upload_id in ids:
        record(store, upload_id)
    cers = ScriptedTarget("north", "cers")
    vendor = ScriptedTarget("north", "vendor")
    await run(store, [cers, vendor], tmp_path,
              lambda: all(d.state is DeliveryState.DELIVERED for d in store.deliveries("north")))  # fmt: skip
    for target in (cers, vendor):
        assert [j.delivery.upload_id for j in target.jobs] == ids
        assert [j.delivery.base_upload_id for j in target.jobs] == [None, ids[0], ids[1]]
        assert [j.base.name if j.base else None for j in target.jobs] == [None, ids[0], ids[1]]


async def test_a_failing_delivery_is_retried_with_backoff_and_blocks_the_newer_ones(
    store: Store, tmp_path: Path
) -> None:
    first, second = upload(store, 1), upload(store, 2)
    record(store, first)
    record(store, second)
    cers = ScriptedTarget("north", "cers", [retry("HTTP 503"), retry("timeout"), delivered({"n": 1})])
    vendor = ScriptedTarget("north", "vendor")
    lines = await run(store, [cers, vendor], tmp_path,
                      lambda: states(store, "cers") == [(first, DeliveryState.DELIVERED), (second, DeliveryState.DELIVERED)])  # fmt: skip
    assert [j.delivery.upload_id for j in cers.jobs] == [first, first, first, second]
    assert [j.delivery.attempts for j in cers.jobs] == [1, 2, 3, 1]
    failed = [f for level, event, f in lines if event == "delivery.failed"]
    assert [(f["error"], f["attempt"]) for f in failed] == [("HTTP 503", 1), ("timeout", 2)]
    assert all(level == "warning" for level, event, _ in lines if event == "delivery.failed")
    assert [j.delivery.upload_id for j in vendor.jobs] == [first, second]  # another target is not held up


def test_backoff_doubles_up_to_the_cap_with_jitter_and_honours_retry_after() -> None:
    rules = RetryPolicy(first_seconds=10, max_seconds=100, rng=random.Random(1))
    for attempts, ceiling in ((1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (9, 100)):
        waits = {rules.delay(attempts) for _ in range(20)}
        assert all(ceiling / 2 <= w <= ceiling for w in waits) and len(waits) > 1
    assert rules.delay(1, retry_after=500) == 500


async def test_a_permanent_failure_is_dead_at_once_and_the_next_delivery_carries_its_changes(
    store: Store, tmp_path: Path
) -> None:
    first, second = upload(store, 1), upload(store, 2)
    record(store, first)
    record(store, second)
    cers = ScriptedTarget("north", "cers", [permanent("BAD_DATA: Row: 3 Failure: Invalid subject: Art", {"files": []})])
    lines = await run(store, [cers, ScriptedTarget("north", "vendor")], tmp_path,
                      lambda: states(store, "cers") == [(first, DeliveryState.DEAD), (second, DeliveryState.DELIVERED)])  # fmt: skip
    dead = next(d for d in store.deliveries("north") if d.target == "cers" and d.upload_id == first)
    assert dead.attempts == 1 and dead.last_error.startswith("BAD_DATA: Row: 3") and dead.result == {"files": []}
    assert ("error", "delivery.dead") in [(level, event) for level, event, _ in lines]
    assert cers.jobs[1].delivery.base_upload_id is None  # the dead one never reached CERS: all of it again


def record_queued_ago(store: Store, upload_id: str, age: timedelta, monkeypatch: pytest.MonkeyPatch) -> None:
    """Record an accepted upload as if it (and so its deliveries) had been recorded `age` ago."""
    with monkeypatch.context() as clock:
        clock.setattr(store_module, "now", lambda: stamp(datetime.now(UTC) - age))
        record(store, upload_id)


async def test_a_delivery_still_failing_72_hours_after_it_was_queued_is_dead(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The age is the store's record of when the delivery was queued: a minute short of 72 hours, a retry
    after a short wait still fits, one whose target asks to come back in two minutes does not."""
    first = upload(store, 1)
    record_queued_ago(store, first, timedelta(hours=72) - timedelta(minutes=1), monkeypatch)
    cers = ScriptedTarget("north", "cers", [retry("HTTP 500"), retry("HTTP 429", after=120)])
    lines = await run(store, [cers], tmp_path, lambda: states(store, "cers") == [(first, DeliveryState.DEAD)],
                      give_up_seconds=72 * 3600.0)  # fmt: skip
    dead = next(d for d in store.deliveries("north") if d.target == "cers")
    assert (dead.attempts, dead.last_error) == (2, "HTTP 429")
    assert [e for level, e, _ in lines if level != "info"] == ["delivery.failed", "delivery.dead"]


async def test_a_delivery_queued_over_72_hours_ago_is_dead_at_its_first_failure(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = upload(store, 1)
    record_queued_ago(store, first, timedelta(hours=73), monkeypatch)  # e.g. its target's window stayed shut
    cers = ScriptedTarget("north", "cers", [retry("HTTP 503")])
    await run(store, [cers], tmp_path, lambda: states(store, "cers") == [(first, DeliveryState.DEAD)],
              give_up_seconds=72 * 3600.0)  # fmt: skip
    dead = next(d for d in store.deliveries("north") if d.target == "cers")
    assert (dead.attempts, dead.last_error) == (1, "HTTP 503")


async def test_a_delivery_cut_off_by_a_stop_is_sent_again_at_the_next_start(store: Store, tmp_path: Path) -> None:
    first = upload(store, 1)
    record(store, first)
    stuck = ScriptedTarget("north", "cers", hold=asyncio.Event())
    with ThreadPoolExecutor(1) as pool:
        outbox = Outbox(store, {("north", "cers"): stuck}, pool, policy(), lambda *a, **f: None)
        await outbox.start()
        while not stuck.jobs:
            await asyncio.sleep(0.02)
        await outbox.stop()  # mid-delivery, as a SIGTERM or a crash would
    assert states(store, "cers") == [(first, DeliveryState.IN_FLIGHT)]
    again = ScriptedTarget("north", "cers")
    lines = await run(store, [again], tmp_path, lambda: states(store, "cers") == [(first, DeliveryState.DELIVERED)])
    assert ("info", "delivery.resumed", {"count": 1}) in lines
    assert again.jobs[0].delivery.idempotency_key == stuck.jobs[0].delivery.idempotency_key  # the receiver drops repeats
    assert again.jobs[0].delivery.attempts == 2


async def test_replay_requeues_a_dead_delivery_and_refuses_one_that_would_undo_a_newer(
    store: Store, tmp_path: Path
) -> None:
    first, second = upload(store, 1), upload(store, 2)
    record(store, first)
    cers = ScriptedTarget("north", "cers", [permanent("403: may not write groups")])
    await run(store, [cers], tmp_path, lambda: states(store, "cers") == [(first, DeliveryState.DEAD)])
    dead = next(d for d in store.deliveries("north") if d.target == "cers")
    replayed = store.replay_delivery(dead.id, "ops")
    assert (replayed.state, replayed.attempts, replayed.last_error) == (DeliveryState.PENDING, 0, "replay requested by ops")
    await run(store, [cers], tmp_path, lambda: states(store, "cers") == [(first, DeliveryState.DELIVERED)])
    record(store, second)
    await run(store, [cers], tmp_path, lambda: states(store, "cers")[-1] == (second, DeliveryState.DELIVERED))
    with pytest.raises(Refused, match="is newer and delivered"):
        store.replay_delivery(dead.id, "ops")
    assert store.replay_delivery(dead.id, "ops", force=True).state is DeliveryState.PENDING
    with pytest.raises(Refused, match="no delivery"):
        store.replay_delivery("d-nope", "ops")


def test_snapshots_needed_by_the_outbox(store: Store) -> None:
    first, second, third = upload(store, 1), upload(store, 2), upload(store, 3)
    for upload_id in (first, second, third):
        record(store, upload_id)
    by = {(d.target, d.upload_id): d for d in store.deliveries("north")}
    for target in ("cers", "vendor"):
        store.claim_delivery(by[(target, first)].id)
        store.finish_delivery(by[(target, first)].id, DeliveryState.DELIVERED)
    store.claim_delivery(by[("cers", second)].id)
    store.finish_delivery(by[("cers", second)].id, DeliveryState.DELIVERED)
    # cers has second (its base for third); vendor still has first, and second and third wait for it.
    assert store.snapshots_for_deliveries("north") == {first, second, third}
    assert store.get(first).state is State.ACCEPTED


async def test_a_closed_window_or_a_disabled_target_holds_its_deliveries(store: Store, tmp_path: Path) -> None:
    """The cers target's delivery shows the outbox went round its targets; the vendor's stays untried, with
    the reason on record: its window is closed, then the target is disabled."""
    first, second = upload(store, 1), upload(store, 2)
    record(store, first)
    cers = ScriptedTarget("north", "cers")
    vendor = ScriptedTarget("north", "vendor")
    vendor.opens = datetime.now(UTC) + timedelta(hours=1)  # its window opens in an hour
    await run(store, [cers, vendor], tmp_path, lambda: states(store, "cers") == [(first, DeliveryState.DELIVERED)])
    assert vendor.jobs == [] and states(store, "vendor") == [(first, DeliveryState.PENDING)]
    assert vendor.next_open(datetime.now(UTC)) is not None

    vendor.opens = None
    store.disable_target("north", "vendor", "410 Gone")  # and yet a receiver that said 410 gets nothing
    record(store, second)
    await run(store, [cers, vendor], tmp_path, lambda: states(store, "cers")[-1] == (second, DeliveryState.DELIVERED))
    assert vendor.jobs == [] and [d.attempts for d in store.deliveries("north") if d.target == "vendor"] == [0, 0]
    assert ("north", "vendor") in store.disabled_targets()
    assert store.enable_target("north", "vendor") and not store.enable_target("north", "vendor")
    await run(store, [vendor], tmp_path, lambda: states(store, "vendor")[-1] == (second, DeliveryState.DELIVERED))
    assert [j.delivery.upload_id for j in vendor.jobs] == [first, second]


async def test_the_outbox_wakes_when_a_closed_window_opens(store: Store, tmp_path: Path) -> None:
    """With an hour between polls, only the window's opening time can start the delivery."""
    first = upload(store, 1)
    record(store, first)
    vendor = ScriptedTarget("north", "vendor")
    vendor.opens = opens = datetime.now(UTC) + timedelta(seconds=1)
    await run(store, [vendor], tmp_path, lambda: states(store, "vendor") == [(first, DeliveryState.DELIVERED)],
              poll_seconds=3600.0)  # fmt: skip
    assert len(vendor.jobs) == 1 and vendor.began[0] >= opens


async def test_a_410_disables_the_target_and_its_later_deliveries_wait(store: Store, tmp_path: Path) -> None:
    first, second = upload(store, 1), upload(store, 2)
    record(store, first)
    record(store, second)
    vendor = ScriptedTarget("north", "vendor", [permanent("HTTP 410 Gone", disable_target=True)])
    lines = await run(store, [vendor], tmp_path, lambda: states(store, "vendor")[0] == (first, DeliveryState.DEAD))
    assert ("north", "vendor") in store.disabled_targets()
    assert [e for level, e, _ in lines if level == "error"] == ["delivery.dead", "target.disabled"]
    assert states(store, "vendor")[1] == (second, DeliveryState.PENDING) and len(vendor.jobs) == 1


async def test_a_target_scoped_by_date_gets_the_current_snapshot_once_a_day(store: Store, tmp_path: Path) -> None:
    first, second = upload(store, 1), upload(store, 2)
    record(store, first)
    dated = ScriptedTarget("north", "vendor")
    dated.zone = "America/Los_Angeles"
    await run(store, [dated], tmp_path, lambda: states(store, "vendor") == [(first, DeliveryState.DELIVERED)])
    await run(store, [dated], tmp_path, lambda: True)  # the same day: it got its delivery today already
    assert len(store.deliveries("north", None)) == 2  # cers' pending one and vendor's delivered one
    record(store, second)
    await run(store, [dated], tmp_path, lambda: states(store, "vendor")[-1] == (second, DeliveryState.DELIVERED))
    # a new day (as the store sees it: nothing since a later start of day) queues the current snapshot again
    made = store.queue_dated("north", "vendor", "2099-01-01", "2099-01-01T08:00:00.000Z")
    assert made is not None and made.upload_id == second and made.idempotency_key.endswith(".2099-01-01")
    assert store.queue_dated("north", "vendor", "2099-01-01", "2099-01-01T08:00:00.000Z") is None  # once a day


async def test_waiting_deliveries_do_not_make_the_outbox_spin(store: Store, tmp_path: Path) -> None:
    """A closed window, a delivery under way: the dispatcher looks once per poll (and when a delivery ends),
    not in a loop. Counted against the time that really passed, so a slow machine cannot fail it."""
    first, second = upload(store, 1), upload(store, 2)
    record(store, first)
    record(store, second)
    looks = 0
    heads = store.open_heads

    def counted():
        nonlocal looks
        looks += 1
        return heads()

    store.open_heads = counted  # type: ignore[method-assign]
    busy = ScriptedTarget("north", "cers", hold=asyncio.Event())  # its first delivery takes a while
    closed = ScriptedTarget("north", "vendor")
    closed.opens = datetime.now(UTC) + timedelta(hours=1)
    with ThreadPoolExecutor(1) as pool:
        outbox = Outbox(store, {("north", "cers"): busy, ("north", "vendor"): closed}, pool,
                        policy(poll_seconds=0.5), lambda *a, **f: None)  # fmt: skip
        began = time.monotonic()
        await outbox.start()
        await asyncio.sleep(1.2)
        busy.hold.set()
        await outbox.stop(grace_seconds=1)
        elapsed = time.monotonic() - began
    assert len(busy.jobs) >= 1 and closed.jobs == []
    assert looks <= 4 + elapsed / 0.5, f"the dispatcher looked {looks} times in {elapsed:.1f} s"
