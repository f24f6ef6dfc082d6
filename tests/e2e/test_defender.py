"""The defender as an operator meets it, and start-up refusals an operator can act on."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable

import asyncssh

from .conftest import ROSTERD, RunningDaemon, Tenant

FEW_GUESSES = "[defender]\nthreshold = 3\n"


def saved_bans(daemon: RunningDaemon, deadline: float = 20.0) -> list[str]:
    """The bans in the defender's file, once it holds one: the daemon saves it in the background after the
    ban is logged (a clean-clone run under load read it before it was written)."""
    path = daemon.state / "defender.json"
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        if path.exists():
            bans = list(json.loads(path.read_text())["bans"])
            if bans:
                return bans
        time.sleep(0.05)
    raise AssertionError(f"no ban saved in {path} within {deadline}s")


async def test_repeated_bad_passwords_ban_the_address_across_a_restart(
    rosterd: Callable[..., RunningDaemon], tenants: dict[str, Tenant]
) -> None:
    north = tenants["north"]
    daemon = rosterd(north, extra_config=FEW_GUESSES)
    refusals = await asyncio.gather(*(daemon.login_refusal("north", f"guess-{n}") for n in range(3)))
    assert all(isinstance(r, asyncssh.PermissionDenied) for r in refusals), refusals

    banned = await asyncio.to_thread(daemon.wait_for_event, "sftp.ip_banned", remote_ip="127.0.0.1")
    assert banned["ban_seconds"] == 1800 and banned["ban_count"] == 1
    assert isinstance(await daemon.login_refusal("north", north.password), asyncssh.DisconnectError | ConnectionError)
    with_key = await asyncio.to_thread(daemon.sftp_batch, "north", ["ls /"])
    assert with_key.returncode != 0  # the right key does not help either
    assert daemon.events("sftp.connection_refused", reason="banned")
    assert await asyncio.to_thread(saved_bans, daemon) == ["127.0.0.1"]

    await asyncio.to_thread(daemon.restart)
    (started,) = daemon.events("sftp.server_started", run=-1)
    assert started["bans_in_force"] == 1
    again = await asyncio.to_thread(daemon.sftp_batch, "north", ["ls /"])
    assert again.returncode != 0
    assert daemon.events("sftp.login_succeeded", run=-1) == []


def test_a_second_daemon_on_the_same_state_or_port_is_refused_with_a_reason(
    rosterd: Callable[..., RunningDaemon], tenants: dict[str, Tenant]
) -> None:
    daemon = rosterd(tenants["north"])
    same_state = subprocess.run([str(ROSTERD), "serve", "--config", str(daemon.config)],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
    assert same_state.returncode == 1
    assert f"another rosterd is running with the state directory {daemon.state}" in same_state.stderr

    other = daemon.home / "other.toml"
    other.write_text(daemon.config.read_text().replace(str(daemon.state), str(daemon.home / "other-state")))
    same_port = subprocess.run([str(ROSTERD), "serve", "--config", str(other)], capture_output=True, text=True,
                               timeout=60)  # fmt: skip
    assert same_port.returncode == 1
    assert f"cannot listen on 127.0.0.1:{daemon.port}" in same_port.stderr
    assert daemon.proc.poll() is None  # the first one serves on
    assert daemon.sftp_batch("north", ["ls /"]).returncode == 0


def test_a_broken_config_names_the_file_and_key_and_starts_nothing(tmp_path) -> None:
    config = tmp_path / "rosterd.toml"
    config.write_text('[server]\nport = 70000\n\n[[tenants]]\nname = "Bad Name"\npassword_hash = "hunter2"\n')
    result = subprocess.run([str(ROSTERD), "serve", "--config", str(config)], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert f"{config}: server.port:" in result.stderr
    assert f"{config}: tenants[0].name:" in result.stderr
    assert "plaintext password" in result.stderr and "hunter2" not in result.stderr
    assert not (tmp_path / "var").exists()


def test_serve_explains_itself() -> None:
    result = subprocess.run([str(ROSTERD), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "inbox/" in result.stdout and "--config" in result.stdout
