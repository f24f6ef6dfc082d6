"""The per-tenant queue: per tenant, uploads are handled one at a time in arrival order; tenants run in
parallel up to a worker limit.

Owns the queues, which uploads wait in them or are being handled (`busy`), and `idle` (set whenever none
is). Given `handle`, the supervisor's turn for one upload (daemon/intake/supervisor.py), and the number of
uploads handled at once across tenants. A stop or a reload cancels a tenant's loop, never an upload half-way:
each runs in its own task, which a stop gives a grace period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from daemon.store import Upload


class TenantQueues:
    def __init__(self, handle: Callable[[Upload], Awaitable[None]], workers: int) -> None:
        self.handle = handle
        self._queues: dict[str, asyncio.Queue[Upload]] = {}
        self._workers = asyncio.Semaphore(workers)
        self._queued: set[str] = set()  # upload ids waiting in a queue or being handled
        self._serving: dict[str, asyncio.Task] = {}  # tenant -> the loop taking its queue in order
        self._processing: set[asyncio.Task] = set()  # uploads being handled right now
        self._pending = 0
        self.idle = asyncio.Event()  # set whenever no upload is waiting or being handled
        self.idle.set()

    def add(self, tenants: Iterable[str]) -> None:
        """New, empty queues for these tenants (their loops start with `serve`); a queue that exists stays."""
        for name in tenants:
            self._queues.setdefault(name, asyncio.Queue())

    def serve(self, tenants: Iterable[str]) -> None:
        """Start taking the queues of these tenants that are not being taken yet."""
        for name in tenants:
            if name not in self._serving:
                self._serving[name] = asyncio.create_task(self._serve_tenant(name), name=f"intake-{name}")

    def serving(self) -> set[str]:
        return set(self._serving)

    def drop(self, tenant: str) -> None:
        """A removed tenant: its loop stops; an upload being handled finishes (it runs in its own task). The
        uploads still waiting leave the queue and stop counting as busy, so that if the tenant comes back
        (another reload) the supervisor re-drives them rather than taking them for queued forever."""
        self._serving.pop(tenant).cancel()
        queue = self._queues.pop(tenant, None)
        while queue is not None and not queue.empty():
            self._finished(queue.get_nowait().id)

    def busy(self, upload_id: str) -> bool:
        return upload_id in self._queued

    def enqueue(self, upload: Upload) -> None:
        """Queue an upload once; one of a tenant that has no queue (removed by a reload) is left for the
        supervisor, which re-drives it should the tenant come back."""
        if upload.id in self._queued or upload.tenant not in self._queues:
            return
        self._queued.add(upload.id)
        self._pending += 1
        self.idle.clear()
        self._queues[upload.tenant].put_nowait(upload)

    async def stop(self, grace_seconds: float = 0.0) -> None:
        """Take nothing new; give uploads being handled up to `grace_seconds`, then cut them off."""
        loops = list(self._serving.values())
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        if self._processing:
            _done, cut = await asyncio.wait(set(self._processing), timeout=grace_seconds)
            for task in cut:
                task.cancel()
            await asyncio.gather(*cut, return_exceptions=True)

    async def _serve_tenant(self, tenant: str) -> None:
        queue = self._queues[tenant]
        while True:
            upload = await queue.get()
            work = asyncio.create_task(self._handle_one(upload), name=f"upload-{upload.id}")
            self._processing.add(work)
            work.add_done_callback(self._processing.discard)
            await asyncio.shield(work)  # a stop or reload cancels this loop, never the upload half-way

    async def _handle_one(self, upload: Upload) -> None:
        try:
            async with self._workers:
                await self.handle(upload)
        finally:
            self._finished(upload.id)

    def _finished(self, upload_id: str) -> None:
        self._queued.discard(upload_id)
        self._pending -= 1
        if self._pending == 0:
            self.idle.set()
