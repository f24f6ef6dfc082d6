"""Wiring and lifecycle of `rosterd serve`: settings in, stages started in order, stopped on a signal.

Reading top to bottom follows one upload: the SFTP server accepts it into a tenant's inbox and reports the
completed file; intake takes it and queues it per tenant; the Processor (daemon/snapshots/process.py)
validates it in a worker process and records its snapshot; the outbox delivers it to the targets; the
receipts writer answers the uploader at each step. The SFTP layer and intake meet only at the filesystem and
an UploadReceived record. Each stage imports only the stages before it, so what a stage needs of a later
one is handed to it here: intake gets the Processor and the receipts writer's `answer`, the Processor gets
`answer` too, the outbox gets `refresh` (on_change), the CERS target gets `write_files`, and the SFTP layer
gets the names of the folders of results/. The admin console (daemon/console) is handed the store, the
settings as they are after each reload, the receipts writer (an action rewrites the receipts it changes) and
the SFTP listener's defender (a Gate: failed console logins are scored with SFTP's), and is told of every
upload and delivery that moves on, for its live pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

import asyncssh

from daemon.config import ServerConfig, Settings, TenantConfig
from daemon.console.server import ConsoleServer, Gate
from daemon.files import write_whole
from daemon.health import HealthServer, Metrics
from daemon.intake import Intake, IntakeOptions, KeptFiles, TenantPaths
from daemon.intake.workers import WorkerPool
from daemon.logs import configure_logging, get_logger
from daemon.notify import Notifier
from daemon.objects import StorageError
from daemon.objects.mirror import NO_MIRROR, Mirror
from daemon.oneroster.findings import Mode
from daemon.oneroster.validate import ValidateOptions
from daemon.oneroster.zipread import ZipLimits
from daemon.outbox import Outbox, RetryPolicy, Target
from daemon.readiness import Readiness, disk_check, fd_check, write_check
from daemon.receipts import RESULT_FOLDERS, Receipts
from daemon.sftp import ServerOptions, SftpServer, TenantAccess, UploadReceived, start_server
from daemon.sftp.defender import DefenderOptions
from daemon.snapshots.holds import HoldThresholds
from daemon.snapshots.job import TenantRules
from daemon.snapshots.process import ProcessOptions, Processor
from daemon.store import StoreInterface, StoreUnavailable
from daemon.targets.api.auth import api_targets
from daemon.targets.api.server import ApiServer
from daemon.targets.api.target import Publications
from daemon.targets.secrets import SecretMissing

DEMO_KEY_NAME = "demo_id_ed25519"
DEMO_API_CLIENT_NAME = "demo_api_client.json"
STOP_MARGIN_SECONDS = 5.0  # a stopping stage gets the grace period and this much more, then it is left behind
# The [server] keys the SFTP listener takes as they are: every ServerOptions field that ServerConfig also has.
SERVER_KEYS = tuple(f.name for f in dataclasses.fields(ServerOptions) if f.name in ServerConfig.model_fields)
# a reload leaves these as they were
RESTART_SECTIONS = ("server", "defender", "intake", "snapshots", "outbox", "health", "api", "admin", "store",
                    "storage")
DEMO_ADMIN_FILE = "demo_admin.json"
DEMO_ADMIN = "admin"


def demo_key(state_dir: Path, log) -> str:
    """The demo tenant's key pair: made once, private half in the state directory (mode 600)."""
    private = state_dir / DEMO_KEY_NAME
    if not private.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="rosterd demo tenant")
        write_whole(private, key.export_private_key(), mode=0o600, exclusive=True, sync_dir=True)
        write_whole(private.with_suffix(".pub"), key.export_public_key(), mode=None, sync_dir=True)
        log.info("hostkey.generated", kind="demo tenant key", path=str(private))
    key = asyncssh.read_private_key(private)
    return key.export_public_key().decode().strip()


def demo_api_client(state_dir: Path, store: StoreInterface, tenant: str, target: str, log) -> tuple[str, str]:
    """The demo tenant's API client: made once, its id and secret kept in the state directory (mode 600) so
    `make run` can show them at every start. Only the demo does this; other clients' secrets are never kept."""
    from daemon.passwords import hash_secret
    from daemon.targets.api.auth import new_client

    path = state_dir / DEMO_API_CLIENT_NAME
    if path.exists():
        kept = json.loads(path.read_text(encoding="utf-8"))
        found = store.api_credentials(kept["client_id"])
        if found is not None and found.client.revoked_at is None and found.client.target == target:
            return kept["client_id"], kept["client_secret"]
    client_id, secret = new_client()
    store.add_api_client(client_id, tenant, target, hash_secret(secret))
    write_whole(path, json.dumps({"client_id": client_id, "client_secret": secret}) + "\n", mode=0o600,
                sync_dir=True)  # fmt: skip
    log.warning("config.insecure_demo_api_client", path=str(path), client=client_id)
    return client_id, secret


