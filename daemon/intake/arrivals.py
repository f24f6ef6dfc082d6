"""Arrivals: a completed file in a tenant's inbox -> taken out of it, hashed, recorded, answered, queued.

An upload arrives three ways: the SFTP server reports its own completed renames (taken at once, with the
session's id), the watcher sees a file appear, or the periodic rescan finds one (inotify drops events when
its queue overflows). Files that did not come through our SFTP server are taken only once their size and
mtime have been stable for the settle period. A taken file is first moved out of the inbox into the uploads
folder (daemon/intake/kept.py; same filesystem, so the move is atomic); only then is it hashed and recorded.
The label with its original name is written first so that a crash right after the move still knows the name;
recording before the move would hash the file while it sits in the inbox, where a client could still change
it.

After a crash or an error, `repair` finishes what was cut off between a move and its record: a moved but
unrecorded file is recorded (its name from its label), a rejected or failed upload's file that had not
reached quarantine is moved there, a duplicate's bytes are dropped. Quarantined files are deleted after the
quarantine period.

Given the store, the kept files, intake's options, the log, the tenants (as they are now), `answer` (the
"received" receipt) and `enqueue`; hands each recorded upload on to `enqueue` (daemon/intake/queue.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

from daemon.files import replace_text
from daemon.intake.kept import LABEL_SUFFIX, NAME_SEPARATOR, KeptFiles, kept_id
from daemon.intake.seams import Answer, IntakeOptions, TenantPaths
from daemon.store import State, Store, Upload, new_upload_id, stamp

HIDDEN_PREFIX = "."  # temporary and partial files (ours and other clients') start with a dot


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


class _Stays(Exception):
    """A file could not be moved out of its inbox (logged as upload.not_taken): it waits there for a rescan."""


class Arrivals:
    def __init__(
        self,
        store: Store,
        kept: KeptFiles,
        options: IntakeOptions,
        log: Callable[..., None],
        tenants: Callable[[], Mapping[str, TenantPaths]],
        answer: Answer,
        enqueue: Callable[[Upload], None],
    ) -> None:
        self.store = store
        self.kept = kept
        self.options = options
        self.log = log  # log(event, **fields)
        self.tenants = tenants  # the tenants as they are now (a reload changes them)
        self.answer = answer
        self.enqueue = enqueue
        self.claimed: set[str] = set()  # upload ids being taken: moved, recorded, first receipt
        self._claiming: dict[Path, asyncio.Future[bool]] = {}  # inbox files being taken -> whether recorded
        self._background: set[asyncio.Task] = set()  # settle checks; referenced so they are not collected

    async def stop(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def notify(self, tenant: str, path: Path, session_id: str | None = None) -> bool:
        """The SFTP server completed an upload: take it now, no settle period needed. True once it is recorded
        (or was gone from the inbox already: taken before), False when it could not be recorded (it is then
        in the uploads folder, and the supervisor records it later, or it stays in the inbox)."""
        return await self._claim(tenant, path, session_id)

    async def rescan(self, settle: bool = True) -> None:
        for tenant in self.tenants().values():
            for path in await asyncio.to_thread(_candidates, tenant.inbox):
                self._spawn(self._settle_then_claim(tenant.name, path) if settle else self._claim(tenant.name, path))

    async def watch(self) -> None:
        """Until cancelled: take what appears in the inboxes as they are now (a reload starts a new watch)."""
        by_inbox = {str(t.inbox): t.name for t in self.tenants().values()}
        async for changes in awatch(*by_inbox, watch_filter=ZipFilter(), recursive=False):
            for _change, raw in changes:
                path = Path(raw)
                tenant = by_inbox.get(str(path.parent))
                if tenant is not None:
                    self._spawn(self._settle_then_claim(tenant, path))

    async def rescan_forever(self) -> None:
        while True:
            await self.rescan()
            await asyncio.sleep(self.options.rescan_seconds)

    async def expire_quarantine_forever(self) -> None:
        while True:
            await asyncio.to_thread(self.kept.expire, self.options.quarantine_days * 86400)
            await asyncio.sleep(3600)

    def _spawn(self, work) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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

    async def _claim(self, tenant: str, path: Path, session_id: str | None = None) -> bool:
        """Take one file from an inbox. Whatever fails after the move, the upload is not lost: recorded, it is
        in the store for the supervisor; not recorded, its file and label are in the uploads folder. Whether
        it was recorded (see notify); a file another claim is taking gets that claim's answer."""
        running = self._claiming.get(path)
        if running is not None:
            return await asyncio.shield(running)
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._claiming[path] = outcome
        upload_id = new_upload_id()
        self.claimed.add(upload_id)
        recorded = False
        try:
            upload = await self._take(tenant, upload_id, path, session_id)
            recorded = True
            if upload is None:
                return True
            if upload.state is State.DUPLICATE:  # of a copy sent again while this one waited: answered, dropped
                self.log("upload.duplicate", tenant=tenant, upload_id=upload.id, sha256=upload.sha256)
                await self.answer(upload)
                await asyncio.to_thread(self.kept.drop, upload)
                return True
            try:
                await self.answer(upload)  # "received": the uploader sees at once that it arrived
            finally:
                self.enqueue(upload)
        except _Stays:
            pass
        except Exception as exc:
            self.log("upload.failed", tenant=tenant, upload_id=upload_id, file=path.name, error=repr(exc),
                     stage="take")  # fmt: skip
        finally:
            outcome.set_result(recorded)
            del self._claiming[path]
            self.claimed.discard(upload_id)
        return recorded

    async def _take(self, tenant: str, upload_id: str, path: Path, session_id: str | None) -> Upload | None:
        """Label, move, hash, record. None: taken already. _Stays: it could not be moved (it stays in the
        inbox, and the next rescan tries again)."""
        kept = self.kept.kept(tenant, upload_id)
        label = kept.with_suffix(LABEL_SUFFIX)
        try:
            # when it was completed in the inbox: its last change of any kind (a client's `put -p` may have set
            # its modification time to the original's, but that too changes the ctime)
            arrived = stamp(datetime.fromtimestamp((await asyncio.to_thread(os.stat, path)).st_ctime, UTC))
            await asyncio.to_thread(replace_text, label, path.name)
            await asyncio.to_thread(os.rename, path, kept)
        except OSError as exc:
            await asyncio.to_thread(label.unlink, missing_ok=True)
            if await asyncio.to_thread(os.path.lexists, path):  # not just taken by another event for the same file
                self.log("upload.not_taken", tenant=tenant, file=path.name, error=repr(exc))
                raise _Stays from exc
            return None
        upload = await self._record(tenant, upload_id, path.name, kept, session_id)
        await asyncio.to_thread(label.unlink, missing_ok=True)
        return await asyncio.to_thread(self._resent_meanwhile, upload, arrived, "taken from the inbox")

    async def _record(self, tenant: str, upload_id: str, name: str, kept: Path, session_id: str | None) -> Upload:
        size = (await asyncio.to_thread(kept.stat)).st_size
        sha256 = await asyncio.to_thread(sha256_of, kept)
        await asyncio.to_thread(self.options.mirror.push_file, kept)  # shared before the store says received
        upload = await asyncio.to_thread(self.store.add, upload_id, tenant, name, sha256, size, str(kept),
                                         judge=False)  # fmt: skip
        session = {"session_id": session_id} if session_id is not None else {}  # only uploads over our SFTP
        self.log("upload.received", tenant=tenant, upload_id=upload_id, sha256=sha256, bytes=size, file=name,
                 **session)  # fmt: skip
        return upload

    def repair(self, busy: Callable[[str], bool]) -> None:
        """Finish what a crash or an error interrupted between a move and its record (blocking). Files of
        uploads that `busy` names are left alone: a claim or a processing is at work on them.

        A file in the uploads folder whose id is not recorded was moved out of an inbox by a daemon that died
        (or a claim that failed) before recording it: it is recorded now, under the name in its label. One
        recorded as rejected or failed had not reached quarantine yet: it is moved there. One recorded as a
        duplicate had not been deleted yet: it is deleted. A label is removed once its upload is recorded, or
        when there is no file beside it (the move never happened: the file is still in the inbox).
        """
        for tenant in self.tenants():
            kept_files: dict[str, Path] = {}
            labels: dict[str, list[Path]] = defaultdict(list)
            for path in sorted(self.kept.folder(tenant).iterdir()):
                upload_id, is_label = kept_id(path.name)
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
                        self.kept.set_aside(kept, self.kept.mirror.here(Path(self.store.get(upload_id).path)))
                elif state is State.DUPLICATE:
                    kept.unlink(missing_ok=True)
            for upload_id, found in labels.items():
                if upload_id in states or upload_id not in kept_files:
                    for label in found:
                        label.unlink(missing_ok=True)

    def _resent_meanwhile(self, upload: Upload, arrived: str, how: str) -> Upload:
        """A file that waited since `arrived` before it was recorded (left in an inbox, or moved out of it, by a
        replica that died), whose bytes the uploader sent again meanwhile and another replica recorded: a
        duplicate of that copy, never processed out of its turn (after newer uploads, taking the roster back).
        Blocking."""
        resent = self.store.earlier_with_same_bytes(upload)
        if resent is None or resent.received_at < arrived:
            return upload
        return self.store.set_state(upload.id, State.DUPLICATE, detail=f"sent again and recorded as {resent.id} "
                                    f"before this copy was {how}")  # fmt: skip

    def _record_found(self, tenant: str, upload_id: str, kept: Path, labels: list[Path]) -> None:
        """Record a file found moved but not recorded (blocking).

        It was never answered `received`, so its uploader may have sent it again meanwhile, and with replicas
        another one recorded that copy and perhaps newer uploads after it. The same bytes recorded for the
        tenant since this file arrived (its time on disk) are that copy: this one is a duplicate of it, and is
        not processed out of its turn (it would take the roster back past the newer uploads)."""
        found = kept.stat()
        arrived = stamp(datetime.fromtimestamp(found.st_mtime, UTC))
        if NAME_SEPARATOR in kept.name:
            name = kept.name.partition(NAME_SEPARATOR)[2]
        else:
            written = [label for label in labels if label.name.endswith(LABEL_SUFFIX)]
            name = (written[0].read_text(encoding="utf-8") if written else "") or kept.name  # power cut: empty
        size = found.st_size
        sha256 = sha256_of(kept)
        self.options.mirror.push_file(kept)
        upload = self.store.add(upload_id, tenant, name, sha256, size, str(kept), judge=False)
        self._resent_meanwhile(upload, arrived, "recovered")
        for label in labels:
            label.unlink(missing_ok=True)
        self.log("upload.received", tenant=tenant, upload_id=upload_id, sha256=sha256, bytes=size, file=name,
                 recovered=True)  # fmt: skip


def _candidates(inbox: Path) -> list[Path]:
    """The zips in an inbox that intake may take: regular files only, never links. Blocking."""
    found = []
    for entry in sorted(os.scandir(inbox), key=lambda e: e.name):
        path = Path(entry.path)
        if is_candidate(path) and entry.is_file(follow_symlinks=False):
            found.append(path)
    return found
