"""Throwaway SFTP servers and their clients, shared by the SFTP benchmarks.

`rosterd serve` and OpenSSH's own sshd each run as a child process on a free loopback port (never 2222, where
a developer's own daemon may listen), with keys, config, state and log in the caller's temporary folder. A
server is stopped when its context ends, however it ends: SIGTERM, then SIGKILL (its whole process group) if
it lingers. Nothing here touches the checkout's `var/` or the host's SSH setup, except installing
openssh-server when sshd is missing. The clients: OpenSSH's sftp in batch mode, and an asyncssh session that
times its round trips (the probe), and a spawned Python process for load that must not share the probe's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import pwd
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

ROSTERD = Path(sys.executable).parent / "rosterd"
SSHD = Path("/usr/sbin/sshd")
SSHD_PRIVSEP_DIR = Path("/run/sshd")
TENANT = "bench"
LOOPBACK = "127.0.0.1"
AVOIDED_PORTS = frozenset({2222})
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
APT_TIMEOUT = 900
ROUND_TRIP_TIMEOUT = 30.0
TERMINAL_STATES = ("accepted", "rejected", "duplicate")
MiB = 1024**2
GiB = 1024**3


class BenchError(Exception):
    """A step of the benchmark failed, so its figures would mean nothing."""


@dataclass(frozen=True)
class Server:
    name: str  # shown in figures: "rosterd" or "sshd"
    port: int
    user: str
    upload_dir: str  # absolute SFTP path that uploads go to
    log: Path
    state_dir: Path | None = None  # rosterd only
    pid: int | None = None
    health_port: int | None = None  # rosterd only: /healthz, /readyz, /metrics

    @property
    def latest_receipt(self) -> Path:
        return self.results(TENANT) / "latest.json"

    def results(self, tenant: str) -> Path:
        assert self.state_dir is not None, "only rosterd writes receipts"
        return self.state_dir / "tenants" / tenant / "results"


# --- small pieces -----------------------------------------------------------------------------------------


def free_port() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in AVOIDED_PORTS:
            return port
    raise BenchError("found no free loopback port")


def make_key(path: Path, comment: str) -> Path:
    """An unencrypted ed25519 key pair at `path` and `path`.pub; returns the private half."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, timeout=30, stdin=subprocess.DEVNULL)  # fmt: skip
    return path


def public_key_line(private: Path) -> str:
    return private.with_suffix(".pub").read_text().strip()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def write_random(path: Path, size_mib: int) -> Path:
    """Random bytes, written in 16 MiB blocks and fsynced: neither sparse nor compressible."""
    remaining = size_mib * MiB
    with path.open("wb") as out:
        while remaining:
            block = os.urandom(min(16 * MiB, remaining))
            out.write(block)
            remaining -= len(block)
        out.flush()
        os.fsync(out.fileno())
    return path


