"""Throwaway SFTP servers and the OpenSSH client, shared by the SFTP benchmarks.

`rosterd serve` and OpenSSH's own sshd each run as a child process on a free loopback port (never 2222, where
a developer's own daemon may listen), with keys, config, state and log in the caller's temporary folder. A
server is stopped when its context ends, however it ends: SIGTERM, then SIGKILL if it lingers. Nothing here
touches the checkout's `var/` or the host's SSH setup, except installing openssh-server when sshd is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROSTERD = Path(sys.executable).parent / "rosterd"
SSHD = Path("/usr/sbin/sshd")
SSHD_PRIVSEP_DIR = Path("/run/sshd")
TENANT = "bench"
LOOPBACK = "127.0.0.1"
AVOIDED_PORTS = frozenset({2222})
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
APT_TIMEOUT = 900
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

    @property
    def latest_receipt(self) -> Path:
        assert self.state_dir is not None, "only rosterd writes receipts"
        return self.state_dir / "tenants" / TENANT / "results" / "latest.json"


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


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable text is a valid TOML basic string


# --- child processes --------------------------------------------------------------------------------------


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
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def _running(argv: Sequence[str], port: int, what: str, log: Path) -> Iterator[subprocess.Popen]:
    """Start argv with its output in `log`, wait until it listens on `port`, stop it on the way out.

    The child gets its own session, so a Ctrl-C in the terminal reaches only this script, whose cleanup then
    stops the child in order."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        _wait_listening(proc, port, what, log)
        yield proc
    finally:
        _stop(proc)


# --- rosterd ----------------------------------------------------------------------------------------------


def rosterd_config(port: int, state_dir: Path, public_key: str, intake: dict[str, float | int]) -> str:
    intake_lines = "".join(f"{key} = {value}\n" for key, value in intake.items())
    return (
        "[server]\n"
        f'host = "{LOOPBACK}"\n'
        f"port = {port}\n"
        f"state_dir = {_toml_string(str(state_dir))}\n"
        "min_free_bytes = 0\n"
        "\n[intake]\n"
        f"{intake_lines}"
        "\n[[tenants]]\n"
        f'name = "{TENANT}"\n'
        f"authorized_keys = [{_toml_string(public_key)}]\n"
        f"max_upload_bytes = {4 * GiB}\n"
        f"inbox_quota_bytes = {8 * GiB}\n"
    )


@contextlib.contextmanager
def rosterd_server(workdir: Path, client_key: Path, intake: dict[str, float | int]) -> Iterator[Server]:
    """`rosterd serve` with one tenant, TENANT, who logs in with `client_key`."""
    if not ROSTERD.is_file():
        raise BenchError(f"no rosterd console script next to {sys.executable}; run `make .venv/.installed-stamp`")
    home = workdir / "rosterd"
    home.mkdir()
    port = free_port()
    config = home / "rosterd.toml"
    config.write_text(rosterd_config(port, home / "state", public_key_line(client_key), intake))
    log = home / "daemon.log"
    with _running([str(ROSTERD), "serve", "--config", str(config)], port, "rosterd serve", log):
        yield Server("rosterd", port, TENANT, "/inbox", log, home / "state")


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
