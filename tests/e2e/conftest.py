"""The real `rosterd serve` as a subprocess, and the clients an SIS would point at it.

`RunningDaemon` owns one daemon: its config file, its state directory, its log (stdout and stderr in one
file, JSON events parsed on demand) and every client process a test starts against it. The `rosterd`
fixture makes daemons and guarantees that none, and no client, outlives the test, whatever happened.

Each daemon listens on a free loopback port (never 2222) and keeps everything under the test's tmp_path,
so tests run in parallel under pytest-xdist. Client keys, passwords and host keys are made once per
worker; a daemon normally starts with those host keys already in its state directory (generating
RSA-3072 costs up to a second), except where a test is about the generation itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path

import asyncssh
import pytest
from argon2 import PasswordHasher

from tests.objects.seaweed import Seaweed
from tests.postgres import Database

ROSTERD = Path(sys.executable).parent / "rosterd"
SAMPLES = Path(__file__).resolve().parents[2] / "samples"
FINAL_STATES = ("accepted", "rejected", "duplicate", "held", "superseded", "discarded", "failed")
START_DEADLINE = 30.0
STOP_DEADLINE = 20.0
RECEIPT_DEADLINE = 45.0
FORBIDDEN_PORT = 2222  # the default config's port: a developer's own daemon may be on it


def require_openssh() -> None:
    """These tests are the OpenSSH client's: without it they fail (`make test` installs it), never skip."""
    missing = [tool for tool in ("sftp", "ssh-keygen") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the OpenSSH client is missing ({', '.join(missing)}): run `make test`, which installs it")


# -- tenants and their credentials ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tenant:
    """One uploader as the config names it, with the secrets only the test (the SIS) holds."""

    name: str
    key: Path | None = None  # private key file made by ssh-keygen; its .pub sits next to it
    password: str | None = None
    password_hash: str | None = None
    demo: bool = False
    extra: str = ""  # more TOML for this tenant: its own tables such as [[tenants.targets]]

    @property
    def public_key(self) -> str:
        assert self.key is not None, f"tenant {self.name} has no key"
        return self.key.with_name(self.key.name + ".pub").read_text().strip()

    def toml(self) -> str:
        lines = ["[[tenants]]", f"name = {json.dumps(self.name)}"]
        if self.password_hash:
            lines.append(f"password_hash = {json.dumps(self.password_hash)}")
        if self.key:
            lines.append(f"authorized_keys = [{json.dumps(self.public_key)}]")
        if self.demo:
            lines.append("demo = true")
        if self.extra:
            lines.append(self.extra)
        return "\n".join(lines) + "\n"


def make_tenant(directory: Path, name: str, *, key: bool = True, password: bool = True) -> Tenant:
    """A tenant with an ed25519 key from ssh-keygen, a random password (argon2id-hashed), or both."""
    key_file = directory / f"{name}_id_ed25519" if key else None
    if key_file is not None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@sis", "-f", str(key_file)],
                       check=True)  # fmt: skip
    secret = f"{name}-{secrets.token_urlsafe(18)}" if password else None
    return Tenant(name, key_file, secret, PasswordHasher().hash(secret) if secret else None)


@pytest.fixture(scope="session")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tenant]:
    """Two tenants, each with an ed25519 key and a password (argon2id hash in the config)."""
    require_openssh()
    directory = tmp_path_factory.mktemp("tenant-credentials")
    return {name: make_tenant(directory, name) for name in ("north", "south")}


@pytest.fixture(scope="session")
def host_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Host keys in the daemon's own file layout (STATE/hostkeys), made once per worker."""
    directory = tmp_path_factory.mktemp("host-keys")
    for file_name, algorithm, options in (
        ("ssh_host_ed25519_key", "ssh-ed25519", {}),
        ("ssh_host_rsa_key", "ssh-rsa", {"key_size": 3072}),
    ):
        key = asyncssh.generate_private_key(algorithm, **options)
        key.write_private_key(directory / file_name)
        os.chmod(directory / file_name, 0o600)
        key.write_public_key(directory / f"{file_name}.pub")
    return directory


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != FORBIDDEN_PORT:
            return port


# -- the daemon ----------------------------------------------------------------------------------


