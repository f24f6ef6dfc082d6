"""The supervisor: nothing an error or a crash interrupted is left behind, and no upload is tried forever.

At start, and every `supervise_seconds` for the uploads intake is not handling at that moment, it finishes
what was cut off: files moved but not recorded (the arrivals' `repair`), final states whose receipt was not
written (answered from the stored result; a duplicate's bytes dropped), uploads recorded but not finished
(queued again, to resume from their last state). An error that is not a crash (a full disk, a bug) thus
leaves nothing behind until the next start either.

It also takes each upload's turn (`handle`): the upload as recorded now, skipped when its tenant was removed
or it was decided since it was queued, claimed in the store for this replica (skipped when another replica
has it, or an older upload of the tenant is unfinished: across replicas a tenant's uploads go one at a time,
in arrival order), handed to `process` (daemon/snapshots/process.py's Processor) while the claim's lease is
renewed every third of its length. A replica that finds its claim taken over records nothing more. An
upload whose processing raised MAX_CRASHES times is given up on (failed, never rejected: the district did
nothing wrong). When what processing needs is out of reach (UNAVAILABLE: no worker can run at all, the
database or the shared storage cannot be reached) the upload is not to blame: it waits for the next round, as
often as it takes, and /readyz says what is missing meanwhile.

Given the store, `process`, `answer`, the kept files, the log and, from intake, the tenants as they are
now, `busy`, `repair` and `enqueue`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from daemon.intake.kept import KeptFiles
from daemon.intake.seams import Answer, Process, TenantPaths
from daemon.intake.workers import PoolUnavailable
from daemon.objects import StorageError
from daemon.store import Refused, State, StoreInterface, StoreUnavailable, Upload

MAX_CRASHES = 3  # tries of an upload whose processing raised, before it is failed
UNAVAILABLE = (PoolUnavailable, StoreUnavailable, StorageError)  # the daemon's trouble, not the upload's


class Supervisor:
    def __init__(
        self,
        store: StoreInterface,
        process: Process,
        answer: Answer,
        kept: KeptFiles,
        log: Callable[..., None],
        tenants: Callable[[], Mapping[str, TenantPaths]],
        busy: Callable[[str], bool],
        repair: Callable[[Callable[[str], bool]], None],
        enqueue: Callable[[Upload], None],
    ) -> None:
        self.store = store
        self.process = process
        self.answer = answer
        self.kept = kept
        self.log = log  # log(event, **fields)
        self.tenants = tenants
        self.busy = busy
        self.repair = repair
        self.enqueue = enqueue
        self._crashes: dict[str, int] = {}  # upload id -> how often its processing raised

    async def recover(self) -> None:
        """Finish what a crash or an error left: files moved but not recorded, final states without their
        receipt, uploads not finished. Only uploads intake is not handling right now (at start: all)."""
        await asyncio.to_thread(self.repair, self.busy)
        for upload in await _db(self.store.unanswered):
            if upload.tenant in self.tenants() and not self.busy(upload.id):
                await self.reanswer(upload)
        for upload in await _db(self.store.unfinished):
            if upload.tenant in self.tenants() and not self.busy(upload.id):  # a removed tenant's uploads wait
                self.enqueue(upload)

    async def supervise_forever(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.recover()
            except Exception as exc:  # the next round tries again
                self.log("upload.failed", error=repr(exc), stage="supervise")

    async def handle(self, upload: Upload) -> None:
        """One upload's turn in its tenant's queue. Never raises: one upload's failure must never stop the
        tenant's queue, and the supervisor's next round tries it again."""
        try:
            upload = await _db(self.store.get, upload.id)
            if upload.tenant not in self.tenants() or upload.state.final:
                return  # its tenant was removed by a reload, or it was decided since it was queued
            try:
                upload = await _db(self.store.claim_upload, upload.id)
            except Refused as refused:  # another replica's turn; the next round looks again
                self.log("upload.skipped", tenant=upload.tenant, upload_id=upload.id, reason=str(refused))
                return
            renewing = asyncio.create_task(self._renew(upload), name=f"lease-{upload.id}")
            try:
                if self._crashes.get(upload.id, 0) >= MAX_CRASHES:
                    await self.process.give_up(upload, "its processing raised every time")
                else:
                    await self.process(upload)
            finally:
                renewing.cancel()
            self._crashes.pop(upload.id, None)
        except Refused as refused:  # the claim lapsed during a long pause and another replica took it over
            self.log("upload.lease_lost", tenant=upload.tenant, upload_id=upload.id, reason=str(refused))
        except Exception as exc:
            if not isinstance(exc, UNAVAILABLE):  # the upload's own trouble: counted towards failing it
                self._crashes[upload.id] = self._crashes.get(upload.id, 0) + 1
            self.log("upload.failed", tenant=upload.tenant, upload_id=upload.id, error=repr(exc),
                     attempt=self._crashes.get(upload.id, 0))  # fmt: skip

    async def _renew(self, upload: Upload) -> None:
        """Keep this replica's claim on the upload alive while it is processed. A renewal that fails (the store
        unreachable for a moment) is tried again; one that finds the claim gone says so in the log, and the
        processing's own writes are then refused."""
        while True:
            await asyncio.sleep(self.store.lease_seconds / 3)
            try:
                if not await _db(self.store.renew_upload, upload.id):
                    if not (await _db(self.store.get, upload.id)).state.final:  # final: done here, nothing lost
                        self.log("upload.lease_lost", tenant=upload.tenant, upload_id=upload.id,
                                 reason="another replica took it over")  # fmt: skip
                    return
            except Exception as exc:
                self.log("upload.lease_not_renewed", tenant=upload.tenant, upload_id=upload.id, error=repr(exc))

    async def reanswer(self, upload: Upload) -> None:
        """The receipt of an upload whose recorded final state has none yet (a crash or an error), built from
        what the store holds; latest.json too when it is the tenant's newest upload. A duplicate's bytes go."""
        upload = await _db(self.store.get, upload.id)
        if upload.answered_at is not None or not upload.state.final:
            return  # answered meanwhile
        if upload.state is State.DUPLICATE:
            await self.answer(upload)
            await asyncio.to_thread(self.kept.drop, upload)
            return
        await self.answer(upload, None)


async def _db(method, *args, **kwargs):
    """A store call in a worker thread: SQLite commits fsync, which must not stall the event loop."""
    return await asyncio.to_thread(method, *args, **kwargs)