def demo_admin(state_dir: Path, store: StoreInterface, log) -> tuple[str, str] | None:
    """The demo's console account `admin`: made once, its password kept in the state directory (mode 600) so
    `make run` can show it at every start. None when an account of that name was made some other way."""
    import secrets

    from daemon.passwords import hash_secret

    path = state_dir / DEMO_ADMIN_FILE
    found = store.admin_user(DEMO_ADMIN)
    if path.exists() and found is not None and found.disabled_at is None:
        return DEMO_ADMIN, json.loads(path.read_text(encoding="utf-8"))["password"]
    if found is not None:
        return None
    password = secrets.token_urlsafe(12)
    store.add_admin_user(DEMO_ADMIN, "admin", None, hash_secret(password))
    write_whole(path, json.dumps({"name": DEMO_ADMIN, "password": password}) + "\n", mode=0o600, sync_dir=True)
    log.warning("config.insecure_demo_admin", path=str(path), account=DEMO_ADMIN)
    return DEMO_ADMIN, password


def tenant_access(settings: Settings, tenant: TenantConfig, demo_public_key: str | None) -> TenantAccess:
    keys = [*tenant.authorized_keys, *([demo_public_key] if tenant.demo and demo_public_key else [])]
    return TenantAccess(
        name=tenant.name,
        root=settings.tenant_root(tenant.name),
        password_hash=tenant.password_hash,
        authorized_keys=tuple(keys),
        allowed_networks=tuple(tenant.allowed_networks),
        max_upload_bytes=tenant.max_upload_bytes,
        inbox_quota_bytes=tenant.inbox_quota_bytes,
    )


def defender_options(settings: Settings) -> DefenderOptions | None:
    d = settings.defender
    if not d.enabled:
        return None
    return DefenderOptions(
        threshold=d.threshold,
        observation_seconds=d.observation_minutes * 60,
        ban_seconds=d.ban_minutes * 60,
        ban_multiplier=d.ban_multiplier,
        score_unknown_user=d.score_unknown_user,
        score_bad_password=d.score_bad_password,
        score_limit_exceeded=d.score_limit_exceeded,
    )


def tenant_paths(settings: Settings, tenant: TenantConfig) -> TenantPaths:
    root = settings.tenant_root(tenant.name)
    return TenantPaths(tenant.name, root / "inbox", root / "results")


def tenant_rules(settings: Settings, tenant: TenantConfig) -> TenantRules:
    """What each upload of the tenant is held to, from [validation] (its own validation_mode over the mode) and
    [holds] (its own holds keys over them)."""
    v = settings.validation
    validate = ValidateOptions(
        mode=Mode(tenant.validation_mode or v.mode),
        limits=ZipLimits(max_entries=v.max_entries, max_total_bytes=v.max_total_bytes, max_ratio=v.max_ratio),
        max_dropped_share=v.max_dropped_share,
    )
    return TenantRules(validate, tenant_holds(settings, tenant))


def tenant_holds(settings: Settings, tenant: TenantConfig) -> HoldThresholds:
    """The [holds] thresholds with the tenant's own `holds` keys over them."""
    own = tenant.holds.model_dump(exclude_unset=True) if tenant.holds is not None else {}
    return settings.holds.model_copy(update=own)


