"""Run an iterator one step ahead in a thread, so producing the next item overlaps using this one.

Decompressing a zip entry (zlib) and checking rows (polars) both release the GIL, so reading chunk n+1
while chunk n is checked saves most of the decompression time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(source: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield the items of `source`, computing up to `depth` of them ahead in a worker thread.

    An exception from `source` is raised here, at the point where its item would have come. Closing this
    generator early stops the worker.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple) -> bool:
        """Put unless the consumer has gone away; False when it has."""
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in source:
                if not offer((item, None)):
                    return
            offer((_DONE, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            offer((_DONE, exc))

    worker = threading.Thread(target=work, name="rosterd-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)
