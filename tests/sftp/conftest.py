"""A real server in-process on a free loopback port, driven by the real OpenSSH `sftp` and by asyncssh.

Two tenants: `acme` (key and password) and `globex` (key only). Each test gets fresh roots under
tmp_path; host keys are generated once per run (RSA-3072 takes a moment) and reused, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncssh
import pytest
from argon2 import PasswordHasher

from daemon.receipts import RESULT_FOLDERS  # the folders of /results the daemon gives the SFTP layer
from daemon.sftp import ServerOptions, TenantAccess, UploadReceived, start_server

ACME_PASSWORD = "correct horse battery staple"


def require_openssh() -> None:
    """These tests drive the real OpenSSH client; without it they fail (`make test` installs it), never skip."""
    missing = [tool for tool in ("sftp", "ssh-keygen") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the OpenSSH client is missing ({', '.join(missing)}): run `make test`, which installs it")


@pytest.fixture
def openssh_client() -> None:
    require_openssh()


needs_openssh = pytest.mark.usefixtures("openssh_client")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class ClientKey:
    private: Path
    public_line: str


def _make_key(directory: Path, name: str) -> ClientKey:
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
    return ClientKey(path, path.with_suffix(".pub").read_text().strip())


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ClientKey]:
    require_openssh()
    directory = tmp_path_factory.mktemp("client-keys")
    return {name: _make_key(directory, name) for name in ("acme", "globex", "stranger")}


@pytest.fixture(scope="session")
def host_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("host-keys")


@pytest.fixture(scope="session")
def acme_password_hash() -> str:
    return PasswordHasher().hash(ACME_PASSWORD)


@dataclasses.dataclass
class SftpResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Harness:
    """One running server plus what it reported."""

    def __init__(self, options: ServerOptions, keys: dict[str, ClientKey], workdir: Path) -> None:
        self.options = options
        self.keys = keys
        self.workdir = workdir
        self.uploads: list[UploadReceived] = []
        self.events: list[tuple[str, dict]] = []
        self.acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def port(self) -> int:
        assert self.acceptor is not None
        return self.acceptor.get_port()

    def root(self, tenant: str) -> Path:
        return self.options.tenants[tenant].root

    def named(self, name: str) -> list[dict]:
        return [fields for event, fields in self.events if event == name]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events so far: {self.events}")
            await asyncio.sleep(0.02)

    def sftp_args(self, user: str, key: str | None = None, batch: Path | None = None) -> list[str]:
        key_path = self.keys[key or user].private
        return [
            "sftp",
            "-F", "/dev/null",  # no user ssh config: hermetic
            *(["-b", str(batch)] if batch else []),
            "-P", str(self.port),
            "-i", str(key_path),
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=10",
            f"{user}@127.0.0.1",
        ]  # fmt: skip

    async def start_sftp(self, user: str, commands: list[str], key: str | None = None) -> asyncio.subprocess.Process:
        batch = self.workdir / f"batch-{time.monotonic_ns()}"
        batch.write_text("\n".join(commands) + "\n")
        return await asyncio.create_subprocess_exec(
            *self.sftp_args(user, key, batch),
            cwd=self.workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def sftp(self, user: str, commands: list[str], key: str | None = None, timeout: float = 30) -> SftpResult:
        """Run one `sftp -b` batch; each command's failure stops the batch (prefix `-` to go on)."""
        process = await self.start_sftp(user, commands, key)
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        return SftpResult(process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"))

    @contextlib.asynccontextmanager
    async def connect(self, user: str, password: str | None = None, **kwargs) -> AsyncIterator[asyncssh.SSHClientConnection]:
        conn = await asyncssh.connect(
            "127.0.0.1",
            self.port,
            username=user,
            password=password,
            client_keys=kwargs.pop("client_keys", None),
            known_hosts=None,
            agent_path=None,
            config=None,
            preferred_auth=kwargs.pop("preferred_auth", "password" if password else "publickey"),
            **kwargs,
        )
        try:
            yield conn
        finally:
            conn.close()
            await conn.wait_closed()


StartServer = Callable[..., "asyncio.Future[Harness]"]


@pytest.fixture
async def start(
    tmp_path: Path, keys: dict[str, ClientKey], host_key_dir: Path, acme_password_hash: str
) -> AsyncIterator[StartServer]:
    """Start a server; keyword arguments override ServerOptions fields, `tenant_overrides` tenants'."""
    harnesses: list[Harness] = []
    workdir = tmp_path / "client"
    workdir.mkdir()

    async def _start(tenant_overrides: dict[str, dict] | None = None, on_upload=None, **overrides) -> Harness:
        tenants = {
            "acme": TenantAccess(
                name="acme",
                root=tmp_path / "tenants" / "acme",
                password_hash=acme_password_hash,
                authorized_keys=(keys["acme"].public_line,),
            ),
            "globex": TenantAccess(
                name="globex",
                root=tmp_path / "tenants" / "globex",
                authorized_keys=(keys["globex"].public_line,),
            ),
        }
        for name, changes in (tenant_overrides or {}).items():
            tenants[name] = dataclasses.replace(tenants[name], **changes)
        settings = {"min_free_bytes": 1024**2, "result_folders": RESULT_FOLDERS, **overrides}
        options = ServerOptions(host="127.0.0.1", port=0, host_key_dir=host_key_dir, tenants=tenants, **settings)
        harness = Harness(options, keys, workdir)
        harness.acceptor = await start_server(
            options, on_upload or harness.uploads.append, lambda name, fields: harness.events.append((name, fields))
        )
        harnesses.append(harness)
        return harness

    yield _start
    for harness in harnesses:
        harness.acceptor.close()
        await harness.acceptor.wait_closed()


@pytest.fixture
async def server(start: StartServer) -> Harness:
    return await start()


def write_random(path: Path, size: int) -> Path:
    with open(path, "wb") as out:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 1024**2))
            out.write(chunk)
            remaining -= len(chunk)
    return path


async def open_raw_sftp(conn: asyncssh.SSHClientConnection) -> tuple[asyncssh.SSHWriter, asyncssh.SSHReader]:
    """The sftp subsystem as a byte stream: a client that speaks (or fails to speak) SFTP by hand."""
    writer, reader, _stderr = await conn.open_session(subsystem="sftp", encoding=None)
    return writer, reader


def init_packet(version: int = 3) -> bytes:
    """SSH_FXP_INIT (type 1) with `version` and no extensions, length-prefixed (draft-ietf-secsh-filexfer-02 §4)."""
    body = bytes([1]) + version.to_bytes(4, "big")
    return len(body).to_bytes(4, "big") + body
