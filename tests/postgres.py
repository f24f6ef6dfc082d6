"""A throwaway PostgreSQL cluster for tests: initdb in a temporary folder, started on a free loopback port with
its socket in that folder, stopped and removed at the end. Never the machine's own service.

PostgreSQL refuses to run as root, so a test run as root runs the server as the `postgres` user the Debian
package creates (make postgresql installs it); a test run as anyone else runs it as that user.

The server is this process's own child (not detached by pg_ctl), and Linux kills it when this process dies,
however it dies: a pytest worker killed outright leaves no PostgreSQL behind (its backends notice that the
postmaster is gone and end too).

Clients log in over TCP as `rosterd` with a password (scram-sha-256), as a deployment's replicas would; the
superuser is reached through the socket only. Each test gets a database of its own, copied from a template
that has every migration applied already (a copy takes milliseconds; migrating each one would not).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

TEMPLATE = "rosterd_template"
_PR_SET_PDEATHSIG = 1  # prctl's option number (linux/prctl.h)
START_SECONDS = 60.0


def bin_dir() -> Path:
    """The newest installed PostgreSQL's programs (Debian keeps them out of PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path is None:
        raise RuntimeError("no PostgreSQL here: run `make postgresql` (Debian's postgresql package)")
    return Path(on_path).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Database:
    """One test's database: how a store reaches it."""

    url: str
    password: str
    name: str


class Cluster:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="rosterd-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self._as_postgres = os.geteuid() == 0
        self._bin = bin_dir()
        self._server: subprocess.Popen | None = None
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        self.folder.chmod(0o700)

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=60, cwd=self.folder)
        if done.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}{tail}")

    def start(self) -> None:
        self._run(str(self._bin / "initdb"), "-D", str(self.data), "-U", "admin", "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions")
        # durability is not what these tests are about: no fsync keeps a database copy in milliseconds
        settings = (f"-p {self.port} -k {self.folder} -h 127.0.0.1 -c fsync=off -c synchronous_commit=off "
                    "-c full_page_writes=off -c shared_buffers=32MB -c max_connections=200")  # fmt: skip
        with open(self.folder / "server.log", "ab") as log:
            self._server = subprocess.Popen(
                [str(self._bin / "postgres"), "-D", str(self.data), *settings.split()], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, cwd=self.folder, user="postgres" if self._as_postgres else None,
                preexec_fn=_die_with_parent,  # after the switch to `postgres`, which would clear it
            )  # fmt: skip
        self._wait_until_ready()
        with self._admin() as admin:
            admin.execute(f"CREATE ROLE rosterd LOGIN PASSWORD '{self.password}' CREATEDB")
            admin.execute(f"CREATE DATABASE {TEMPLATE} OWNER rosterd")
        from daemon.store.postgres import migrate

        migrate(self.url(TEMPLATE), self.password)

    def _wait_until_ready(self) -> None:
        assert self._server is not None
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                self._admin().close()
                return
            except psycopg.OperationalError:
                if self._server.poll() is not None or time.monotonic() > deadline:
                    log = (self.folder / "server.log").read_text()[-2000:]
                    raise RuntimeError(f"PostgreSQL did not start (exit {self._server.returncode}): {log}") from None
                time.sleep(0.05)

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(host=str(self.folder), port=self.port, user="admin", dbname="postgres",
                               autocommit=True)  # fmt: skip

    def url(self, database: str) -> str:
        return f"postgresql://rosterd@127.0.0.1:{self.port}/{database}"

    def new_database(self, migrated: bool = True) -> Database:
        """A fresh database: with every migration applied, or empty (for the migration tests)."""
        name = f"t_{secrets.token_hex(6)}"
        with self._admin() as admin:
            admin.execute(f"CREATE DATABASE {name} OWNER rosterd" + (f" TEMPLATE {TEMPLATE}" if migrated else ""))
        return Database(self.url(name), self.password, name)

    def drop(self, database: Database) -> None:
        with self._admin() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database.name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            if self._server is not None and self._server.poll() is None:
                self._server.send_signal(signal.SIGQUIT)  # immediate shutdown: nothing here is worth keeping
                try:
                    self._server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._server.kill()
                    self._server.wait()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before `postgres` starts: Linux kills it when the process that started it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
