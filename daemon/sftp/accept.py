"""The listening sockets: connections are admitted a few at a time, so a burst cannot hold up open sessions.

asyncio's own server accepts every waiting connection in one go (up to the backlog), and asyncssh starts each
one's key exchange at once: when two hundred clients arrive together, one loop turn holds two hundred
handshakes' worth of work, and a session already open waits that long for each answer. Here each socket
accepts one connection per loop turn, and only while fewer than `handshakes` connections are between their
TCP accept and the end of their login (key exchange and authentication, the costly part of a connection),
or their first `admit_seconds`, whichever ends first. The others wait in the kernel's backlog, where they cost
the daemon nothing; a client only sees its login take a little longer. The time bound keeps connections that
open and then say nothing (or say it slowly) from holding the door: each holds a place for at most that long,
and then logs in (or is dropped at `login_grace_seconds`) like any other. Once logged in, a connection no
longer counts: its sessions are bounded elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Awaitable, Callable

HANDSHAKES = 4  # connections logging in at once; the rest wait to be accepted
ADMIT_SECONDS = 1.0  # a login still going after this long gives its place to the next connection
BACKLOG = 1024  # connections the kernel holds for us (capped by net.core.somaxconn)
RETRY_SECONDS = 0.5  # after an accept failed for want of file descriptors or memory

Start = Callable[[socket.socket], Awaitable[object]]  # runs SSH on an accepted socket until the login ends


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address `host` names (all of this machine's when empty), on one port: with
    port 0, the port the first address got. Raises OSError as `bind` does."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accept loops over `sockets`, handing each connection to `start` with at most `handshakes` in flight."""

    def __init__(self, sockets: list[socket.socket], start: Start, handshakes: int = HANDSHAKES,
                 admit_seconds: float = ADMIT_SECONDS) -> None:  # fmt: skip
        self.sockets = sockets
        self._start = start
        self._admit_seconds = admit_seconds
        self._slots = asyncio.Semaphore(handshakes)
        self._loops = [asyncio.create_task(self._accept(sock)) for sock in sockets]
        self._logins: set[asyncio.Task] = set()

    def get_port(self) -> int:
        return self.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stop accepting; connections already accepted, logging in or not, go on."""
        for task in self._loops:
            task.cancel()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                conn, _address = await loop.sock_accept(sock)
            except BaseException as exc:
                self._slots.release()
                if not isinstance(exc, OSError) or exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS,
                                                                     errno.ENOMEM, errno.ECONNABORTED):  # fmt: skip
                    raise
                await asyncio.sleep(0 if exc.errno == errno.ECONNABORTED else RETRY_SECONDS)
                continue
            login = asyncio.create_task(self._login(conn))
            self._logins.add(login)
            login.add_done_callback(self._logins.discard)

    async def _login(self, conn: socket.socket) -> None:
        """Run SSH on `conn`, holding the place `_accept` took until the login ends or its time to count is up."""
        place = [self._slots]  # emptied when given back: once, by whichever comes first

        def give_back() -> None:
            if place:
                place.pop().release()

        timer = asyncio.get_running_loop().call_later(self._admit_seconds, give_back)
        try:
            await self._start(conn)
        except Exception:  # noqa: BLE001 - the SSH layer has logged why the login failed and closed it
            with contextlib.suppress(OSError):
                conn.close()
        finally:
            timer.cancel()
            give_back()
