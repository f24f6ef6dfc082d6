"""The worker pool: CPU work (validation, a target's files) in worker processes, kept usable whatever dies.

A ProcessPoolExecutor is broken for good once one of its processes dies (the OOM killer's SIGKILL, a crash
in native code): the call it ran fails, and so does every later call. WorkerPool keeps one executor at a
time behind the Executor interface (the outbox's targets use it as one) and replaces a broken executor the
first time anyone notices the break; callers that notice the same break together share one replacement
(each executor has a generation number, and only the caller holding the current one replaces it).

`run` is the call uploads go through. Its worker writes its pid into a slot of shared memory as the call
starts, so when the pool breaks, `run` can tell whether its own worker died or whether it was cut off
because another one did. A call cut off is simply run again; a call whose own worker died is run once more,
and if its worker dies a second time it raises WorkerDied. (A break also ends the healthy workers, which the
executor stops with SIGTERM; a death is any other end. Should the worker that died have been stopped with
SIGTERM from outside, nothing tells the two apart, and every worker of that executor counts as dead.)

Each worker process, as it starts:
- asks the kernel to SIGKILL it when the daemon dies (PR_SET_PDEATHSIG), and then checks that the daemon did
  not die before that, so a `kill -9` of the daemon leaves no worker validating on its own. The kernel's
  "parent" is the thread that started the process, and the executor starts processes in the thread that
  submits: submit only from the event loop's thread (asyncio's run_in_executor does).
- lowers its CPU priority (nice 10, WORKER_NICE): validation is bulk work, and the event loop that answers
  SFTP sessions must get a core first when both want one. Measured with bench/burst.py: with the workers at
  the daemon's priority, a listing waited up to 1.5 s while 200 districts arrived, at nice 10 about 0.5 s
  (the rest of that wait was the handshakes, see daemon/sftp/accept.py).
- limits its own memory to `memory_bytes` with RLIMIT_DATA (0: no limit). Measured with the 1000-school
  benchmark district (1.35 GiB resident, 3.0 GiB of address space): validation passes under either limit at
  8 GiB, and under RLIMIT_DATA at 3 GiB but not at 2 GiB. RLIMIT_AS also counts address space that is
  reserved but never used (glibc's per-thread malloc arenas of 64 MiB, say), which grows with the machine's
  cores; RLIMIT_DATA counts only memory that can be written (thread stacks included). Past the limit, Python
  raises MemoryError (or cannot start a thread, which counts as the same), polars aborts the process
  (SIGABRT), or, seen in tests, polars's threads wait for each other forever without using any CPU time.

That last one is why `run` also watches its worker: validation keeps a CPU busy, so a worker whose CPU time
has not moved for `stall_seconds` during a call is hung; it is killed (SIGKILL), which counts as that call's
worker dying. A call that needs too much memory therefore ends as MemoryError or WorkerDied, never hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

DEATHS_PER_CALL = 2  # a call whose own worker died this often is given up (WorkerDied)
BREAKS_PER_CALL = 6  # nor is a call run again endlessly when other workers keep dying under it
SLOTS = 64  # calls of `run` under way at once that can be told apart; more still run, just not told apart
MAX_CALL_SECONDS = 3600.0  # a call still running after this long is killed too (the largest district takes seconds)
STALL_SECONDS = 60.0  # a worker whose CPU time stands still this long during a call of `run` is hung: killed
WATCH_SECONDS = 1.0  # how often a call of `run` looks at its worker's CPU time
BURY_SECONDS = 30.0  # how long a broken executor may take to stop its other workers before they are killed
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WORKER_NICE = 10  # added to a worker's niceness: the loop's requests get a core before validation does

_slots = None  # in a worker process: the shared slots, where a call writes the worker's pid as it starts
_limited = False  # in a worker process: whether its memory is limited


@dataclass(frozen=True, slots=True)
class Death:
    """A worker process that ended while its executor was live."""

    pid: int
    exit_code: int | None  # what it exited with, or None when a signal ended it
    signal: str | None  # the signal that ended it (SIGKILL, SIGABRT, ...)

    @staticmethod
    def of(pid: int, exitcode: int) -> Death:
        if exitcode < 0:
            try:
                name = signal.Signals(-exitcode).name
            except ValueError:
                name = f"signal {-exitcode}"
            return Death(pid, None, name)
        return Death(pid, exitcode, None)

    def describe(self) -> str:
        return f"killed by {self.signal}" if self.signal else f"exited with status {self.exit_code}"


class WorkerDied(Exception):
    """A call given up because its worker process kept dying (or the pool kept breaking under it)."""

    def __init__(self, death: Death | None) -> None:
        self.death = death  # None: other workers' deaths kept cutting it off
        super().__init__(f"its worker process died twice, {death.describe()} the second time" if death
                         else f"the worker pool broke under it {BREAKS_PER_CALL} times")  # fmt: skip


class PoolUnavailable(Exception):
    """No worker can take a call now: the pool is shut down, or no executor can be made (no pipes or
    semaphores left). Nothing about the call itself: it may be tried again later."""


def _start_worker(parent: int, memory_bytes: int, slots) -> None:
    """Initializer of every worker process (see the module's docstring)."""
    global _slots, _limited
    _slots, _limited = slots, bool(memory_bytes)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the daemon died before the request above took effect
        os._exit(1)
    try:
        os.nice(WORKER_NICE)
    except PermissionError:  # a sandbox that refuses setpriority (rosterd's own unit allows it): run as is
        pass
    if memory_bytes:
        _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def _wake(executor: ProcessPoolExecutor) -> None:
    """Make the executor's own thread look again at which processes it watches. It picks the list when it
    starts to wait, and submit wakes it before, not after, starting a process: without this, a process that
    submit started while the thread was waiting can die unnoticed, and its call waits forever (CPython 3.11
    to 3.13, spawn context)."""
    wakeup = getattr(executor, "_executor_manager_thread_wakeup", None)
    if wakeup is not None:
        try:
            wakeup.wakeup()
        except (OSError, ValueError):  # closed: the executor has ended, and nothing is waited for
            pass


def _cpu_ticks(pid: int) -> int | None:
    """User and system CPU time a process has used, in clock ticks (None: not on Linux, or it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15 of proc(5)


def _call(slot: int, fn: Callable, args: tuple):
    """In a worker: note which process took this call, then make it."""
    if slot >= 0 and _slots is not None:
        _slots[slot] = os.getpid()
    try:
        return fn(*args)
    except RuntimeError as exc:  # a thread's stack is memory too: under the limit, a new thread may not fit
        if _limited and "can't start new thread" in str(exc):
            raise MemoryError(f"no memory left under the limit for a new thread ({exc})") from exc
        raise


class WorkerPool(Executor):
    """Worker processes (spawned, not forked: polars runs threads, and a forked copy of a threaded process can
    deadlock), replaced when one dies. `deaths` counts the worker processes that died; `usable` says whether a
    call can run now."""

    def __init__(
        self,
        workers: int,
        memory_bytes: int = 0,
        log: Callable[..., None] | None = None,
        stall_seconds: float = STALL_SECONDS,
        max_call_seconds: float = MAX_CALL_SECONDS,
    ) -> None:
        self.workers = workers
        self.memory_bytes = memory_bytes
        self.stall_seconds = stall_seconds
        self.max_call_seconds = max_call_seconds  # a worker spinning at its memory limit uses CPU without end
        self.deaths = 0
        self._log = log if log is not None else (lambda level, event, **fields: None)  # log(level, event, **fields)
        self._context = multiprocessing.get_context("spawn")
        self._slots = self._context.RawArray("q", SLOTS)
        self._free = list(range(SLOTS))
        self._callers: dict[int, dict] = {}  # slot -> what the call of `run` using it is about (for the log)
        self._lock = threading.Lock()
        self._generation = 0
        self._executor: ProcessPoolExecutor | None = None
        self._processes: dict[int, multiprocessing.process.BaseProcess] = {}  # the current executor's, by pid
        self._burials: dict[int, Future] = {}  # generation -> its deaths, once its broken executor has ended
        self._closed = False

    # the Executor interface (the outbox's targets)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future, _generation = self._submit(lambda executor: executor.submit(fn, *args, **kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        executor, _processes = self._close()
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=cancel_futures)

    def terminate(self) -> None:
        """Stop the worker processes now (a stop's grace period is over) and take no more calls."""
        executor, processes = self._close()
        for process in processes:
            if process.is_alive():
                process.terminate()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _close(self) -> tuple[ProcessPoolExecutor | None, list]:
        """Take no more calls (and replace nothing from now on); the executor and its processes, to end."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            return executor, list(self._processes.values())

    @property
    def usable(self) -> bool:
        """Whether a worker can run a call now: a broken executor is replaced on the way; False only while
        no executor can be made (or the pool is shut down)."""
        try:
            executor, generation = self._current()
        except Exception:
            return False
        if getattr(executor, "_broken", False):
            self._replace(generation)
            try:
                self._current()
            except Exception:
                return False
        return True

    # uploads

    async def run(self, fn: Callable, /, *args, about: dict | None = None):
        """`fn(*args)` in a worker process. Run again when the pool breaks under it; raises WorkerDied when its
        own worker died DEATHS_PER_CALL times, and whatever `fn` raised (MemoryError, say) otherwise. `about`
        (tenant, upload id) goes into the log of a death."""
        own_deaths = breaks = 0
        while True:
            slot = self._take_slot(about or {})
            try:
                try:
                    future, generation = self._submit(lambda executor: executor.submit(_call, slot, fn, args))
                except (RuntimeError, OSError) as exc:
                    raise PoolUnavailable(str(exc)) from exc
                try:
                    return await self._watch(asyncio.wrap_future(future), slot, about or {})
                except BrokenProcessPool:
                    pid = self._slots[slot] if slot >= 0 else 0
                    deaths = await asyncio.wrap_future(self._burial(generation))
            finally:
                self._give_back(slot)  # only now: the burial reads the slots to name the calls of the dead
            mine = next((d for d in deaths if pid and d.pid == pid), None)
            if mine is not None:
                own_deaths += 1
                if own_deaths >= DEATHS_PER_CALL:
                    raise WorkerDied(mine)
            else:
                breaks += 1
                if breaks >= BREAKS_PER_CALL:
                    raise WorkerDied(None)

    async def _watch(self, outcome: asyncio.Future, slot: int, about: dict):
        """The call's result; its worker is killed should its CPU time stand still for `stall_seconds`, or the
        call run past `max_call_seconds`."""
        cpu, still, began = None, 0.0, time.monotonic()
        try:
            while True:
                done, _pending = await asyncio.wait({outcome}, timeout=WATCH_SECONDS)
                if done:
                    return outcome.result()
                pid = self._slots[slot] if slot >= 0 else 0
                used = _cpu_ticks(pid) if pid else None
                ran = time.monotonic() - began
                if pid and ran >= self.max_call_seconds:
                    self._kill_hung(pid, about, seconds=int(ran), reason="ran past max_call_seconds")
                    cpu, still, began = None, 0.0, time.monotonic()
                    continue
                if used is None or used != cpu:
                    cpu, still = used, 0.0
                    continue
                still += WATCH_SECONDS
                if still >= self.stall_seconds:
                    self._kill_hung(pid, about, seconds=still)
                    cpu, still = None, 0.0
        except asyncio.CancelledError:
            outcome.cancel()
            raise

    def _kill_hung(self, pid: int, about: dict, **why: object) -> None:
        """A worker taken as hung: logged, then killed (which counts as its call's worker dying)."""
        self._log("error", "worker.stalled", pid=pid, **why, **about)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    # the executor and its replacement

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self._context, initializer=_start_worker,
                                   initargs=(os.getpid(), self.memory_bytes, self._slots))  # fmt: skip

    def _current(self) -> tuple[ProcessPoolExecutor, int]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            if self._executor is None:
                self._executor = self._new_executor()
            return self._executor, self._generation

    def _submit(self, submit: Callable[[ProcessPoolExecutor], Future]) -> tuple[Future, int]:
        """Submit to the current executor, replacing it first if it turns out broken."""
        for _attempt in range(BREAKS_PER_CALL):
            executor, generation = self._current()
            try:
                future = submit(executor)
            except BrokenProcessPool:
                self._replace(generation)
                continue
            with self._lock:
                known = len(self._processes)
                if generation == self._generation:  # its processes are started by submit: note them for the burial
                    self._processes.update(getattr(executor, "_processes", None) or {})
                started = len(self._processes) > known
            if started:
                _wake(executor)
            future.add_done_callback(lambda done: self._check(done, generation))
            return future, generation
        raise BrokenProcessPool("every new worker process died at once")

    def _check(self, future: Future, generation: int) -> None:
        """A call ended (in the executor's own thread): when its executor broke, replace it now, so the pool
        is usable again before anyone asks."""
        if not future.cancelled() and isinstance(future.exception(), BrokenProcessPool):
            self._replace(generation)

    def _replace(self, generation: int) -> None:
        """Put a new executor in place of the broken one of `generation`, unless that was done already."""
        with self._lock:
            if generation != self._generation or self._closed:
                return
            broken, processes = self._executor, self._processes
            self._generation += 1
            self._processes = {}
            self._burials[generation] = burial = Future()
            try:
                self._executor = self._new_executor()
            except Exception as exc:  # no pipes or semaphores left: the next call tries again
                self._executor = None
                self._log("error", "worker.replace_failed", error=repr(exc))
        self._log("warning", "worker.pool_replaced", generation=generation + 1)
        threading.Thread(target=self._bury, args=(broken, processes, burial), name="worker-burial", daemon=True).start()

    def _burial(self, generation: int) -> Future:
        """The deaths that broke the executor of `generation` (a Future: known once its workers have ended)."""
        self._replace(generation)
        with self._lock:
            burial = self._burials.get(generation)
        if burial is None:  # shut down: nothing was replaced, and the next call is refused
            burial = Future()
            burial.set_result([])
        return burial

    def _bury(self, broken: ProcessPoolExecutor | None, processes: dict, burial: Future) -> None:
        """Wait for a broken executor to end its workers, then tell which of them died, log and count them."""
        try:
            manager = getattr(broken, "_executor_manager_thread", None)
            if manager is not None and manager.is_alive():
                manager.join(BURY_SECONDS)  # it stops the other workers with SIGTERM and reaps them all
            for process in processes.values():
                process.join(1.0)
                if process.is_alive():  # a worker that ignored SIGTERM
                    process.kill()
                    process.join(5.0)
            ended = {pid: p.exitcode for pid, p in processes.items() if p.exitcode is not None}
            died = {pid: code for pid, code in ended.items() if code != -signal.SIGTERM} or ended
            deaths = [Death.of(pid, code) for pid, code in sorted(died.items())]
            with self._lock:
                self.deaths += len(deaths)
                callers = {self._slots[slot]: about for slot, about in self._callers.items()}
            for death in deaths:
                self._log("error", "worker.died", pid=death.pid, exit_code=death.exit_code, signal=death.signal,
                          **callers.get(death.pid, {}))  # fmt: skip
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
        except Exception as exc:  # the burial must never leave a caller waiting
            self._log("error", "worker.burial_failed", error=repr(exc))
            deaths = []
        burial.set_result(deaths)

    # slots: which worker took which call of `run`

    def _take_slot(self, about: dict) -> int:
        with self._lock:
            if not self._free:
                return -1
            slot = self._free.pop()
            self._slots[slot] = 0
            self._callers[slot] = about
            return slot

    def _give_back(self, slot: int) -> None:
        if slot < 0:
            return
        with self._lock:
            self._callers.pop(slot, None)
            self._free.append(slot)
