"""The bookkeeping both fake services share (the CERS fake and the webhook vendor): an aiohttp app served on a
free loopback port, every request recorded with the fault a test arranged for it, and the faults that act
below HTTP (a dropped connection, an answer held back).

A test arranges trouble through `faults`: each request takes the first one left. What a fault answers over
HTTP, and which faults there are beyond `FAULTS`, is each fake's own contract.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass, field

from aiohttp import hdrs, web

FAULTS = ("500", "503", "429", "429:<seconds or HTTP-date>", "timeout", "reset")  # what every fake takes


@dataclass(kw_only=True)
class Seen:
    """What both fakes note of every request; each adds what its contract is about."""

    fault: str | None = field(default=None)  # the fault this request took
    status: int | None = field(default=None)  # None: the connection was dropped without an answer


class FakeService:
    def __init__(self, *, hang_seconds: float) -> None:
        self.hang_seconds = hang_seconds  # how long a "timeout" fault holds its answer back (close ends it sooner)
        self.faults: list[str] = []
        self.requests: list = []  # each fake's Seen records, oldest first
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    async def _serve(self, app: web.Application) -> str:
        """Serve `app` on 127.0.0.1 at a free port; its base URL, `http://127.0.0.1:PORT`."""
        self._closing.clear()
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def close(self) -> None:
        self._closing.set()  # answers held back by a "timeout" fault go out now
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _record(self, seen: Seen) -> Seen:
        """Keep `seen` and give it the next fault arranged, if any."""
        self.requests.append(seen)
        seen.fault = self.faults.pop(0) if self.faults else None
        return seen

    async def _hang(self) -> None:
        """Hold an answer back for `hang_seconds`, or until the fake closes."""
        try:
            await asyncio.wait_for(self._closing.wait(), self.hang_seconds)
        except TimeoutError:
            pass


def is_rate_limit(fault: str | None) -> bool:
    return fault is not None and (fault == "429" or fault.startswith("429:"))


def retry_after(fault: str) -> dict[str, str] | None:
    """The Retry-After header a "429:<value>" fault answers with; none for a bare "429"."""
    value = fault.partition(":")[2].strip()
    return {hdrs.RETRY_AFTER: value} if value else None


def drop_connection(request: web.Request) -> None:
    """The "reset" fault: a zero linger time turns close() into a TCP RST, so the client sees "connection reset
    by peer"."""
    request.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    request.transport.abort()
