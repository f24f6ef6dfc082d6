"""The processing of one upload: recorded upload in, final state out, with its snapshot and receipt.

In its tenant's turn (intake hands it over, one at a time per tenant), an upload is first judged a duplicate
or not: judged now, not on arrival, because the uploads ahead of it decide which upload is current by now.
A duplicate is answered and its bytes dropped. Otherwise it is set `validating` and the worker's job
(daemon/snapshots/job.py: validate, merge onto the current snapshot, diff, holds, stage) runs in the worker
pool. A rejected upload is recorded with its findings and set aside; a valid one's staged snapshot is
published and recorded, accepted or held, and older held uploads it supersedes are answered. Should an
operator's approval change the tenant's current snapshot meanwhile (StaleBase), the job runs again against
the new one, up to MAX_ATTEMPTS times. An upload whose worker process died twice, or that needed more
memory than a worker may have, is `failed`, never `rejected`: the district did nothing wrong.

Owns that sequence, its log events (upload.duplicate, upload.validating, upload.rediffed, upload.<final
state>, upload.superseded, snapshot.accepted, snapshot.pruned through retention) and the wording of a failed
upload's receipt detail. Given, by daemon/app.py: each tenant's TenantRules (its validation options and hold
thresholds, built once from the settings), the store, the worker pool, `ProcessOptions`, the log, `answer`
(daemon/receipts/writer.py's Receipts.answer, the one writer of receipts) and intake's KeptFiles. Hands the
worker pool an UploadJob and takes back a JobResult (daemon/snapshots/job.py); records the snapshot's
SnapshotMeta as the store's SnapshotRecord (the same fields, with tenant, folder and samples). Setting a
rejected or failed upload's file aside is intake's (its quarantine folder, which intake also expires and
repairs): the Processor asks KeptFiles for the place, records it, and has KeptFiles move the file. Hands on:
the final state in the store, `on_final` (metrics) and `on_accepted` (the outbox: deliveries of the new
current snapshot may go). `Processor` satisfies intake's `Process`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from daemon.intake.kept import KeptFiles
from daemon.intake.seams import Answer
from daemon.intake.workers import PoolUnavailable, WorkerDied, WorkerPool
from daemon.objects import StorageError
from daemon.objects.mirror import NO_MIRROR, Mirror, RemoteFolder
from daemon.snapshots import findings_file, retention, storage
from daemon.snapshots.job import JobResult, TenantRules, UploadJob, run_job
from daemon.store import SnapshotRecord, StaleBase, State, Store, Upload

MAX_ATTEMPTS = 3  # diffs of one upload, should the tenant's current snapshot change under it
INTERNAL_ERROR = "rosterd could not validate this upload because of an internal error."
MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True, slots=True)
class ProcessOptions:
    state_dir: Path
    snapshots_kept: int = 30
    on_accepted: Callable[[str, str], None] | None = None  # (tenant, upload_id): a new current snapshot
    on_final: Callable[[Upload, dict], None] | None = None  # (upload, the worker's timings): for metrics
    mirror: Mirror = NO_MIRROR  # where replicas share uploads and snapshots ([storage] kind = "s3")


class Processor:
    def __init__(
        self,
        tenants: Mapping[str, TenantRules],
        store: Store,
        pool: WorkerPool,
        options: ProcessOptions,
        log: Callable[..., None],
        answer: Answer,
        kept: KeptFiles,
    ) -> None:
        self.tenants = dict(tenants)
        self.store = store
        self.pool = pool
        self.options = options
        self.log = log  # log(event, **fields)
        self.answer = answer
        self.kept = kept

    async def prepare(self) -> None:
        """A snapshots folder for each tenant."""
        for name in self.tenants:
            folder = storage.tenant_folder(self.options.state_dir, name)
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)

    async def update_tenants(self, tenants: Mapping[str, TenantRules]) -> None:
        """A reload: the tenants' settings as configured now, from their next upload on."""
        self.tenants = dict(tenants)
        await self.prepare()

    async def __call__(self, upload: Upload) -> None:
        rules = self.tenants[upload.tenant]
        upload = await _db(self.store.judge_duplicate, upload.id)
        if upload.state is State.DUPLICATE:
            self.log("upload.duplicate", tenant=upload.tenant, upload_id=upload.id, sha256=upload.sha256)
            await self._answer_duplicate(upload)
            self._final(upload, {})
            return
        upload = await _db(self.store.set_state, upload.id, State.VALIDATING)
        self.log("upload.validating", tenant=upload.tenant, upload_id=upload.id, sha256=upload.sha256)
        started = time.monotonic()
        for _attempt in range(MAX_ATTEMPTS):
            job, rebaseline = await self._job(upload, rules)
            about = {"tenant": upload.tenant, "upload_id": upload.id}
            try:
                outcome: JobResult = await self.pool.run(run_job, job, about=about)
            except PoolUnavailable:  # nothing to do with the upload: tried again later
                raise
            except Exception as exc:  # its worker died twice, it ran out of memory, or the validator crashed
                if isinstance(job.base, RemoteFolder) and not await asyncio.to_thread(self._storage_answers):
                    # or the shared storage stopped answering while the base was read: not the upload's doing
                    raise StorageError(f"the shared storage failed while {upload.id} was processed: {exc!r}") from exc
                await self._fail(upload, failure_detail(exc, self.pool.memory_bytes), repr(exc))
                return
            if job.findings is not None:  # for every replica's console, before the upload is recorded
                await asyncio.to_thread(self.options.mirror.push_newest, job.findings, findings_file.KEPT)
            result = retention.trim(outcome.validation)
            snapshot = outcome.snapshot
            if snapshot is None:
                upload = await self._set_aside(upload, State.REJECTED, result)
                break
            try:
                upload = await self._take_snapshot(upload, job, outcome, result, rebaseline)
                break
            except StaleBase:  # an admin approved a held upload meanwhile: diff against the new current one
                self.log("upload.rediffed", tenant=upload.tenant, upload_id=upload.id)
        else:
            raise RuntimeError(f"{upload.id}: the tenant's current snapshot kept changing; tried {MAX_ATTEMPTS} times")
        elapsed_ms = int((time.monotonic() - started) * 1000)
        self.log(f"upload.{upload.state}", tenant=upload.tenant, upload_id=upload.id, sha256=upload.sha256,
                 elapsed_ms=elapsed_ms, counts_by_code=result["counts_by_code"],
                 changes=snapshot.changes if snapshot else None)  # fmt: skip
        await self.answer(upload)
        self._final(upload, outcome.timings)
        if upload.state is State.ACCEPTED and self.options.on_accepted is not None:
            self.options.on_accepted(upload.tenant, upload.id)  # after the receipt: deliveries rewrite it

    def _storage_answers(self) -> bool:
        try:
            self.options.mirror.storage.list("snapshots/.probe")
        except StorageError:
            return False
        return True

    async def give_up(self, upload: Upload, error: str) -> None:
        """Intake's supervisor gives up on an upload whose processing kept raising: failed, with no more said
        to the district than that it was an internal error."""
        await self._fail(upload, INTERNAL_ERROR, error)

    async def _job(self, upload: Upload, rules: TenantRules) -> tuple[UploadJob, tuple[str, str] | None]:
        """The worker's job: the tenant's rules, where to stage, and the snapshot to diff against (none when an
        operator asked for a rebaseline); with that request, (when, by whom), or None."""
        base = None
        mirror = self.options.mirror
        package = await asyncio.to_thread(mirror.fetch_file, Path(upload.path))  # another replica may have it
        if package is None:
            raise FileNotFoundError(f"the bytes of {upload.id} are neither here nor in the shared storage")
        rebaseline = await _db(self.store.rebaseline_requested, upload.tenant)
        if not rebaseline:
            current = await _db(self.store.current_snapshot, upload.tenant)
            if current is not None:
                base = await asyncio.to_thread(mirror.locate_folder, Path(current.path), storage.META_FILE)
                if base is None:
                    raise FileNotFoundError(f"snapshot {current.upload_id}, the base of {upload.id}, is neither "
                                            "here nor whole in the shared storage")  # fmt: skip
        staging = storage.staging_folder(self.options.state_dir, upload.tenant, upload.id)
        findings = findings_file.path_of(self.options.state_dir, upload.tenant, upload.id)
        return UploadJob(package, staging, base, rules, findings), rebaseline

    async def _take_snapshot(
        self, upload: Upload, job: UploadJob, outcome: JobResult, result: dict, rebaseline: tuple[str, str] | None
    ) -> Upload:
        """Publish the staged snapshot, record it (accepted, or held when a threshold was crossed), prune."""
        snapshot = outcome.snapshot
        assert snapshot is not None
        final = storage.final_folder(self.options.state_dir, upload.tenant, upload.id)
        await asyncio.to_thread(storage.publish, job.staging, final)
        await asyncio.to_thread(self.options.mirror.push_folder, final, storage.META_FILE)  # before it is recorded
        record = SnapshotRecord(tenant=upload.tenant, path=str(final), samples=outcome.samples, **asdict(snapshot))
        state = State.HELD if snapshot.holds else State.ACCEPTED
        try:
            upload = await _db(self.store.record_snapshot, upload.id, record, state, result,
                               check_base=not rebaseline)  # fmt: skip
        except StaleBase:
            await asyncio.to_thread(storage.clear, final)
            await asyncio.to_thread(self.options.mirror.drop_folder, final)
            raise
        if state is State.ACCEPTED:
            fresh = {"rebaseline_by": rebaseline[1]} if rebaseline else {}
            self.log("snapshot.accepted", tenant=upload.tenant, upload_id=upload.id, rows=snapshot.rows,
                     base_upload_id=snapshot.base_upload_id, **fresh)  # fmt: skip
            for superseded in await _db(self.store.unanswered, upload.tenant, State.SUPERSEDED):
                self.log("upload.superseded", tenant=upload.tenant, upload_id=superseded.id, by=upload.id)
                await self._answer_superseded(superseded)
        await asyncio.to_thread(retention.prune, self.store, upload.tenant, self.options.snapshots_kept, self.log,
                                self.options.mirror)  # fmt: skip
        return upload

    async def _answer_superseded(self, upload: Upload) -> None:
        """A held upload that a newer one superseded: its receipt, unless answered meanwhile; never latest.json
        (the superseding upload is newer)."""
        upload = await _db(self.store.get, upload.id)
        if upload.answered_at is not None or not upload.state.final:
            return
        await self.answer(upload, latest=False)

    async def _fail(self, upload: Upload, detail: str, error: str) -> None:
        """rosterd could not finish the upload (not the district's doing): failed, set aside, answered."""
        self.log("upload.failed", tenant=upload.tenant, upload_id=upload.id, sha256=upload.sha256, error=error,
                 state=str(State.FAILED), detail=detail)  # fmt: skip
        upload = await self._set_aside(upload, State.FAILED, None, detail)
        await self.answer(upload)
        self._final(upload, {})

    async def _set_aside(self, upload: Upload, state: State, result: dict | None, detail: str | None = None) -> Upload:
        """A rejected or failed upload is kept (not deleted) for the quarantine period: record it, then move it.

        Recorded first: a crash between the two leaves the file where intake's repair finds and moves it.
        """
        target = self.kept.quarantined(upload)
        recorded = await _db(self.store.set_state, upload.id, state, detail=detail, path=str(target),
                             result=result)  # fmt: skip
        await asyncio.to_thread(self.kept.set_aside, self.options.mirror.here(Path(upload.path)), target)
        return recorded

    async def _answer_duplicate(self, upload: Upload) -> None:
        """Nothing is done with a duplicate: its receipt names the current upload, and its bytes are dropped."""
        await self.answer(upload)
        await asyncio.to_thread(self.kept.drop, upload)

    def _final(self, upload: Upload, timings: dict) -> None:
        if self.options.on_final is not None:
            self.options.on_final(upload, timings)


async def _db(method, *args, **kwargs):
    """A store call in a worker thread: SQLite commits fsync, which must not stall the event loop."""
    return await asyncio.to_thread(method, *args, **kwargs)


def failure_detail(error: BaseException, memory_bytes: int) -> str:
    """What a failed upload's receipt says about why (the district did nothing wrong)."""
    limit = f"the worker memory limit (`[intake] worker_memory_bytes` = {_size(memory_bytes)})" if memory_bytes else ""
    if isinstance(error, MemoryError):
        return f"Validating this upload needed more memory than {limit or 'the machine had free'}."
    if isinstance(error, WorkerDied):
        died = (f"The worker process validating this upload died twice ({error.death.describe()} the second time)."
                if error.death else "Worker processes kept dying while this upload was being validated.")  # fmt: skip
        return f"{died} Most often that means it exceeded {limit} or the machine ran out of memory." if limit else (
            f"{died} Most often that means the machine ran out of memory.")  # fmt: skip
    return INTERNAL_ERROR


def _size(count: int) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB")):
        if count % unit == 0:
            return f"{count // unit} {name}"
    return f"{count} bytes"
