"""One tenant's SFTP session: the virtual tree of paths.py, on disk through fs.py, uploads made atomic.

Upload rules: a write-open of `/inbox/NAME` writes a hidden temp file; a clean close fsyncs it and
renames it to NAME, and only then is the upload reported. A session that ends with the file still
open (client killed, channel closed, connection lost) removes the temp file instead. A NAME that
looks partial (`x.zip.part`, `.x.zip`) is published but not reported: renaming it to a final name
is what completes that upload.

Every method answers with an SFTP error the client understands; nothing raises out of `close` or
`exit`, which asyncssh also calls during teardown (an exception there would skip the remaining
handles). Blocking file work runs in the listener's worker threads (limits.Pools: a small pool for what a
person waits on, a larger one for uploads), so one session's disk never stalls the others. What a session
may hold (handles, bytes in memory, bytes against the quota and the free space) is counted in limits.py;
how an upload's writes reach the disk is upload.py's. A failed write to disk fails the upload's next
write, fstat, fsync or close, which drops the upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import stat
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import asyncssh
from asyncssh import (
    FXF_CREAT,
    FXF_EXCL,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    SFTPAttrs,
    SFTPError,
    SFTPFailure,
    SFTPFileAlreadyExists,
    SFTPName,
    SFTPNoSpaceOnFilesystem,
    SFTPNoSuchFile,
    SFTPOpUnsupported,
    SFTPPermissionDenied,
    SFTPQuotaExceeded,
)

from daemon.sftp import events, fs
from daemon.sftp.events import Reporter, UploadReceived
from daemon.sftp.limits import REFUSALS, SERVER_WIDE, Pools, SessionAccount, run_in
from daemon.sftp.options import TenantAccess
from daemon.sftp.paths import AREAS, INBOX, RESULTS, Kind, PathRefused, VirtualPath, is_acceptable_name, is_partial, parse
from daemon.sftp.upload import Handle, Upload

# How the tree is shown: the tenant's rights, not the host's modes or owners.
_ROOT_MODE = stat.S_IFDIR | 0o555
_MAX_READ_BYTES = 4 * 1024 * 1024  # what asyncssh advertises; a client asking for more gets less
CONFIRM_SECONDS = 60.0  # replicas: how long the answer to an upload's close waits for its record at most


@dataclass
class SessionContext:
    """What a session knows of its connection, captured when it starts (the connection may go first)."""

    tenant: TenantAccess
    remote_ip: str
    session_id: str
    result_folders: tuple[str, ...]  # the folders of /results the tenant may open (ServerOptions.result_folders)
    reporter: Reporter
    account: SessionAccount  # what the session holds, against the listener's caps
    pools: Pools
    touch: Callable[[], None]  # marks the connection active, for the idle timeout
    penalise: Callable[[], None]  # scores the address for a limit exceeded (the defender)
    on_exit: Callable[[], None]  # releases the session's place under the per-tenant cap
    refresh_results: Callable[[], Awaitable[None]] | None = None  # other replicas' receipts, before /results is read
    confirm_uploads: bool = False  # ServerOptions.confirm_uploads


@dataclass(eq=False)
class _Reading(Handle):
    fd: int


class _Listing:
    """An open directory as asyncssh holds it. asyncssh drops it on the client's close and at teardown without
    telling the server, so its place under the handle caps is given back when it is collected (at once in
    CPython, by reference counting)."""

    def __init__(self, names: AsyncIterator[SFTPName], release: Callable[[], None]) -> None:
        self._names = names
        weakref.finalize(self, release)

    def __aiter__(self) -> _Listing:
        return self

    async def __anext__(self) -> SFTPName:
        return await anext(self._names)


class TenantSFTPServer(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel, context: SessionContext) -> None:
        super().__init__(chan)  # no asyncssh chroot: every path is resolved by paths.parse instead
        self._ctx = context
        self._root = context.tenant.root
        self._account = context.account
        self._handles: set[Handle] = set()  # open files, reading and uploading
        self._uploads: set[Upload] = set()  # uploads not yet published or dropped
        self._limits_hit: set[str] = set()  # each is logged once per session
        self._penalised = False  # the defender scores a session's limits once
        self._ended = False
        self._started_parts: dict[str, float] = {}  # partial names uploaded here -> when their upload began
        self._report(events.SESSION_OPENED)

    # -- guard rails -------------------------------------------------------------------------------

    def map_path(self, path: bytes) -> bytes:
        """Every operation is overridden below; should asyncssh add one, it must not reach the disk."""
        raise SFTPPermissionDenied("Permission denied")

    def _resolve(self, raw: bytes, op: str) -> VirtualPath:
        self._ctx.touch()
        try:
            return parse(raw, self._ctx.result_folders)
        except PathRefused as refused:
            self._refuse(op, refused.reason)

    def _refuse(self, op: str, reason: str) -> None:
        self._report(events.OPERATION_REFUSED, op=op, reason=reason)
        raise SFTPPermissionDenied("Permission denied")

    def _report(self, event: str, /, **fields: object) -> None:
        ctx = self._ctx
        ctx.reporter.event(event, tenant=ctx.tenant.name, remote_ip=ctx.remote_ip, session_id=ctx.session_id, **fields)

    def _over(self, limit: str) -> None:
        """Refuse a request over one of the listener's caps: logged once per session, scored at most once."""
        if limit not in self._limits_hit:
            self._limits_hit.add(limit)
            self._report(events.LIMIT_EXCEEDED, limit=limit)
        if not self._penalised and limit not in SERVER_WIDE:
            self._penalised = True
            self._ctx.penalise()
        raise SFTPFailure(REFUSALS[limit])

    async def _disk(self, func, *args, bulk: bool = False, **kwargs):
        """Run blocking file work in a thread (the bulk pool for uploads), answering the client in SFTP terms."""
        pools = self._ctx.pools
        try:
            return await run_in(pools.bulk if bulk else pools.interactive, functools.partial(func, *args, **kwargs))
        except FileNotFoundError:
            raise SFTPNoSuchFile("No such file") from None
        except FileExistsError:
            raise SFTPFileAlreadyExists("File already exists") from None
        except fs.NotRegularFile:
            self._refuse(getattr(func, "__name__", "disk"), "not_a_regular_file")
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW met a symlink (to a file, to a dir)
                self._refuse(getattr(func, "__name__", "disk"), "symlink_on_disk")
            raise SFTPFailure("Failure") from None  # the host's error text may name host paths

    # -- looking around ----------------------------------------------------------------------------

    def realpath(self, path: bytes) -> bytes:
        return self._resolve(path, "realpath").text.encode()

    async def stat(self, path: bytes) -> SFTPAttrs:
        return await self._attrs_of(self._resolve(path, "stat"))

    async def lstat(self, path: bytes) -> SFTPAttrs:
        return await self._attrs_of(self._resolve(path, "lstat"))

    async def _refreshed(self, where: VirtualPath) -> None:
        """Before a look into /results: the receipts other replicas wrote are brought here (replicas only)."""
        refresh = self._ctx.refresh_results
        if refresh is not None and where.area is not None and where.area.split("/")[0] == RESULTS:
            await refresh()

    async def _attrs_of(self, where: VirtualPath) -> SFTPAttrs:
        await self._refreshed(where)
        if where.kind is Kind.ROOT:
            return _attrs(_ROOT_MODE, await self._disk(os.stat, self._root))
        if where.kind is Kind.AREA:
            return _attrs(_area_mode(where.area), await self._disk(fs.area_stat, self._root, where.area))
        if where.kind is Kind.ENTRY and not where.hidden:
            st = await self._disk(fs.entry_stat, self._root, where.area, where.name)
            return _attrs(_file_mode(where.area), st)
        raise SFTPNoSuchFile("No such file")

    def scandir(self, path: bytes) -> AsyncIterator[SFTPName]:
        where = self._resolve(path, "opendir")  # checked now, so opendir itself fails on a bad path
        if where.kind not in (Kind.ROOT, Kind.AREA):
            raise SFTPNoSuchFile("No such directory")
        self._take_handle(upload=False)  # an open directory is a handle too, and holds its listing
        return _Listing(self._names(where), functools.partial(self._account.give_back_handle, upload=False))

    async def _names(self, where: VirtualPath) -> AsyncIterator[SFTPName]:
        # All of a listing's file work in one trip to a thread: each trip waits for a turn of the loop.
        if where.kind is Kind.ROOT:
            stats = await self._disk(lambda: [fs.area_stat(self._root, area) for area in AREAS])
            for area, st in zip(AREAS, stats, strict=True):
                yield SFTPName(area.encode(), attrs=_attrs(_area_mode(area), st))
            return
        await self._refreshed(where)
        folders, files = await self._disk(
            lambda: (fs.folder_stats(self._root, where.area, self._ctx.result_folders), fs.list_area(self._root, where.area)))
        for name, st in folders:
            yield SFTPName(name.encode(), attrs=_attrs(_area_mode(f"{where.area}/{name}"), st))
        for name, st in files:
            yield SFTPName(name.encode(), attrs=_attrs(_file_mode(where.area), st))

    def readlink(self, path: bytes) -> bytes:
        self._resolve(path, "readlink")
        self._refuse("readlink", "link")

    def statvfs(self, path: bytes) -> None:
        raise SFTPOpUnsupported("Operation not supported")

    def fstatvfs(self, file_obj: object) -> None:
        raise SFTPOpUnsupported("Operation not supported")

    # -- changing things that are not uploads ------------------------------------------------------

    async def remove(self, path: bytes) -> None:
        where = self._resolve(path, "remove")
        if not where.is_entry_in(INBOX):
            self._refuse("remove", "not_permitted")
        await self._disk(fs.remove_entry, self._root, INBOX, where.name)

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._rename(oldpath, newpath, overwrite=False)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._rename(oldpath, newpath, overwrite=True)

    async def _rename(self, oldpath: bytes, newpath: bytes, *, overwrite: bool) -> None:
        old = self._resolve(oldpath, "rename")
        new = self._resolve(newpath, "rename")
        if not (old.is_entry_in(INBOX) and new.is_entry_in(INBOX)):
            self._refuse("rename", "not_permitted")
        if not is_acceptable_name(new.name):
            self._refuse("rename", "not_a_zip_name")
        size = await self._disk(fs.rename_entry, self._root, INBOX, old.name, new.name, overwrite=overwrite)
        started = self._started_parts.pop(old.name, None)
        if is_partial(old.name) and not is_partial(new.name):
            await self._confirm(new.name, self._report_upload(new.name, size, started))

    async def setstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self._set_times(self._resolve(path, "setstat"), attrs)

    async def lsetstat(self, path: bytes, attrs: SFTPAttrs) -> None:
        await self._set_times(self._resolve(path, "lsetstat"), attrs)

    async def _set_times(self, where: VirtualPath, attrs: SFTPAttrs) -> None:
        """Clients set times after an upload (WinSCP does by default); nothing else may be changed."""
        changes_more = any(value is not None for value in (attrs.size, attrs.uid, attrs.gid, attrs.permissions))
        if not where.is_entry_in(INBOX) or changes_more:
            self._refuse("setstat", "not_permitted")
        if attrs.atime is not None and attrs.mtime is not None:
            await self._disk(fs.set_times, self._root, INBOX, where.name, attrs.atime, attrs.mtime)
        else:
            await self._disk(fs.entry_stat, self._root, INBOX, where.name)

    def mkdir(self, path: bytes, attrs: SFTPAttrs) -> None:
        self._resolve(path, "mkdir")
        self._refuse("mkdir", "not_permitted")

    def rmdir(self, path: bytes) -> None:
        self._resolve(path, "rmdir")
        self._refuse("rmdir", "not_permitted")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        self._ctx.touch()
        self._refuse("symlink", "link")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        self._ctx.touch()
        self._refuse("link", "link")

    # -- files -------------------------------------------------------------------------------------

    def open56(self, path: bytes, desired_access: int, flags: int, attrs: SFTPAttrs) -> None:
        raise SFTPOpUnsupported("Operation not supported")  # only SFTP v3 is offered

    async def open(self, path: bytes, pflags: int, attrs: SFTPAttrs) -> object:
        where = self._resolve(path, "open")
        if pflags & (FXF_WRITE | FXF_CREAT | FXF_TRUNC):
            return await self._open_upload(where, pflags)
        if where.readable:
            await self._refreshed(where)
            with self._handle_slot(upload=False):
                reading = _Reading(await self._disk(fs.open_for_reading, self._root, where.area, where.name))
            self._handles.add(reading)
            return reading
        if where.is_entry_in(INBOX):
            self._refuse("open", "inbox_is_write_only")
        if where.kind in (Kind.ROOT, Kind.AREA):
            self._refuse("open", "is_a_directory")
        raise SFTPNoSuchFile("No such file")

    def _take_handle(self, upload: bool) -> None:
        """Count a handle being opened under the caps, or refuse it."""
        limit = self._account.take_handle(upload)
        if limit is not None:
            self._over(limit)

    @contextlib.contextmanager
    def _handle_slot(self, upload: bool) -> Iterator[None]:
        """A handle being opened, counted under the caps (refused over them); given back if the open fails."""
        self._take_handle(upload)
        try:
            yield
        except BaseException:
            self._account.give_back_handle(upload)
            raise

    async def _open_upload(self, where: VirtualPath, pflags: int) -> Upload:
        if not where.is_entry_in(INBOX) or pflags & FXF_READ:
            self._refuse("open", "not_permitted")
        if not is_acceptable_name(where.name):
            self._refuse("open", "not_a_zip_name")
        with self._handle_slot(upload=True):
            exists = await self._exists_in_inbox(where.name)
            if exists and pflags & FXF_EXCL:
                raise SFTPFileAlreadyExists("File already exists")
            if exists and not pflags & FXF_TRUNC:
                # Resuming or patching a file in place: the server cannot, since uploads start empty.
                self._refuse("open", "resume_not_supported")
            await self._measure()
            if (limit := self._account.shortfall(1)) is not None:  # not even one byte would fit
                raise self._room_refusal(limit)
            temp = await self._disk(fs.create_temp, self._root, bulk=True)
        upload = Upload(temp, where.name, self._account, self._ctx.pools.bulk)
        self._handles.add(upload)
        self._uploads.add(upload)
        return upload

    async def _exists_in_inbox(self, name: str) -> bool:
        try:
            await self._disk(fs.entry_stat, self._root, INBOX, name)
        except SFTPNoSuchFile:
            return False
        return True

    async def _measure(self) -> None:
        """The inbox's size and the disk's free space, measured afresh as the account's starting point."""
        measured = self._account.measuring()
        measured(*await self._disk(fs.inbox_figures, self._root, bulk=True))

    def _room_refusal(self, limit: str) -> SFTPError:
        self._report(events.LIMIT_EXCEEDED, limit=limit)
        if limit == "inbox_quota_bytes":
            return SFTPQuotaExceeded("Inbox quota exceeded")
        return SFTPNoSpaceOnFilesystem("Not enough free space on the server")

    async def read(self, file_obj: object, offset: int, length: int) -> bytes:
        self._ctx.touch()
        if not isinstance(file_obj, _Reading):
            self._refuse("read", "inbox_is_write_only")
        return await self._disk(os.pread, file_obj.fd, min(length, _MAX_READ_BYTES), offset)

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        self._ctx.touch()
        if not isinstance(file_obj, Upload):
            self._refuse("write", "results_are_read_only")
        upload = file_obj
        if upload.refused:
            raise upload.refused
        end = offset + len(data)
        if end > self._ctx.tenant.max_upload_bytes:
            await self._abandon(upload, "too_large", SFTPQuotaExceeded("File is larger than this inbox accepts"))
        if end > upload.size:
            await self._make_room(upload, end - upload.size)
        upload.gather(offset, data)
        while upload.flush_to_settle():
            await self._settle_oldest_flush(upload)  # returns at once for a flush that is done
        await self._wait_for_disk()
        return len(data)

    async def _make_room(self, upload: Upload, growth: int) -> None:
        """Count `growth` more bytes against the inbox quota and the free space, or drop the upload."""
        limit = self._account.shortfall(growth)
        if limit is not None:  # the figures may be stale (files taken by intake, or removed): look again
            await self._measure()
            limit = self._account.shortfall(growth)
        if limit is not None:
            await self._abandon(upload, limit, self._room_refusal(limit))
        upload.grow(growth)

    async def _wait_for_disk(self) -> None:
        """Back pressure: while too many bytes wait in memory, wait for this session's own to reach the disk."""
        while self._account.over_buffered():
            for upload in self._uploads:
                upload.flush()
            on_their_way = [flush for upload in self._uploads for flush in upload.on_their_way()]
            if not on_their_way:
                return  # the bytes in memory are other sessions': theirs wait for them
            await asyncio.wait(on_their_way, return_when=asyncio.FIRST_COMPLETED)

    async def _settle_oldest_flush(self, upload: Upload) -> None:
        try:
            await upload.flushes.popleft()
        except OSError as exc:
            refusal = SFTPNoSpaceOnFilesystem("No space") if exc.errno == errno.ENOSPC else SFTPFailure("Write failed")
            await self._abandon(upload, "write_failed", refusal)

    async def _drain(self, upload: Upload) -> None:
        """Every write of the upload on disk (or the upload dropped and its refusal raised)."""
        if upload.refused:
            raise upload.refused
        upload.flush()
        while upload.flushes:
            await self._settle_oldest_flush(upload)

    async def _abandon(self, upload: Upload, reason: str, refusal: SFTPError) -> None:
        """Drop a refused upload now (its partial file removed) and fail this and later writes."""
        upload.refused = refusal
        await self._discard(upload, reason)
        raise refusal

    async def fstat(self, file_obj: object) -> SFTPAttrs:
        self._ctx.touch()
        if isinstance(file_obj, _Reading):
            return _attrs(_file_mode(RESULTS), await self._disk(os.fstat, file_obj.fd))
        if isinstance(file_obj, Upload) and not file_obj.refused:
            await self._drain(file_obj)
            return _attrs(_file_mode(INBOX), await self._disk(os.fstat, file_obj.temp.fd, bulk=True))
        raise SFTPFailure("Upload was refused")

    def fsetstat(self, file_obj: object, attrs: SFTPAttrs) -> None:
        """Accepted and ignored on uploads (clients send modes and times); the published file is ours."""
        self._ctx.touch()
        if not isinstance(file_obj, Upload):
            self._refuse("fsetstat", "not_permitted")

    async def fsync(self, file_obj: object) -> None:
        self._ctx.touch()
        if isinstance(file_obj, Upload) and not file_obj.refused:
            await self._drain(file_obj)
            await self._disk(os.fsync, file_obj.temp.fd, bulk=True)

    async def close(self, file_obj: object) -> None:
        # Decided before the first await: asyncssh calls close() both for the client's FXP_CLOSE and
        # for every handle still open when the session is torn down, and only the first may publish.
        explicit = _client_still_sending(self.channel)
        try:
            if isinstance(file_obj, _Reading):
                os.close(file_obj.fd)
            elif isinstance(file_obj, Upload):
                await self._finish(file_obj, explicit)
        except SFTPError:
            if explicit:
                raise
        except Exception:
            events.log.exception("closing a handle failed")
            if explicit:
                raise SFTPFailure("Failure") from None
        finally:
            if file_obj in self._handles:
                self._handles.discard(file_obj)
                self._account.give_back_handle(upload=isinstance(file_obj, Upload))

    async def _finish(self, upload: Upload, explicit: bool) -> None:
        if upload.refused:
            return  # already removed and reported when the write was refused
        if not explicit:
            await self._discard(upload, "client_gone")
            return
        await self._drain(upload)
        self._uploads.discard(upload)
        try:
            size = await run_in(self._ctx.pools.bulk, fs.publish, upload.temp, upload.name)
        except (OSError, fs.NotRegularFile):
            upload.settle(published=False)  # publish removed the temp file
            self._report(events.UPLOAD_ABORTED, name=upload.name, reason="publish_failed")
            raise SFTPFailure("Failure") from None
        upload.settle(published=True)
        if is_partial(upload.name):
            self._started_parts[upload.name] = upload.started
            return
        await self._confirm(upload.name, self._report_upload(upload.name, size, upload.started))

    async def _confirm(self, name: str, recorded: Awaitable[bool] | None) -> None:
        """Replicas (confirm_uploads): the answer to the close or rename that completed an upload waits until
        it is recorded, and is a failure when it could not be, so that the client sends it again."""
        if recorded is None or not self._ctx.confirm_uploads:
            return
        try:
            confirmed = await asyncio.wait_for(asyncio.shield(recorded), CONFIRM_SECONDS)
        except asyncio.CancelledError:
            if not (asyncio.isfuture(recorded) and recorded.cancelled()):
                raise  # this session is being torn down
            confirmed = False  # the recording was cut off (the daemon stops)
        except Exception:  # noqa: BLE001 - too slow, or the recording failed: either way not confirmed
            confirmed = False
        if not confirmed:  # it may still be recorded later: a copy sent again is then a duplicate of it
            self._report(events.UPLOAD_UNCONFIRMED, name=name)
            raise SFTPFailure("The upload could not be recorded yet: send it again")

    async def _discard(self, upload: Upload, reason: str) -> None:
        self._uploads.discard(upload)
        await upload.stop_writing()  # the file stays open until no thread writes to it any more
        upload.settle(published=False)
        written = -1
        try:
            written = os.fstat(upload.temp.fd).st_size if upload.temp.fd >= 0 else -1
            await run_in(self._ctx.pools.bulk, fs.discard, upload.temp)
        except OSError:
            events.log.exception("removing an aborted upload failed")
        self._report(events.UPLOAD_ABORTED, name=upload.name, reason=reason, bytes=written)

    def _report_upload(self, name: str, size: int, started: float | None) -> Awaitable[bool] | None:
        ctx = self._ctx
        elapsed = 0 if started is None else int((time.monotonic() - started) * 1000)
        return ctx.reporter.upload(
            UploadReceived(
                tenant=ctx.tenant.name,
                path=self._root / INBOX / name,
                name=name,
                size=size,
                remote_ip=ctx.remote_ip,
                session_id=ctx.session_id,
                elapsed_ms=elapsed,
            )
        )

    async def exit(self) -> None:
        try:
            for handle in list(self._handles):  # normally none left: asyncssh closes each open handle first
                await self.close(handle)
        finally:
            self.end()
        # As sshd does: scp (which speaks SFTP since OpenSSH 9) fails without an exit status.
        with contextlib.suppress(OSError):
            self.channel.exit(0)

    def end(self) -> None:
        """The session is over: exit() ran, or its channel closed without it (before the SFTP handshake, for
        one). Whichever comes first gives the session's place back; the other finds nothing left to do."""
        if not self._ended:
            self._ended = True
            self._report(events.SESSION_CLOSED)
            self._ctx.on_exit()


