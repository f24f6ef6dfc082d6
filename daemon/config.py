"""Configuration: the TOML file, validated into one `Settings` object that is passed down.

Every problem is reported at once, one per line, as `FILE: dotted.key[index]: what is wrong`; a value that
may be a secret (a password hash that turned out to be a plaintext password, a key line) is never echoed.

The default file, used when no `--config` is given, is `config/rosterd.toml` in the source tree (the folder
next to the `daemon` package). It exists to make `make run` work from a checkout; it keeps its state in the
checkout's `./var`, which would make no sense inside site-packages, so an installed rosterd is started with
an explicit `--config` (as a service unit would) and `load_settings(None)` says so when the file is absent.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import tomllib
import typing
from collections.abc import Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from urllib.parse import urlsplit
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon.files import replace_text
from daemon.names import TENANT_NAME, check_tenant_name
from daemon.snapshots.holds import HoldThresholds  # the [holds] section: defined once, where it is used
from daemon.targets.cers.settings import CersTarget
from daemon.targets.secrets import SecretSource
from daemon.targets.settings import ApiConfig, ApiTarget, SftpTarget, WebhookTarget

Target = Annotated[CersTarget | WebhookTarget | SftpTarget | ApiTarget, Field(discriminator="type")]

GiB = 1024**3
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "rosterd.toml"
_ARGON2ID = re.compile(r"^\$argon2id\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}$")
_BCRYPT = re.compile(r"^\$2[by]\$\d\d\$[./A-Za-z0-9]{53}$")
_TOML_POSITION = re.compile(r"^(?P<what>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$")

ValidationMode = Literal["lenient", "strict"]


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds one `FILE: key: message` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _network(value: object) -> IPv4Network | IPv6Network:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError("a network is written as a string such as \"192.0.2.0/24\" or \"2001:db8::/32\"")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as err:
        if "host bits set" in str(err):
            fixed = ipaddress.ip_network(value.strip(), strict=False)
            raise ValueError(f"{value!r} has host bits set; the network is {str(fixed)!r}") from None
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 network (CIDR such as \"192.0.2.0/24\")") from None


Network = Annotated[IPv4Network | IPv6Network, PlainValidator(_network), PlainSerializer(str)]


def check_public_key(line: str) -> str:
    """One OpenSSH public key line (`TYPE BASE64 [COMMENT]`), stripped; ValueError says what is wrong."""
    import asyncssh  # costs ~0.1 s: only when a key is actually read

    line = line.strip()
    if "PRIVATE KEY" in line:
        raise ValueError("this is a private key; give the public key (the .pub file) instead")
    if "\n" in line or line.startswith("-"):
        raise ValueError("not an OpenSSH public key line (one line: TYPE BASE64 [COMMENT])")
    try:
        key = asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError):
        raise ValueError("not an OpenSSH public key line (one line: TYPE BASE64 [COMMENT])") from None
    if key.algorithm == b"ssh-dss":
        raise ValueError("DSA keys are too weak; use an ed25519 key (ssh-keygen -t ed25519)")
    if key.algorithm == b"ssh-rsa" and key.pyca_key.key_size < 2048:
        raise ValueError(f"an RSA key of {key.pyca_key.key_size} bits is too weak; use 3072 bits or ed25519")
    return line


PublicKey = Annotated[str, AfterValidator(check_public_key)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(2222, ge=1, le=65535)
    state_dir: Path = Path("var")  # a relative path is taken from the config file's folder
    max_auth_tries: int = Field(6, ge=1)
    login_grace_seconds: int = Field(120, ge=1)
    idle_timeout_seconds: int = Field(900, ge=1)
    max_sessions_per_tenant: int = Field(5, ge=1)
    max_sessions_per_ip: int = Field(10, ge=1)
    min_free_bytes: int = Field(1 * GiB, ge=0)
    max_handles_per_session: int = Field(64, ge=1)
    max_handles_per_tenant: int = Field(256, ge=1)
    max_open_uploads_per_tenant: int = Field(16, ge=1)
    max_handles_total: int = Field(4096, ge=1)
    max_buffered_bytes_per_session: int = Field(64 * 1024**2, ge=1)
    max_buffered_bytes_total: int = Field(512 * 1024**2, ge=1)
    stop_grace_seconds: float = Field(20.0, ge=0)  # on SIGTERM, work under way gets this long to finish
    # this daemon's name among replicas sharing a store: its claims carry it, and a restart under the same name
    # takes back at once what it left in flight (None: HOST:PORT, the machine's name and the SFTP port)
    replica: str | None = Field(None, min_length=1, max_length=200)

    def replica_name(self) -> str:
        return self.replica or f"{socket.gethostname()}:{self.port}"


class DefenderConfig(_Section):
    enabled: bool = True
    threshold: int = Field(15, ge=1)
    observation_minutes: int = Field(30, ge=1)
    ban_minutes: int = Field(30, ge=1)
    score_unknown_user: int = Field(2, ge=0)
    score_bad_password: int = Field(1, ge=0)
    score_limit_exceeded: int = Field(3, ge=0)
    ban_multiplier: float = Field(2.0, ge=1)  # each repeated ban of an IP lasts this many times the last one


class ValidationConfig(_Section):
    mode: ValidationMode = "lenient"
    max_dropped_share: float = Field(0.01, ge=0, le=1)
    max_total_bytes: int = Field(4 * GiB, ge=1)
    max_entries: int = Field(200, ge=1)
    max_ratio: float = Field(200.0, gt=0)


class SnapshotsConfig(_Section):
    keep: int = Field(30, ge=1)  # newest snapshots kept per tenant (the current one always)


class StoreConfig(SecretSource):
    """[store]: where the state is recorded. Without a url, SQLite in the state directory (STATE/rosterd.db);
    with `postgresql://USER@HOST:PORT/DATABASE` (issue 17), PostgreSQL shared by every replica. The password
    is never in the url: it comes from secret_credential, secret_env or secret_file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("url: only postgresql://USER@HOST:PORT/DATABASE (leave it out for SQLite)")
        if parts.password is not None:
            raise ValueError("url: no password in the url (it would be in the file and in logs): name "
                             "secret_credential, secret_env or secret_file instead")  # fmt: skip
        return value

    @property
    def postgresql(self) -> bool:
        return self.url is not None

    def password(self) -> str | None:
        """The database password, read now from its secret source (None: none named, as with SQLite or a
        PostgreSQL that trusts the replica's host); SecretMissing when the source cannot be read."""
        return self.read_secret() if self.postgresql and self.secret_source else None


