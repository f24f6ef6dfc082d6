"""What one listener lets its sessions hold at once, and the threads their file work runs in.

Handles are counted per session and per tenant, uploads in progress per tenant; a request that would pass
one of these caps is refused before it touches the disk. The bytes open uploads write are counted as they
arrive, so a tenant's inbox quota and the disk's `min_free_bytes` hold across all its open files and
sessions, not only when a file is opened. The disk's own figures (the inbox's size, the free space) are
measured when an upload is opened and kept current in between by counting, so a write costs no system
call. Bytes received but not yet handed to the disk are counted too, per session and in all: past either
bound a session's writes wait for its own data to reach the disk (back pressure, never a refusal).

Everything here runs on the event loop and is counted without locks.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

from daemon.sftp.options import ServerOptions

INTERACTIVE_THREADS = 4  # listing, stat, reading receipts: what someone at an sftp prompt waits for
BULK_THREADS = 16  # uploads' writes, fsyncs and renames: disk-bound, bounded so they cannot starve the rest

# The message each cap answers with (an SFTP v3 failure: the protocol has no "too many files" status).
REFUSALS = {
    "max_handles_per_session": "Too many open files in this session",
    "max_handles_per_tenant": "Too many open files for this account",
    "max_open_uploads_per_tenant": "Too many uploads in progress for this account",
    "max_handles_total": "Too many open files on this server; try again later",
}
SERVER_WIDE = frozenset({"max_handles_total"})  # not the session's doing: logged, never scored against it


@dataclass
class _TenantUse:
    handles: int = 0
    uploads: int = 0
    writing: int = 0  # bytes written so far by the tenant's open uploads
    inbox: int = 0  # bytes in its inbox (uploads in progress aside) when measured, plus those published since
    published: int = 0  # every byte it ever published: what a measurement under way may not have seen


class Ledger:
    """The counts of one listener: what all its sessions hold now.

    One free-space figure serves every tenant: their inboxes all live under the state directory, on one disk.
    """

    def __init__(self, options: ServerOptions) -> None:
        self.options = options  # its caps (a reload changes only the tenants)
        self.tenants: defaultdict[str, _TenantUse] = defaultdict(_TenantUse)
        self.buffered = 0  # bytes received for uploads and not yet written to the disk
        self.open_handles = 0  # of all sessions
        self.written = 0  # every byte uploads were allowed to add, ever
        self._free = math.inf  # free bytes when last measured, less what was still in memory then
        self._written_then = 0

    def free_bytes(self) -> float:
        """The disk's free bytes as last measured, less what uploads have added since."""
        return self._free - (self.written - self._written_then)

    def handles(self) -> int:
        return self.open_handles

    def measuring(self, tenant: str) -> Callable[[int, int], None]:
        """Start a measurement; call what this returns with the inbox's bytes and the free bytes found.

        Bytes written while the measurement runs may be counted twice, never missed.
        """
        use = self.tenants[tenant]
        published, written, buffered = use.published, self.written, self.buffered

        def measured(inbox: int, free: int) -> None:
            use.inbox = inbox + use.published - published
            self._free, self._written_then = free - buffered, written

        return measured


class SessionAccount:
    """One session's share of the ledger: its handles and its bytes in memory, counted in both."""

    def __init__(self, ledger: Ledger, tenant: str, quota: int, min_free: int) -> None:
        self._ledger = ledger
        self._tenant = tenant
        self._use = ledger.tenants[tenant]
        self._quota = quota
        self._min_free = min_free
        self.handles = 0
        self.buffered = 0

    # -- handles -----------------------------------------------------------------------------------

    def take_handle(self, upload: bool) -> str | None:
        """Count a new handle, or name the cap it would pass (and count nothing)."""
        options, use = self._ledger.options, self._use
        if self.handles >= options.max_handles_per_session:
            return "max_handles_per_session"
        if use.handles >= options.max_handles_per_tenant:
            return "max_handles_per_tenant"
        if upload and use.uploads >= options.max_open_uploads_per_tenant:
            return "max_open_uploads_per_tenant"
        if self._ledger.open_handles >= options.max_handles_total:
            return "max_handles_total"
        self.handles += 1
        self._ledger.open_handles += 1
        use.handles += 1
        use.uploads += upload
        return None

    def give_back_handle(self, upload: bool) -> None:
        self.handles -= 1
        self._ledger.open_handles -= 1
        self._use.handles -= 1
        self._use.uploads -= upload

    # -- bytes written -----------------------------------------------------------------------------

    def measuring(self) -> Callable[[int, int], None]:
        return self._ledger.measuring(self._tenant)

    def shortfall(self, growth: int) -> str | None:
        """The limit `growth` more bytes of an upload would pass: "inbox_quota_bytes", "min_free_bytes" or None."""
        if self._use.inbox + self._use.writing + growth > self._quota:
            return "inbox_quota_bytes"
        if self._ledger.free_bytes() - growth < self._min_free:
            return "min_free_bytes"
        return None

    def grow(self, growth: int) -> None:
        self._use.writing += growth
        self._ledger.written += growth

    def settle(self, size: int, published: bool) -> None:
        """An upload of `size` bytes ended: its bytes stay in the inbox when published, else they are gone."""
        self._use.writing -= size
        if published:
            self._use.inbox += size
            self._use.published += size

    # -- bytes in memory ---------------------------------------------------------------------------

    def buffer(self, size: int) -> None:
        self.buffered += size
        self._ledger.buffered += size

    def unbuffer(self, size: int) -> None:
        self.buffered -= size
        self._ledger.buffered -= size

    def over_buffered(self) -> bool:
        options = self._ledger.options
        return (self.buffered > options.max_buffered_bytes_per_session
                or self._ledger.buffered > options.max_buffered_bytes_total)  # fmt: skip


@dataclass
class Pools:
    """A listener's own thread pools, apart from the loop's default one (which intake uses)."""

    interactive: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(INTERACTIVE_THREADS, thread_name_prefix="sftp-interactive")
    )
    bulk: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(BULK_THREADS, thread_name_prefix="sftp-bulk")
    )

    def shutdown(self) -> None:
        """Work already queued finishes; later work of sessions still open runs in the loop's default pool."""
        self.interactive.shutdown(wait=False)
        self.bulk.shutdown(wait=False)


def run_in(pool: Executor, func: Callable, *args: object) -> asyncio.Future:
    """`func(*args)` in `pool`, or in the loop's default pool once `pool` was shut down with its listener."""
    loop = asyncio.get_running_loop()
    try:
        return loop.run_in_executor(pool, func, *args)
    except RuntimeError:  # "cannot schedule new futures after shutdown": a session outlived the listener
        return loop.run_in_executor(None, func, *args)