def _area_mode(area: str) -> int:
    """The inbox is the tenant's to change; /results and its folders are read-only."""
    return stat.S_IFDIR | (0o755 if area == INBOX else 0o555)


def _file_mode(area: str) -> int:
    """A file in the inbox may be written, not read back; one in /results or its folders only read."""
    return stat.S_IFREG | (0o600 if area == INBOX else 0o444)


def _attrs(mode: int, st: os.stat_result) -> SFTPAttrs:
    size = st.st_size if stat.S_ISREG(mode) else 0
    return SFTPAttrs(size=size, permissions=mode, atime=int(st.st_atime), mtime=int(st.st_mtime))


def _client_still_sending(chan: asyncssh.SSHServerChannel) -> bool:
    """Whether the client can still send on this channel, i.e. this close is its own request.

    asyncssh gives no public way to tell FXP_CLOSE from teardown. Teardown only ever starts after the
    channel's receive side has ended (EOF, channel close or lost connection), so a close that arrives
    while it is still open came from the client. This reads one private attribute, pinned by the
    tests in tests/sftp/test_uploads.py; if asyncssh renames it, every close counts as an abort and
    those tests fail loudly rather than publishing half a file.
    """
    return getattr(chan, "_recv_state", None) == "open" and not chan.is_closing()
