"""Admission: connections are handed to the SSH layer a few at a time, and a silent one cannot hold the door."""

from __future__ import annotations

import asyncio
import socket

from daemon.sftp import accept


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


async def _connect(port: int, count: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]


async def _settle() -> None:
    """Give the listener every chance to accept more than it should (loop turns, not a timing claim)."""
    for _ in range(200):
        await asyncio.sleep(0)


async def test_at_most_the_set_number_of_logins_run_and_the_rest_follow_as_they_end() -> None:
    logins = Logins()
    listener = accept.Listener(accept.bind("127.0.0.1", 0), logins.start, handshakes=3, admit_seconds=3600)
    clients = await _connect(listener.get_port(), 7)
    try:
        await logins.until(3)
        await _settle()
        assert len(logins.started) == 3  # four wait in the backlog, unaccepted
        logins.release.set()
        await logins.until(7)
        assert len(logins.started) == 7
    finally:
        listener.close()
        await listener.wait_closed()
        for _reader, writer in clients:
            writer.close()


async def test_a_login_that_takes_too_long_gives_its_place_to_the_next_connection() -> None:
    logins = Logins()  # never released: every login "stalls", as a client that connects and says nothing
    listener = accept.Listener(accept.bind("127.0.0.1", 0), logins.start, handshakes=1, admit_seconds=0.05)
    clients = await _connect(listener.get_port(), 3)
    try:
        await logins.until(3)  # each took the one place in turn, after the one before had held it too long
        assert len(logins.started) == 3
    finally:
        listener.close()
        await listener.wait_closed()
        logins.release.set()
        for _reader, writer in clients:
            writer.close()


async def test_a_failed_login_gives_its_place_back_and_closes_the_socket() -> None:
    accepted: list[socket.socket] = []

    async def fail(conn: socket.socket) -> None:
        accepted.append(conn)
        raise ConnectionError("the client went away during the key exchange")

    listener = accept.Listener(accept.bind("127.0.0.1", 0), fail, handshakes=1, admit_seconds=3600)
    clients = await _connect(listener.get_port(), 3)
    try:
        for reader, _writer in clients:  # each is accepted in turn and closed: the client reads end of file
            assert await asyncio.wait_for(reader.read(), 30) == b""
        assert len(accepted) == 3 and all(conn.fileno() == -1 for conn in accepted)
    finally:
        listener.close()
        await listener.wait_closed()
        for _reader, writer in clients:
            writer.close()


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
