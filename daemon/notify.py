"""Telling systemd how the daemon is doing: the sd_notify datagram protocol, and the watchdog.

systemd (Type=notify) hands the service a datagram socket in $NOTIFY_SOCKET: a file system path, or a
name in Linux's abstract namespace when it starts with "@". Each message is one datagram of
newline-separated KEY=VALUE lines. Without $NOTIFY_SOCKET (a terminal, a test, another supervisor) every
call here does nothing, so callers never need to ask.

A notification is advisory: when the socket is gone or full the message is dropped and the call returns
False. Nothing here raises or logs on a failed send; a daemon must never fall over because its supervisor
stopped listening.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping


class Notifier:
    """The daemon's side of sd_notify. Build it once at start; it reads the environment only then."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._address = _socket_address(environ.get("NOTIFY_SOCKET", ""))
        self._watchdog = _watchdog_interval(environ)

    @property
    def enabled(self) -> bool:
        """True when a supervisor gave us a socket to report to."""
        return self._address is not None

    def ready(self, status: str) -> bool:
        """Start-up (or a reload) is complete: systemd now counts the service as running."""
        return self._send(f"READY=1\nSTATUS={_one_line(status)}")

    def status(self, text: str) -> bool:
        """A free-text line shown by `systemctl status`."""
        return self._send(f"STATUS={_one_line(text)}")

    def reloading(self) -> bool:
        """A reload began; ready() ends it. The timestamp lets systemd match this to the reload it asked for."""
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send(f"RELOADING=1\nMONOTONIC_USEC={now_us}")

    def stopping(self) -> bool:
        """Shutdown began: systemd stops expecting watchdog pings and waits up to TimeoutStopSec."""
        return self._send("STOPPING=1")

    def watchdog_seconds(self) -> float | None:
        """How often systemd wants to hear from us (WatchdogSec=), or None when no one is waiting for pings.

        The interval is ours only if WATCHDOG_PID is unset or names this process: a child that inherited the
        environment must not keep its parent's watchdog happy.
        """
        if not self.enabled or self._watchdog is None:
            return None
        seconds, pid = self._watchdog
        if pid is not None and pid != os.getpid():
            return None
        return seconds

    def watchdog(self) -> bool:
        """One keep-alive ping."""
        return self._send("WATCHDOG=1")

    async def keep_alive(self, healthy: Callable[[], bool]) -> None:
        """Ping the watchdog every half interval for as long as the task runs, but only while healthy().

        A loop that is stuck never gets here to ping, and an unhealthy daemon chooses not to: either way
        systemd sees the interval pass in silence and restarts the service (Restart=on-failure). A healthy()
        that raises counts as unhealthy. Returns at once when no watchdog is configured; cancel it to stop.
        """
        interval = self.watchdog_seconds()
        if interval is None:
            return
        while True:
            if _is_healthy(healthy):
                self.watchdog()
            await asyncio.sleep(interval / 2)

    def _send(self, message: str) -> bool:
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block the event loop: a receiver that is not draining its queue gets nothing.
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except OSError:
            return False
        return True


def _socket_address(value: str) -> str | bytes | None:
    """The address to send to: a path, an abstract name (leading NUL), or None for anything unusable."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # unset, empty, relative, or a transport we do not speak (vsock:)


def _watchdog_interval(environ: Mapping[str, str]) -> tuple[float, int | None] | None:
    """(seconds, pid or None) from WATCHDOG_USEC and WATCHDOG_PID; None when either is missing or malformed."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        raw_pid = environ.get("WATCHDOG_PID")
        pid = int(raw_pid) if raw_pid else None
    except ValueError:
        return None
    if usec <= 0 or (pid is not None and pid <= 0):
        return None
    return usec / 1_000_000, pid


def _one_line(text: str) -> str:
    """A status must stay on its line: a newline would start a field systemd might act on."""
    return " ".join(text.splitlines())


def _is_healthy(healthy: Callable[[], bool]) -> bool:
    # A broken health check is not a healthy daemon, and must not end the pings for good either.
    try:
        return bool(healthy())
    except Exception:  # noqa: BLE001
        return False
