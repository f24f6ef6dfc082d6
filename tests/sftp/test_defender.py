"""The defender: scores per address, bans at the threshold, longer bans for repeat offenders, kept over restarts."""

from __future__ import annotations

import json
from pathlib import Path

import asyncssh
import pytest

from daemon.sftp.defender import Defender, DefenderOptions, read_state, write_state

from .conftest import ACME_PASSWORD, Harness, needs_openssh


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_scores_add_up_to_a_ban_within_the_window() -> None:
    clock = Clock()
    defender = Defender(DefenderOptions(threshold=5, observation_seconds=60, ban_seconds=100), clock)

    assert defender.score("192.0.2.7", 2) is None
    assert defender.score("192.0.2.7", 2) is None
    assert defender.score("198.51.100.1", 4) is None  # other addresses are scored apart
    ban = defender.score("192.0.2.7", 1)

    assert ban is not None and (ban.until, ban.seconds, ban.count) == (clock.now + 100, 100, 1)
    assert defender.banned_until("192.0.2.7") == clock.now + 100
    assert defender.banned_until("198.51.100.1") is None
    assert defender.bans_in_force() == 1


def test_old_scores_fall_out_of_the_window() -> None:
    clock = Clock()
    defender = Defender(DefenderOptions(threshold=3, observation_seconds=60), clock)
    defender.score("192.0.2.7", 2)
    clock.now += 61
    assert defender.score("192.0.2.7", 2) is None  # 2 + 2, but the first is too old
    assert defender.score("192.0.2.7", 1) is not None


def test_a_ban_ends_and_a_repeat_offender_is_banned_longer() -> None:
    clock = Clock()
    defender = Defender(DefenderOptions(threshold=1, ban_seconds=100, ban_multiplier=2.0), clock)
    first = defender.score("192.0.2.7", 1)
    assert defender.score("192.0.2.7", 1) is None  # no scoring while banned
    clock.now = first.until + 1
    assert defender.banned_until("192.0.2.7") is None

    second = defender.score("192.0.2.7", 1)
    clock.now = second.until + 1
    third = defender.score("192.0.2.7", 1)

    assert [(b.seconds, b.count) for b in (first, second, third)] == [(100, 1), (200, 2), (400, 3)]


def test_an_offender_quiet_for_a_day_starts_afresh() -> None:
    clock = Clock()
    defender = Defender(DefenderOptions(threshold=1, ban_seconds=100), clock)
    first = defender.score("192.0.2.7", 1)
    clock.now = first.until + 24 * 3600
    again = defender.score("192.0.2.7", 1)
    assert (again.seconds, again.count) == (100, 1)


def test_bans_are_saved_and_restored(tmp_path: Path) -> None:
    clock = Clock()
    defender = Defender(DefenderOptions(threshold=1, ban_seconds=100), clock)
    defender.score("192.0.2.7", 1)
    path = tmp_path / "defender.json"
    write_state(path, defender.state())
    assert path.stat().st_mode & 0o777 == 0o600

    restored = Defender(DefenderOptions(threshold=1, ban_seconds=100), clock)
    restored.load(read_state(path))
    assert restored.banned_until("192.0.2.7") == clock.now + 100
    clock.now += 101
    assert restored.score("192.0.2.7", 1).count == 2  # the earlier ban still counts

    assert read_state(tmp_path / "absent.json") == {}
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="move it away"):
        read_state(tmp_path / "broken.json")


async def test_repeated_bad_passwords_ban_the_address(start, tmp_path: Path) -> None:
    state = tmp_path / "defender.json"
    server: Harness = await start(defender=DefenderOptions(threshold=3), defender_file=state)
    for _ in range(3):  # a bad password scores 1 each
        with pytest.raises(asyncssh.PermissionDenied):
            async with server.connect("acme", "not the password"):
                pass

    (banned,) = server.named("sftp.ip_banned")
    assert (banned["remote_ip"], banned["ban_seconds"], banned["ban_count"]) == ("127.0.0.1", 1800, 1)
    with pytest.raises((asyncssh.DisconnectError, ConnectionError)):
        async with server.connect("acme", ACME_PASSWORD):  # the right password no longer helps
            pass
    with pytest.raises((asyncssh.DisconnectError, ConnectionError)):
        async with server.connect("acme", ACME_PASSWORD):
            pass
    assert len(server.named("sftp.connection_refused")) == 1  # logged once, not once per try
    await server.wait_for(lambda: state.exists())
    assert "127.0.0.1" in json.loads(state.read_text())["bans"]

    restarted: Harness = await start(defender=DefenderOptions(threshold=3), defender_file=state)
    with pytest.raises((asyncssh.DisconnectError, ConnectionError)):
        async with restarted.connect("acme", ACME_PASSWORD):
            pass
    (started,) = restarted.named("sftp.server_started")
    assert started["bans_in_force"] == 1
    assert restarted.named("sftp.login_succeeded") == []


async def test_unknown_users_score_double_and_limits_triple(start) -> None:
    server: Harness = await start(defender=DefenderOptions(threshold=7), max_auth_tries=1)
    for _ in range(2):  # 2 for the unknown user + 3 for using up max_auth_tries, twice: 10 >= 7
        with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
            async with server.connect("nobody", "guess"):
                pass
    assert len(server.named("sftp.ip_banned")) == 1


@needs_openssh
async def test_a_client_offering_several_keys_is_scored_once_per_connection(start) -> None:
    server: Harness = await start(defender=DefenderOptions(threshold=2))
    keys = [server.keys[name].private for name in ("stranger", "globex", "acme")]  # the right one last
    async with server.connect("acme", client_keys=keys):
        pass  # two refused keys, then in: not scored at all
    with pytest.raises(asyncssh.PermissionDenied):
        async with server.connect("acme", client_keys=keys[:2]):
            pass  # two refused keys and never in: scored once (1 point)
    assert server.named("sftp.ip_banned") == []
    result = await server.sftp("acme", ["ls /"], key="globex")  # the OpenSSH client, a wrong key: 1 more
    assert result.returncode != 0
    await server.wait_for(lambda: bool(server.named("sftp.ip_banned")))


async def test_no_defender_means_no_bans(start) -> None:
    server: Harness = await start(max_auth_tries=1)
    for _ in range(6):
        with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
            async with server.connect("nobody", "guess"):
                pass
    assert server.named("sftp.ip_banned") == []