def make_targets(
    settings: Settings, receipts: Receipts | None = None, publications: Publications | None = None
) -> dict[tuple[str, str], Target]:
    """Every configured target, keyed by (tenant, target name). A CERS target writes a dry run's files through
    `receipts` (the one writer of results/); api targets share `publications` with the API server, whose
    mirror (replicas' shared storage) licence targets keep their prepared deliveries and views in too."""
    from daemon.targets.api.target import ApiPublication
    from daemon.targets.cers.target import CersGroupsTarget
    from daemon.targets.sftp_push import SftpPush
    from daemon.targets.webhook import WebhookDelivery

    state_dir = settings.server.state_dir
    mirror = publications.mirror if publications is not None else NO_MIRROR
    made: dict[tuple[str, str], Target] = {}
    for tenant in settings.tenants:
        for target in tenant.targets:
            if target.type == "cers":
                write_files = receipts.write_files if receipts is not None else None
                made[(tenant.name, target.name)] = CersGroupsTarget(tenant.name, target, write_files)
            elif target.type == "webhook":
                made[(tenant.name, target.name)] = WebhookDelivery(tenant.name, target, state_dir, mirror)
            elif target.type == "sftp":
                made[(tenant.name, target.name)] = SftpPush(tenant.name, target, state_dir, mirror)
            elif target.type == "api":  # its delivery makes the publication its API serves
                made[(tenant.name, target.name)] = ApiPublication(tenant.name, target, state_dir, settings.api.origin(),
                                                                  publications)  # fmt: skip
    return made


def retry_policy(settings: Settings) -> RetryPolicy:
    o = settings.outbox
    return RetryPolicy(first_seconds=o.retry_first_seconds, max_seconds=o.retry_max_seconds,
                       give_up_seconds=o.give_up_hours * 3600, poll_seconds=o.poll_seconds)  # fmt: skip


