"""The SSH side: who gets in, from where, how often, for how long, and into which tenant's session.

asyncssh brings the protocol; what it leaves to us (see the research digest, §3.2) is done here:
at most `max_auth_tries` attempts per connection, a one-second pause after a failed password, the
same hashing cost for unknown users, a per-IP connection cap checked before any authentication, a
per-tenant SFTP session cap, and an idle timeout. Only the sftp subsystem is served: no shell, exec,
PTY, X11, agent or port forwarding. A session's place under the cap is held from the subsystem's start
until the first of its exit() and its channel's close, so a client gone before the SFTP handshake (which
asyncssh never tells the session of) gives it back too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncssh

from daemon import passwords, ssh_algorithms
from daemon.sftp import accept, events, fs, hostkeys, shared as cluster
from daemon.sftp.defender import Ban, Defender, read_state, write_state
from daemon.sftp.events import OnEvent, OnUpload, Reporter, shown_username
from daemon.sftp.limits import Ledger, Pools, SessionAccount
from daemon.sftp.options import ServerOptions, TenantAccess
from daemon.sftp.session import SessionContext, TenantSFTPServer

FAILED_PASSWORD_DELAY_SECONDS = 1.0
REFUSAL_LOG_INTERVAL_SECONDS = 60.0  # a banned address hammering away is logged once a minute, not per try
SERVER_VERSION = "rosterd"  # the SSH banner names no library version


@dataclass
class _Shared:
    """State every connection of one listener sees."""

    options: ServerOptions
    reporter: Reporter
    keys: dict[str, frozenset[bytes]]  # tenant -> public key blobs it may log in with
    ledger: Ledger
    defender: Defender | None = None
    pools: Pools = field(default_factory=Pools)
    connections_by_ip: Counter[str] = field(default_factory=Counter)
    sessions_by_tenant: Counter[str] = field(default_factory=Counter)
    refusals_logged: dict[str, float] = field(default_factory=dict)  # ip -> when its refusal was last logged
    _saving: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task] = field(default_factory=set)

    @property
    def passwords_offered(self) -> bool:
        return any(t.password_hash for t in self.options.tenants.values())

    def penalise(self, gate: _Gate, points: int) -> None:
        """Score an address for the defender; a ban that starts here ends this connection too."""
        if self.defender is None:
            return
        ban = self.defender.score(gate.remote_ip, points)
        if ban is None:
            return
        gate._report(events.IP_BANNED, **_ban_fields(ban))
        self._save_defender()
        gate.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many failed logins from your address")

    def banned_by_replicas(self, ip: str, ban: Ban) -> None:
        """A ban that the other replicas' failures tipped over here: reported as this replica's (it is one)."""
        self.reporter.event(events.IP_BANNED, remote_ip=ip, evidence="replicas", **_ban_fields(ban))

    def _save_defender(self) -> None:
        """Bans go to the defender file, unless replicas share a store: then they live there (see shared.py)."""
        if self.defender is not None and self.options.defender_file is not None and self.options.shared_state is None:
            self.spawn(self._write_defender(self.defender, self.options.defender_file))

    def spawn(self, work: Coroutine) -> None:
        """Run `work` in the background, referenced until it is done (so it is not collected mid-way)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_defender(self, defender: Defender, path: Path) -> None:
        async with self._saving:  # one writer at a time, each with the state as it is when it writes
            try:
                await asyncio.to_thread(write_state, path, defender.state())
            except OSError:
                events.log.exception("saving the defender's bans failed")

    def refusal_due(self, ip: str) -> bool:
        """Whether a refused connection from `ip` should be logged now (rate-limited per address)."""
        now = time.monotonic()
        if now - self.refusals_logged.get(ip, -REFUSAL_LOG_INTERVAL_SECONDS) < REFUSAL_LOG_INTERVAL_SECONDS:
            return False
        self.refusals_logged[ip] = now
        if len(self.refusals_logged) > 10_000:
            self.refusals_logged.clear()
        return True


