"""Stops that always finish.

The outbox's dispatcher ends when stopped, whatever it was waiting for: Python 3.11's `asyncio.wait_for` drops a
cancel that arrives while the awaited event has just been set, which kept the dispatcher (and the stop
waiting for it) going for ever. `Outbox.idle()` lets the event loop run while it waits: on 3.12 and later a
gather of finished tasks returns without yielding. And `Daemon.stop` goes on past a stage whose stop does not
end in time, saying which one, so that the process exits.
"""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from daemon import app
from daemon.app import Daemon
from daemon.config import parse_settings
from daemon.outbox import Outbox, RetryPolicy
from daemon.store import DeliveryState, Store
from tests.test_outbox import ScriptedTarget
from tests.test_snapshot_store import record, upload

# Long enough that a dispatcher waiting for work is still waiting when the test stops it.
QUIET = RetryPolicy(first_seconds=0.05, max_seconds=0.2, give_up_seconds=60, poll_seconds=3600, rng=random.Random(5))


class WatchedEvent(asyncio.Event):
    """The outbox's wake-up event, telling the test when the dispatcher has begun waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = asyncio.Event()

    async def wait(self) -> bool:
        self.waited.set()
        return await super().wait()


@pytest.fixture
def store(tmp_path: Path):
    opened = Store(tmp_path / "rosterd.db", {"north": ["cers"]})
    yield opened
    opened.close()


def outbox_for(store: Store, target: ScriptedTarget, pool, tmp_path: Path, **fields) -> Outbox:
    return Outbox(store, {("north", "cers"): target}, pool, QUIET, lambda *a, **f: None, **fields)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
async def test_a_stop_arriving_as_the_dispatcher_is_woken_ends_it(store: Store, tmp_path: Path, turns: int) -> None:
    """The wake-up and the stop land within a few turns of the loop (on 3.11 with wait_for, one turn apart lost
    the cancel: the dispatcher went on and stop() never returned)."""
    with ThreadPoolExecutor(1) as pool:
        outbox = outbox_for(store, ScriptedTarget("north", "cers"), pool, tmp_path)
        outbox._wake = woken = WatchedEvent()
        await outbox.start()
        async with asyncio.timeout(10):
            await woken.waited.wait()  # the dispatcher found nothing to send and waits for work
        outbox.kick()
        for _ in range(turns):
            await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await outbox.stop()
        assert outbox._loop_task is not None and outbox._loop_task.done()


@pytest.mark.timeout(60)  # idle() that does not yield blocks the loop, so only a signal can end this test
async def test_idle_lets_the_loop_run_while_a_finished_delivery_is_cleared(store: Store, tmp_path: Path) -> None:
    """idle() called in the turn where a delivery's task ends, before the outbox has cleared it: on 3.12 and later
    a gather of finished tasks returns at once, and an idle() that only gathered spun without end."""
    first = upload(store, 1)
    record(store, first)
    ended: asyncio.Future = asyncio.get_running_loop().create_future()
    with ThreadPoolExecutor(1) as pool:
        # on_attempt is the last thing a delivery's task does: the test runs again in the turn the task ends
        outbox = outbox_for(store, ScriptedTarget("north", "cers"), pool, tmp_path,
                            on_attempt=lambda *_: ended.done() or ended.set_result(None))  # fmt: skip
        await outbox.start()
        try:
            async with asyncio.timeout(10):
                await ended
            await outbox.idle()
        finally:
            async with asyncio.timeout(10):
                await outbox.stop()
    assert [(d.upload_id, d.state) for d in store.deliveries("north")] == [(first, DeliveryState.DELIVERED)]


async def test_poll_idle_stop_repeated_never_hangs(store: Store, tmp_path: Path) -> None:
    """What the webhook tests do after each batch of uploads (wait for the deliveries, idle, stop), many times over:
    idle() called while the delivery is still under way or after it was recorded, and the stop arriving a varying
    number of loop turns after idle() returned."""
    policy = RetryPolicy(first_seconds=0.05, max_seconds=0.2, give_up_seconds=60, poll_seconds=0.05,
                         rng=random.Random(11))  # fmt: skip
    target = ScriptedTarget("north", "cers")
    with ThreadPoolExecutor(2) as pool:
        for round_ in range(1, 41):
            upload_id = upload(store, round_)
            record(store, upload_id)
            under_way = round_ % 2 == 0
            target.hold = asyncio.Event() if under_way else None
            outbox = Outbox(store, {("north", "cers"): target}, pool, policy, lambda *a, **f: None)
            await outbox.start()
            try:
                async with asyncio.timeout(10):
                    if under_way:  # idle() waits for the delivery's task itself
                        while len(target.jobs) < round_:
                            await asyncio.sleep(0.01)
                        target.hold.set()
                    else:  # the delivery is recorded: idle() finds it ended, or ending
                        while any(d.state.open for d in await asyncio.to_thread(store.deliveries, "north")):
                            await asyncio.sleep(0.01)
                    await outbox.idle()
                    for _ in range(round_ % 3):
                        await asyncio.sleep(0)
            finally:
                async with asyncio.timeout(10):
                    await outbox.stop(grace_seconds=2)
    assert len(target.jobs) == 40
    assert {d.state for d in store.deliveries("north")} == {DeliveryState.DELIVERED}


class Stage:
    """A stand-in for one of the daemon's stages; `stuck` makes its stop ignore cancels until `release` is set."""

    def __init__(self, name: str, calls: list[str], stuck: bool, release: asyncio.Event) -> None:
        self.name, self.calls, self.stuck, self.release = name, calls, stuck, release

    async def _stopping(self) -> None:
        self.calls.append(self.name)
        while self.stuck and not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue  # as a cancel lost inside the stage would look from outside

    async def stop(self, grace_seconds: float = 0.0) -> None:
        await self._stopping()

    def close(self) -> None:  # the SFTP server: stop listening (wait_closed then waits for it)
        self.calls.append("sftp.close")

    async def wait_closed(self) -> None:
        await self._stopping()


