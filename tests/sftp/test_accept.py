"""Admission: connections are handed to the SSH layer a few at a time, and a silent one cannot hold the door."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from daemon.sftp import accept

Client = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Logins:
    """A stand-in for the SSH layer: records each accepted socket and holds it until told to let go."""

    def __init__(self) -> None:
        self.started: list[socket.socket] = []
        self.arrived = asyncio.Condition()
        self.release = asyncio.Event()

    async def start(self, conn: socket.socket) -> None:
        async with self.arrived:
            self.started.append(conn)
            self.arrived.notify_all()
        try:
            await self.release.wait()
        finally:
            conn.close()

    async def until(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.started) >= count), 30)


@contextlib.asynccontextmanager
async def listening(start: accept.Start, connections: int, **options: float) -> AsyncIterator[list[Client]]:
    """A Listener on a free loopback port with `connections` clients connected to it; all closed after."""
    listener = accept.Listener(accept.bind("127.0.0.1", 0), start, **options)
    clients: list[Client] = []
    try:
        for _ in range(connections):
            clients.append(await asyncio.open_connection("127.0.0.1", listener.get_port()))
        yield clients
    finally:
        listener.close()
        await listener.wait_closed()
        for _reader, writer in clients:
            writer.close()


async def _settle() -> None:
    """Give the listener every chance to accept more than it should (loop turns, not a timing claim)."""
    for _ in range(200):
        await asyncio.sleep(0)


async def test_at_most_the_set_number_of_logins_run_and_the_rest_follow_as_they_end() -> None:
    logins = Logins()
    async with listening(logins.start, 7, handshakes=3, admit_seconds=3600):
        await logins.until(3)
        await _settle()
        assert len(logins.started) == 3  # four wait in the backlog, unaccepted
        logins.release.set()
        await logins.until(7)
        assert len(logins.started) == 7


async def test_a_login_that_takes_too_long_gives_its_place_to_the_next_connection() -> None:
    logins = Logins()  # never released: every login "stalls", as a client that connects and says nothing
    try:
        async with listening(logins.start, 3, handshakes=1, admit_seconds=0.05):
            await logins.until(3)  # each took the one place in turn, after the one before had held it too long
            assert len(logins.started) == 3
    finally:
        logins.release.set()


async def test_a_failed_login_gives_its_place_back_and_closes_the_socket() -> None:
    accepted: list[socket.socket] = []

    async def fail(conn: socket.socket) -> None:
        accepted.append(conn)
        raise ConnectionError("the client went away during the key exchange")

    async with listening(fail, 3, handshakes=1, admit_seconds=3600) as clients:
        for reader, _writer in clients:  # each is accepted in turn and closed: the client reads end of file
            assert await asyncio.wait_for(reader.read(), 30) == b""
        assert len(accepted) == 3 and all(conn.fileno() == -1 for conn in accepted)


async def test_closing_stops_accepting_and_frees_the_port() -> None:
    logins = Logins()
    logins.release.set()
    listener = accept.Listener(accept.bind("127.0.0.1", 0), logins.start)
    port = listener.get_port()
    listener.close()
    await listener.wait_closed()
    try:
        await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError("the port still accepts connections after close")
    accept.bind("127.0.0.1", port)[0].close()  # and it can be bound again at once
