"""Intake: completed uploads in each tenant's inbox -> recorded, validated, answered with a receipt.

An upload arrives three ways: the SFTP server reports its own completed renames (taken at once), the
watcher sees a file appear, or the periodic rescan finds one (inotify drops events when its queue
overflows). Files that did not come through our SFTP server are taken only once their size and mtime have
been stable for the settle period. A taken file is first moved out of the inbox into the state directory
(same filesystem, so the move is atomic); only then is it hashed and recorded.

The kept file is named `<upload_id>.zip`, whatever the uploader called it: a name may be as long as the
filesystem allows, and the id in front of it would make it too long. The original name lives in the store,
and until the upload is recorded, in a label beside the file, `<upload_id>.name`, written (and fsynced)
before the move and removed once the record holds the name. The label is written first so that a crash
right after the move still knows the name; recording before the move would hash the file while it sits in
the inbox, where a client could still change it. Files kept by earlier versions, `<upload_id>--<name>`, are
still recognised.

After a crash, a moved but unrecorded file is recorded at start (its name from its label), recorded but
unfinished uploads resume from their last state, a rejected or failed upload's file that had not reached
quarantine is moved there, and a final state whose receipt was not written gets it from the stored result:
nothing is lost, nothing is taken twice. An error that is not a crash (a full disk, a bug) must not leave
an upload behind until the next start either: a supervisor does the same every `supervise_seconds` for the
uploads intake is not handling at that moment. An upload whose processing keeps raising is failed after
MAX_CRASHES tries.

Per tenant, uploads are validated one at a time in arrival order; tenants run in parallel up to a worker
limit. Validation runs in the worker pool (daemon/intake/workers.py), and hashing, moves and database commits in
threads, so SFTP sessions on the event loop never stall. An upload whose worker process died twice, or that
needed more memory than a worker may have, is `failed`, never `rejected`: the district did nothing wrong.
Receipts of a tenant are written one at a time (each write prunes the old ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

from daemon import receipts

from daemon.snapshots import storage
from daemon.files import replace_text
from daemon.snapshots.job import process_upload
from daemon.store import Action, SnapshotRecord, StaleBase, State, Store, Upload, new_upload_id
from daemon.intake.workers import PoolUnavailable, WorkerDied, WorkerPool

HIDDEN_PREFIX = "."  # temporary and partial files (ours and other clients') start with a dot
PARTIAL_SUFFIXES = (".filepart", ".part", ".tmp")
KEPT_SUFFIX = ".zip"  # <upload_id>.zip in the uploads and quarantine folders
LABEL_SUFFIX = ".name"  # <upload_id>.name: the original name, until the upload is recorded
NAME_SEPARATOR = "--"  # <upload_id>--<original name>: how versions before labels kept a file
MAX_ATTEMPTS = 3  # diffs of one upload, should the tenant's current snapshot change under it
MAX_CRASHES = 3  # tries of an upload whose processing raised, before it is failed
INTERNAL_ERROR = "rosterd could not validate this upload because of an internal error."
MiB = 1024**2
GiB = 1024**3
DECISION_EVENTS = {  # how the daemon logs an operator's decision once it sees it in the store
    Action.APPROVED: "upload.approved",
    Action.DISCARDED: "upload.discarded",
    Action.REBASELINE: "tenant.rebaseline_requested",
    Action.REPLAYED: "delivery.replayed",
    Action.TARGET_ENABLED: "target.enabled",
}


@dataclass(frozen=True, slots=True)
class TenantPaths:
    name: str
    inbox: Path
    results: Path
    validation: dict = field(default_factory=dict)  # ValidateOptions fields for this tenant (mode, limits)
    holds: dict = field(default_factory=dict)  # HoldThresholds fields for this tenant


@dataclass(frozen=True, slots=True)
class IntakeOptions:
    state_dir: Path
    settle_seconds: float = 5.0
    rescan_seconds: float = 60.0
    workers: int = 2
    quarantine_days: float = 30.0
    receipts_kept: int = 100
    snapshots_kept: int = 30
    supervise_seconds: float = 30.0  # how often uploads left unfinished or unanswered by an error are taken up
    decisions_seconds: float = 2.0  # how often the store is read for operators' decisions to log
    on_accepted: Callable[[str, str], None] | None = None  # (tenant, upload_id): a new current snapshot
    on_final: Callable[[Upload, dict], None] | None = None  # (upload, the worker's timings): for metrics


class ZipFilter(DefaultFilter):
    """Pass `.zip` names that are not hidden or partial; watchfiles' default filter knows nothing of zips."""

    def __call__(self, change: Change, path: str) -> bool:
        return change != Change.deleted and is_candidate(Path(path))


