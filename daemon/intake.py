"""Intake: completed uploads in each tenant's inbox -> recorded, validated, answered with a receipt.

An upload arrives three ways: the SFTP server reports its own completed renames (taken at once), the
watcher sees a file appear, or the periodic rescan finds one (inotify drops events when its queue
overflows). Files that did not come through our SFTP server are taken only once their size and mtime have
been stable for the settle period. A taken file is first moved out of the inbox into the state directory
(same filesystem, so the move is atomic), its name carrying the upload id and the original name; only then
is it hashed and recorded. After a crash, a moved but unrecorded file is recorded at start, recorded but
unfinished uploads resume from their last state, a rejected upload's file that had not reached quarantine
is moved there, and a final state whose receipt was not written gets it from the stored result: nothing is
lost, nothing is taken twice.

Per tenant, uploads are validated one at a time in arrival order; tenants run in parallel up to a worker
limit. Validation runs in a process pool, and hashing, moves and database commits in threads, so SFTP
sessions on the event loop never stall.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

from . import receipts, snapshots
from .ingest import process_upload
from .store import SnapshotRecord, StaleBase, State, Store, Upload, new_upload_id

HIDDEN_PREFIX = "."  # temporary and partial files (ours and other clients') start with a dot
PARTIAL_SUFFIXES = (".filepart", ".part", ".tmp")
NAME_SEPARATOR = "--"  # <upload_id>--<original name>.zip in the uploads folder
MAX_ATTEMPTS = 3  # diffs of one upload, should the tenant's current snapshot change under it
INTERNAL_ERROR = "rosterd could not validate this upload because of an internal error; an operator was told."


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
        pool: Executor,
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
        self._claiming: set[Path] = set()
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
        await asyncio.to_thread(self._repair)
        for upload in await self._db(self.store.unanswered):
            if upload.tenant in self.tenants:
                await self._reanswer(upload)
        for upload in await self._db(self.store.unfinished):
            if upload.tenant in self.tenants:  # a tenant removed from the config keeps its records as they are
                self._enqueue(upload)
        for name in self.tenants:
            self._serving[name] = asyncio.create_task(self._serve_tenant(name), name=f"intake-{name}")
        self._watching = asyncio.create_task(self._watch(), name="intake-watch")
        self._tasks.append(asyncio.create_task(self._rescan_forever(), name="intake-rescan"))
        self._tasks.append(asyncio.create_task(self._expire_quarantine(), name="intake-quarantine"))

    def _prepare_folders(self, tenant: TenantPaths) -> None:
        tenant.inbox.mkdir(parents=True, exist_ok=True)
        tenant.results.mkdir(parents=True, exist_ok=True)
        (self.uploads_dir / tenant.name).mkdir(parents=True, exist_ok=True)
        snapshots.tenant_folder(self.options.state_dir, tenant.name).mkdir(parents=True, exist_ok=True)

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
            except FileNotFoundError:
                return
            seen = (stat.st_size, stat.st_mtime_ns)
            if seen == last:
                break
            last = seen
            await asyncio.sleep(self.options.settle_seconds)
        await self._claim(tenant, path)

    async def _claim(self, tenant: str, path: Path) -> None:
        if path in self._claiming:
            return
        self._claiming.add(path)
        try:
            upload_id = new_upload_id()
            kept = self.uploads_dir / tenant / f"{upload_id}{NAME_SEPARATOR}{path.name}"
            try:
                await asyncio.to_thread(os.rename, path, kept)
            except FileNotFoundError:
                return  # taken already (by another event for the same file)
            upload = await self._record(tenant, upload_id, path.name, kept)
        finally:
            self._claiming.discard(path)
        if upload.state is State.DUPLICATE:
            await self._answer_duplicate(upload)
        else:
            await self._answer(upload, None)  # "received": the uploader sees at once that it arrived
            self._enqueue(upload)

    def _enqueue(self, upload: Upload) -> None:
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
        upload = await self._db(self.store.add, upload_id, tenant, name, sha256, size, str(kept))
        self.log("upload.received", tenant=tenant, upload_id=upload_id, sha256=sha256, bytes=size, file=name)
        if upload.state is State.DUPLICATE:
            self.log("upload.duplicate", tenant=tenant, upload_id=upload_id, sha256=sha256)
        return upload

    def _repair(self) -> None:
        """Finish what a crash interrupted between a move and its record (blocking; runs before intake starts).

        A file in the uploads folder whose id is not recorded was moved out of an inbox by a daemon that died
        before recording it: it is recorded now. One recorded as rejected had not reached quarantine yet: it
        is moved there. One recorded as a duplicate had not been deleted yet: it is deleted.
        """
        for tenant in self.tenants:
            kept_files = {p.name.partition(NAME_SEPARATOR)[0]: p
                          for p in sorted((self.uploads_dir / tenant).glob(f"*{NAME_SEPARATOR}*"))}  # fmt: skip
            states = self.store.states(list(kept_files))
            for upload_id, kept in kept_files.items():
                state = states.get(upload_id)
                if state is None:
                    name = kept.name.partition(NAME_SEPARATOR)[2]
                    size = kept.stat().st_size
                    sha256 = sha256_of(kept)
                    upload = self.store.add(upload_id, tenant, name, sha256, size, str(kept))
                    self.log("upload.received", tenant=tenant, upload_id=upload_id, sha256=sha256, bytes=size,
                             file=name, recovered=True)  # fmt: skip
                    if upload.state is State.DUPLICATE:
                        self.log("upload.duplicate", tenant=tenant, upload_id=upload_id, sha256=sha256)
                elif state is State.REJECTED:
                    _move(kept, Path(self.store.get(upload_id).path))
                elif state is State.DUPLICATE:
                    kept.unlink(missing_ok=True)

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
                await self._process(upload)
        except Exception as exc:  # one upload's failure must never stop the tenant's queue
            self.log("upload.failed", tenant=upload.tenant, upload_id=upload.id, error=repr(exc))
        finally:
            self._pending -= 1
            if self._pending == 0:
                self.idle.set()

    async def _process(self, upload: Upload) -> None:
        tenant = self.tenants[upload.tenant]
        upload = await self._db(self.store.set_state, upload.id, State.VALIDATING)
        self.log("upload.validating", tenant=upload.tenant, upload_id=upload.id, sha256=upload.sha256)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        for _attempt in range(MAX_ATTEMPTS):
            work = await self._work_options(upload, tenant)
            try:
                outcome = await loop.run_in_executor(self.pool, process_upload, upload.path, work)
            except Exception as exc:  # a crash of the validator is reported, never fatal to the daemon
                self.log("upload.failed", tenant=upload.tenant, upload_id=upload.id, error=repr(exc))
                upload = await self._quarantine(upload, None, INTERNAL_ERROR)
                await self._answer(upload, None)
                return
            result = receipts.trim(outcome["validation"])
            snapshot = outcome.get("snapshot")
            if snapshot is None:
                upload = await self._quarantine(upload, result)
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
        await self._answer(upload, result, snapshot)
        if self.options.on_final is not None:
            self.options.on_final(upload, outcome.get("timings") or {})
        if upload.state is State.ACCEPTED and self.options.on_accepted is not None:
            self.options.on_accepted(upload.tenant, upload.id)  # after the receipt: deliveries rewrite it

    async def _work_options(self, upload: Upload, tenant: TenantPaths) -> dict:
        """What the worker needs: validation settings, where to stage, and the snapshot to diff against."""
        state_dir = self.options.state_dir
        base = None
        rebaseline = await self._db(self.store.rebaseline_requested, upload.tenant) is not None
        if not rebaseline:
            current = await self._db(self.store.current_snapshot, upload.tenant)
            base = current.path if current is not None else None
        return {**tenant.validation, "holds": tenant.holds, "base": base, "rebaseline": rebaseline,
                "staging": str(snapshots.staging_folder(state_dir, upload.tenant, upload.id))}  # fmt: skip

    async def _take_snapshot(self, upload: Upload, work: dict, snapshot: dict, result: dict) -> Upload:
        """Publish the staged snapshot, record it (accepted, or held when a threshold was crossed), prune."""
        final = snapshots.final_folder(self.options.state_dir, upload.tenant, upload.id)
        await asyncio.to_thread(snapshots.publish, Path(work["staging"]), final)
        record = SnapshotRecord(
            tenant=upload.tenant, version=snapshot["version"], path=str(final),
            base_upload_id=snapshot["base"], rows=snapshot["rows"], changes=snapshot["changes"],
            holds=snapshot["holds"],
        )  # fmt: skip
        state = State.HELD if snapshot["holds"] else State.ACCEPTED
        try:
            upload = await self._db(self.store.record_snapshot, upload.id, record, state, result,
                                    check_base=not work["rebaseline"])  # fmt: skip
        except StaleBase:
            await asyncio.to_thread(snapshots.clear, final)
            raise
        if state is State.ACCEPTED:
            self.log("snapshot.accepted", tenant=upload.tenant, upload_id=upload.id, rows=snapshot["rows"],
                     base_upload_id=snapshot["base"])  # fmt: skip
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
                snapshots.clear(Path(record.path))
                self.store.mark_pruned(record.upload_id)
                self.log("snapshot.pruned", tenant=tenant, upload_id=record.upload_id)

    async def _quarantine(self, upload: Upload, result: dict | None, detail: str | None = None) -> Upload:
        """A rejected upload is kept (not deleted) for the quarantine period: record it, then move it.

        Recorded first: a crash between the two leaves the file where `_repair` finds and moves it.
        """
        target = self.quarantine_dir / upload.tenant / Path(upload.path).name
        rejected = await self._db(self.store.set_state, upload.id, State.REJECTED, detail=detail, path=str(target),
                                  result=result)  # fmt: skip
        await asyncio.to_thread(_move, Path(upload.path), target)
        return rejected

    async def _answer_duplicate(self, upload: Upload) -> None:
        """Nothing is done with a duplicate: its receipt names the earlier upload, and its bytes are dropped."""
        await self._answer(upload, None)
        await asyncio.to_thread(Path(upload.path).unlink, missing_ok=True)

    async def _reanswer(self, upload: Upload, latest: bool = True) -> None:
        """The receipt of an upload whose recorded state has no receipt yet (a crash, or a held upload that a
        newer one superseded), built from what the store holds."""
        if upload.state is State.DUPLICATE:
            await self._answer_duplicate(upload)
            return
        receipt = await self._db(receipts.from_store, self.store, upload)
        await self._write_receipt(upload, receipt, latest)

    async def _answer(self, upload: Upload, result: dict | None, snapshot: dict | None = None) -> None:
        """Write the receipt for the upload's current state; a final state is then marked answered."""
        detail = await self._db(self.store.last_detail, upload.id)
        deliveries = await self._db(self.store.deliveries, None, upload.id)
        receipt = receipts.build(upload, result, detail=detail, snapshot=snapshot, deliveries=deliveries)
        await self._write_receipt(upload, receipt)

    async def refresh_receipt(self, upload_id: str) -> None:
        """Write an upload's receipt again from the store (a delivery of it moved on); latest.json too when it
        is the tenant's newest upload."""
        upload = await self._db(self.store.get, upload_id)
        if upload.tenant not in self.tenants:
            return
        newest = await self._db(self.store.recent, upload.tenant, 1)
        receipt = await self._db(receipts.from_store, self.store, upload)
        await self._write_receipt(upload, receipt, latest=bool(newest) and newest[0].id == upload.id)

    async def _write_receipt(self, upload: Upload, receipt: dict, latest: bool = True) -> None:
        results = self.tenants[upload.tenant].results
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