class StorageConfig(SecretSource):
    """[storage]: where uploads, snapshots and change sets are kept. `local` (the default): the state directory.
    `s3` (issue 17): an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph) shared by every replica; the
    secret access key comes from secret_credential, secret_env or secret_file, never the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "s3"] = "local"
    endpoint: str | None = None  # https://s3.example.org (None: AWS's own for the region)
    bucket: str | None = None
    prefix: str = ""  # keys start with it (one bucket for several deployments)
    region: str = "us-east-1"
    access_key_id: str | None = None

    @model_validator(mode="after")
    def _s3_needs(self) -> StorageConfig:
        if self.kind == "s3" and (not self.bucket or not self.access_key_id or self.secret_source is None):
            raise ValueError("an s3 storage needs bucket, access_key_id and a secret_credential, secret_env or "
                             "secret_file for the secret access key")  # fmt: skip
        return self


class OutboxConfig(_Section):
    """Retries of deliveries (daemon/outbox/): exponential backoff with jitter, then dead."""

    retry_first_seconds: float = Field(30.0, gt=0)  # the wait after a first failure; doubled after each one
    retry_max_seconds: float = Field(3600.0, gt=0)  # the longest wait between two attempts
    give_up_hours: float = Field(72.0, gt=0)  # a delivery still failing this long after it was queued is dead
    poll_seconds: float = Field(5.0, gt=0)  # how often the outbox looks for work queued by `rosterd replay`
    # a replica's claim on a delivery it sends lasts this long unless renewed (every third of it): a replica
    # that dies holds its deliveries up for at most this long before another replica takes them over
    lease_seconds: float = Field(60.0, ge=3)


class IntakeConfig(_Section):
    settle_seconds: float = Field(5.0, ge=0)
    rescan_seconds: float = Field(60.0, gt=0)
    workers: int = Field(2, ge=1)
    quarantine_days: int = Field(30, ge=0)
    receipts_kept: int = Field(100, ge=1)
    worker_memory_bytes: int = Field(8 * GiB, ge=0)  # per worker process (RLIMIT_DATA); 0: no limit


class TenantConfig(_Section):
    name: str
    password_hash: str | None = None
    authorized_keys: list[PublicKey] = []
    allowed_networks: list[Network] = []  # empty: any source address
    max_upload_bytes: int = Field(2 * GiB, ge=1)
    inbox_quota_bytes: int = Field(10 * GiB, ge=1)
    validation_mode: ValidationMode | None = None  # None: the [validation] mode
    holds: HoldThresholds | None = None  # None: the [holds] thresholds; keys set here replace theirs
    demo: bool = False  # key pair generated at first start; insecure, for `make run` only
    district_decides_holds: bool = False  # its district accounts may approve or discard its held uploads
    targets: list[Target] = []  # where accepted change sets are delivered

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, targets: list[Target]) -> list[Target]:
        names = [t.name for t in targets]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"target names must differ within a tenant; repeated: {', '.join(doubled)}")
        return targets

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_tenant_name(value)

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        if value is None or _ARGON2ID.match(value) or _BCRYPT.match(value):
            return value
        if not value.startswith("$"):
            raise ValueError(
                "this looks like a plaintext password, and rosterd stores only hashes: remove it and run "
                "`rosterd tenant add NAME --password-stdin` (the value is not shown here)"
            )
        raise ValueError(
            "not an argon2id ($argon2id$...) or bcrypt ($2b$/$2y$...) hash; `rosterd tenant add NAME "
            "--password-stdin` writes one"
        )

    @model_validator(mode="after")
    def _can_log_in(self) -> TenantConfig:
        if self.password_hash is None and not self.authorized_keys and not self.demo:
            raise ValueError("a tenant needs a password_hash, authorized_keys or both")
        return self

    @property
    def auth_kinds(self) -> list[str]:
        """How this tenant can log in, for listings (never the secrets themselves)."""
        kinds = ["password"] if self.password_hash else []
        if self.authorized_keys:
            kinds.append(f"{len(self.authorized_keys)} key" + ("s" if len(self.authorized_keys) > 1 else ""))
        if self.demo:
            kinds.append("demo key (insecure)")
        return kinds


class HealthConfig(_Section):
    """[health]: the health and metrics port (daemon/health.py)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9222, ge=0, le=65535)  # 0: any free port
    check_seconds: float = Field(5.0, gt=0)  # how often the readiness checks run (readiness.py)