def raise_open_file_limit() -> int:
    """Take the hard limit of open files as the soft one (1024 by default on many systems is too few for a
    server holding sessions, uploads and a database); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class StartupError(Exception):
    """The daemon cannot start for a reason an operator can fix; the message says which."""


class Daemon:
    """The running daemon: start() brings the stages up in order, stop() takes them down in reverse."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = get_logger()
        self.state_dir = settings.server.state_dir
        self.store: StoreInterface | None = None
        self.mirror: Mirror = NO_MIRROR  # the shared storage replicas keep uploads, snapshots, receipts in
        self.publications = Publications(self.state_dir)  # what the API serves (with the mirror, once opened)
        self._refreshing: dict[str, asyncio.Future] = {}  # tenant -> the refresh of its results/ (replicas)
        self._refreshed_at: dict[str, float] = {}
        self.pool: WorkerPool | None = None
        self.receipts: Receipts | None = None
        self.processor: Processor | None = None
        self.intake: Intake | None = None
        self.outbox: Outbox | None = None
        self.sftp: SftpServer | None = None
        self.metrics: Metrics | None = None
        self.health: HealthServer | None = None
        self.health_port: int | None = None
        self.api: ApiServer | None = None
        self.console: ConsoleServer | None = None
        self.notifier = Notifier()
        self._keep_alive: asyncio.Task | None = None
        self._checking: asyncio.Task | None = None
        self.readiness: Readiness | None = None
        self.ready = False  # listening, with start-up recovery done (readiness for systemd and /readyz)
        self.open_files_limit = 0  # the soft limit of open files, raised to the hard one at start
        self.left_behind: list[str] = []  # stages whose stop outlasted its limit (daemon.stop_timed_out)
        self._demo_public: str | None = None
        self._lock_fd: int | None = None
        self._notifications: set[asyncio.Task] = set()

    async def start(self) -> None:
        settings, log = self.settings, self.log
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_state_dir()
        self.open_files_limit = raise_open_file_limit()
        demo_public = self._demo_public = await self._demo_key(settings)
        self.store = await self._open_store(settings)
        mirror = self.mirror = await self._open_mirror(settings)
        self.publications = Publications(self.state_dir, mirror)
        self.readiness = self._readiness(settings)
        self.metrics = Metrics(self.store, live=self._live_figures, blockers=lambda: self.readiness.blockers)
        self.notifier.status("recovering: finishing what the last run left")
        self.pool = WorkerPool(settings.intake.workers, settings.intake.worker_memory_bytes,
                               lambda level, event, **fields: getattr(log, level)(event, **fields))  # fmt: skip
        receipts = self.receipts = Receipts(self.store, self._results(settings), settings.intake.receipts_kept, mirror)
        await receipts.prepare()
        self.processor = Processor(
            self._tenant_rules(settings),
            self.store,
            self.pool,
            ProcessOptions(
                state_dir=self.state_dir,
                snapshots_kept=settings.snapshots.keep,
                on_accepted=self._accepted,
                on_final=self._observe_upload,
                mirror=mirror,
            ),
            self._pipeline_log,
            receipts.answer,
            KeptFiles(self.state_dir, mirror),
        )
        await self.processor.prepare()
        self.intake = Intake(
            self._tenant_paths(settings),
            self.store,
            IntakeOptions(
                state_dir=self.state_dir,
                settle_seconds=settings.intake.settle_seconds,
                rescan_seconds=settings.intake.rescan_seconds,
                workers=settings.intake.workers,
                quarantine_days=settings.intake.quarantine_days,
                # unfinished uploads are looked for at least twice a lease: a dead replica's are taken over soon
                supervise_seconds=min(30.0, settings.outbox.lease_seconds / 2),
                on_accepted=self._accepted,
                mirror=mirror,
            ),
            self._pipeline_log,
            self.processor,
            receipts.answer,
        )
        self.outbox = Outbox(
            self.store,
            make_targets(settings, receipts, self.publications),
            self.pool,
            retry_policy(settings),
            lambda level, event, **fields: getattr(log, level)(event, **fields),
            on_change=self._delivery_changed,
            on_attempt=self._observe_delivery,
            mirror=mirror,
        )
        await self.intake.start()
        await self.outbox.start()
        server = settings.server
        options = ServerOptions(
            **{key: getattr(server, key) for key in SERVER_KEYS},  # host, port and every limit, as configured
            host_key_dir=self.state_dir / "hostkeys",
            tenants=self._access(settings, demo_public),
            defender=defender_options(settings),
            defender_file=self.state_dir / "defender.json",
            result_folders=RESULT_FOLDERS,  # the folders receipts writes in results/ (the CERS dry-run files)
            shared_state=self.store if self.store.shared else None,
            confirm_uploads=mirror is not NO_MIRROR,  # replicas: a close answered well means the cluster has it
            refresh_results=self._refresh_results if self.mirror is not NO_MIRROR else None,
        )
        try:
            self.sftp = await start_server(options, self._uploaded, self._sftp_event)
        except OSError as exc:  # most often: the port is taken, or below 1024 without the capability
            raise StartupError(f"cannot listen on {server.host}:{server.port}: {exc.strerror or exc}") from None
        except ValueError as exc:  # a state file the daemon cannot trust (the defender's bans)
            raise StartupError(str(exc)) from None
        if settings.health.enabled:
            self.health = HealthServer(settings.health.host, settings.health.port, self.metrics,
                                       ready=lambda: self.ready)  # fmt: skip
            try:
                self.health_port = await self.health.start()
            except OSError as exc:
                raise StartupError(f"cannot listen for health checks on {settings.health.host}:"
                                   f"{settings.health.port}: {exc.strerror or exc}") from None  # fmt: skip
        await self._start_api(settings)
        await self._start_console(settings)
        await self.readiness.refresh()  # the first verdict before /readyz can say ready
        self.ready = True
        self.notifier.ready(f"listening on {server.host}:{self.port}; {len(settings.tenants)} tenant(s)")
        self._keep_alive = asyncio.create_task(self.notifier.keep_alive(lambda: self.ready), name="watchdog")
        self._checking = asyncio.create_task(self.readiness.run(), name="readiness")
        log.info("daemon.started", host=server.host, port=self.port, config=str(settings.source),
                 tenants=[t.name for t in settings.tenants], health_port=self.health_port,
                 api_port=self.api.port if self.api else None,
                 admin_port=self.console.port if self.console else None,
                 open_files_limit=self.open_files_limit)  # fmt: skip
        demo_api = await self._demo_api(settings)
        demo_admin_login = await self._demo_admin(settings)
        if demo_public:
            key = os.path.relpath(self.state_dir / DEMO_KEY_NAME)
            print(f"\nrosterd is listening on {server.host}:{self.port}. Upload as the demo tenant with:\n"
                  f"    sftp -P {self.port} -i {key} -o StrictHostKeyChecking=accept-new demo@{server.host}\n"
                  "then `put samples/valid-1.1-bulk.zip inbox/` and `get results/latest.json`.\n",
                  file=sys.stderr, flush=True)  # fmt: skip
        if demo_api and self.api is not None:
            client_id, secret = demo_api
            url = f"http://{settings.api.host}:{self.api.port}"
            print(f"The demo tenant's roster is served as a OneRoster API on {url} (client id {client_id}, secret "
                  f"{secret}):\n    TOKEN=$(curl -s -u {client_id}:{secret} -d grant_type=client_credentials "
                  f"{url}/oauth2/token | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n"
                  f"    curl -s -H \"Authorization: Bearer $TOKEN\" '{url}/ims/oneroster/v1p1/users?limit=2'\n",
                  file=sys.stderr, flush=True)  # fmt: skip
        if demo_admin_login and self.console is not None:
            scheme = "https" if settings.admin.tls_cert else "http"
            print(f"The admin console is on {scheme}://{settings.admin.host}:{self.console.port}/ (log in as "
                  f"{demo_admin_login[0]}, password {demo_admin_login[1]}).\n", file=sys.stderr, flush=True)

    async def _demo_admin(self, settings: Settings) -> tuple[str, str] | None:
        """With a demo tenant, the console gets a demo admin (name, password), shown at start."""
        if not any(t.demo for t in settings.tenants):
            return None
        assert self.store is not None
        return await asyncio.to_thread(demo_admin, self.state_dir, self.store, self.log)

    async def _start_console(self, settings: Settings) -> None:
        """The admin console on its own port ([admin]), unless it is turned off."""
        if not settings.admin.enabled:
            return
        assert self.store is not None and self.sftp is not None
        gate = Gate(self.sftp.banned_until, lambda ip, unknown: self.sftp.penalise_login(ip, unknown, "console"))
        console = ConsoleServer(settings.admin, self.store, lambda: self.settings, self.log, gate, self.receipts,
                                self.mirror)
        try:
            await console.start()
        except OSError as exc:
            await console.stop()
            raise StartupError(f"cannot listen for the admin console on {settings.admin.host}:{settings.admin.port}: "
                               f"{exc.strerror or exc}") from None  # fmt: skip
        self.console = console
        self.log.info("console.started", host=settings.admin.host, port=console.port,
                      tls=settings.admin.tls_cert is not None)  # fmt: skip

    async def _delivery_changed(self, delivery) -> None:
        """A delivery moved on: its upload's receipt says so, and the console's open pages are told."""
        assert self.receipts is not None
        if self.console is not None:
            self.console.notify(delivery.tenant)
        await self.receipts.refresh(delivery.upload_id)

    async def _demo_api(self, settings: Settings) -> tuple[str, str] | None:
        """The demo tenant's first api target gets a demo client (id, secret), shown at start."""
        for tenant in settings.tenants:
            target = next((t for t in tenant.targets if t.type == "api"), None) if tenant.demo else None
            if target is not None:
                assert self.store is not None
                return await asyncio.to_thread(demo_api_client, self.state_dir, self.store, tenant.name, target.name,
                                               self.log)  # fmt: skip
        return None

    async def _start_api(self, settings: Settings) -> None:
        """The OneRoster API, once some tenant has an api target (at start, or a reload that adds the first)."""
        if self.api is not None or not api_targets(settings.tenants):
            return
        assert self.store is not None and self.metrics is not None
        api = ApiServer(settings.api, self.store, self.state_dir, lambda: api_targets(self.settings.tenants),
                        lambda level, event, **fields: getattr(self.log, level)(event, **fields),
                        self.metrics.observe_api, self.publications)  # fmt: skip
        try:
            await api.start()
        except OSError as exc:
            await api.stop()
            raise StartupError(f"cannot listen for the OneRoster API on {settings.api.host}:{settings.api.port}: "
                               f"{exc.strerror or exc}") from None  # fmt: skip
        self.api = api
        self.log.info("api.started", host=settings.api.host, port=api.port, tls=settings.api.tls_cert is not None)

    def _pipeline_log(self, event: str, **fields) -> None:
        """How intake and the processing log: failures as errors, a file left in the inbox as a warning."""
        level = {"upload.failed": self.log.error, "upload.not_taken": self.log.warning,
                 "upload.lease_lost": self.log.warning, "upload.lease_not_renewed": self.log.warning,
                 }.get(event, self.log.info)  # fmt: skip
        level(event, **fields)
        if self.console is not None and isinstance(fields.get("tenant"), str):
            self.console.notify(fields["tenant"])

    def _accepted(self, _tenant: str, _upload_id: str) -> None:
        """A new current snapshot (accepted, or approved by an operator): its deliveries may go."""
        if self.outbox:
            self.outbox.kick()

    def _live_figures(self) -> dict[str, float]:
        """What only the running daemon knows, for /metrics: the SFTP listener's figures, worker deaths."""
        figures = dict(self.sftp.stats()) if self.sftp else {}
        if self.pool is not None:
            figures["worker_deaths"] = self.pool.deaths
        return figures

    async def _open_store(self, settings: Settings) -> StoreInterface:
        """The store `[store]` names, opened off the loop (PostgreSQL may take seconds to answer). While uploads and
        snapshots stay in this machine's state directory, this daemon must be the only one on the store: a
        second replica on the same PostgreSQL database refuses to start rather than work beside it."""
        try:
            store = await asyncio.to_thread(settings.open_store)
        except (StoreUnavailable, SecretMissing) as err:
            raise StartupError(f"[store]: {err}") from None
        store.replica, store.lease_seconds = settings.server.replica_name(), settings.outbox.lease_seconds
        if settings.storage.kind == "local" and not await asyncio.to_thread(store.hold_alone):
            store.close()
            raise StartupError("[store]: another rosterd already runs on this PostgreSQL database, and with "
                               "[storage] kind = \"local\" only one may: stop it first")  # fmt: skip
        return store

    async def _refresh_results(self, tenant: str) -> None:
        """A tenant's results/ brought up to the receipts every replica wrote (shared storage), before a client
        looks into it. At most one refresh of a tenant runs at a time, and a look within a second of the last
        one is served from what it brought: a client polling latest.json costs one listing a second. When the
        storage does not answer, the client is served what this replica has."""
        refreshing = self._refreshing.get(tenant)
        if refreshing is None or (refreshing.done() and time.monotonic() - self._refreshed_at.get(tenant, 0) > 1.0):
            folder = self._results(self.settings).get(tenant)
            if folder is None:
                return
            refreshing = self._refreshing[tenant] = asyncio.ensure_future(
                asyncio.to_thread(self.mirror.sync_folder, folder))  # fmt: skip
            self._refreshed_at[tenant] = time.monotonic()
        try:
            await asyncio.shield(refreshing)
        except Exception as exc:
            self.log.warning("results.refresh_failed", tenant=tenant, error=f"{type(exc).__name__}: {exc}")

    async def _open_mirror(self, settings: Settings) -> Mirror:
        """Where replicas share uploads, snapshots and receipts: nothing for a daemon alone on its state
        directory; the bucket for [storage] kind = "s3", which must answer before the daemon takes uploads."""
        config = settings.storage
        if config.kind == "local":
            return NO_MIRROR
        if not settings.store.postgresql:
            raise StartupError("[storage] kind = \"s3\" is for replicas, which share their state in PostgreSQL: "
                               "set [store] url too (SQLite is one machine's file)")  # fmt: skip
        try:
            mirror = await asyncio.to_thread(settings.open_mirror)
            await asyncio.to_thread(mirror.storage.list, "snapshots/.probe")  # the bucket answers this key
        except (SecretMissing, StorageError, ValueError) as err:
            raise StartupError(f"[storage]: {err}") from None
        return mirror

    def _readiness(self, settings: Settings) -> Readiness:
        """The checks behind /readyz beyond "started": whether intake can make progress now."""
        assert self.store is not None
        checks = {
            "worker_pool": lambda: None if self.pool is None or self.pool.usable else "no worker process can run",
            "database": write_check(self.store.heartbeat),
            "state_disk": disk_check(self.state_dir, settings.server.min_free_bytes),
            "file_descriptors": fd_check(),
        }  # fmt: skip
        if self.mirror is not NO_MIRROR:  # replicas: a bucket that takes no writes stops uploads being recorded
            probe = f"health/{settings.server.replica_name().replace(':', '-')}"
            checks["shared_storage"] = write_check(functools.partial(self.mirror.storage.put_bytes, probe, b"ok"),
                                                   "the shared storage")  # fmt: skip
        return Readiness(checks, interval=settings.health.check_seconds, on_change=self._readiness_changed)

    def _readiness_changed(self, blockers: dict[str, str]) -> None:
        if blockers:
            self.log.error("daemon.not_ready", reasons=blockers)
            self.notifier.status("not ready: " + "; ".join(f"{k}: {v}" for k, v in sorted(blockers.items())))
        else:
            self.log.info("daemon.ready_again")
            self.notifier.status(f"listening on {self.settings.server.host}:{self.port}; ready")

    def _lock_state_dir(self) -> None:
        """One daemon per state directory: a second one would take uploads from under the first."""
        fd = os.open(self.state_dir / "rosterd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupError(f"another rosterd is running with the state directory {self.state_dir}") from None
        self._lock_fd = fd  # held until the process exits

    @property
    def port(self) -> int:
        assert self.sftp is not None
        return self.sftp.sockets[0].getsockname()[1]

    async def _demo_key(self, settings: Settings) -> str | None:
        if not any(t.demo for t in settings.tenants):
            return None
        public = await asyncio.to_thread(demo_key, self.state_dir, self.log)
        self.log.warning("config.insecure_demo_tenant", key=str(self.state_dir / DEMO_KEY_NAME))
        return public

    @staticmethod
    def _tenant_paths(settings: Settings) -> dict[str, TenantPaths]:
        return {t.name: tenant_paths(settings, t) for t in settings.tenants}

    @staticmethod
    def _tenant_rules(settings: Settings) -> dict[str, TenantRules]:
        return {t.name: tenant_rules(settings, t) for t in settings.tenants}

    @staticmethod
    def _results(settings: Settings) -> dict[str, Path]:
        return {t.name: settings.tenant_root(t.name) / "results" for t in settings.tenants}

    @staticmethod
    def _access(settings: Settings, demo_public: str | None) -> dict[str, TenantAccess]:
        return {t.name: tenant_access(settings, t, demo_public) for t in settings.tenants}

    def _observe_upload(self, upload, timings: dict) -> None:
        assert self.metrics is not None
        self.metrics.uploads_total.labels(upload.tenant, str(upload.state)).inc()
        if "validation" in timings:
            self.metrics.validation_seconds.observe(timings["validation"])
        if "diff" in timings:
            self.metrics.diff_seconds.observe(timings["diff"])

    def _observe_delivery(self, delivery, state, seconds: float) -> None:
        assert self.metrics is not None and self.outbox is not None
        target = self.outbox.targets.get((delivery.tenant, delivery.target))
        kind = type(target).__name__ if target is not None else "unknown"
        self.metrics.delivery_seconds.labels(kind).observe(seconds)
        self.metrics.deliveries_total.labels(delivery.tenant, delivery.target, str(state)).inc()

    async def reload(self) -> None:
        """SIGHUP: read the config file again and apply its tenants and targets without dropping a session.
        A config that does not load changes nothing (the problems are logged); settings that only a restart can
        apply ([server] host, port, state_dir and the like) are named in the log and left as they were."""
        from daemon.config import ConfigError, load_settings

        log = self.log
        self.notifier.reloading()
        try:
            fresh = await asyncio.to_thread(load_settings, self.settings.source)
        except ConfigError as err:
            log.error("config.reload_failed", config=str(self.settings.source), problems=err.problems)
            self.notifier.ready("reload failed: the config has problems (see the log); the old one stays")
            return
        restart = [k for k in RESTART_SECTIONS if getattr(fresh, k) != getattr(self.settings, k)]
        if restart:
            log.warning("config.restart_needed", sections=restart)
            kept = {k: getattr(self.settings, k) for k in restart}
            fresh = fresh.model_copy(update=kept)
        assert self.store is not None and self.sftp is not None and self.intake is not None and self.outbox is not None
        assert self.receipts is not None and self.processor is not None
        demo_public = await self._demo_key(fresh) if fresh.tenants != self.settings.tenants else self._demo_public
        self.settings, self._demo_public = fresh, demo_public
        self.store.targets = fresh.target_names()
        await self.sftp.update_tenants(self._access(fresh, demo_public))
        await self.receipts.update_tenants(self._results(fresh))
        await self.processor.update_tenants(self._tenant_rules(fresh))
        await self.intake.update_tenants(self._tenant_paths(fresh))
        targets = make_targets(fresh, self.receipts, self.publications)
        await self.outbox.update_targets(targets)
        try:
            await self._start_api(fresh)
        except StartupError as err:
            log.error("api.start_failed", reason=str(err))
        log.info("config.reloaded", config=str(fresh.source), tenants=[t.name for t in fresh.tenants],
                 targets=sorted(f"{t}/{n}" for t, n in targets))  # fmt: skip
        self.notifier.ready(f"reloaded; {len(fresh.tenants)} tenant(s)")

    def _uploaded(self, event: UploadReceived) -> asyncio.Task[bool]:
        """Take a completed upload now; the task says whether it was recorded (replicas await it: see
        ServerOptions.confirm_uploads)."""
        assert self.intake is not None
        task = asyncio.get_running_loop().create_task(self.intake.notify(event))
        self._notifications.add(task)  # referenced until done, so it is not collected mid-way
        task.add_done_callback(functools.partial(self._notified, event))
        return task

    def _notified(self, event: UploadReceived, task: asyncio.Task) -> None:
        self._notifications.discard(task)
        if not task.cancelled() and task.exception() is not None:  # intake logs its own failures; this is a bug
            self.log.error("upload.failed", tenant=event.tenant, file=event.name, error=repr(task.exception()))

    def _sftp_event(self, name: str, fields: dict) -> None:
        warnings = ("sftp.login_failed", "sftp.limit_exceeded", "sftp.ip_banned", "sftp.connection_refused",
                    "upload.aborted", "upload.unconfirmed", "defender.sync_failed")  # fmt: skip
        level = "warning" if name in warnings else "info"
        getattr(self.log, level)(name, **fields)

    async def stop(self) -> None:
        """SIGTERM: stop taking connections and uploads, give work under way the grace period to reach a
        recorded state, cut off the rest (recorded as in progress: resumed at the next start), and exit."""
        grace = self.settings.server.stop_grace_seconds
        began = time.monotonic()
        self.log.info("daemon.stopping", grace_seconds=grace)
        await self._take_down(grace)
        self.log.info("daemon.stopped", elapsed_ms=round((time.monotonic() - began) * 1000),
                      left_behind=self.left_behind)  # fmt: skip

    async def abandon_start(self, error: BaseException) -> None:
        """A start that failed: say why (daemon.start_failed) and close what it had opened. The daemon never
        ran, so there is no daemon.stopping or daemon.stopped."""
        if isinstance(error, StartupError):  # a reason an operator can fix, such as a port or state in use
            self.log.error("daemon.start_failed", reason=str(error))
        else:  # a bug or an unexpected failure: its traceback too
            self.log.error("daemon.start_failed", reason=repr(error), exc_info=error)
        await self._take_down(self.settings.server.stop_grace_seconds)

    async def _take_down(self, grace: float) -> None:
        """The stages down in the reverse order of their start, each within its limit."""
        self.ready = False
        self.notifier.stopping()
        if self._keep_alive is not None:
            self._keep_alive.cancel()
        if self._checking is not None:
            self._checking.cancel()
        bound = grace + STOP_MARGIN_SECONDS
        if self.sftp is not None:
            self.sftp.close()
            await self._stop_stage("sftp", self.sftp.wait_closed(), bound)
        if self.api is not None:
            await self._stop_stage("api", self.api.stop(), bound)
        if self.console is not None:
            await self._stop_stage("console", self.console.stop(), bound)
        waits = []
        if self.outbox is not None:
            waits.append(self._stop_stage("outbox", self.outbox.stop(grace), bound))
        if self.intake is not None:
            waits.append(self._stop_stage("intake", self.intake.stop(grace), bound))
        await asyncio.gather(*waits)
        if self.pool is not None:
            _end_pool(self.pool)
        if self.health is not None:
            await self._stop_stage("health", self.health.stop(), bound)
        if self.store is not None:
            self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _stop_stage(self, stage: str, stopping: Awaitable[None], seconds: float) -> None:
        """Wait up to `seconds` for one stage's stop. A stage still stopping then is logged, cancelled and left
        behind, so that the daemon exits instead of waiting for SIGKILL; what it had under way is recorded as
        in progress and taken up again at the next start. Its own wait may ignore the cancel: not waited for."""
        task = asyncio.ensure_future(stopping)
        done, _ = await asyncio.wait({task}, timeout=seconds)
        if task in done:
            task.result()  # a stage's error goes on to the caller, as before
            return
        task.cancel()
        self.left_behind.append(stage)
        self.log.error("daemon.stop_timed_out", stage=stage, seconds=seconds)


def _end_pool(pool: WorkerPool) -> None:
    """Stop the worker processes now: a validation still running was cut off, and its upload is recorded as
    being validated, so it is done again at the next start."""
    pool.terminate()


async def serve(settings: Settings) -> None:
    configure_logging()
    daemon = Daemon(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    reloads: set[asyncio.Task] = set()

    def reload() -> None:
        if daemon.ready:
            task = loop.create_task(daemon.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await daemon.start()
    except BaseException as error:
        await daemon.abandon_start(error)
        raise
    try:
        await stopping.wait()
    finally:
        await asyncio.gather(*reloads, return_exceptions=True)
        await daemon.stop()
        if daemon.left_behind:  # asyncio's own shutdown would wait for them again, this time without a limit
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
