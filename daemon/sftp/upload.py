"""One upload's bytes on their way to the disk.

asyncssh handles one request of a session at a time, awaiting each before it reads the next, so a write
that waited for a thread would cost every request of an upload a thread round trip. Writes are therefore
gathered (as received, without copying) while they are contiguous and handed to a worker thread a mebibyte
at a time as one pwritev, without waiting. The session makes a write wait when two such flushes of the
upload are still on their way (a few MiB per upload at most), or when the session or the whole listener
holds more unwritten bytes than its bound (back pressure). Every byte gathered is counted in the session's
account until its flush is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field

from asyncssh import SFTPError, SFTPOpUnsupported

from daemon.sftp import fs
from daemon.sftp.limits import SessionAccount, run_in

FLUSH_BYTES = 1024 * 1024  # contiguous writes gathered before one write to disk in a thread
MAX_FLUSHES_IN_FLIGHT = 2  # per upload; one more makes the client's write wait
MAX_GATHERED_WRITES = 256  # well under IOV_MAX (1024 on Linux): one pwritev takes them all


class Handle:
    """What asyncssh holds for an open file."""

    def seek(self, *args: object) -> None:
        """asyncssh's ranges extension seeks a handle directly; these handles are not files."""
        raise SFTPOpUnsupported("Operation not supported")


@dataclass(eq=False)
class Upload(Handle):
    temp: fs.TempFile
    name: str  # the name the client asked for
    account: SessionAccount
    pool: Executor  # where its writes to disk run
    size: int = 0  # bytes written so far (the end of the furthest write), counted against quota and disk
    settled: bool = False  # its bytes were given back to the account (published or dropped)
    started: float = field(default_factory=time.monotonic)
    refused: SFTPError | None = None  # once a write was refused, the upload is gone for good
    gathered: list[bytes] = field(default_factory=list)  # contiguous writes not yet handed to a thread
    gathered_at: int = 0  # the file offset of gathered[0]
    gathered_bytes: int = 0
    flushes: deque[asyncio.Future] = field(default_factory=deque)  # writes to disk under way, oldest first

    def grow(self, growth: int) -> None:
        """`growth` more bytes, counted against the inbox quota and the free space."""
        self.account.grow(growth)
        self.size += growth

    def settle(self, published: bool) -> None:
        """Give its bytes back to the account, once: they stay in the inbox only when published."""
        if not self.settled:
            self.settled = True
            self.account.settle(self.size, published)

    def gather(self, offset: int, data: bytes) -> None:
        """Take one write; what is gathered goes to a thread when this one does not follow it, or is enough."""
        if self.gathered and offset != self.gathered_at + self.gathered_bytes:
            self.flush()  # not contiguous (a client writing out of order): the gathered part goes first
        if not self.gathered:
            self.gathered_at = offset
        self.gathered.append(data)  # kept as received, not copied: one pwritev writes them all
        self.gathered_bytes += len(data)
        self.account.buffer(len(data))
        if self.gathered_bytes >= FLUSH_BYTES or len(self.gathered) >= MAX_GATHERED_WRITES:
            self.flush()

    def flush(self) -> None:
        """Hand the gathered writes to a worker thread, without waiting for it."""
        if not self.gathered:
            return
        chunks, at, size = self.gathered, self.gathered_at, self.gathered_bytes
        self.gathered, self.gathered_bytes = [], 0
        flush = run_in(self.pool, fs.write_at, self.temp.fd, chunks, at)
        flush.add_done_callback(lambda _: self.account.unbuffer(size))
        self.flushes.append(flush)

    def flush_to_settle(self) -> bool:
        """Whether the oldest flush must be awaited now: it is done, or too many are on their way."""
        return bool(self.flushes) and (len(self.flushes) > MAX_FLUSHES_IN_FLIGHT or self.flushes[0].done())

    def on_their_way(self) -> list[asyncio.Future]:
        return [flush for flush in self.flushes if not flush.done()]

    async def stop_writing(self) -> None:
        """Forget what is gathered and wait out the flushes under way (their errors too): the file may then go."""
        self.account.unbuffer(self.gathered_bytes)
        self.gathered, self.gathered_bytes = [], 0
        while self.flushes:
            with contextlib.suppress(OSError):
                await self.flushes.popleft()