class AdminConfig(_Section):
    """[admin]: the admin console's port (daemon/console). Served when enabled; loopback by default."""

    enabled: bool = True
    host: str = "127.0.0.1"  # loopback: reach it through an SSH tunnel or a TLS proxy, or set tls_cert/tls_key
    port: int = Field(9180, ge=0, le=65535)  # 0: any free port (tests)
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key the console speaks HTTPS (Secure cookies)
    tls_key: Path | None = None
    idle_minutes: float = Field(30.0, gt=0, le=24 * 60)  # a session ends after this long without a request
    session_hours: float = Field(12.0, gt=0, le=7 * 24)  # and after this long in all
    threads: int = Field(4, ge=1, le=64)  # threads reading the store and files for pages

    @model_validator(mode="after")
    def _both_or_neither(self) -> AdminConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set both tls_cert and tls_key, or neither")
        return self


class Settings(_Section):
    server: ServerConfig = ServerConfig()
    defender: DefenderConfig = DefenderConfig()
    validation: ValidationConfig = ValidationConfig()
    intake: IntakeConfig = IntakeConfig()
    holds: HoldThresholds = HoldThresholds()
    snapshots: SnapshotsConfig = SnapshotsConfig()
    outbox: OutboxConfig = OutboxConfig()
    health: HealthConfig = HealthConfig()
    api: ApiConfig = ApiConfig()  # the OneRoster REST API's port, served when a tenant has an api target
    admin: AdminConfig = AdminConfig()  # the admin console's port
    store: StoreConfig = StoreConfig()  # SQLite in the state directory, or PostgreSQL (several replicas)
    storage: StorageConfig = StorageConfig()  # the state directory, or an S3-compatible bucket
    tenants: list[TenantConfig] = []
    source: Path  # the file these settings came from; filled in by the loader, not a TOML key

    @field_validator("tenants")
    @classmethod
    def _unique_names(cls, tenants: list[TenantConfig]) -> list[TenantConfig]:
        first: dict[str, int] = {}
        for index, tenant in enumerate(tenants):
            if tenant.name in first:
                raise ValueError(
                    f"tenants[{first[tenant.name]}] and tenants[{index}] are both named {tenant.name!r}"
                )
            first[tenant.name] = index
        return tenants

    def tenant(self, name: str) -> TenantConfig | None:
        return next((t for t in self.tenants if t.name == name), None)

    def open_store(self):
        """The store `[store]` names, opened (blocking): SQLite in the state directory, or PostgreSQL with the
        password read now from its secret source. Raises daemon.store.postgres.StoreUnavailable or
        daemon.targets.secrets.SecretMissing with what is wrong."""
        from daemon.store import open_store

        return open_store(self.server.state_dir, self.target_names(), self.store.url, self.store.password())

    def open_mirror(self):
        """Where replicas share uploads, snapshots and receipts (daemon/objects/mirror.py): NO_MIRROR for
        [storage] kind = "local", else the bucket, with the secret read now. Blocking; SecretMissing or
        ValueError (daemon.objects) say what is wrong."""
        from daemon.objects.mirror import NO_MIRROR, Mirror

        storage = self.storage
        if storage.kind == "local":
            return NO_MIRROR
        from daemon.objects import open_storage

        return Mirror(open_storage(storage.kind, self.server.state_dir, bucket=storage.bucket, prefix=storage.prefix,
                                   region=storage.region, endpoint=storage.endpoint,
                                   access_key_id=storage.access_key_id, secret=storage.read_secret()),
                      self.server.state_dir)  # fmt: skip

    def target_names(self) -> dict[str, list[str]]:
        """Each tenant's delivery targets: an accepted upload gets one delivery per target (for an api target,
        the delivery makes what its API serves)."""
        return {t.name: [target.name for target in t.targets] for t in self.tenants}

    def tenant_root(self, name: str) -> Path:
        """The folder holding a tenant's inbox and results."""
        if not TENANT_NAME.match(name):  # the name becomes a path component: never '..' or '/'
            raise ValueError(f"not a tenant name: {name!r}")
        return self.server.state_dir / "tenants" / name