def _toml_value(value: str | bool | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of printable text is a valid TOML basic string
    return str(value)


def _toml_keys(keys: Mapping[str, str | bool | float]) -> str:
    return "".join(f"{key} = {_toml_value(value)}\n" for key, value in keys.items())


# --- processes --------------------------------------------------------------------------------------------


def exit_on_sigterm() -> None:
    """A SIGTERM unwinds the script like Ctrl-C does, through the cleanup that stops its servers."""

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """Every process in /proc with the fields of its stat after the command name (state, ppid, pgrp, ...)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        yield int(entry.name), stat.rpartition(")")[2].split()  # the name in parentheses may hold anything


def rss_kib(pid: int) -> int:
    """VmRSS from /proc/PID/status; 0 for a process that has exited and not been reaped. OSError once gone."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _wait_listening(proc: subprocess.Popen, port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode} before listening; its log:\n{tail(log)}")
        try:
            socket.create_connection((LOOPBACK, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{what} did not listen on port {port} within {START_TIMEOUT:.0f} s; its log:\n{tail(log)}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the group holds its workers too
        proc.wait(timeout=STOP_TIMEOUT)


def _open_files_limit(limit: int) -> Callable[[], None]:
    def lower() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return lower


@contextlib.contextmanager
def _running(argv: Sequence[str], port: int, what: str, log: Path,
             nofile: int | None = None) -> Iterator[subprocess.Popen]:  # fmt: skip
    """Start argv with its output in `log`, wait until it listens on `port`, stop it on the way out.

    The child gets its own session, so a Ctrl-C in the terminal reaches only this script, whose cleanup then
    stops the child in order. `nofile` caps the child's open files (soft and hard limit: it cannot raise it)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                preexec_fn=_open_files_limit(nofile) if nofile else None)  # fmt: skip
    try:
        _wait_listening(proc, port, what, log)
        yield proc
    finally:
        _stop(proc)


# --- rosterd ----------------------------------------------------------------------------------------------


Keys = Mapping[str, str | bool | float]
# The health port (and the admin console's) on any free port: the defaults (9222, 9180) would make two
# benchmarks at once collide.
HEALTH = {"host": LOOPBACK, "port": 0}


def rosterd_config(port: int, state_dir: Path, public_key: str, intake: Keys, *, tenants: Sequence[str] = (TENANT,),
                   server: Keys | None = None, sections: Mapping[str, Keys] | None = None,
                   tenant_toml: str = "") -> str:  # fmt: skip
    """A config with `tenants` (all logging in with `public_key`); `server` adds keys to [server], `sections`
    adds tables such as [defender] (and may replace [health]), `tenant_toml` is TOML added to each tenant
    (its targets, say)."""
    tables = {"health": HEALTH, "admin": HEALTH, **(sections or {})}
    return (
        "[server]\n"
        + _toml_keys({"host": LOOPBACK, "port": port, "state_dir": str(state_dir), "min_free_bytes": 0,
                      **(server or {})})  # fmt: skip
        + f"\n[intake]\n{_toml_keys(intake)}"
        + "".join(f"\n[{name}]\n{_toml_keys(keys)}" for name, keys in tables.items())
        + "".join(
            f"\n[[tenants]]\nname = {_toml_value(name)}\nauthorized_keys = [{_toml_value(public_key)}]\n"
            f"max_upload_bytes = {4 * GiB}\ninbox_quota_bytes = {8 * GiB}\n{tenant_toml}"
            for name in tenants
        )
    )


def started_event(log: Path, proc: subprocess.Popen) -> dict:
    """The daemon's `daemon.started` event (it names the health port), waited for in its log."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"daemon.started"' in line:
                return json.loads(line)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise BenchError(f"rosterd logged no daemon.started; its log:\n{tail(log)}")


@contextlib.contextmanager
def rosterd_server(workdir: Path, client_key: Path, intake: Keys, *, tenants: Sequence[str] = (TENANT,),
                   server: Keys | None = None, sections: Mapping[str, Keys] | None = None,
                   nofile: int | None = None, tenant_toml: str = "") -> Iterator[Server]:  # fmt: skip
    """`rosterd serve` with `tenants` (by default one, TENANT), who log in with `client_key`; see
    rosterd_config for the rest. The Server names the first tenant."""
    if not ROSTERD.is_file():
        raise BenchError(f"no rosterd console script next to {sys.executable}; run `make .venv/.installed-stamp`")
    home = workdir / "rosterd"
    home.mkdir()
    port = free_port()
    config = home / "rosterd.toml"
    config.write_text(rosterd_config(port, home / "state", public_key_line(client_key), intake, tenants=tenants,
                                     server=server, sections=sections, tenant_toml=tenant_toml))  # fmt: skip
    log = home / "daemon.log"
    argv = [str(ROSTERD), "serve", "--config", str(config)]
    with _running(argv, port, "rosterd serve", log, nofile) as proc:
        health_port = started_event(log, proc).get("health_port")
        yield Server("rosterd", port, tenants[0], "/inbox", log, home / "state", proc.pid, health_port)


# --- OpenSSH sshd -----------------------------------------------------------------------------------------


def ensure_sshd(say) -> None:
    """Install openssh-server when /usr/sbin/sshd is missing (apt-get update only if the install fails)."""
    if not SSHD.exists():
        say(f"{SSHD} is missing: installing openssh-server with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"]
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT)
        if done.returncode != 0:
            say("apt-get install failed; running apt-get update and trying again")
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True, timeout=APT_TIMEOUT)
            done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT)
        if done.returncode != 0 or not SSHD.exists():
            raise BenchError(f"could not install openssh-server:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        say("installed openssh-server")
    SSHD_PRIVSEP_DIR.mkdir(parents=True, exist_ok=True)


def sshd_config(port: int, host_key: Path, authorized_keys: Path) -> str:
    return "\n".join([
        f"Port {port}",
        f"ListenAddress {LOOPBACK}",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PidFile none",
        "StrictModes no",
        "Subsystem sftp internal-sftp",
        "",
    ])  # fmt: skip


@contextlib.contextmanager
def sshd_server(workdir: Path, client_key: Path) -> Iterator[Server]:
    """OpenSSH's sshd, serving internal-sftp to the current user with `client_key`; uploads go to a temp dir."""
    home = workdir / "sshd"
    home.mkdir()
    uploads = home / "uploads"
    uploads.mkdir()
    host_key = make_key(home / "host_ed25519", "bench sshd host key")
    authorized = home / "authorized_keys"
    authorized.write_text(public_key_line(client_key) + "\n")
    port = free_port()
    config = home / "sshd_config"
    config.write_text(sshd_config(port, host_key, authorized))
    log = home / "sshd.log"
    user = pwd.getpwuid(os.getuid()).pw_name
    with _running([str(SSHD), "-D", "-e", "-f", str(config)], port, "sshd", log):
        yield Server("sshd", port, user, str(uploads), log)


# --- the OpenSSH sftp client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Negotiated:
    """What `sftp -v` reports about a connection; empty strings when a line was not found."""

    server_software: str
    kex: str
    cipher: str
    mac: str


def sftp_argv(server: Server, key: Path, batch: Path, options: Sequence[str] = ()) -> list[str]:
    """OpenSSH's sftp in batch mode, verbose (so the negotiated algorithms can be read), with no user config."""
    return [
        "sftp", "-v", "-b", str(batch), "-P", str(server.port), "-i", str(key), "-F", "/dev/null",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", *options, f"{server.user}@{LOOPBACK}",
    ]  # fmt: skip


def sftp_batch(server: Server, key: Path, commands: Sequence[str], batch: Path, timeout: float,
               options: Sequence[str] = ()) -> subprocess.CompletedProcess:  # fmt: skip
    """Run commands with OpenSSH's sftp and wait for it (killed if it outlasts `timeout`)."""
    batch.write_text("".join(f"{line}\n" for line in commands))
    argv = sftp_argv(server, key, batch, options)
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"sftp to {server.name} did not finish within {timeout:.0f} s") from None