class ClosedStore:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def close(self) -> None:
        self.calls.append("store")


class Recorded:
    """The daemon's logger, keeping (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict]] = []

    def __getattr__(self, level: str):
        return lambda event, **fields: self.lines.append((level, event, fields))


@pytest.mark.parametrize("stuck", ["sftp", "outbox", "intake", "health"])
async def test_the_daemon_stop_goes_past_a_stage_that_does_not_stop_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stuck: str
) -> None:
    monkeypatch.setattr(app, "STOP_MARGIN_SECONDS", 0.2)
    settings = parse_settings("[server]\nstop_grace_seconds = 0.1\n", tmp_path / "rosterd.toml")
    daemon = Daemon(settings)
    daemon.log = log = Recorded()
    calls: list[str] = []
    release = asyncio.Event()
    names = ("sftp", "outbox", "intake", "health")
    daemon.sftp, daemon.outbox, daemon.intake, daemon.health = (Stage(n, calls, n == stuck, release) for n in names)
    daemon.store = ClosedStore(calls)
    stopping = asyncio.ensure_future(daemon.stop())
    done, _ = await asyncio.wait({stopping}, timeout=20)  # not asyncio.timeout: the stuck stage ignores cancels
    release.set()  # the stuck stage may end now, so that no task outlives the test
    assert stopping in done, f"the stop waited for the stuck {stuck} stage; done so far: {calls}"
    await stopping
    assert [(level, event, f["stage"]) for level, event, f in log.lines if event == "daemon.stop_timed_out"] == [
        ("error", "daemon.stop_timed_out", stuck)]  # fmt: skip
    assert sorted(calls) == sorted(["sftp.close", *names, "store"])
    assert calls[-1] == "store"  # every step after the stuck stage still ran
    assert daemon.left_behind == [stuck]  # serve() then exits at once rather than wait for it again
