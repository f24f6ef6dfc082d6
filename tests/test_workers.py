"""The supervised worker pool with real worker processes: deaths, retries, replacement, the memory limit.

The calls below run in spawned workers, so they are plain functions of this module, and they coordinate
through files (a worker cannot see the test's variables).
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import threading
import time
from pathlib import Path

import pytest

from daemon.intake.workers import WorkerDied, WorkerPool

MiB = 1024 * 1024


# -- what the workers run ----------------------------------------------------------------------------------


def die_once(marker: str) -> str:
    """Killed the first time (as the OOM killer would), fine the second."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return "ran"


def die_when_started(folder: str) -> str:
    """Killed every time, once the other call has started (so that call is cut off by this death)."""
    while not any(name.startswith("started") for name in os.listdir(folder)):
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
    return "never"


def wait_for_release(folder: str) -> str:
    Path(folder, f"started-{os.getpid()}").touch()
    while not os.path.exists(os.path.join(folder, "release")):
        time.sleep(0.01)
    return "done"


def hang() -> None:
    """Waits forever without using CPU time, as polars's threads did when one could not get its memory."""
    threading.Event().wait()


def spin() -> None:
    """Busy for good: its CPU time moves, so only the wall-clock limit ends it."""
    while True:
        pass


def allocate(size: int) -> int:
    return len(bytearray(size))


def data_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_DATA)


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


# -- the tests ----------------------------------------------------------------------------------------------


class Log(list):
    def __call__(self, level: str, event: str, **fields) -> None:
        self.append((level, event, fields))

    def named(self, event: str) -> list[dict]:
        return [fields | {"level": level} for level, name, fields in self if name == event]


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def pool(log: Log):
    workers = WorkerPool(2, log=log)
    yield workers
    workers.terminate()


async def eventually(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


async def test_a_call_whose_worker_is_killed_is_run_again(pool: WorkerPool, log: Log, tmp_path: Path) -> None:
    about = {"tenant": "north", "upload_id": "u-1"}
    assert await pool.run(die_once, str(tmp_path / "died"), about=about) == "ran"
    await eventually(lambda: log.named("worker.died"))
    (died,) = log.named("worker.died")
    assert died["signal"] == "SIGKILL" and died["tenant"] == "north" and died["upload_id"] == "u-1"
    assert died["level"] == "error"
    assert pool.deaths == 1 and pool.usable


async def test_a_call_whose_worker_dies_twice_is_given_up(pool: WorkerPool, log: Log, tmp_path: Path) -> None:
    (tmp_path / "started").touch()  # nothing to wait for: it dies at once
    with pytest.raises(WorkerDied) as raised:
        await pool.run(die_when_started, str(tmp_path))
    assert raised.value.death is not None and raised.value.death.signal == "SIGKILL"
    assert pool.deaths == 2 and len(log.named("worker.died")) == 2
    assert await pool.run(allocate, 10) == 10  # and the pool goes on serving


async def test_a_call_cut_off_by_another_workers_death_is_not_harmed(pool: WorkerPool, log: Log, tmp_path: Path) -> None:
    """Two calls at once, one of whose workers dies twice: the other call is run again each time and
    finishes; each break is replaced once, although both calls saw it."""
    innocent = asyncio.create_task(pool.run(wait_for_release, str(tmp_path), about={"upload_id": "u-good"}))
    with pytest.raises(WorkerDied):
        await pool.run(die_when_started, str(tmp_path), about={"upload_id": "u-bad"})
    (tmp_path / "release").touch()
    assert await innocent == "done"
    assert pool.deaths == 2
    assert [d["upload_id"] for d in log.named("worker.died")] == ["u-bad", "u-bad"]
    assert len(log.named("worker.pool_replaced")) == 2


async def test_the_pool_serves_as_an_executor_after_an_idle_worker_is_killed(pool: WorkerPool, log: Log) -> None:
    """The outbox's targets hand their work to the pool as to any executor (run_in_executor)."""
    loop = asyncio.get_running_loop()
    first = await loop.run_in_executor(pool, os.getpid)
    os.kill(first, signal.SIGKILL)
    await eventually(lambda: pool.usable and pool.deaths == 1)  # no call noticed it: `usable` replaces the executor
    second = await loop.run_in_executor(pool, os.getpid)
    assert second != first
    (died,) = log.named("worker.died")
    assert died["pid"] == first and died["signal"] == "SIGKILL" and "upload_id" not in died


async def test_a_worker_that_hangs_is_killed_and_its_call_given_up(log: Log) -> None:
    pool = WorkerPool(1, log=log, stall_seconds=2)
    try:
        with pytest.raises(WorkerDied) as raised:
            await pool.run(hang, about={"upload_id": "u-stuck"})
        assert raised.value.death is not None and raised.value.death.signal == "SIGKILL"
        assert [e["upload_id"] for e in log.named("worker.stalled")] == ["u-stuck", "u-stuck"]
        assert await pool.run(allocate, 10) == 10
    finally:
        pool.terminate()


async def test_a_worker_that_spins_past_the_call_limit_is_killed_and_its_call_given_up(log: Log) -> None:
    pool = WorkerPool(1, log=log, stall_seconds=60, max_call_seconds=2)
    try:
        with pytest.raises(WorkerDied):
            await pool.run(spin, about={"upload_id": "u-spinning"})
        stalled = log.named("worker.stalled")
        assert [e["upload_id"] for e in stalled] == ["u-spinning", "u-spinning"]
        assert {e["reason"] for e in stalled} == {"ran past max_call_seconds"}
        assert await pool.run(allocate, 10) == 10
    finally:
        pool.terminate()


async def test_a_worker_over_its_memory_limit_raises_memory_error(log: Log) -> None:
    pool = WorkerPool(1, memory_bytes=512 * MiB, log=log)
    try:
        assert (await pool.run(data_limit))[0] == 512 * MiB
        with pytest.raises(MemoryError):
            await pool.run(allocate, 1024 * MiB)
        assert await pool.run(allocate, 10 * MiB) == 10 * MiB
        assert pool.deaths == 0
    finally:
        pool.terminate()


async def test_without_a_memory_limit_the_workers_keep_the_systems(log: Log) -> None:
    pool = WorkerPool(1, memory_bytes=0, log=log)
    try:
        assert await pool.run(data_limit) == resource.getrlimit(resource.RLIMIT_DATA)
    finally:
        pool.terminate()


async def test_workers_run_below_the_daemons_cpu_priority(pool: WorkerPool) -> None:
    # README: validation workers run at nice 10 above the daemon's own, so the event loop gets a core first.
    assert await pool.run(niceness) == min(os.getpriority(os.PRIO_PROCESS, 0) + 10, 19)


async def test_a_shut_down_pool_is_not_usable(log: Log) -> None:
    pool = WorkerPool(1, log=log)
    assert pool.usable
    pool.terminate()
    assert not pool.usable