def negotiated(verbose: str) -> Negotiated:
    def find(pattern: str) -> str:
        found = re.search(pattern, verbose, re.MULTILINE)
        return found.group(1) if found else ""

    return Negotiated(
        server_software=find(r"remote software version (\S+(?: \S+)?)\s*$"),
        kex=find(r"kex: algorithm: (\S+)"),
        cipher=find(r"kex: client->server cipher: (\S+)"),
        mac=find(r"kex: client->server cipher: \S+ MAC: (\S+)"),
    )


def openssh_client_version() -> str:
    done = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10)
    return (done.stderr or done.stdout).strip()


def asyncssh_version() -> str:
    from importlib.metadata import version

    return version("asyncssh")


# --- the asyncssh probe -----------------------------------------------------------------------------------


async def connect(port: int, key: Path, username: str = TENANT) -> asyncssh.SSHClientConnection:
    """An asyncssh client with key auth only: no agent, config or known_hosts."""
    return await asyncio.wait_for(
        asyncssh.connect(LOOPBACK, port, username=username, client_keys=[str(key)], known_hosts=None,
                         agent_path=None, config=None),
        timeout=30,
    )  # fmt: skip


@dataclass
class Timeline:
    """Which phase the run is in, and every probe round trip: (phase, seconds into it, milliseconds)."""

    phase: str = "idle"
    phase_started: float = field(default_factory=time.perf_counter)
    durations: dict[str, float] = field(default_factory=dict)
    trips: list[tuple[str, float, float]] = field(default_factory=list)

    def enter(self, phase: str) -> None:
        now = time.perf_counter()
        self.durations[self.phase] = self.durations.get(self.phase, 0.0) + now - self.phase_started
        self.phase, self.phase_started = phase, now

    def samples(self, phase: str) -> list[float]:
        return [ms for p, _, ms in self.trips if p == phase]


async def list_inbox(sftp: asyncssh.SFTPClient) -> object:
    return await sftp.listdir("/inbox")


async def probe(sftp: asyncssh.SFTPClient, timeline: Timeline, stop: asyncio.Event, interval: float,
                request: Callable[[asyncssh.SFTPClient], Awaitable[object]] = list_inbox) -> None:  # fmt: skip
    """Send `request` (by default a listing of /inbox) until told to stop; each round trip is charged to the
    phase it started in. A round trip that fails or outlasts ROUND_TRIP_TIMEOUT raises."""
    while not stop.is_set():
        phase, into = timeline.phase, time.perf_counter() - timeline.phase_started
        started = time.perf_counter()
        await asyncio.wait_for(request(sftp), timeout=ROUND_TRIP_TIMEOUT)
        timeline.trips.append((phase, into, (time.perf_counter() - started) * 1000))
        if interval:
            await asyncio.sleep(interval)


# --- load in another process ------------------------------------------------------------------------------


def _child_main(send, func: Callable[..., object], args: tuple) -> None:
    try:
        send.send(("done", func(*args)))
    except BaseException:  # reported to the parent, which raises it as a BenchError
        send.send(("failed", traceback.format_exc()))
    finally:
        send.close()


class Child:
    """`func(*args)` in a spawned Python process, so that its work (clients, hashing) never runs on the loop
    of the process that times round trips, nor holds its GIL. Its return value comes back through a pipe;
    `func` and `args` must pickle, and `func` must be importable by its module name. The process is killed,
    if still running, when the context ends."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        context = multiprocessing.get_context("spawn")
        self._receive, send = context.Pipe(duplex=False)
        self.process = context.Process(target=_child_main, args=(send, func, args), daemon=True)
        self.process.start()
        send.close()  # the child holds the only sending end: its exit ends the pipe

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def result(self, timeout: float) -> object:
        """Wait (in a thread) for the return value; a failure or a silent exit raises BenchError."""
        ready = await asyncio.to_thread(self._receive.poll, timeout)
        if not ready:
            raise BenchError(f"the load process gave no answer within {timeout:.0f} s")
        try:
            status, value = self._receive.recv()
        except EOFError:
            raise BenchError(f"the load process exited with {self.process.exitcode} and no answer") from None
        if status != "done":
            raise BenchError(f"the load process failed:\n{value}")
        return value

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=STOP_TIMEOUT)
        self._receive.close()
