"""Caps: connections per source address, SFTP sessions per tenant; and the ssh-audit verdict."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from pathlib import Path

import asyncssh
import pytest

from .conftest import ACME_PASSWORD, Harness, init_packet, needs_openssh, open_raw_sftp

SSH_AUDIT = shutil.which("ssh-audit") or str(Path(sys.executable).with_name("ssh-audit"))


async def test_connections_per_address_are_capped_before_authentication(start) -> None:
    server: Harness = await start(max_sessions_per_ip=2)
    async with server.connect("acme", ACME_PASSWORD), server.connect("acme", ACME_PASSWORD):
        with pytest.raises((asyncssh.DisconnectError, ConnectionError)):
            async with server.connect("acme", ACME_PASSWORD):
                pass
    (exceeded,) = server.named("sftp.limit_exceeded")
    assert (exceeded["limit"], exceeded["remote_ip"]) == ("max_sessions_per_ip", "127.0.0.1")
    assert len(server.named("sftp.login_succeeded")) == 2  # the third never reached authentication

    for _ in range(50):  # the places are given back once the server has seen the disconnects
        try:
            async with server.connect("acme", ACME_PASSWORD):
                break
        except (asyncssh.DisconnectError, ConnectionError):
            await asyncio.sleep(0.05)
    assert len(server.named("sftp.login_succeeded")) == 3


@needs_openssh
async def test_sessions_per_tenant_are_capped_and_the_first_keeps_working(start) -> None:
    server: Harness = await start(max_sessions_per_tenant=1)
    async with server.connect("acme", ACME_PASSWORD) as first, first.start_sftp_client() as sftp:
        async with first.start_sftp_client() as extra:  # a second channel on the same connection
            with pytest.raises(asyncssh.SFTPPermissionDenied, match="Too many sessions"):
                await extra.listdir("/")
            await asyncio.wait_for(extra.wait_closed(), 5)
        async with server.connect("acme", ACME_PASSWORD) as second:  # logging in is allowed ...
            async with second.start_sftp_client() as extra:  # ... but the session does nothing
                with pytest.raises(asyncssh.SFTPPermissionDenied, match="Too many sessions"):
                    await extra.open("/inbox/x.zip", "wb")
        assert (await server.sftp("acme", ["ls /"])).returncode != 0  # the OpenSSH client gives up too
        async with server.connect("globex", client_keys=[server.keys["globex"].private]) as other:
            async with other.start_sftp_client() as other_sftp:  # other tenants are counted apart
                assert await other_sftp.listdir("/inbox") == []
        assert sorted(await sftp.listdir("/")) == ["inbox", "results"]
    assert [e["limit"] for e in server.named("sftp.limit_exceeded")] == ["max_sessions_per_tenant"] * 3

    async with server.connect("acme", ACME_PASSWORD) as again, again.start_sftp_client() as sftp:
        assert await sftp.listdir("/inbox") == []  # released when the first session ended


async def test_ssh_audit_finds_nothing_to_fail(server: Harness) -> None:
    process = await asyncio.create_subprocess_exec(
        SSH_AUDIT, "--no-colors", "--timeout", "10", "--port", str(server.port), "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()

    assert "(kex) curve25519-sha256" in output, output  # it did audit this server
    assert "(key) ssh-ed25519" in output and "rsa-sha2-512 (3072-bit)" in output
    failures = [line for line in output.splitlines() if "[fail]" in line]
    assert failures == [], "\n".join(failures)
    assert process.returncode in (0, 2), output  # 2: warnings only (classic curve25519 is not post-quantum)


@pytest.mark.parametrize("ending", ["eof", "close", "half_init"])
async def test_a_session_ended_before_the_handshake_gives_its_place_back(start, ending: str) -> None:
    """`ssh -s sftp </dev/null`, a client killed at once, half an init packet: none may keep a place."""
    server: Harness = await start(max_sessions_per_tenant=2)
    for _ in range(4):  # twice the cap
        with contextlib.suppress(asyncssh.Error, OSError):  # asyncssh drops a connection whose SFTP never began
            async with server.connect("acme", ACME_PASSWORD) as conn:
                writer, _reader = await open_raw_sftp(conn)
                if ending == "half_init":
                    writer.write(init_packet()[:3])
                if ending == "eof":
                    writer.write_eof()
                else:
                    writer.close()
                await asyncio.wait_for(writer.channel.wait_closed(), 10)

    await server.wait_for(lambda: server.acceptor.stats()["sftp_sessions"] == 0)
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        assert sorted(await sftp.listdir("/")) == ["inbox", "results"]
        assert server.acceptor.stats()["sftp_sessions"] == 1
    await server.wait_for(lambda: server.acceptor.stats()["sftp_sessions"] == 0)
    assert server.named("sftp.limit_exceeded") == []


async def test_sessions_counted_while_open_and_given_back_once(start) -> None:
    server: Harness = await start(max_sessions_per_tenant=3)
    async with server.connect("acme", ACME_PASSWORD) as conn:
        first = await conn.start_sftp_client()
        second = await conn.start_sftp_client()
        assert server.acceptor.stats()["sftp_sessions"] == 2
        first.exit()  # a clean end: exit() and the channel's close both happen, one place comes back
        await first.wait_closed()
        await server.wait_for(lambda: server.acceptor.stats()["sftp_sessions"] == 1)
        assert await second.listdir("/inbox") == []
        # Two more fill the cap of 3; had the first session's place come back twice, a fourth would fit too.
        third, fourth = await conn.start_sftp_client(), await conn.start_sftp_client()
        assert await third.listdir("/inbox") == [] and await fourth.listdir("/inbox") == []
        async with conn.start_sftp_client() as extra:
            with pytest.raises(asyncssh.SFTPPermissionDenied, match="Too many sessions"):
                await extra.listdir("/")
        assert server.acceptor.stats()["sftp_sessions"] == 3
    await server.wait_for(lambda: server.acceptor.stats()["sftp_sessions"] == 0)


async def test_the_version_reply_names_no_library_and_no_version(server: Harness) -> None:
    async with server.connect("acme", ACME_PASSWORD) as conn:
        writer, reader = await open_raw_sftp(conn)
        writer.write(init_packet())
        length = int.from_bytes(await asyncio.wait_for(reader.readexactly(4), 10), "big")
        reply = await reader.readexactly(length)
        writer.close()

    assert reply[0] == 2 and int.from_bytes(reply[1:5], "big") == 3  # SSH_FXP_VERSION, version 3
    names = _extension_names(reply[5:])
    assert b"vendor-id" not in names
    assert b"asyncssh" not in reply.lower() and asyncssh.__version__.encode() not in reply
    assert b"posix-rename@openssh.com" in names  # the extensions clients rely on are still offered


def _extension_names(data: bytes) -> list[bytes]:
    names = []
    while data:
        size = int.from_bytes(data[:4], "big")
        names.append(data[4 : 4 + size])
        data = data[4 + size :]
        data = data[4 + int.from_bytes(data[:4], "big") :]  # the extension's data
    return names
