"""What the SFTP layer is told: plain options, no config files, and no database but, when replicas share one,
the store they share host keys and the defender's evidence through.

The caller (the daemon's wiring, or a test) builds these once and passes them to `start_server`.
Validation of operator input happens before this point; here a value is taken as meant.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from daemon.sftp.defender import DefenderOptions
from daemon.sftp.paths import RESULT_FOLDERS
from daemon.store import StoreInterface

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True)
class TenantAccess:
    """One tenant's way in and what it may use once inside."""

    name: str
    root: Path  # holds inbox/ and results/ (created if missing)
    password_hash: str | None = None  # $argon2id$... or $2b$... ; None: no password login
    authorized_keys: tuple[str, ...] = ()  # OpenSSH public key lines
    allowed_networks: tuple[Network, ...] = ()  # empty: any source address
    max_upload_bytes: int = 2 * GiB
    inbox_quota_bytes: int = 10 * GiB


@dataclass(frozen=True)
class ServerOptions:
    host: str
    port: int
    host_key_dir: Path  # ed25519 and RSA-3072 host keys are generated here once (mode 600) and reused
    tenants: Mapping[str, TenantAccess]
    max_auth_tries: int = 6
    login_grace_seconds: float = 120
    idle_timeout_seconds: float = 900
    max_sessions_per_tenant: int = 5  # SFTP sessions, counted across all of a tenant's connections
    max_sessions_per_ip: int = 10  # SSH connections from one address, counted before authentication
    min_free_bytes: int = GiB  # uploads are refused (and writes fail) that would leave the inbox's disk less free
    max_handles_per_session: int = 64  # open files (reading or uploading) of one SFTP session
    max_handles_per_tenant: int = 256  # open files of all a tenant's sessions together
    max_open_uploads_per_tenant: int = 16  # uploads in progress, all a tenant's sessions together
    max_handles_total: int = 4096  # open files of all sessions together: the daemon's descriptors stay its own
    max_buffered_bytes_per_session: int = 64 * MiB  # received, not yet on disk: past it the session's writes wait
    max_buffered_bytes_total: int = 512 * MiB  # the same for all sessions together
    defender: DefenderOptions | None = None  # None: no scoring, no bans
    defender_file: Path | None = None  # where bans are kept across restarts; None: in memory only
    # a store several replicas share (PostgreSQL): host keys and the defender's evidence go through it, so a
    # client meets one server whichever replica it reaches (None: this daemon alone, files as above)
    shared_state: StoreInterface | None = None
    # replicas sharing object storage: awaited with the tenant's name before its /results is listed or read,
    # so that receipts another replica wrote are there (None: this daemon writes every receipt itself)
    refresh_results: Callable[[str], Awaitable[None]] | None = None
    # replicas: the answer to a completed upload's close waits until the upload is recorded (in the store, its
    # bytes in the shared storage), at most CONFIRM_SECONDS, and is a failure when it was not; so a client that
    # was told its upload closed well knows the cluster has it, whichever replica dies next
    confirm_uploads: bool = False
    # The folders inside /results that a tenant may open and read (what the pipeline writes there, named by
    # the caller: the daemon passes daemon/receipts' RESULT_FOLDERS); this layer knows none of them itself.
    result_folders: tuple[str, ...] = RESULT_FOLDERS