def is_candidate(path: Path) -> bool:
    name = path.name
    return name.lower().endswith(".zip") and not name.startswith(HIDDEN_PREFIX)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class Intake:
    def __init__(
        self,
        tenants: dict[str, TenantPaths],
        store: Store,
        pool: WorkerPool,
        options: IntakeOptions,
        log: Callable[..., None],
    ) -> None:
        self.tenants = tenants
        self.store = store
        self.pool = pool
        self.options = options
        self.log = log  # log(event, **fields)
        self.uploads_dir = options.state_dir / "uploads"
        self.quarantine_dir = options.state_dir / "quarantine"
        self._queues: dict[str, asyncio.Queue[Upload]] = {name: asyncio.Queue() for name in tenants}
        self._workers = asyncio.Semaphore(options.workers)
        self._claiming: set[Path] = set()  # inbox files being taken
        self._claimed: set[str] = set()  # upload ids being taken: moved, recorded, first receipt
        self._queued: set[str] = set()  # upload ids waiting in a queue or being processed
        self._crashes: dict[str, int] = {}  # upload id -> how often its processing raised
        self._receipts: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)  # tenant -> its results/ folder
        self._tasks: list[asyncio.Task] = []
        self._serving: dict[str, asyncio.Task] = {}  # tenant -> the loop taking its queue in order
        self._watching: asyncio.Task | None = None
        self._processing: set[asyncio.Task] = set()  # uploads being validated and recorded right now
        self._background: set[asyncio.Task] = set()  # settle checks; referenced so they are not collected
        self._pending = 0
        self.idle = asyncio.Event()  # set whenever no upload is waiting or being processed
        self.idle.set()

    # lifecycle

    async def start(self) -> None:
        for tenant in self.tenants.values():
            await asyncio.to_thread(self._prepare_folders, tenant)
        await self._recover()
        for name in self.tenants:
            self._serving[name] = asyncio.create_task(self._serve_tenant(name), name=f"intake-{name}")
        self._watching = asyncio.create_task(self._watch(), name="intake-watch")
        self._tasks.append(asyncio.create_task(self._rescan_forever(), name="intake-rescan"))
        self._tasks.append(asyncio.create_task(self._expire_quarantine(), name="intake-quarantine"))
        self._tasks.append(asyncio.create_task(self._supervise(), name="intake-supervise"))
        self._tasks.append(asyncio.create_task(self._watch_decisions(), name="intake-decisions"))

    async def _recover(self) -> None:
        """Finish what a crash or an error left: files moved but not recorded, final states without their
        receipt, uploads not finished. Only uploads intake is not handling right now (at start: all)."""
        await asyncio.to_thread(self._repair, self._busy)
        for upload in await self._db(self.store.unanswered):
            if upload.tenant in self.tenants and not self._busy(upload.id):
                await self._reanswer(upload)
        for upload in await self._db(self.store.unfinished):
            if upload.tenant in self.tenants and not self._busy(upload.id):  # a removed tenant's uploads wait
                self._enqueue(upload)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.options.supervise_seconds)
            try:
                await self._recover()
            except Exception as exc:  # the next round tries again
                self.log("upload.failed", error=repr(exc), stage="supervise")

    async def _watch_decisions(self) -> None:
        while True:
            try:
                await self.log_decisions()
            except Exception as exc:  # the next round tries again; nothing is marked logged that was not
                self.log("upload.failed", error=repr(exc), stage="decisions")
            await asyncio.sleep(self.options.decisions_seconds)

    async def log_decisions(self) -> None:
        """Log the decisions operators took with `rosterd` (approve, discard, rebaseline, replay, enable-target)
        that the daemon has not logged yet, each once, with its operator and time. The commands record them in
        the store and log to the operator's terminal; this puts them in the daemon's own log (the journal)."""
        decisions = await self._db(self.store.unlogged_decisions)
        for d in decisions:
            about = {k: v for k, v in (("delivery_id", d.delivery_id), ("target", d.target)) if v}
            self.log(DECISION_EVENTS[d.action], tenant=d.tenant, upload_id=d.upload_id, operator=d.operator,
                     at=d.at, **about)  # fmt: skip
            if d.action is Action.APPROVED and self.options.on_accepted is not None:
                self.options.on_accepted(d.tenant, d.upload_id)  # a new current snapshot: its deliveries may go
        if decisions:
            await self._db(self.store.mark_logged, [d.id for d in decisions])

    def _busy(self, upload_id: str) -> bool:
        return upload_id in self._claimed or upload_id in self._queued

    def _prepare_folders(self, tenant: TenantPaths) -> None:
        tenant.inbox.mkdir(parents=True, exist_ok=True)
        tenant.results.mkdir(parents=True, exist_ok=True)
        (self.uploads_dir / tenant.name).mkdir(parents=True, exist_ok=True)
        storage.tenant_folder(self.options.state_dir, tenant.name).mkdir(parents=True, exist_ok=True)

    async def stop(self, grace_seconds: float = 0.0) -> None:
        """Take nothing new; give uploads being processed up to `grace_seconds` to reach their final state, then
        cut them off (their recorded state is `validating`: they are processed again at the next start)."""
        tasks = [*self._tasks, *self._background, *self._serving.values(), *filter(None, [self._watching])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._processing:
            _done, cut = await asyncio.wait(set(self._processing), timeout=grace_seconds)
            for task in cut:
                task.cancel()
            await asyncio.gather(*cut, return_exceptions=True)

    async def update_tenants(self, tenants: dict[str, TenantPaths]) -> None:
        """A reload: tenants added start being served, removed ones stop (their uploads stay recorded and go on
        if the tenant comes back), changed settings count from the next upload on."""
        for name in tenants.keys() - self.tenants.keys():
            await asyncio.to_thread(self._prepare_folders, tenants[name])
            self._queues[name] = asyncio.Queue()
        for name in self.tenants.keys() - tenants.keys():
            self._serving.pop(name).cancel()  # an upload being processed finishes: it runs in its own task
        self.tenants = dict(tenants)
        for name in tenants.keys() - self._serving.keys():
            self._serving[name] = asyncio.create_task(self._serve_tenant(name), name=f"intake-{name}")
            for upload in await self._db(self.store.unfinished):
                if upload.tenant == name:
                    self._enqueue(upload)
        if self._watching is not None:  # watch the inboxes as they are now
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
            self._watching = asyncio.create_task(self._watch(), name="intake-watch")
        await self.rescan()

    # arrivals

    async def notify(self, tenant: str, path: Path) -> None:
        """The SFTP server completed an upload: take it now, no settle period needed."""
        await self._claim(tenant, path)

    async def rescan(self, settle: bool = True) -> None:
        for tenant in self.tenants.values():
            for path in await asyncio.to_thread(_candidates, tenant.inbox):
                self._spawn(self._settle_then_claim(tenant.name, path) if settle else self._claim(tenant.name, path))

    async def _watch(self) -> None:
        by_inbox = {str(t.inbox): t.name for t in self.tenants.values()}
        async for changes in awatch(*by_inbox, watch_filter=ZipFilter(), recursive=False):
            for _change, raw in changes:
                path = Path(raw)
                tenant = by_inbox.get(str(path.parent))
                if tenant is not None:
                    self._spawn(self._settle_then_claim(tenant, path))

    async def _rescan_forever(self) -> None:
        while True:
            await self.rescan()
            await asyncio.sleep(self.options.rescan_seconds)

    async def _settle_then_claim(self, tenant: str, path: Path) -> None:
        """Take a file placed by other means once its size and mtime stop changing."""
        last = None
        while True:
            try:
                stat = await asyncio.to_thread(os.lstat, path)
            except OSError:  # gone (taken already), or not ours to look at: the next rescan sees it again
                return
            seen = (stat.st_size, stat.st_mtime_ns)
            if seen == last:
                break
            last = seen
            await asyncio.sleep(self.options.settle_seconds)
        await self._claim(tenant, path)

    async def _claim(self, tenant: str, path: Path) -> None:
        """Take one file from an inbox. Whatever fails after the move, the upload is not lost: recorded, it is
        in the store for the supervisor; not recorded, its file and label are in the uploads folder."""
        if path in self._claiming:
            return
        self._claiming.add(path)
        upload_id = new_upload_id()
        self._claimed.add(upload_id)
        try:
            upload = await self._take(tenant, upload_id, path)
            if upload is None:
                return
            try:
                await self._answer(upload)  # "received": the uploader sees at once that it arrived
            finally:
                self._enqueue(upload)
        except Exception as exc:
            self.log("upload.failed", tenant=tenant, upload_id=upload_id, file=path.name, error=repr(exc),
                     stage="take")  # fmt: skip
        finally:
            self._claiming.discard(path)
            self._claimed.discard(upload_id)

    async def _take(self, tenant: str, upload_id: str, path: Path) -> Upload | None:
        """Label, move, hash, record. None: taken already, or it could not be moved (it stays in the inbox,
        and the next rescan tries again)."""
        kept = self.uploads_dir / tenant / f"{upload_id}{KEPT_SUFFIX}"
        label = kept.with_suffix(LABEL_SUFFIX)
        try:
            await asyncio.to_thread(replace_text, label, path.name)
            await asyncio.to_thread(os.rename, path, kept)
        except OSError as exc:
            await asyncio.to_thread(label.unlink, missing_ok=True)
            if await asyncio.to_thread(os.path.lexists, path):  # not just taken by another event for the same file
                self.log("upload.not_taken", tenant=tenant, file=path.name, error=repr(exc))
            return None
        upload = await self._record(tenant, upload_id, path.name, kept)
        await asyncio.to_thread(label.unlink, missing_ok=True)
        return upload

    def _enqueue(self, upload: Upload) -> None:
        if upload.id in self._queued:
            return
        self._queued.add(upload.id)
        self._pending += 1
        self.idle.clear()
        self._queues[upload.tenant].put_nowait(upload)

    def _spawn(self, work) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _record(self, tenant: str, upload_id: str, name: str, kept: Path) -> Upload:
        size = (await asyncio.to_thread(kept.stat)).st_size
        sha256 = await asyncio.to_thread(sha256_of, kept)
        upload = await self._db(self.store.add, upload_id, tenant, name, sha256, size, str(kept), judge=False)
        self.log("upload.received", tenant=tenant, upload_id=upload_id, sha256=sha256, bytes=size, file=name)
        return upload

    def _repair(self, busy: Callable[[str], bool]) -> None:
        """Finish what a crash or an error interrupted between a move and its record (blocking). Files of
        uploads that `busy` names are left alone: a claim or a processing is at work on them.

        A file in the uploads folder whose id is not recorded was moved out of an inbox by a daemon that died
        (or a claim that failed) before recording it: it is recorded now, under the name in its label. One
        recorded as rejected or failed had not reached quarantine yet: it is moved there. One recorded as a
        duplicate had not been deleted yet: it is deleted. A label is removed once its upload is recorded, or
        when there is no file beside it (the move never happened: the file is still in the inbox).
        """
        for tenant in self.tenants:
            kept_files: dict[str, Path] = {}
            labels: dict[str, list[Path]] = defaultdict(list)
            for path in sorted((self.uploads_dir / tenant).iterdir()):
                upload_id, is_label = _kept_id(path.name)
                if upload_id is None or busy(upload_id):
                    continue
                if is_label:
                    labels[upload_id].append(path)
                else:
                    kept_files[upload_id] = path
            states = self.store.states(list(kept_files | labels)) if kept_files or labels else {}
            for upload_id, kept in kept_files.items():
                state = states.get(upload_id)
                if state is None:
                    self._record_found(tenant, upload_id, kept, labels.get(upload_id, []))
                elif state in (State.REJECTED, State.FAILED):
                    with contextlib.suppress(FileNotFoundError):  # set aside meanwhile, after it was listed
                        _move(kept, Path(self.store.get(upload_id).path))
                elif state is State.DUPLICATE:
                    kept.unlink(missing_ok=True)
            for upload_id, found in labels.items():
                if upload_id in states or upload_id not in kept_files:
                    for label in found:
                        label.unlink(missing_ok=True)

    def _record_found(self, tenant: str, upload_id: str, kept: Path, labels: list[Path]) -> None:
        """Record a file found moved but not recorded (blocking)."""
        if NAME_SEPARATOR in kept.name:
            name = kept.name.partition(NAME_SEPARATOR)[2]
        else:
            written = [label for label in labels if label.name.endswith(LABEL_SUFFIX)]
            name = (written[0].read_text(encoding="utf-8") if written else "") or kept.name  # power cut: empty
        size = kept.stat().st_size
        sha256 = sha256_of(kept)
        self.store.add(upload_id, tenant, name, sha256, size, str(kept), judge=False)
        for label in labels:
            label.unlink(missing_ok=True)
        self.log("upload.received", tenant=tenant, upload_id=upload_id, sha256=sha256, bytes=size, file=name,
                 recovered=True)  # fmt: skip

    # processing

    async def _serve_tenant(self, tenant: str) -> None:
        queue = self._queues[tenant]
        while True:
            upload = await queue.get()
            work = asyncio.create_task(self._process_one(upload), name=f"upload-{upload.id}")
            self._processing.add(work)
            work.add_done_callback(self._processing.discard)
            await asyncio.shield(work)  # a stop or reload cancels this loop, never the upload half-way

    async def _process_one(self, upload: Upload) -> None:
        try:
            async with self._workers:
                upload = await self._db(self.store.get, upload.id)
                if upload.tenant not in self.tenants or upload.state.final:
                    return  # its tenant was removed by a reload, or it was decided since it was queued
                if self._crashes.get(upload.id, 0) >= MAX_CRASHES:
                    await self._fail(upload, INTERNAL_ERROR, "its processing raised every time")
                else:
                    await self._process(upload)
            self._crashes.pop(upload.id, None)
        except Exception as exc:  # one upload's failure must never stop the tenant's queue; the supervisor retries
            if not isinstance(exc, PoolUnavailable):  # the upload's own trouble: counted towards failing it
                self._crashes[upload.id] = self._crashes.get(upload.id, 0) + 1
            self.log("upload.failed", tenant=upload.tenant, upload_id=upload.id, error=repr(exc),
                     attempt=self._crashes.get(upload.id, 0))  # fmt: skip
        finally:
            self._queued.discard(upload.id)
            self._pending -= 1
            if self._pending == 0:
                self.idle.set()

    async def _process(self, upload: Upload) -> None:
        tenant = self.tenants[upload.tenant]
        # Judged now, not on arrival: the uploads ahead of this one decide which upload is current by now.
        upload = await self._db(self.store.judge_duplicate, upload.id)
        if upload.state is State.DUPLICATE:
            self.log("upload.duplicate", tenant=upload.tenant, upload_id=upload.id, sha256=upload.sha256)
            await self._answer_duplicate(upload)
            if self.options.on_final is not None:
                self.options.on_final(upload, {})
            return
        upload = await self._db(self.store.set_state, upload.id, State.VALIDATING)
        self.log("upload.validating", tenant=upload.tenant, upload_id=upload.id, sha256=upload.sha256)
        started = time.monotonic()
        for _attempt in range(MAX_ATTEMPTS):
            work = await self._work_options(upload, tenant)
            try:
                outcome = await self.pool.run(process_upload, upload.path, work,
                                              about={"tenant": upload.tenant, "upload_id": upload.id})  # fmt: skip
            except PoolUnavailable:  # nothing to do with the upload: tried again later
                raise
            except Exception as exc:  # its worker died twice, it ran out of memory, or the validator crashed
                await self._fail(upload, failure_detail(exc, self.pool.memory_bytes), repr(exc))
                return
            result = receipts.trim(outcome["validation"])
            snapshot = outcome.get("snapshot")
            if snapshot is None:
                upload = await self._set_aside(upload, State.REJECTED, result)
                break
            try:
                upload = await self._take_snapshot(upload, work, snapshot, result)
                break
            except StaleBase:  # an admin approved a held upload meanwhile: diff against the new current one
                self.log("upload.rediffed", tenant=upload.tenant, upload_id=upload.id)
        else:
            raise RuntimeError(f"{upload.id}: the tenant's current snapshot kept changing; tried {MAX_ATTEMPTS} times")
        elapsed_ms = int((time.monotonic() - started) * 1000)
        self.log(f"upload.{upload.state}", tenant=upload.tenant, upload_id=upload.id, sha256=upload.sha256,
                 elapsed_ms=elapsed_ms, counts_by_code=result["counts_by_code"],
                 changes=snapshot["changes"] if snapshot else None)  # fmt: skip
        await self._answer(upload)
        if self.options.on_final is not None:
            self.options.on_final(upload, outcome.get("timings") or {})
        if upload.state is State.ACCEPTED and self.options.on_accepted is not None:
            self.options.on_accepted(upload.tenant, upload.id)  # after the receipt: deliveries rewrite it

    async def _work_options(self, upload: Upload, tenant: TenantPaths) -> dict:
        """What the worker needs: validation settings, where to stage, and the snapshot to diff against."""
        state_dir = self.options.state_dir
        base = None
        rebaseline = await self._db(self.store.rebaseline_requested, upload.tenant)  # (when, by whom) or None
        if not rebaseline:
            current = await self._db(self.store.current_snapshot, upload.tenant)
            base = current.path if current is not None else None
        return {**tenant.validation, "holds": tenant.holds, "base": base, "rebaseline": rebaseline,
                "staging": str(storage.staging_folder(state_dir, upload.tenant, upload.id))}  # fmt: skip

    async def _take_snapshot(self, upload: Upload, work: dict, snapshot: dict, result: dict) -> Upload:
        """Publish the staged snapshot, record it (accepted, or held when a threshold was crossed), prune."""
        final = storage.final_folder(self.options.state_dir, upload.tenant, upload.id)
        await asyncio.to_thread(storage.publish, Path(work["staging"]), final)
        record = SnapshotRecord(
            tenant=upload.tenant, version=snapshot["version"], path=str(final),
            base_upload_id=snapshot["base"], rows=snapshot["rows"], changes=snapshot["changes"],
            holds=snapshot["holds"], samples=snapshot.get("samples"),
        )  # fmt: skip
        state = State.HELD if snapshot["holds"] else State.ACCEPTED
        try:
            upload = await self._db(self.store.record_snapshot, upload.id, record, state, result,
                                    check_base=not work["rebaseline"])  # fmt: skip
        except StaleBase:
            await asyncio.to_thread(storage.clear, final)
            raise
        if state is State.ACCEPTED:
            fresh = {"rebaseline_by": work["rebaseline"][1]} if work["rebaseline"] else {}
            self.log("snapshot.accepted", tenant=upload.tenant, upload_id=upload.id, rows=snapshot["rows"],
                     base_upload_id=snapshot["base"], **fresh)  # fmt: skip
            for superseded in await self._db(self.store.unanswered, upload.tenant, State.SUPERSEDED):
                self.log("upload.superseded", tenant=upload.tenant, upload_id=superseded.id, by=upload.id)
                await self._reanswer(superseded, latest=False)
        await asyncio.to_thread(self._prune, upload.tenant)
        return upload

    def _prune(self, tenant: str) -> None:
        """Keep the newest `snapshots_kept` snapshots of a tenant, always its current one, every held one (an
        admin may still approve it) and every one the outbox still needs. Blocking."""
        current = self.store.current_snapshot(tenant)
        for_outbox = self.store.snapshots_for_deliveries(tenant)
        kept = 0
        for record, upload in self.store.snapshots(tenant):
            if record.pruned_at is not None:
                continue
            kept += 1
            needed = (upload.state is State.HELD or (current is not None and record.upload_id == current.upload_id)
                      or record.upload_id in for_outbox)  # fmt: skip
            if kept > self.options.snapshots_kept and not needed:
                storage.clear(Path(record.path))
                self.store.mark_pruned(record.upload_id)
                self.log("snapshot.pruned", tenant=tenant, upload_id=record.upload_id)

    async def _fail(self, upload: Upload, detail: str, error: str) -> None:
        """rosterd could not finish the upload (not the district's doing): failed, set aside, answered."""
        self.log("upload.failed", tenant=upload.tenant, upload_id=upload.id, sha256=upload.sha256, error=error,
                 state=str(State.FAILED), detail=detail)  # fmt: skip
        upload = await self._set_aside(upload, State.FAILED, None, detail)
        await self._answer(upload)
        if self.options.on_final is not None:
            self.options.on_final(upload, {})

    async def _set_aside(self, upload: Upload, state: State, result: dict | None, detail: str | None = None) -> Upload:
        """A rejected or failed upload is kept (not deleted) for the quarantine period: record it, then move it.

        Recorded first: a crash between the two leaves the file where `_repair` finds and moves it.
        """
        target = self.quarantine_dir / upload.tenant / Path(upload.path).name
        recorded = await self._db(self.store.set_state, upload.id, state, detail=detail, path=str(target),
                                  result=result)  # fmt: skip
        await asyncio.to_thread(_move, Path(upload.path), target)
        return recorded

    async def _answer_duplicate(self, upload: Upload) -> None:
        """Nothing is done with a duplicate: its receipt names the current upload, and its bytes are dropped."""
        await self._answer(upload)
        await asyncio.to_thread(Path(upload.path).unlink, missing_ok=True)

    async def _reanswer(self, upload: Upload, latest: bool | None = None) -> None:
        """The receipt of an upload whose recorded state has no receipt yet (a crash or an error, or a held
        upload that a newer one superseded), built from what the store holds; latest.json too when it is the
        tenant's newest upload (`latest` None)."""
        upload = await self._db(self.store.get, upload.id)
        if upload.answered_at is not None or not upload.state.final:
            return  # answered meanwhile
        if upload.state is State.DUPLICATE:
            await self._answer_duplicate(upload)
            return
        await self._answer(upload, await self._is_newest(upload) if latest is None else latest)

    async def _answer(self, upload: Upload, latest: bool = True) -> None:
        """Write the receipt for the upload's recorded state, built from the store like every version of it (so
        no version lacks a section another has); a final state is then marked answered."""
        receipt = await self._db(receipts.from_store, self.store, upload)
        await self._write_receipt(upload, receipt, latest)

    async def refresh_receipt(self, upload_id: str) -> None:
        """Write an upload's receipt again from the store (a delivery of it moved on); latest.json too when it
        is the tenant's newest upload."""
        upload = await self._db(self.store.get, upload_id)
        if upload.tenant not in self.tenants:
            return
        await self._answer(upload, latest=await self._is_newest(upload))

    async def _is_newest(self, upload: Upload) -> bool:
        newest = await self._db(self.store.recent, upload.tenant, 1)
        return bool(newest) and newest[0].id == upload.id

    async def _write_receipt(self, upload: Upload, receipt: dict, latest: bool = True) -> None:
        results = self.tenants[upload.tenant].results
        async with self._receipts[upload.tenant]:  # one writer at a time: each write prunes the folder
            await asyncio.to_thread(receipts.write, results, receipt, self.options.receipts_kept, latest)
        if upload.state.final:
            await self._db(self.store.mark_answered, upload.id)

    async def _db(self, method, *args, **kwargs):
        """A store call in a worker thread: SQLite commits fsync, which must not stall the event loop."""
        return await asyncio.to_thread(method, *args, **kwargs)

    async def _expire_quarantine(self) -> None:
        while True:
            await asyncio.to_thread(_expire, self.quarantine_dir, self.options.quarantine_days * 86400)
            await asyncio.sleep(3600)


def _candidates(inbox: Path) -> list[Path]:
    """The zips in an inbox that intake may take: regular files only, never links. Blocking."""
    found = []
    for entry in sorted(os.scandir(inbox), key=lambda e: e.name):
        path = Path(entry.path)
        if is_candidate(path) and entry.is_file(follow_symlinks=False):
            found.append(path)
    return found


def _kept_id(name: str) -> tuple[str | None, bool]:
    """The upload id a name in the uploads folder belongs to, and whether it is a label (or a label's
    temporary file); None for anything else."""
    if name.startswith(HIDDEN_PREFIX):  # .<id>.name.XXXXXX.tmp: a label being written
        stem, found, _rest = name[1:].partition(LABEL_SUFFIX + ".")
        return (stem, True) if found and name.endswith(".tmp") else (None, False)
    if NAME_SEPARATOR in name:
        return name.partition(NAME_SEPARATOR)[0], False
    for suffix, is_label in ((KEPT_SUFFIX, False), (LABEL_SUFFIX, True)):
        if name.endswith(suffix):
            return name.removesuffix(suffix), is_label
    return None, False


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


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _expire(folder: Path, max_age_seconds: float) -> None:
    """Delete quarantined files older than the quarantine period. Blocking."""
    limit = time.time() - max_age_seconds
    for kept in folder.glob("*/*"):
        try:
            if kept.lstat().st_mtime < limit:
                kept.unlink()
        except FileNotFoundError:
            continue