class _Gate(asyncssh.SSHServer):
    """One SSH connection, from its first byte to its end."""

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._conn: asyncssh.SSHServerConnection | None = None
        self.remote_ip = "unknown"
        self.session_id = secrets.token_hex(8)
        self._counted = False
        self._attempts = 0
        self._method = ""
        self._key_refusal: str | None = None  # why a key was refused, scored once when the connection ends
        self._last_activity = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self.remote_ip = _plain_ip(peer[0]) if peer else "unknown"
        shared = self._shared
        banned_until = shared.defender.banned_until(self.remote_ip) if shared.defender else None
        if banned_until is not None:
            if shared.refusal_due(self.remote_ip):
                self._report(events.CONNECTION_REFUSED, reason="banned",
                             until=datetime.fromtimestamp(banned_until, UTC).isoformat(timespec="seconds"))  # fmt: skip
            conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many failed logins from your address")
            return
        if shared.connections_by_ip[self.remote_ip] >= shared.options.max_sessions_per_ip:
            self._limit_exceeded("max_sessions_per_ip")
            conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, "Too many connections from your address")
            return
        shared.connections_by_ip[self.remote_ip] += 1
        self._counted = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._key_refusal is not None:  # a client that offered keys and never got in
            self._penalise_refusal(self._key_refusal)
            self._key_refusal = None
        if self._counted:
            self._counted = False
            counts = self._shared.connections_by_ip
            counts[self.remote_ip] -= 1
            if counts[self.remote_ip] <= 0:
                del counts[self.remote_ip]
        if self._idle_timer is not None:
            self._idle_timer.cancel()

    def _report(self, event: str, /, **fields: object) -> None:
        self._shared.reporter.event(event, remote_ip=self.remote_ip, session_id=self.session_id, **fields)

    def disconnect(self, code: int, reason: str) -> None:
        if self._conn is not None and not self._conn.is_closed():
            self._conn.disconnect(code, reason)

    def _limit_exceeded(self, limit: str, **fields: object) -> None:
        self._report(events.LIMIT_EXCEEDED, limit=limit, **fields)
        self.penalise_limit()

    def penalise_limit(self) -> None:
        if self._shared.defender is not None:
            self._shared.penalise(self, self._shared.defender.options.score_limit_exceeded)

    def _penalise_refusal(self, reason: str) -> None:
        defender = self._shared.defender
        if defender is not None:
            unknown = reason == "unknown_user"
            self._shared.penalise(self, defender.options.score_unknown_user if unknown else defender.options.score_bad_password)

    # -- authentication ----------------------------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        return True  # False would mean "no authentication needed"

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return self._shared.passwords_offered

    def kbdint_auth_supported(self) -> bool:
        return False

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        tenant, refusal = self._admissible(username)
        if refusal is None and key.public_data in self._shared.keys[tenant.name]:
            self._method = "publickey"
            return True
        self._attempts += 1
        self._failed(username, "publickey", refusal or "bad_key")
        return False

    async def validate_password(self, username: str, password: str) -> bool:
        self._attempts += 1  # counted before hashing: pipelined attempts cannot skip the count
        if self._attempts > self._shared.options.max_auth_tries:
            self._too_many_attempts()
            return False
        tenant, refusal = self._admissible(username)
        stored = tenant.password_hash if tenant is not None else None
        matches = await asyncio.to_thread(passwords.verify, stored, password)
        if matches and refusal is None:
            self._method = "password"
            return True
        await asyncio.sleep(FAILED_PASSWORD_DELAY_SECONDS)
        self._failed(username, "password", refusal or "bad_password")
        return False

    def _admissible(self, username: str) -> tuple[TenantAccess | None, str | None]:
        """The tenant named, and why it may not log in from here (None: it may, given a credential)."""
        tenant = self._shared.options.tenants.get(username)
        if tenant is None:
            return None, "unknown_user"
        if tenant.allowed_networks and not _address_in(self.remote_ip, tenant.allowed_networks):
            return tenant, "network_refused"
        return tenant, None

    def _failed(self, username: str, method: str, reason: str) -> None:
        """Report a failed attempt and score it: each password guess counts, keys count once per connection.

        Clients offer every key they hold, one after another, so a legitimate client with several keys
        fails a few times before it gets in; only a connection that never gets in is scored for its keys.
        """
        self._report(events.LOGIN_FAILED, username=shown_username(username), method=method, reason=reason)
        if method == "password":
            self._penalise_refusal(reason)
        elif self._key_refusal != "unknown_user":
            self._key_refusal = reason
        if self._attempts >= self._shared.options.max_auth_tries:
            self._too_many_attempts()

    def _too_many_attempts(self) -> None:
        if self._conn is None or self._conn.is_closed():
            return
        self._limit_exceeded("max_auth_tries")
        self.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures")

    def auth_completed(self) -> None:
        assert self._conn is not None
        username = self._conn.get_extra_info("username")
        self._key_refusal = None
        self._report(events.LOGIN_SUCCEEDED, tenant=username, method=self._method)
        self.touch()
        self._arm_idle_timer(self._shared.options.idle_timeout_seconds)

    # -- idle timeout ------------------------------------------------------------------------------

    def touch(self) -> None:
        self._last_activity = time.monotonic()

    def _arm_idle_timer(self, delay: float) -> None:
        self._idle_timer = asyncio.get_running_loop().call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        timeout = self._shared.options.idle_timeout_seconds
        idle_for = time.monotonic() - self._last_activity
        if idle_for < timeout:
            self._arm_idle_timer(timeout - idle_for)
            return
        if self._conn is not None and not self._conn.is_closed():
            self._report(events.IDLE_DISCONNECTED, idle_seconds=int(idle_for))
            self._conn.disconnect(asyncssh.DISC_BY_APPLICATION, "Idle timeout")