def default_config_path() -> Path:
    return DEFAULT_CONFIG


def load_settings(path: Path | None = None) -> Settings:
    """Read and validate a config file; None means the default `config/rosterd.toml` of the source tree."""
    if path is None:
        path = DEFAULT_CONFIG
        if not path.is_file():
            raise ConfigError([
                f"{path}: the default config is not there (an installed rosterd has none): "
                "give one with --config PATH, starting from config/rosterd.example.toml"
            ])
    return parse_settings(_read(path), path)


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror}"]) from None
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: not UTF-8 text (byte {err.start})"]) from None


def parse_settings(text: str, source: Path) -> Settings:
    """Validate TOML text as if it were the file `source` (relative paths resolve against its folder)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        found = _TOML_POSITION.match(str(err))
        where = f"line {found['line']}, column {found['column']}: {found['what']}" if found else str(err)
        raise ConfigError([f"{source}: TOML syntax error at {where}"]) from None
    problems = []
    if data.pop("source", None) is not None:
        problems.append(f"{source}: source: not a setting (rosterd records the file's path itself)")
    try:
        settings = Settings.model_validate({**data, "source": source})
    except ValidationError as err:
        problems += [f"{source}: {_describe(e)}" for e in err.errors(include_input=False)]
    if problems:
        raise ConfigError(problems)
    state_dir = Path(os.path.abspath(source.resolve().parent / settings.server.state_dir))
    return settings.model_copy(update={"server": settings.server.model_copy(update={"state_dir": state_dir})})


def _describe(error: dict) -> str:
    loc, model = _walk(error["loc"])
    key = _dotted(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        known = [name for name in _walk(error["loc"][:-1])[1].model_fields if name != "source"]
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known keys here: {', '.join(known)}"
        return f"{key}: unknown key{hint}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {message}"


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def _walk(loc: tuple) -> tuple[tuple, type[BaseModel]]:
    """`loc` as the TOML names it (without the tags pydantic adds for a target's `type`), and the model the
    last key belongs to, for 'did you mean' hints."""
    model: type[BaseModel] = Settings
    shown: list = []
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        shown.append(part)
        if isinstance(part, int) or part not in model.model_fields:
            continue
        annotation = model.model_fields[part].annotation
        if typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        if typing.get_origin(annotation) is Annotated:
            annotation = typing.get_args(annotation)[0]
        members = [m for m in typing.get_args(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(members) == 1:  # Optional[Model]
            model = members[0]
        elif members:  # a union told apart by `type`: pydantic's loc names the member next (after a list index)
            if parts and isinstance(parts[0], int):
                shown.append(parts.pop(0))
            tag = parts.pop(0) if parts else None
            model = next((m for m in members if tag in typing.get_args(m.model_fields["type"].annotation)), model)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return tuple(shown), model


def hash_password(plaintext: str) -> str:
    """An argon2id hash with argon2-cffi's default cost."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(plaintext)


def add_tenant(
    path: Path,
    name: str,
    *,
    password: str | None = None,
    keys: Sequence[str] = (),
    networks: Sequence[str] = (),
) -> TenantConfig:
    """Append a `[[tenants]]` entry to an existing config file, keeping the file unchanged if the result is invalid.

    The password is hashed here; only the hash reaches the file.
    """
    text = _read(path)
    if parse_settings(text, path).tenant(name) is not None:
        raise ConfigError([f"{path}: tenants: a tenant named {name!r} exists already"])
    lines = [
        "",
        f"# added by `rosterd tenant add` on {datetime.now(UTC):%Y-%m-%d}",
        "[[tenants]]",
        f"name = {_toml_string(name)}",
    ]
    if password is not None:
        lines.append(f"password_hash = {_toml_string(hash_password(password))}")
    if keys:
        lines.append(_toml_list("authorized_keys", keys))
    if networks:
        lines.append(_toml_list("allowed_networks", networks))
    if text and not text.endswith("\n"):
        text += "\n"
    text += "\n".join(lines) + "\n"
    added = parse_settings(text, path).tenants[-1]
    _replace_file(path, text)
    return added


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c == "\t" or (" " <= c != "\x7f") else f"\\u{ord(c):04x}" for c in escaped) + '"'


def _toml_list(key: str, values: Sequence[str]) -> str:
    if len(values) == 1:
        return f"{key} = [{_toml_string(values[0])}]"
    return f"{key} = [\n" + "".join(f"    {_toml_string(v)},\n" for v in values) + "]"


def _replace_file(path: Path, text: str) -> None:
    """Replace the config file whole, keeping its mode."""
    replace_text(path, text, mode=path.stat().st_mode & 0o7777)
