"""sd_notify against a real datagram socket standing in for systemd: what arrives, byte for byte."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import notify
from daemon.notify import Notifier


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: a bound AF_UNIX datagram socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def environ(self, **extra: str) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value, **extra}

    def received(self, timeout: float = 2.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def pending(self) -> list[str]:
        """Every datagram waiting now, without blocking."""
        messages = []
        self.sock.setblocking(False)
        while True:
            try:
                messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return messages


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify"
    assert len(str(path)) < 100, "AF_UNIX paths are limited to 107 bytes"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield FakeSystemd(sock, str(path))


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    name = f"rosterd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        yield FakeSystemd(sock, "@" + name)


def test_each_message_arrives_exactly(systemd: FakeSystemd) -> None:
    notifier = Notifier(systemd.environ())
    assert notifier.enabled

    assert notifier.ready("listening on 0.0.0.0:2222, 3 tenants") is True
    assert systemd.received() == "READY=1\nSTATUS=listening on 0.0.0.0:2222, 3 tenants"
    notifier.status("validating north/u-1")
    assert systemd.received() == "STATUS=validating north/u-1"
    notifier.stopping()
    assert systemd.received() == "STOPPING=1"
    notifier.watchdog()
    assert systemd.received() == "WATCHDOG=1"
    assert systemd.pending() == []


def test_reloading_carries_the_monotonic_clock_in_microseconds(systemd: FakeSystemd) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(systemd.environ()).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    first, second = systemd.received().split("\n")
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_a_status_cannot_smuggle_in_another_field(systemd: FakeSystemd) -> None:
    Notifier(systemd.environ()).status("bad upload\nREADY=1")
    assert systemd.received() == "STATUS=bad upload READY=1"


def test_abstract_namespace_socket(abstract_systemd: FakeSystemd) -> None:
    notifier = Notifier(abstract_systemd.environ())
    assert notifier.enabled
    notifier.ready("up")
    assert abstract_systemd.received() == "READY=1\nSTATUS=up"


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative/path"},
                                     {"NOTIFY_SOCKET": "vsock:2:1234"}, {"NOTIFY_SOCKET": "@"}])  # fmt: skip
def test_without_a_usable_socket_everything_is_a_no_op(environ: dict[str, str]) -> None:
    notifier = Notifier({**environ, "WATCHDOG_USEC": "60000000"})
    assert not notifier.enabled
    assert notifier.ready("up") is False
    assert notifier.status("x") is False
    assert notifier.reloading() is False
    assert notifier.stopping() is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_seconds() is None


def test_the_default_environment_is_the_process_environment(monkeypatch, systemd: FakeSystemd) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.env_value)
    Notifier().status("from os.environ")
    assert systemd.received() == "STATUS=from os.environ"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not Notifier().enabled


def test_a_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert notifier.ready("up") is False
    assert notifier.watchdog() is False


def test_a_socket_that_stopped_listening_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})  # the file is still there, nobody reads it
    assert notifier.stopping() is False


def test_a_full_receive_queue_never_blocks_the_caller(systemd: FakeSystemd) -> None:
    notifier = Notifier(systemd.environ())
    started = time.monotonic()
    results = [notifier.status("x" * 1000) for _ in range(5000)]  # far beyond the receiver's queue
    assert time.monotonic() - started < 60  # a blocking send would hang here; 5000 sends take milliseconds
    assert results[0] is True and results[-1] is False


# -- the watchdog ---------------------------------------------------------------------------------


def test_watchdog_interval_comes_from_watchdog_usec(systemd: FakeSystemd) -> None:
    assert Notifier(systemd.environ(WATCHDOG_USEC="60000000")).watchdog_seconds() == 60.0
    assert Notifier(systemd.environ(WATCHDOG_USEC="60000000", WATCHDOG_PID=str(os.getpid()))).watchdog_seconds() == 60.0
    assert Notifier(systemd.environ()).watchdog_seconds() is None


def test_a_watchdog_meant_for_another_process_is_not_ours(systemd: FakeSystemd) -> None:
    notifier = Notifier(systemd.environ(WATCHDOG_USEC="60000000", WATCHDOG_PID=str(os.getpid() + 1)))
    assert notifier.enabled  # notifications still go out; only the watchdog is someone else's
    assert notifier.watchdog_seconds() is None


@pytest.mark.parametrize("usec, pid", [("0", None), ("-5", None), ("soon", None), ("", None), ("1000", "me")])
def test_a_malformed_watchdog_setting_means_no_watchdog(systemd: FakeSystemd, usec: str, pid: str | None) -> None:
    extra = {"WATCHDOG_USEC": usec} | ({"WATCHDOG_PID": pid} if pid else {})
    assert Notifier(systemd.environ(**extra)).watchdog_seconds() is None


async def test_keep_alive_returns_at_once_without_a_watchdog(systemd: FakeSystemd) -> None:
    await asyncio.wait_for(Notifier(systemd.environ()).keep_alive(lambda: True), 1)
    await asyncio.wait_for(Notifier({"WATCHDOG_USEC": "200000"}).keep_alive(lambda: True), 1)
    other = Notifier(systemd.environ(WATCHDOG_USEC="200000", WATCHDOG_PID=str(os.getpid() + 1)))
    await asyncio.wait_for(other.keep_alive(lambda: True), 1)
    assert systemd.pending() == []


class Naps:
    """Stands in for asyncio.sleep inside daemon.notify: each nap is recorded and lasts until the test ends
    it, so the keep-alive loop goes round exactly when the test says, however busy the machine is."""

    def __init__(self) -> None:
        self.lengths: list[float] = []
        self._ends: list[asyncio.Future] = []
        self._asked = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.lengths.append(seconds)
        self._ends.append(asyncio.get_running_loop().create_future())
        self._asked.set()
        await self._ends[-1]

    async def begun(self, count: int) -> None:
        """Wait until the loop has begun its `count`-th nap (it has done its work before it)."""
        async with asyncio.timeout(10):
            while len(self.lengths) < count:
                self._asked.clear()
                await self._asked.wait()

    def end(self) -> None:
        """End the current nap: the loop goes round once more."""
        self._ends[-1].set_result(None)


@pytest.fixture
def naps(monkeypatch: pytest.MonkeyPatch) -> Naps:
    stand_in = Naps()
    monkeypatch.setattr(notify, "asyncio", types.SimpleNamespace(sleep=stand_in.sleep))
    return stand_in


async def rounds(naps: Naps, count: int) -> None:
    """Let the keep-alive loop go round `count` more times, each up to its next nap."""
    for _ in range(count):
        done = len(naps.lengths)
        naps.end()
        await naps.begun(done + 1)


async def test_keep_alive_pings_at_once_then_every_half_interval(systemd: FakeSystemd, naps: Naps) -> None:
    notifier = Notifier(systemd.environ(WATCHDOG_USEC="400000", WATCHDOG_PID=str(os.getpid())))  # 0.4 s
    task = asyncio.create_task(notifier.keep_alive(lambda: True))
    try:
        await naps.begun(1)
        assert systemd.pending() == ["WATCHDOG=1"]  # the first ping goes out before the first wait
        await rounds(naps, 4)
        assert systemd.pending() == ["WATCHDOG=1"] * 4  # one ping each time round
    finally:
        task.cancel()
    assert naps.lengths == [0.2] * 5  # and each wait is half the interval


async def test_keep_alive_stays_silent_while_unhealthy(systemd: FakeSystemd, naps: Naps) -> None:
    health = {"ok": True}
    task = asyncio.create_task(Notifier(systemd.environ(WATCHDOG_USEC="200000")).keep_alive(lambda: health["ok"]))
    try:
        await naps.begun(1)
        assert systemd.pending() == ["WATCHDOG=1"]
        health["ok"] = False
        await rounds(naps, 6)  # six times round, each asking the check
        assert systemd.pending() == []
        health["ok"] = True
        await rounds(naps, 2)
        assert systemd.pending() == ["WATCHDOG=1"] * 2
    finally:
        task.cancel()


async def test_a_health_check_that_raises_counts_as_unhealthy(systemd: FakeSystemd, naps: Naps) -> None:
    calls = []

    def broken() -> bool:
        calls.append(len(calls))
        if len(calls) <= 3:
            raise RuntimeError("store closed")
        return True

    task = asyncio.create_task(Notifier(systemd.environ(WATCHDOG_USEC="100000")).keep_alive(broken))
    try:
        await naps.begun(1)
        await rounds(naps, 2)
        assert len(calls) == 3 and systemd.pending() == [] and not task.done()  # it keeps going
        await rounds(naps, 1)
        assert systemd.pending() == ["WATCHDOG=1"]  # and pings again once the check recovers
    finally:
        task.cancel()

