"""The defender of several replicas made one: a task that trades each replica's hits and bans through the store
they share, so an address guessing on every replica in turn is judged on all its guesses, and banned on all.

The connection path never waits for it: the Defender judges in memory, and this task (every `sync_seconds`)
sends what this replica saw, takes what the others saw, and folds it in. Another replica's failures are read
again with a margin on every round (a replica sends its own a round late, and clocks drift), so a failure
already counted is recognised and skipped. A store that fails is logged and tried again next round; what could
not be sent waits for it, and the server goes on with what it knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable

from daemon.sftp.defender import FORGET_AFTER_SECONDS, Ban, Defender, Hit
from daemon.sftp import events
from daemon.sftp.events import Reporter
from daemon.store import LoginFailure, SharedBan, StoreInterface

# Events of the shared state (their vocabulary entries belong with the others in daemon/logs.py).

KEEP_FAILURES_SECONDS = 24 * 3600  # failures older than this are deleted from the store as new ones go in
LATE_MARGIN_SECONDS = 60.0  # failures are read again back to this far behind the last read
FAILURE_LOG_INTERVAL_SECONDS = 60.0  # a store that stays down is logged once a minute, not every round
FINAL_ROUND_SECONDS = 5.0  # at stop, what is queued gets this long to reach the store

OnBan = Callable[[str, Ban], None]  # a ban that other replicas' failures tipped over here


class DefenderSync:
    """Trades one Defender's evidence with the store, once per `sync_once`, or every `sync_seconds` once started."""

    def __init__(self, defender: Defender, store: StoreInterface, reporter: Reporter, on_ban: OnBan) -> None:
        self._defender = defender
        self._store = store
        self._reporter = reporter
        self._on_ban = on_ban
        self._read_until: float | None = None  # when the last read of others' failures was
        # others' failures counted already, back to the read margin; counted, as two of one address in one
        # tick of a coarse clock are equal and both count
        self._seen: Counter[LoginFailure] = Counter()
        self._failure_logged = -FAILURE_LOG_INTERVAL_SECONDS
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def stopped(self) -> None:
        """Wait for the task to end, then send what is still queued (a ban decided at the last moment)."""
        if self._task is None:
            return
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.sync_once(), FINAL_ROUND_SECONDS)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._defender.options.sync_seconds)
            await self.sync_once()

    async def sync_once(self) -> bool:
        """One round: send this replica's hits and bans, fold in the others'. False when the store failed."""
        hits, bans = self._defender.take_outgoing()
        now = self._defender.now()
        since = now - self._defender.options.observation_seconds
        if self._read_until is not None:
            since = max(since, self._read_until - LATE_MARGIN_SECONDS)
        try:
            failures, shared_bans = await asyncio.to_thread(self._exchange, hits, bans, now, since)
        except Exception as exc:  # the store's errors differ by database; none may stop the server
            self._defender.give_back(hits, bans)
            self._failed(exc)
            return False
        self._read_until = now
        self._fold_in(failures, shared_bans, since)
        return True

    def _exchange(self, hits: list[Hit], bans: dict[str, Ban], now: float,
                  since: float) -> tuple[list[LoginFailure], list[SharedBan]]:  # fmt: skip
        """The store's side of a round, in a worker thread. Blocking."""
        replica = self._store.replica
        failures = [LoginFailure(hit.ip, hit.at, hit.points, replica) for hit in hits]
        if failures:
            self._store.record_login_failures(failures, forget_before=now - KEEP_FAILURES_SECONDS)
        for ip, ban in bans.items():
            self._store.record_ban(SharedBan(ip, ban.until, ban.seconds, ban.count))
        return self._store.login_failures_since(since), self._store.bans(now - FORGET_AFTER_SECONDS)

    def _fold_in(self, failures: list[LoginFailure], bans: list[SharedBan], since: float) -> None:
        """Bans first: a failure of an address banned meanwhile is spent on that ban, not counted again."""
        for ban in bans:
            self._defender.merge_ban(ban.ip, Ban(until=ban.until, seconds=ban.seconds, count=ban.count))
        self._defender.forget_old_bans()
        read = Counter(failures)  # every failure since `since` (rows go only when a day old): a superset
        self._seen = Counter({failure: n for failure, n in self._seen.items() if failure.at >= since})
        for failure in sorted(read, key=lambda f: f.at):
            for _ in range(read[failure] - self._seen[failure]):
                self._merge(failure)
            self._seen[failure] = read[failure]

    def _merge(self, failure: LoginFailure) -> None:
        ban = self._defender.merge_hit(Hit(failure.ip, failure.at, failure.points))
        if ban is not None:
            self._on_ban(failure.ip, ban)

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._failure_logged < FAILURE_LOG_INTERVAL_SECONDS:
            return
        self._failure_logged = now
        self._reporter.event(events.DEFENDER_SYNC_FAILED, error=f"{type(exc).__name__}: {exc}",
                             retry_seconds=self._defender.options.sync_seconds)  # fmt: skip
