"""Intake: completed uploads in each tenant's inbox -> recorded, queued per tenant, handed on one at a time.

The second stage of the flow, after the SFTP layer (which it meets only at the inboxes and an UploadReceived
record) and before the processing of an upload (daemon/snapshots/process.py), which it is handed as
`process` and never imports; nor does it import the receipts, whose `answer` it is handed too.

    arrivals.py    the server's own completed uploads, the watcher, the rescan, settle -> take (label, move,
                   hash, record) -> the "received" receipt; repair after a crash; quarantine expiry
    kept.py        the uploads and quarantine folders, and every name in them
    queue.py       per tenant one upload at a time, in arrival order; tenants in parallel up to `workers`
    supervisor.py  each upload's turn, crash counting (MAX_CRASHES), and what an error or crash left behind
    decisions.py   operators' decisions from the store into the daemon's log
    workers.py     the worker process pool that the processing runs the worker's job in
    seams.py       the types intake is given: TenantPaths, IntakeOptions, Process, Answer

Hashing, moves and database commits run in threads, so SFTP sessions on the event loop never stall.
`Intake` composes the parts: start, stop, reload (`update_tenants`) and the way in (`notify`, `rescan`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from daemon.intake.arrivals import Arrivals
from daemon.intake.decisions import DecisionLog
from daemon.intake.kept import NAME_SEPARATOR, KeptFiles
from daemon.intake.queue import TenantQueues
from daemon.intake.seams import Answer, IntakeOptions, Process, TenantPaths
from daemon.intake.supervisor import MAX_CRASHES, Supervisor
from daemon.sftp.events import UploadReceived
from daemon.store import Store, Upload

__all__ = ["MAX_CRASHES", "NAME_SEPARATOR", "Answer", "Intake", "IntakeOptions", "KeptFiles", "Process",
           "TenantPaths"]  # fmt: skip


class Intake:
    def __init__(
        self,
        tenants: dict[str, TenantPaths],
        store: Store,
        options: IntakeOptions,
        log: Callable[..., None],
        process: Process,
        answer: Answer,
    ) -> None:
        self.tenants = tenants
        self.store = store
        self.options = options
        self.log = log  # log(event, **fields)
        self.kept = KeptFiles(options.state_dir, options.mirror)
        self.queues = TenantQueues(self._handle, options.workers)
        self.arrivals = Arrivals(store, self.kept, options, log, lambda: self.tenants, answer, self.queues.enqueue)
        self.supervisor = Supervisor(store, process, answer, self.kept, log, lambda: self.tenants, self._busy,
                                     self.arrivals.repair, self.queues.enqueue)  # fmt: skip
        self.decisions = DecisionLog(store, log, options.on_accepted)
        self.idle = self.queues.idle  # set whenever no upload is waiting or being processed
        self._tasks: list[asyncio.Task] = []
        self._watching: asyncio.Task | None = None

    async def start(self) -> None:
        for tenant in self.tenants.values():
            await asyncio.to_thread(self._prepare_folders, tenant)
        self.queues.add(self.tenants)
        await self.supervisor.recover()
        self.queues.serve(self.tenants)
        self._watching = asyncio.create_task(self.arrivals.watch(), name="intake-watch")
        self._tasks.append(asyncio.create_task(self.arrivals.rescan_forever(), name="intake-rescan"))
        self._tasks.append(asyncio.create_task(self.arrivals.expire_quarantine_forever(), name="intake-quarantine"))
        self._tasks.append(asyncio.create_task(self.supervisor.supervise_forever(self.options.supervise_seconds),
                                               name="intake-supervise"))  # fmt: skip
        self._tasks.append(asyncio.create_task(self.decisions.watch_forever(self.options.decisions_seconds),
                                               name="intake-decisions"))  # fmt: skip

    async def stop(self, grace_seconds: float = 0.0) -> None:
        """Take nothing new; give uploads being processed up to `grace_seconds` to reach their final state, then
        cut them off (their recorded state is `validating`: they are processed again at the next start)."""
        tasks = [*self._tasks, *filter(None, [self._watching])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.arrivals.stop()
        await self.queues.stop(grace_seconds)

    async def update_tenants(self, tenants: dict[str, TenantPaths]) -> None:
        """A reload: tenants added start being served, removed ones stop (their uploads stay recorded and go on
        if the tenant comes back), changed settings count from the next upload on."""
        for name in tenants.keys() - self.tenants.keys():
            await asyncio.to_thread(self._prepare_folders, tenants[name])
        self.queues.add(tenants.keys() - self.tenants.keys())
        for name in self.tenants.keys() - tenants.keys():
            self.queues.drop(name)  # an upload being processed finishes: it runs in its own task
        self.tenants = dict(tenants)
        for name in tenants.keys() - self.queues.serving():
            self.queues.serve([name])
            for upload in await asyncio.to_thread(self.store.unfinished):
                if upload.tenant == name:
                    self.queues.enqueue(upload)
        if self._watching is not None:  # watch the inboxes as they are now
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
            self._watching = asyncio.create_task(self.arrivals.watch(), name="intake-watch")
        await self.rescan()

    async def notify(self, event: UploadReceived) -> bool:
        """The SFTP server completed an upload: take it now, no settle period needed. Whether it is recorded."""
        return await self.arrivals.notify(event.tenant, event.path, event.session_id)

    async def rescan(self, settle: bool = True) -> None:
        await self.arrivals.rescan(settle)

    async def log_decisions(self) -> None:
        await self.decisions.log_decisions()

    def _busy(self, upload_id: str) -> bool:
        return upload_id in self.arrivals.claimed or self.queues.busy(upload_id)

    async def _handle(self, upload: Upload) -> None:
        await self.supervisor.handle(upload)

    def _prepare_folders(self, tenant: TenantPaths) -> None:
        tenant.inbox.mkdir(parents=True, exist_ok=True)
        self.kept.folder(tenant.name).mkdir(parents=True, exist_ok=True)
