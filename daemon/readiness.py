"""Readiness beyond "started": can intake make progress right now?

A daemon that listens but cannot validate, record or store an upload must not answer /readyz with 200. Each
check names one reason intake would stall:

    worker_pool        no worker process can run (the pool is broken and not yet replaced)
    database           the store does not take a write (read-only, locked, its disk failing)
    state_disk         the state directory's file system has less than `min_free_bytes` free
    file_descriptors   the daemon holds more than 90% of its open-file limit

The checks run in a background task every `interval` seconds, each in a thread (a write to SQLite or a
statvfs can block on a sick disk), and /readyz and /metrics read the last verdict: a probe never waits behind
the thing it reports on. A check that does not answer within `timeout` counts as failing, and is not started
again until its earlier call returns, so a hung disk costs one thread, not one per round.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

REASONS = ("worker_pool", "database", "state_disk", "file_descriptors")
FD_SHARE_LIMIT = 0.9

Check = Callable[[], str | None]  # None: fine; else what is wrong, in a few words for an operator


class Readiness:
    def __init__(
        self,
        checks: Mapping[str, Check],
        interval: float = 5.0,
        timeout: float = 10.0,
        on_change: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.checks = dict(checks)
        self.interval, self.timeout = interval, timeout
        self.on_change = on_change  # told the new set of blockers whenever it changes
        self.blockers: dict[str, str] = {}  # reason -> what is wrong; empty: intake can make progress
        self._pending: dict[str, Future] = {}
        self._threads = ThreadPoolExecutor(len(self.checks) or 1, thread_name_prefix="readiness")

    async def run(self) -> None:
        """Check, then every `interval` seconds again, until cancelled."""
        try:
            while True:
                await self.refresh()
                await asyncio.sleep(self.interval)
        finally:
            self._threads.shutdown(wait=False, cancel_futures=True)

    async def refresh(self) -> dict[str, str]:
        found = dict(zip(self.checks, await asyncio.gather(*map(self._one, self.checks)), strict=True))
        blockers = {name: detail for name, detail in found.items() if detail is not None}
        changed = blockers.keys() != self.blockers.keys()  # a detail (bytes free) moving is no news
        self.blockers = blockers
        if changed and self.on_change is not None:
            self.on_change(dict(blockers))
        return blockers

    async def _one(self, name: str) -> str | None:
        future = self._pending.get(name)
        if future is None or future.done():
            future = self._pending[name] = self._threads.submit(self.checks[name])
        try:
            async with asyncio.timeout(self.timeout):  # not wait_for: on 3.11 it can swallow a cancellation
                return await asyncio.wrap_future(future)
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"
        except Exception as exc:  # a check that fails to run is a failing check
            return f"check failed: {type(exc).__name__}: {exc}"


def write_check(write: Callable[[], object], what: str = "the database") -> Check:
    def check() -> str | None:
        try:
            write()
        except Exception as exc:  # sqlite3.OperationalError: read-only, locked, disk I/O error, full; S3 refused
            return f"{what} takes no writes: {exc}"
        return None

    return check


def disk_check(folder: Path, min_free_bytes: int) -> Check:
    def check() -> str | None:
        vfs = os.statvfs(folder)
        free = vfs.f_bavail * vfs.f_frsize
        if free < min_free_bytes:
            return f"{free} bytes free in the state directory, under min_free_bytes ({min_free_bytes})"
        return None

    return check


def fd_check(share: float = FD_SHARE_LIMIT, fd_folder: Path = Path("/proc/self/fd")) -> Check:
    def check() -> str | None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if limit == resource.RLIM_INFINITY:
            return None
        used = len(os.listdir(fd_folder))
        if used > share * limit:
            return f"{used} open files of a limit of {limit}"
        return None

    return check
