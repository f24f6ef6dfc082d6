"""What a session may hold: open files per session and per tenant, uploads in progress, bytes against the inbox
quota and the free space as they are written, and bytes waiting in memory (back pressure, never a refusal)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path

import asyncssh
import pytest

from daemon.sftp import fs
from daemon.sftp.defender import DefenderOptions

from .conftest import ACME_PASSWORD, Harness
from .test_uploads import assert_quota_error

MiB = 1024**2
BLOCK = 64 * 1024  # the client's write size in these tests: what one request may add beyond a bound


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def put_receipt(server: Harness, tenant: str = "acme") -> None:
    (server.root(tenant) / "results" / "latest.json").write_text('{"state": "accepted"}')


async def test_open_files_per_session_are_capped_logged_and_scored_once(start) -> None:
    defender = DefenderOptions(threshold=6, score_limit_exceeded=3)  # two scores ban
    server: Harness = await start(max_handles_per_session=3, defender=defender)
    put_receipt(server)
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        handles = [await sftp.open("/results/latest.json", "rb") for _ in range(3)]
        for attempt in (lambda: sftp.open("/results/latest.json", "rb"), lambda: sftp.open("/inbox/x.zip", "wb")) * 2:
            with pytest.raises(asyncssh.SFTPFailure, match="Too many open files in this session"):
                await attempt()
        assert await handles[0].read() == b'{"state": "accepted"}'  # what is open keeps working
        await handles[0].close()
        async with sftp.open("/results/latest.json", "rb") as again:  # a place given back is usable again
            assert await again.read(2) == b'{"'
        async with conn.start_sftp_client() as other:  # another session of the same connection counts apart
            async with other.open("/results/latest.json"):
                pass
        assert server.named("sftp.ip_banned") == []  # four refusals, scored once

        async with conn.start_sftp_client() as second:
            held = [await second.open("/results/latest.json") for _ in range(3)]
            with pytest.raises((asyncssh.SFTPFailure, asyncssh.SFTPConnectionLost, asyncssh.DisconnectError)):
                await second.open("/results/latest.json")  # a second session's refusal: the second score
            del held

    (exceeded, again_exceeded) = server.named("sftp.limit_exceeded")  # once per session
    assert exceeded["limit"] == again_exceeded["limit"] == "max_handles_per_session"
    assert exceeded["tenant"] == "acme"
    assert len(server.named("sftp.ip_banned")) == 1


async def test_open_files_per_tenant_count_all_its_sessions_and_no_one_else(start) -> None:
    server: Harness = await start(max_handles_per_tenant=4)
    put_receipt(server)
    put_receipt(server, "globex")
    async with server.connect("acme", ACME_PASSWORD) as conn:
        first = await conn.start_sftp_client()
        async with conn.start_sftp_client() as second:
            held = [await sftp.open("/results/latest.json") for sftp in (first, first, second, second)]
            for sftp in (first, second):
                with pytest.raises(asyncssh.SFTPFailure, match="Too many open files for this account"):
                    await sftp.open("/results/latest.json")
            async with server.connect("globex", client_keys=[server.keys["globex"].private]) as other:
                async with other.start_sftp_client() as globex:
                    async with globex.open("/results/latest.json", "rb") as theirs:
                        assert await theirs.read() == b'{"state": "accepted"}'
            first.exit()  # a session's end gives back what it held
            await first.wait_closed()
            async with second.open("/results/latest.json"), second.open("/results/latest.json"):
                pass
            del held
    assert {e["limit"] for e in server.named("sftp.limit_exceeded")} == {"max_handles_per_tenant"}


async def test_open_files_of_all_tenants_are_capped_and_not_scored_against_the_one_refused(start) -> None:
    defender = DefenderOptions(threshold=3, score_limit_exceeded=3)  # one score would ban
    server: Harness = await start(max_handles_total=3, defender=defender)
    put_receipt(server)
    put_receipt(server, "globex")
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as acme:
        held = [await acme.open("/results/latest.json") for _ in range(3)]
        async with server.connect("globex", client_keys=[server.keys["globex"].private]) as other:
            async with other.start_sftp_client() as globex:
                with pytest.raises(asyncssh.SFTPFailure, match="Too many open files on this server"):
                    await globex.open("/results/latest.json")
                await held.pop().close()
                async with globex.open("/results/latest.json", "rb") as theirs:  # a place given back
                    assert await theirs.read() == b'{"state": "accepted"}'
    (exceeded,) = server.named("sftp.limit_exceeded")
    assert exceeded["limit"] == "max_handles_total" and exceeded["tenant"] == "globex"
    assert server.named("sftp.ip_banned") == []


async def test_uploads_in_progress_per_tenant_are_capped(start) -> None:
    server: Harness = await start(max_open_uploads_per_tenant=2)
    put_receipt(server)
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        first = await sftp.open("/inbox/a.zip", "wb")
        async with conn.start_sftp_client() as other:
            second = await other.open("/inbox/b.zip", "wb")
            with pytest.raises(asyncssh.SFTPFailure, match="Too many uploads in progress for this account"):
                await sftp.open("/inbox/c.zip", "wb")
            async with sftp.open("/results/latest.json"):  # reading is not an upload
                pass
            await second.close()
        third = await sftp.open("/inbox/c.zip", "wb")
        await first.close()
        await third.close()
    assert sorted(u.name for u in server.uploads) == ["a.zip", "b.zip", "c.zip"]


async def test_a_lost_connection_gives_back_every_descriptor_and_byte(server: Harness) -> None:
    put_receipt(server)
    await server.wait_for(lambda: server.acceptor.stats()["sftp_open_files"] == 0)
    before = open_fds()
    conn = await asyncssh.connect("127.0.0.1", server.port, username="acme", password=ACME_PASSWORD,
                                  known_hosts=None, agent_path=None, config=None, client_keys=None)  # fmt: skip
    sftp = await conn.start_sftp_client()
    for _ in range(10):
        await sftp.open("/results/latest.json")
    for number in range(5):
        upload = await sftp.open(f"/inbox/u{number}.zip", "wb")
        await upload.write(b"u" * 300_000)  # some of it on disk, some still gathered in memory
    assert server.acceptor.stats()["sftp_open_files"] == 15

    conn.abort()  # the connection drops: no FXP_CLOSE, no channel close, no disconnect message
    await server.wait_for(lambda: len(server.named("upload.aborted")) == 5)
    await server.wait_for(lambda: open_fds() <= before)
    assert {e["reason"] for e in server.named("upload.aborted")} == {"client_gone"}
    stats = server.acceptor.stats()
    assert (stats["sftp_open_files"], stats["sftp_buffered_bytes"], stats["sftp_sessions"]) == (0, 0, 0)
    assert os.listdir(server.root("acme") / "inbox") == []


async def test_the_inbox_quota_counts_what_open_uploads_are_writing(start) -> None:
    """100 files opened at once used to pass a quota checked only at open; 2 MiB holds two files of 1 MiB."""
    server: Harness = await start(tenant_overrides={"acme": {"inbox_quota_bytes": 2 * MiB}})
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        async with conn.start_sftp_client() as other:  # the tenant's sessions share the quota
            uploads = [await sftp.open(f"/inbox/f{n}.zip", "wb") for n in range(3)]
            uploads += [await other.open(f"/inbox/g{n}.zip", "wb") for n in range(2)]
            outcomes = []
            for upload in uploads:
                try:
                    await upload.write(b"q" * MiB)
                    outcomes.append("written")
                except asyncssh.SFTPError as refused:
                    assert_quota_error(refused, "Inbox quota exceeded")
                    outcomes.append("refused")
            for upload in uploads:
                with contextlib.suppress(asyncssh.SFTPError):
                    await upload.close()

    assert outcomes == ["written", "written", "refused", "refused", "refused"]
    assert sorted(u.name for u in server.uploads) == ["f0.zip", "f1.zip"]
    assert sorted(os.listdir(server.root("acme") / "inbox")) == ["f0.zip", "f1.zip"]  # refused ones removed
    assert [e["reason"] for e in server.named("upload.aborted")] == ["inbox_quota_bytes"] * 3
    assert [e["limit"] for e in server.named("sftp.limit_exceeded")] == ["inbox_quota_bytes"] * 3


async def test_free_space_counts_what_open_uploads_are_writing(start, tmp_path: Path) -> None:
    vfs = os.statvfs(tmp_path)
    room = 64 * MiB  # what may be written before the disk would be under min_free_bytes
    server: Harness = await start(min_free_bytes=vfs.f_bavail * vfs.f_frsize - room)
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        uploads = [await sftp.open(f"/inbox/f{n}.zip", "wb") for n in range(4)]  # each alone would fit
        written, refusals = 0, []
        for upload in uploads:
            try:
                for block in range(32):
                    await upload.write(b"d" * MiB, block * MiB)
                    written += MiB
            except asyncssh.SFTPError as refused:
                refusals.append(refused)
        for upload in uploads:
            with contextlib.suppress(asyncssh.SFTPError):
                await upload.close()

    assert refusals, "4 x 32 MiB were written with 64 MiB of room"
    for refused in refusals:
        assert_quota_error(refused, "Not enough free space")
    assert written < 4 * 32 * MiB - MiB
    assert {e["reason"] for e in server.named("upload.aborted")} == {"min_free_bytes"}


@pytest.mark.parametrize("bound", ["per_session", "total"])
async def test_bytes_in_memory_past_the_bound_make_writes_wait(start, monkeypatch, bound: str) -> None:
    """With the disk stalled, a session stops taking writes at the bound instead of filling memory or failing."""
    limit = 2 * MiB
    server: Harness = await start(**{f"max_buffered_bytes_{bound}": limit})
    disk_stalled = threading.Event()
    real_write_at = fs.write_at

    def stalled_write_at(*args) -> None:
        disk_stalled.wait(30)
        real_write_at(*args)

    monkeypatch.setattr(fs, "write_at", stalled_write_at)
    content = {f"/inbox/f{n}.zip": os.urandom(2 * MiB) for n in range(4)}
    clients = 2 if bound == "total" else 1
    try:
        async with contextlib.AsyncExitStack() as stack:
            tasks = []
            for number in range(clients):
                conn = await stack.enter_async_context(server.connect("acme", ACME_PASSWORD))
                sftp = await stack.enter_async_context(conn.start_sftp_client())
                mine = list(content.items())[number::clients]
                tasks += [asyncio.create_task(_upload(sftp, path, data)) for path, data in mine]
            await server.wait_for(lambda: server.acceptor.stats()["sftp_buffered_bytes"] >= limit)
            await asyncio.sleep(0.3)  # room for a server without a bound to take far more
            assert server.acceptor.stats()["sftp_buffered_bytes"] <= limit + clients * BLOCK
            assert not any(task.done() for task in tasks)  # waiting, not refused
            disk_stalled.set()
            await asyncio.gather(*tasks)
    finally:
        disk_stalled.set()
    for path, data in content.items():
        assert (server.root("acme") / path.lstrip("/")).read_bytes() == data
    assert server.acceptor.stats()["sftp_buffered_bytes"] == 0


async def _upload(sftp: asyncssh.SFTPClient, path: str, data: bytes) -> None:
    async with sftp.open(path, "wb", block_size=BLOCK) as remote:
        await remote.write(data, 0)


async def test_open_directories_count_as_open_files(start) -> None:
    """A listing held open costs memory as a file costs a descriptor."""
    server: Harness = await start(max_handles_per_session=2)
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        listings = [sftp.scandir("/") for _ in range(3)]
        for listing in listings[:2]:
            await anext(listing)  # opened, read from, not closed
        with pytest.raises(asyncssh.SFTPFailure, match="Too many open files in this session"):
            await anext(listings[2])
        await listings[0].aclose()  # the client closes one: its place comes back
        assert sorted(await sftp.listdir("/")) == ["inbox", "results"]
        await server.wait_for(lambda: server.acceptor.stats()["sftp_open_files"] == 1)
    await server.wait_for(lambda: server.acceptor.stats()["sftp_open_files"] == 0)
