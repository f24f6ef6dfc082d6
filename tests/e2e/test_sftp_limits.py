"""The SFTP caps as a client meets them: sessions that end before the handshake give their place back, an
open-file flood is refused without touching other tenants, and the version reply names no library."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from .conftest import RunningDaemon, Tenant, copy_sample
from .test_health import get, samples

FEW_SESSIONS = {"server": {"max_sessions_per_tenant": 2}}


def sessions_gauge(daemon: RunningDaemon) -> float:
    port = daemon.events("daemon.started")[0]["health_port"]
    return samples(get(port, "/metrics")[1])[("rosterd_sftp_sessions", ())]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def ssh_subsystem_without_input(daemon: RunningDaemon, tenant: str) -> subprocess.CompletedProcess:
    """`ssh -s TENANT@host sftp </dev/null`: the subsystem starts and its input ends before any SFTP packet."""
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(daemon.port), "-i", str(daemon.tenants[tenant].key),
         "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
         "-s", f"{tenant}@127.0.0.1", "sftp"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )  # fmt: skip


def test_ssh_sessions_without_sftp_give_their_place_back(
    rosterd: Callable[..., RunningDaemon], tenants: dict[str, Tenant]
) -> None:
    daemon = rosterd(tenants["north"], settings=FEW_SESSIONS)
    for _ in range(5):  # more than the cap of 2
        ssh_subsystem_without_input(daemon, "north")

    listed = daemon.sftp_batch("north", ["ls inbox"])
    assert listed.returncode == 0, listed.stderr
    wait_until(lambda: sessions_gauge(daemon) == 0, "rosterd_sftp_sessions back to 0")
    assert daemon.events("sftp.limit_exceeded") == []


async def test_half_an_init_packet_gives_the_place_back(
    rosterd: Callable[..., RunningDaemon], tenants: dict[str, Tenant]
) -> None:
    daemon = await asyncio.to_thread(rosterd, tenants["north"], settings=FEW_SESSIONS)
    for _ in range(4):
        try:
            async with daemon.connect("north", tenants["north"].password) as conn:
                writer, _reader, _ = await conn.open_session(subsystem="sftp", encoding=None)
                writer.write(b"\x00\x00\x00")  # three of the four bytes of an SFTP packet's length
                writer.close()
                await asyncio.wait_for(writer.channel.wait_closed(), 10)
        except (asyncssh.Error, OSError):
            pass  # asyncssh drops a connection whose SFTP never began

    listed = await asyncio.to_thread(daemon.sftp_batch, "north", ["ls inbox"])
    assert listed.returncode == 0, listed.stderr
    await asyncio.to_thread(wait_until, lambda: sessions_gauge(daemon) == 0, "rosterd_sftp_sessions back to 0")
    assert daemon.events("sftp.limit_exceeded") == []


async def test_an_open_file_flood_is_refused_and_every_descriptor_comes_back(
    rosterd: Callable[..., RunningDaemon], tenants: dict[str, Tenant]
) -> None:
    daemon = await asyncio.to_thread(rosterd, *tenants.values(), settings={"server": {"max_handles_per_session": 8}})
    (daemon.results("north") / "latest.json").write_text('{"state": "accepted"}')
    sample = copy_sample("valid-1.1-bulk.zip", daemon.client_dir)
    assert tenant_files_open(daemon) == []

    async with daemon.connect("north", tenants["north"].password) as conn, conn.start_sftp_client() as sftp:
        held = [await sftp.open("results/latest.json", "rb") for _ in range(8)]
        for _ in range(3):
            with pytest.raises(asyncssh.SFTPFailure, match="Too many open files in this session"):
                await sftp.open("results/latest.json", "rb")
        other = await asyncio.to_thread(daemon.sftp_batch, "south", ["ls inbox", f"put {sample} inbox/roster.zip"])
        assert other.returncode == 0, other.stderr  # another tenant lists and uploads as before
        assert len(tenant_files_open(daemon)) >= len(held)
        assert await held[0].read() == b'{"state": "accepted"}'

    await asyncio.to_thread(wait_until, lambda: tenant_files_open(daemon) == [], "no tenant file open in the daemon")
    (refused,) = daemon.events("sftp.limit_exceeded")
    assert (refused["limit"], refused["tenant"]) == ("max_handles_per_session", "north")


def tenant_files_open(daemon: RunningDaemon) -> list[str]:
    """What the daemon's descriptors point to under the tenants' folders (SFTP handles; intake moves files out)."""
    found = []
    descriptors = Path(f"/proc/{daemon.proc.pid}/fd")
    for fd in descriptors.iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(fd)
            if target.startswith(str(daemon.state / "tenants") + "/"):
                found.append(target)
    return found


def test_the_openssh_client_is_not_told_the_library_or_its_version(daemon: RunningDaemon) -> None:
    listed = daemon.sftp_batch("north", ["ls inbox"], options=["-vvv"])
    assert listed.returncode == 0, listed.stderr
    assert 'Server supports extension "posix-rename@openssh.com"' in listed.stderr  # the list was read
    assert "asyncssh" not in listed.stderr.lower()
    assert asyncssh.__version__ not in listed.stderr
