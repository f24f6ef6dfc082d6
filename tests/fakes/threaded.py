"""Serve a fake (anything with async start() and close()) from a thread with its own event loop, so a test
may block (the daemon harness waits synchronously) while a running daemon talks to the fake."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

Fake = TypeVar("Fake")


@contextmanager
def served_in_thread(fake: Fake) -> Iterator[Fake]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="fake-server")
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)  # type: ignore[attr-defined]
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.close(), loop).result(10)  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