class _RefusedSession(asyncssh.SFTPServer):
    """A session over the tenant's cap. Its first request is refused and closes the channel.

    Closing earlier is worse: asyncssh treats a channel that ends before the SFTP handshake as an
    internal error and drops the whole connection, sessions within the cap included.
    """

    def map_path(self, path: bytes) -> bytes:
        asyncio.get_running_loop().call_soon(self.channel.close)  # after this refusal is sent
        raise asyncssh.SFTPPermissionDenied("Too many sessions")


def _open_session(shared: _Shared, chan: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
    """asyncssh's sftp_factory: one call per sftp subsystem request, after authentication."""
    conn = chan.get_connection()
    gate: _Gate = conn.get_owner()
    tenant = shared.options.tenants.get(conn.get_extra_info("username"))
    cap = shared.options.max_sessions_per_tenant
    if tenant is None or shared.sessions_by_tenant[tenant.name] >= cap:
        gate._limit_exceeded("max_sessions_per_tenant", tenant=getattr(tenant, "name", None))
        return _RefusedSession(chan)
    shared.sessions_by_tenant[tenant.name] += 1
    context = SessionContext(
        tenant=tenant,
        remote_ip=gate.remote_ip,
        session_id=gate.session_id,
        result_folders=shared.options.result_folders,
        reporter=shared.reporter,
        account=SessionAccount(shared.ledger, tenant.name, tenant.inbox_quota_bytes, shared.options.min_free_bytes),
        pools=shared.pools,
        touch=gate.touch,
        penalise=gate.penalise_limit,
        on_exit=functools.partial(_release_session, shared, tenant.name),
        refresh_results=_refresher(shared.options, tenant.name),
        confirm_uploads=shared.options.confirm_uploads,
    )
    gate.touch()
    session = TenantSFTPServer(chan, context)
    shared.spawn(_end_with_channel(chan, session))
    return session


async def _end_with_channel(chan: asyncssh.SSHServerChannel, session: TenantSFTPServer) -> None:
    """asyncssh calls exit() only for a session that got past the SFTP handshake; its channel always closes."""
    await chan.wait_closed()
    session.end()


def _release_session(shared: _Shared, tenant: str) -> None:
    shared.sessions_by_tenant[tenant] -= 1
    if shared.sessions_by_tenant[tenant] <= 0:
        del shared.sessions_by_tenant[tenant]


class SftpServer:
    """A listening server: close it, ask how busy it is, or give it a new list of tenants (a reload)."""

    def __init__(self, acceptor: accept.Listener, shared: _Shared, sync: cluster.DefenderSync | None) -> None:
        self.acceptor = acceptor
        self._shared = shared
        self._sync = sync

    @property
    def sockets(self):
        return self.acceptor.sockets

    def get_port(self) -> int:
        return self.acceptor.get_port()

    def close(self) -> None:
        """Stop listening (and trading the defender's evidence); connections already open go on until they end."""
        self.acceptor.close()
        if self._sync is not None:
            self._sync.stop()

    async def wait_closed(self) -> None:
        await self.acceptor.wait_closed()
        if self._sync is not None:
            await self._sync.stopped()
        self._shared.pools.shutdown()

    def stats(self) -> dict[str, float]:
        """Open SFTP sessions, their open files and unwritten bytes, and bans in force, for metrics."""
        shared = self._shared
        return {"sftp_sessions": sum(shared.sessions_by_tenant.values()),
                "sftp_open_files": shared.ledger.handles(),
                "sftp_buffered_bytes": shared.ledger.buffered,
                "defender_bans": shared.defender.bans_in_force() if shared.defender else 0}  # fmt: skip

    def banned_until(self, ip: str) -> float | None:
        """Until when (unix time) the defender bans the address; None: it does not (or there is no defender)."""
        defender = self._shared.defender
        return defender.banned_until(ip) if defender is not None else None

    def penalise_login(self, ip: str, unknown_user: bool, listener: str) -> Ban | None:
        """Score a failed login on another of the daemon's listeners (the admin console) as an SFTP one is
        scored, against the same address's SFTP failures: a ban that starts here is logged (with `listener`),
        saved, and refuses the address's SFTP connections as well."""
        shared = self._shared
        if shared.defender is None:
            return None
        options = shared.defender.options
        ban = shared.defender.score(ip, options.score_unknown_user if unknown_user else options.score_bad_password)
        if ban is not None:
            shared.reporter.event(events.IP_BANNED, remote_ip=ip, listener=listener, **_ban_fields(ban))
            shared._save_defender()
        return ban

    async def update_tenants(self, tenants: Mapping[str, TenantAccess]) -> None:
        """From the next login on, these tenants (added, changed or removed) are the ones that exist. Sessions
        already open keep the access they logged in with until they end."""
        for tenant in tenants.values():
            await asyncio.to_thread(fs.prepare_root, tenant.root)
        shared = self._shared
        shared.keys = {name: _key_blobs(tenant) for name, tenant in tenants.items()}
        shared.options = dataclasses.replace(shared.options, tenants=dict(tenants))


def _refresher(options: ServerOptions, tenant: str) -> Callable[[], Awaitable[None]] | None:
    """What brings a tenant's /results up to the other replicas' receipts (None: no other replica writes any)."""
    refresh = options.refresh_results
    return None if refresh is None else functools.partial(refresh, tenant)


async def start_server(
    options: ServerOptions, on_upload: OnUpload, on_event: OnEvent | None = None
) -> SftpServer:
    """Listen for SFTP clients; completed uploads go to `on_upload`, security facts to `on_event`.

    Close with `server.close(); await server.wait_closed()`.
    """
    reporter = Reporter(on_upload, on_event)
    keys = {name: _key_blobs(tenant) for name, tenant in options.tenants.items()}
    for tenant in options.tenants.values():
        await asyncio.to_thread(fs.prepare_root, tenant.root)
        for orphan in await asyncio.to_thread(fs.remove_orphans, tenant.root):
            reporter.event(events.UPLOAD_ABORTED, tenant=tenant.name, name=orphan, reason="orphaned")
    host_keys = await _host_keys(options, reporter)
    await asyncio.to_thread(passwords.warm_up)
    defender = await _defender(options)
    shared = _Shared(options=options, reporter=reporter, keys=keys, ledger=Ledger(options), defender=defender)
    sync = None
    if defender is not None and options.shared_state is not None:
        sync = cluster.DefenderSync(defender, options.shared_state, reporter, shared.banned_by_replicas)
        await sync.sync_once()  # the cluster's bans hold from the first connection on
    _hide_library_name()
    connection_options = asyncssh.SSHServerConnectionOptions(
        server_factory=functools.partial(_Gate, shared),
        sftp_factory=functools.partial(_open_session, shared),
        server_host_keys=host_keys.pairs,
        server_version=SERVER_VERSION,
        login_timeout=options.login_grace_seconds,
        public_key_auth=True,
        password_auth=True,
        kbdint_auth=False,
        gss_host=None,
        allow_scp=False,
        allow_pty=False,
        agent_forwarding=False,
        x11_forwarding=False,
        **ssh_algorithms.connection_options(),
    )
    sockets = await asyncio.to_thread(accept.bind, options.host, options.port)
    acceptor = accept.Listener(sockets, functools.partial(asyncssh.run_server, config=None,
                                                          options=connection_options))  # fmt: skip
    reporter.event(
        events.SERVER_STARTED,
        host=options.host,
        port=acceptor.get_port(),
        host_keys=host_keys.fingerprints,
        tenants=len(options.tenants),
        defender=defender is not None,
        bans_in_force=defender.bans_in_force() if defender else 0,
    )
    if sync is not None:
        sync.start()
    return SftpServer(acceptor, shared, sync)


async def _host_keys(options: ServerOptions, reporter: Reporter) -> hostkeys.HostKeys:
    """This server's keys, or with a shared store the cluster's (a replica's own are replaced by them)."""
    agree = options.shared_state.host_key if options.shared_state is not None else None
    host_keys = await asyncio.to_thread(hostkeys.load_or_create, options.host_key_dir, agree)
    for path in host_keys.generated:
        reporter.event(events.HOSTKEY_GENERATED, kind="host key", path=path)
    for path, fingerprint in host_keys.adopted:
        reporter.event(events.HOSTKEY_ADOPTED, kind="host key", path=path, fingerprint=fingerprint)
    return host_keys


async def _defender(options: ServerOptions) -> Defender | None:
    """The defender, with the bans kept in its file; with a shared store, the bans come from the store instead."""
    if options.defender is None:
        return None
    if options.shared_state is not None:
        return Defender(options.defender, shared=True)
    defender = Defender(options.defender)
    if options.defender_file is not None:
        defender.load(await asyncio.to_thread(read_state, options.defender_file))
    return defender


def _ban_fields(ban: Ban) -> dict[str, object]:
    until = datetime.fromtimestamp(ban.until, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"until": until, "ban_seconds": int(ban.seconds), "ban_count": ban.count}


def _hide_library_name() -> None:
    """Keep the SFTP version reply from naming the SSH library and its version (as the banner does not).

    asyncssh sends every entry of SFTPServerHandler._extensions, `vendor-id` ("AsyncSSH" and its version)
    among them, and offers no setting for it, so the class attribute is narrowed once, in place: the
    vendor-id goes, and so does `ranges@asyncssh.com` (it names the library, and these handles refuse the
    seek it needs). tests/sftp/test_limits.py reads the reply a client gets, so an asyncssh that builds it
    some other way fails there rather than quietly naming itself again.
    """
    extensions = asyncssh.sftp.SFTPServerHandler._extensions
    extensions[:] = [(name, data) for name, data in extensions if name != b"vendor-id" and b"asyncssh" not in name]


def _key_blobs(tenant: TenantAccess) -> frozenset[bytes]:
    blobs = set()
    for number, line in enumerate(tenant.authorized_keys, start=1):
        try:
            blobs.add(asyncssh.import_public_key(line).public_data)
        except (asyncssh.KeyImportError, ValueError):
            raise ValueError(f"tenant {tenant.name!r}: authorized key {number} is not an OpenSSH public key") from None
    return frozenset(blobs)


def _plain_ip(address: str) -> str:
    """127.0.0.1 rather than ::ffff:127.0.0.1 when a dual-stack socket accepted an IPv4 client."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def _address_in(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed.version == net.version and parsed in net for net in networks)