class RunningDaemon:
    """One `rosterd serve` process and its files; start() and stop() may alternate on the same state."""

    def __init__(
        self,
        home: Path,
        tenants: Iterable[Tenant],
        host_keys: Path | None = None,
        extra_config: str = "",
        settings: dict[str, dict[str, object]] | None = None,
    ) -> None:
        self.home = home
        self.extra_config = extra_config  # more TOML sections (e.g. [defender]), written before the tenants
        self.settings = settings or {}  # keys for [server], [intake], [health], [admin] over the test defaults
        self.tenants = {t.name: t for t in tenants}
        self.state = home / "state"
        self.config = home / "rosterd.toml"
        self.log = home / "daemon.log"
        self.client_dir = home / "client"  # the SIS's working folder
        self.client_dir.mkdir(parents=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._clients: list[subprocess.Popen] = []
        self._run_offsets: list[int] = []  # where each start's output begins in the log
        if host_keys is not None:
            shutil.copytree(host_keys, self.state / "hostkeys")
            os.chmod(self.state / "hostkeys", 0o700)
        self.write_config()

    # paths on the host

    def inbox(self, tenant: str) -> Path:
        return self.state / "tenants" / tenant / "inbox"

    def results(self, tenant: str) -> Path:
        return self.state / "tenants" / tenant / "results"

    def quarantine(self, tenant: str) -> Path:
        return self.state / "quarantine" / tenant

    # configuration and lifecycle

    def write_config(self) -> None:
        sections = {
            "server": {"host": "127.0.0.1", "port": self.port, "state_dir": str(self.state), "min_free_bytes": 0},
            # one worker process (the default is 2): each costs a second of CPU to start, and a test that wants
            # uploads validated side by side says so (`settings={"intake": {"workers": 2}}`)
            "intake": {"settle_seconds": 0.5, "rescan_seconds": 2, "workers": 1},
            "health": {"port": 0},
            "admin": {"port": 0},  # the admin console on a free port too (its default, 9180, is one for all)
        }
        text = ""
        for section, keys in sections.items():
            keys = {**keys, **self.settings.get(section, {})}
            text += f"[{section}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in keys.items()) + "\n"
        self.config.write_text(text + self.extra_config + "\n" + "\n".join(t.toml() for t in self.tenants.values()))

    def start(self) -> RunningDaemon:
        """Start and wait for `daemon.started`; a port taken by someone else meanwhile means another port."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        for _attempt in range(3):
            self._run_offsets.append(self.log.stat().st_size if self.log.exists() else 0)
            with open(self.log, "ab") as out:
                self.proc = subprocess.Popen(
                    [str(ROSTERD), "serve", "--config", str(self.config)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=self.home,
                    start_new_session=True,  # its own process group: the pool workers can be killed with it
                )  # fmt: skip
            if self._wait_until_started():
                return self
            if "address already in use" not in self.output(run=-1).lower():
                raise AssertionError(f"rosterd exited with {self.proc.returncode}:\n{self.output(run=-1)}")
            self.port = free_port()
            self.write_config()
        raise AssertionError("rosterd found no free port in three attempts")

    def _wait_until_started(self) -> bool:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.events("daemon.started", run=-1):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"rosterd did not start within {START_DEADLINE}s:\n{self.output(run=-1)}")

    def stop(self, timeout: float = STOP_DEADLINE) -> int:
        """SIGTERM, as systemd would send it; killed (with its process group) if it does not exit in time."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"rosterd ignored SIGTERM for {timeout}s:\n{self.output(run=-1)[-4000:]}")
        return proc.returncode

    def restart(self) -> RunningDaemon:
        code = self.stop()
        assert code == 0, f"rosterd exited with {code}:\n{self.output(run=-1)[-4000:]}"
        return self.start()

    def kill(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)

    def close(self) -> None:
        """Teardown: every client gone, then the daemon stopped; nothing is left running."""
        for client in self._clients:
            _kill_group(client)
        try:
            self.stop()
        finally:
            self.kill()

    # the log

    def output(self, run: int | None = None) -> str:
        """The log file's text: all of it, or one start's part (run=-1: the latest)."""
        data = self.log.read_bytes() if self.log.exists() else b""
        if run is not None:
            ends = [*self._run_offsets[1:], len(data)]
            data = data[self._run_offsets[run] : ends[run]]
        return data.decode("utf-8", errors="replace")

    def events(self, name: str | None = None, /, run: int | None = None, **fields: object) -> list[dict]:
        """The JSON events logged (complete lines only), optionally one name with some field values."""
        found = []
        for line in self.output(run).splitlines(keepends=True):
            if not (line.startswith("{") and line.endswith("\n")):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if (name is None or event.get("event") == name) and all(event.get(k) == v for k, v in fields.items()):
                found.append(event)
        return found

    def wait_for_event(self, name: str, /, timeout: float = 20.0, **fields: object) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.events(name, **fields):
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"no {name} {fields} within {timeout}s:\n{self.diagnosis()}")

    def diagnosis(self) -> str:
        """What a failure message needs: every file under the state directory and the whole log."""
        files = sorted(str(p.relative_to(self.state)) for p in self.state.rglob("*") if p.is_file())
        return "state files:\n  " + "\n  ".join(files) + f"\nlog:\n{self.output()}"

    # clients

    def sftp_args(self, tenant: str, batch: Path, key: Path | None = None, options: Sequence[str] = ()) -> list[str]:
        """OpenSSH takes the first value given for an option, so `options` (-o ...) override the defaults."""
        key = key or self.tenants[tenant].key
        assert key is not None, f"tenant {tenant} has no key"
        return [
            "sftp", "-F", "/dev/null", *options, "-b", str(batch), "-P", str(self.port), "-i", str(key),
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=10", f"{tenant}@127.0.0.1",
        ]  # fmt: skip

    def _batch_file(self, commands: str | list[str], cwd: Path) -> Path:
        batch = cwd / f".batch-{secrets.token_hex(4)}"
        batch.write_text(commands if isinstance(commands, str) else "\n".join(commands) + "\n")
        return batch

    def sftp_batch(
        self, tenant: str, commands: str | list[str], cwd: Path | None = None, *, key: Path | None = None,
        options: Sequence[str] = (), timeout: float = 60,
    ) -> subprocess.CompletedProcess:  # fmt: skip
        """Run OpenSSH `sftp -b`; a failing command ends the batch with a non-zero status."""
        cwd = cwd or self.client_dir
        args = self.sftp_args(tenant, self._batch_file(commands, cwd), key, options)
        return subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def start_sftp(self, tenant: str, commands: str | list[str], cwd: Path | None = None) -> subprocess.Popen:
        """`sftp -b` in the background (own process group, killed at teardown if still running)."""
        cwd = cwd or self.client_dir
        client = subprocess.Popen(
            self.sftp_args(tenant, self._batch_file(commands, cwd)), cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self._clients.append(client)
        return client

    @contextlib.asynccontextmanager
    async def connect(self, tenant: str, password: str) -> AsyncIterator[asyncssh.SSHClientConnection]:
        """An asyncssh client that logs in with a password only: no keys, agent, config or known_hosts."""
        conn = await asyncssh.connect(
            "127.0.0.1", self.port, username=tenant, password=password, known_hosts=None, agent_path=None,
            config=None, client_keys=None, preferred_auth="password",
        )  # fmt: skip
        try:
            yield conn
        finally:
            conn.close()
            await conn.wait_closed()

    async def login_refusal(self, tenant: str, password: str) -> BaseException | None:
        """Why a password login failed (the client's exception), or None when it got in."""
        try:
            async with self.connect(tenant, password):
                return None
        except (asyncssh.Error, OSError) as refusal:
            return refusal

    def wait_for_receipt(
        self, tenant: str, file: str | None = None, *, receipt: str = "latest.json", exclude: Iterable[str] = (),
        key: Path | None = None, timeout: float = RECEIPT_DEADLINE,
    ) -> dict:  # fmt: skip
        """Fetch results/<receipt> over SFTP until it is final (and for `file`, not an upload in `exclude`)."""
        local = self.client_dir / f".receipt-{secrets.token_hex(4)}.json"
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            got = self.sftp_batch(tenant, [f"get results/{receipt} {local}"], key=key)
            if got.returncode == 0:
                last = json.loads(local.read_text())
                if is_final(last, file, exclude):
                    return last
            else:
                last = got.stderr.strip()
            time.sleep(0.25)
        raise AssertionError(f"no final receipt for {tenant}/{file} in {timeout}s; last: {last}\n{self.diagnosis()}")


def is_final(receipt: dict, file: str | None = None, exclude: Iterable[str] = ()) -> bool:
    return (
        receipt.get("state") in FINAL_STATES
        and (file is None or receipt.get("file") == file)
        and receipt.get("upload_id") not in set(exclude)
    )


async def poll_receipt(sftp: asyncssh.SFTPClient, file: str, timeout: float = RECEIPT_DEADLINE) -> dict:
    """The asyncssh-side wait: read results/latest.json until it is the final receipt of `file`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            async with sftp.open("results/latest.json", "rb") as handle:
                last = json.loads(await handle.read())
            if is_final(last, file):
                return last
        except asyncssh.SFTPNoSuchFile as exc:
            last = exc
        await asyncio.sleep(0.25)
    raise AssertionError(f"no final receipt for {file} in {timeout}s; last: {last}")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with start_new_session, with everything in its group, and reap it."""
    if proc.returncode is None:  # not reaped: its pid, and so its group's id, cannot belong to anyone else
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def rosterd(tmp_path: Path, host_keys: Path) -> Iterator[Callable[..., RunningDaemon]]:
    """Factory: `rosterd(*tenants)` starts a daemon (`fresh_host_keys=True`: it makes its own, `start=False`:
    only its files are prepared, `settings={"server": {...}}`: keys of [server], [intake] or [health]); every daemon and client is stopped at teardown, even after a failure."""
    require_openssh()
    made: list[RunningDaemon] = []

    def make(
        *chosen: Tenant,
        fresh_host_keys: bool = False,
        start: bool = True,
        extra_config: str = "",
        settings: dict[str, dict[str, object]] | None = None,
    ) -> RunningDaemon:
        home = tmp_path / f"daemon-{len(made)}"
        daemon = RunningDaemon(home, chosen, None if fresh_host_keys else host_keys, extra_config, settings)
        made.append(daemon)
        return daemon.start() if start else daemon

    yield make
    with contextlib.ExitStack() as closing:  # every close runs, even when an earlier one raises
        for daemon in made:
            closing.callback(daemon.close)


@pytest.fixture
def daemon(rosterd: Callable[..., RunningDaemon], tenants: dict[str, Tenant]) -> RunningDaemon:
    """A started daemon serving the tenants `north` and `south`."""
    return rosterd(*tenants.values())


def copy_sample(name: str, target: Path) -> Path:
    """A sample zip placed where a test wants it (a file or a folder), as `cp` would."""
    return Path(shutil.copy(SAMPLES / name, target))


def cluster_config(database: Database, seaweed: Seaweed, folder: Path, prefix: str) -> str:
    """[store] and [storage] sections both replicas share; the secrets in files beside them."""
    store_secret, storage_secret = folder / "store-password", folder / "s3-secret"
    store_secret.write_text(database.password + "\n")
    storage_secret.write_text(seaweed.secret + "\n")
    for secret in (store_secret, storage_secret):
        secret.chmod(0o600)
    return (f'[store]\nurl = "{database.url}"\nsecret_file = "{store_secret}"\n\n'
            f'[storage]\nkind = "s3"\nendpoint = "{seaweed.endpoint}"\nbucket = "{seaweed.bucket}"\n'
            f'prefix = "{prefix}"\naccess_key_id = "{seaweed.access_key_id}"\nsecret_file = "{storage_secret}"\n')  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Backend:
    """Where a daemon keeps its state: `local` (SQLite and the state directory, the default) or `shared`
    (PostgreSQL and an S3 bucket, as replicas do). `config` is the TOML to add for it."""

    name: str
    config: str = ""
    database: Database | None = None  # shared: the database and the bucket (under `prefix`), for a test to read
    seaweed: Seaweed | None = None
    prefix: str = ""

    @property
    def shared(self) -> bool:
        return self.name == "shared"


@pytest.fixture(params=["local", "shared"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A suite run on both: name this fixture before `rosterd`, so that the database and the bucket outlive
    the daemons (fixtures are torn down in the reverse order they were set up)."""
    if request.param == "local":
        return Backend("local")
    database, seaweed = request.getfixturevalue("postgres_database"), request.getfixturevalue("seaweed")
    prefix = f"suite-{secrets.token_hex(4)}"
    return Backend("shared", cluster_config(database, seaweed, tmp_path, prefix), database, seaweed, prefix)
