"""Who gets in: keys and passwords, at an equal cost for strangers, from allowed networks, a few times."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import asyncssh
import pytest

from daemon import passwords

from .conftest import ACME_PASSWORD, Harness, needs_openssh

DELAY = 1.0  # the server's pause after a failed password


async def failed_password_login(server: Harness, user: str, password: str) -> float:
    begun = time.monotonic()
    with pytest.raises(asyncssh.PermissionDenied):
        async with server.connect(user, password):
            pass
    return time.monotonic() - begun


async def test_password_login_with_an_asyncssh_client(server: Harness) -> None:
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        assert sorted(await sftp.listdir("/")) == ["inbox", "results"]
        async with sftp.open("/inbox/pw.zip", "wb") as remote:
            await remote.write(b"uploaded with a password")
    (login,) = server.named("sftp.login_succeeded")
    assert (login["tenant"], login["method"]) == ("acme", "password")
    assert [u.name for u in server.uploads] == ["pw.zip"]


class RecordedHasher:
    """The argon2 hasher the server checks passwords with, noting the cost parameters of each check."""

    def __init__(self, real) -> None:
        self.real = real
        self.checked: list[tuple[str, str]] = []  # (variant, "m=...,t=...,p=...") of each hash verified

    def verify(self, stored_hash: str, password: str) -> bool:
        _, variant, _version, cost, *_ = stored_hash.split("$")
        self.checked.append((variant, cost))
        return self.real.verify(stored_hash, password)

    def hash(self, password: str) -> str:
        return self.real.hash(password)


async def test_bad_password_and_unknown_user_fail_alike_after_a_pause(
    server: Harness, acme_password_hash: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher = RecordedHasher(passwords._ARGON2)
    monkeypatch.setattr(passwords, "_ARGON2", hasher)
    bad_password = await failed_password_login(server, "acme", "wrong horse")
    unknown_user = await failed_password_login(server, "nobody", "wrong horse")

    assert bad_password >= DELAY and unknown_user >= DELAY
    # an unknown name costs one argon2 check too (against a dummy hash), at the tenant hash's cost
    (_, _, _, acme_cost, *_) = acme_password_hash.split("$")
    assert hasher.checked == [("argon2id", acme_cost), ("argon2id", acme_cost)]
    reasons = [(e["username"], e["reason"]) for e in server.named("sftp.login_failed")]
    assert reasons == [("acme", "bad_password"), ("nobody", "unknown_user")]
    assert "wrong horse" not in repr(server.events)


async def test_password_of_a_key_only_tenant_is_refused(server: Harness) -> None:
    await failed_password_login(server, "globex", ACME_PASSWORD)
    assert [e["reason"] for e in server.named("sftp.login_failed")] == ["bad_password"]


async def test_wrong_source_network_is_refused_even_with_the_right_credentials(start) -> None:
    elsewhere = (ipaddress.ip_network("10.99.0.0/16"), ipaddress.ip_network("fd00::/8"))
    server: Harness = await start(tenant_overrides={"acme": {"allowed_networks": elsewhere}})

    await failed_password_login(server, "acme", ACME_PASSWORD)
    with pytest.raises(asyncssh.PermissionDenied):
        async with server.connect("acme", client_keys=[server.keys["acme"].private]):
            pass

    assert {e["reason"] for e in server.named("sftp.login_failed")} == {"network_refused"}
    assert server.named("sftp.login_succeeded") == []


async def test_allowed_source_network_may_log_in(start) -> None:
    server: Harness = await start(tenant_overrides={"acme": {"allowed_networks": (ipaddress.ip_network("127.0.0.0/8"),)}})
    async with server.connect("acme", ACME_PASSWORD):
        pass
    assert len(server.named("sftp.login_succeeded")) == 1


@needs_openssh
async def test_a_key_of_another_tenant_is_refused(server: Harness) -> None:
    result = await server.sftp("acme", ["ls /"], key="globex")
    assert result.returncode != 0
    assert [e["reason"] for e in server.named("sftp.login_failed")] == ["bad_key"]
    key_material = server.keys["globex"].public_line.split()[1]
    assert key_material not in repr(server.events)


async def test_attempts_per_connection_are_limited(start) -> None:
    server: Harness = await start(max_auth_tries=2)
    keys = [server.keys[name].private for name in ("stranger", "globex", "acme")]  # the right one last
    with pytest.raises((asyncssh.DisconnectError, asyncssh.PermissionDenied)):
        async with server.connect("acme", client_keys=keys):
            pass
    assert [e["limit"] for e in server.named("sftp.limit_exceeded")] == ["max_auth_tries"]
    assert server.named("sftp.login_succeeded") == []


async def test_only_the_sftp_subsystem_is_served(server: Harness) -> None:
    async with server.connect("acme", ACME_PASSWORD) as conn:
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.run("id", check=True)
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_session(asyncssh.SSHClientSession, term_type="xterm")  # no PTY, no shell
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_session(asyncssh.SSHClientSession, subsystem="other")
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_connection(asyncssh.SSHTCPSession, "127.0.0.1", server.port)  # port forwarding
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", server.port)
        async with conn.start_sftp_client() as sftp:  # the one thing that works
            assert await sftp.realpath(".") == "/"


async def test_login_grace_timeout_drops_a_silent_client(start) -> None:
    server: Harness = await start(login_grace_seconds=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert (await reader.readline()).startswith(b"SSH-2.0-rosterd")
        begun = time.monotonic()
        while await asyncio.wait_for(reader.read(4096), 30):  # drained until the server hangs up
            pass
        assert time.monotonic() - begun < 30  # the grace of 0.5 s, not the default 120 s
    finally:
        writer.close()


async def test_idle_sessions_are_disconnected(start) -> None:
    server: Harness = await start(idle_timeout_seconds=3)
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        begun = time.monotonic()
        while time.monotonic() - begun < 4.5:  # activity every half second keeps it open past the timeout
            await asyncio.sleep(0.5)
            await sftp.listdir("/")
        await asyncio.wait_for(conn.wait_closed(), 60)
    (idle,) = server.named("sftp.idle_disconnected")
    assert idle["idle_seconds"] >= 3


def test_free_port_helper_is_not_the_default_port() -> None:
    """A guard for this suite's own hermeticity: tests never touch the daemon's default port 2222."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert sock.getsockname()[1] != 2222


async def test_a_failed_user_name_that_cannot_be_a_tenant_is_logged_as_a_digest(server: Harness) -> None:
    """A password typed into the user-name field must not reach the log."""
    await failed_password_login(server, "Tr0ub4dor&3", "whatever")
    (failed,) = server.named("sftp.login_failed")
    assert failed["username"].startswith("?sha256:") and len(failed["username"]) == len("?sha256:") + 12
    assert "Tr0ub4dor" not in repr(server.events)
