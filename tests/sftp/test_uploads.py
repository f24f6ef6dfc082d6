"""Atomic uploads: published and reported only after a clean close (or a rename away from a partial name)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
from pathlib import Path

import asyncssh
import pytest

from daemon.sftp.paths import HIDDEN_PREFIX, TEMP_PREFIX

from .conftest import ACME_PASSWORD, Harness, needs_openssh, write_random


def assert_quota_error(error: asyncssh.SFTPError, reason: str) -> None:
    """SFTP v3 (what OpenSSH speaks, and all this server offers) has no quota or disk-full status:
    asyncssh sends those as a failure with the reason, which is what a v3 client can show."""
    assert error.code == asyncssh.FX_FAILURE
    assert reason in error.reason


def hidden_files(inbox: Path) -> list[str]:
    return [name for name in os.listdir(inbox) if name.startswith(HIDDEN_PREFIX)]


@needs_openssh
async def test_openssh_put_publishes_the_file_and_reports_it_once(server: Harness) -> None:
    local = write_random(server.workdir / "roster.zip", 700_000)  # several SFTP writes

    result = await server.sftp("acme", ["put roster.zip /inbox/roster.zip", "ls -a /inbox"])

    assert result.returncode == 0, result.output
    published = server.root("acme") / "inbox" / "roster.zip"
    assert published.read_bytes() == local.read_bytes()
    assert hidden_files(published.parent) == []
    assert HIDDEN_PREFIX not in result.stdout
    (upload,) = server.uploads
    (login,) = server.named("sftp.login_succeeded")
    assert (upload.tenant, upload.name, upload.size, upload.path) == ("acme", "roster.zip", 700_000, published)
    assert upload.remote_ip == "127.0.0.1"
    assert upload.session_id == login["session_id"]
    assert upload.elapsed_ms >= 0


@needs_openssh
async def test_partial_name_upload_completes_at_the_rename(server: Harness) -> None:
    write_random(server.workdir / "roster.zip", 50_000)

    first = await server.sftp("acme", ["put roster.zip /inbox/roster.zip.filepart", "ls /inbox"])
    assert first.returncode == 0, first.output
    assert "roster.zip.filepart" in first.stdout
    assert server.uploads == []  # a .filepart is not an upload yet

    second = await server.sftp("acme", ["rename /inbox/roster.zip.filepart /inbox/roster.zip"])
    assert second.returncode == 0, second.output
    (upload,) = server.uploads
    assert (upload.name, upload.size) == ("roster.zip", 50_000)
    assert sorted(os.listdir(server.root("acme") / "inbox")) == ["roster.zip"]


async def test_part_upload_and_rename_in_one_asyncssh_session(server: Harness) -> None:
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/inbox/district.zip.part", "wb") as remote:
            await remote.write(b"x" * 10_000)
        assert server.uploads == []
        await sftp.rename("/inbox/district.zip.part", "/inbox/district.zip")
    (upload,) = server.uploads
    assert (upload.name, upload.size) == ("district.zip", 10_000)
    assert upload.elapsed_ms >= 0


@needs_openssh
async def test_killed_client_leaves_no_file_and_reports_the_abort(server: Harness) -> None:
    big = server.workdir / "big.zip"
    with open(big, "wb") as out:
        out.truncate(1024**3)  # sparse: the client reads it fast, the server still writes every byte
    inbox = server.root("acme") / "inbox"
    client = await server.start_sftp("acme", ["put big.zip /inbox/big.zip"])

    def temp_growing() -> bool:
        temps = [name for name in os.listdir(inbox) if name.startswith(TEMP_PREFIX)]
        return bool(temps) and (inbox / temps[0]).stat().st_size > 1024**2

    try:
        await server.wait_for(temp_growing)
    finally:
        client.send_signal(signal.SIGKILL)
        await client.wait()

    await server.wait_for(lambda: bool(server.named("upload.aborted")))
    (aborted,) = server.named("upload.aborted")
    assert (aborted["tenant"], aborted["name"], aborted["reason"]) == ("acme", "big.zip", "client_gone")
    assert aborted["bytes"] > 0
    assert os.listdir(inbox) == []
    assert server.uploads == []


@pytest.mark.parametrize("how", ["channel_closed", "connection_closed"])
async def test_session_ending_without_close_discards_the_upload(server: Harness, how: str) -> None:
    async with server.connect("acme", ACME_PASSWORD) as conn:
        sftp = await conn.start_sftp_client()
        remote = await sftp.open("/inbox/unfinished.zip", "wb")
        await remote.write(b"y" * 100_000)
        if how == "channel_closed":
            sftp.exit()  # EOF on the SFTP channel, connection kept: asyncssh's server sees no FXP_CLOSE
            await sftp.wait_closed()
        else:
            conn.close()
        await server.wait_for(lambda: bool(server.named("upload.aborted")))

    assert os.listdir(server.root("acme") / "inbox") == []
    assert server.uploads == []


async def test_max_upload_size_is_enforced_while_writing(start) -> None:
    server: Harness = await start(tenant_overrides={"acme": {"max_upload_bytes": 64_000}})
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        remote = await sftp.open("/inbox/huge.zip", "wb")
        await remote.write(b"z" * 60_000)
        with pytest.raises(asyncssh.SFTPError) as refused:
            await remote.write(b"z" * 10_000, 60_000)
        assert_quota_error(refused.value, "larger than this inbox accepts")
        assert os.listdir(server.root("acme") / "inbox") == []  # the partial file went at once
        await remote.close()

    (aborted,) = server.named("upload.aborted")
    assert aborted["reason"] == "too_large"
    assert server.uploads == []


@needs_openssh
async def test_max_upload_size_fails_the_openssh_put(start) -> None:
    server: Harness = await start(tenant_overrides={"acme": {"max_upload_bytes": 100_000}})
    write_random(server.workdir / "big.zip", 300_000)

    result = await server.sftp("acme", ["put big.zip /inbox/big.zip"])

    assert result.returncode != 0
    assert os.listdir(server.root("acme") / "inbox") == []
    assert server.uploads == []


async def test_inbox_quota_and_free_space_are_checked_at_open(start) -> None:
    server: Harness = await start(tenant_overrides={"acme": {"inbox_quota_bytes": 1000}})
    (server.root("acme") / "inbox" / "waiting.zip").write_bytes(b"w" * 1000)
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPError) as refused:
            await sftp.open("/inbox/more.zip", "wb")
        assert_quota_error(refused.value, "quota exceeded")

    low_disk: Harness = await start(min_free_bytes=2**62)
    async with low_disk.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPError) as refused:
            await sftp.open("/inbox/more.zip", "wb")
        assert_quota_error(refused.value, "free space")
    assert [e["limit"] for e in server.named("sftp.limit_exceeded") + low_disk.named("sftp.limit_exceeded")] == [
        "inbox_quota_bytes",
        "min_free_bytes",
    ]


async def test_server_files_are_never_listed_or_addressable(server: Harness) -> None:
    inbox = server.root("acme") / "inbox"
    (inbox / ".rosterd-state").write_bytes(b"internal")
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        remote = await sftp.open("/inbox/now.zip", "wb")  # a temp file exists on disk meanwhile
        await remote.write(b"n" * 1000)
        assert len(hidden_files(inbox)) == 2
        assert await sftp.listdir("/inbox") == []
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.stat("/inbox/.rosterd-state")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.open("/inbox/.rosterd-state", "wb")
        await remote.close()
        assert await sftp.listdir("/inbox") == ["now.zip"]


async def test_temp_files_left_by_a_crash_are_removed_at_start(start, tmp_path: Path) -> None:
    inbox = tmp_path / "tenants" / "acme" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / (TEMP_PREFIX + "deadbeef")).write_bytes(b"half")
    (inbox / "kept.zip").write_bytes(b"whole")

    server: Harness = await start()

    assert os.listdir(inbox) == ["kept.zip"]
    (orphan,) = server.named("upload.aborted")
    assert (orphan["tenant"], orphan["reason"]) == ("acme", "orphaned")


async def test_reopening_an_existing_file_without_truncating_is_refused(server: Harness) -> None:
    (server.root("acme") / "inbox" / "old.zip").write_bytes(b"o" * 100)
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.open("/inbox/old.zip", "ab")  # a resume would otherwise leave a zero-filled head
        with pytest.raises(asyncssh.SFTPError, match="already exists"):
            await sftp.open("/inbox/old.zip", "xb")
        async with sftp.open("/inbox/old.zip", "wb") as remote:  # a plain re-send replaces it
            await remote.write(b"new")
    assert (server.root("acme") / "inbox" / "old.zip").read_bytes() == b"new"
    assert [u.name for u in server.uploads] == ["old.zip"]


async def test_blocking_work_leaves_the_event_loop_free(server: Harness) -> None:
    """While one client uploads, another session's round trips stay quick."""
    async with server.connect("acme", ACME_PASSWORD) as conn:
        async with conn.start_sftp_client() as uploader, conn.start_sftp_client() as lister:

            async def upload() -> None:
                async with uploader.open("/inbox/load.zip", "wb") as remote:
                    for block in range(64):
                        await remote.write(os.urandom(256 * 1024), block * 256 * 1024)

            task = asyncio.create_task(upload())
            worst = 0.0
            while not task.done():
                begun = asyncio.get_running_loop().time()
                await lister.listdir("/")
                worst = max(worst, asyncio.get_running_loop().time() - begun)
            await task
    assert worst < 1.0
    assert [u.size for u in server.uploads] == [64 * 256 * 1024]


async def test_writes_in_any_order_and_size_make_the_exact_file(server: Harness) -> None:
    """Writes are gathered in memory while contiguous; out-of-order, overlapping and odd-sized ones must land
    exactly where the client put them."""
    rng = random.Random(7)
    expected = bytearray(rng.randbytes(3 * 1024 * 1024 + 12345))
    blocks = [(at, min(at + 40_000, len(expected))) for at in range(0, len(expected), 40_000)]
    rng.shuffle(blocks)
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/inbox/shuffled.zip", "wb") as remote:
            for start, end in blocks:
                await remote.write(bytes(expected[start:end]), start)
            patch = rng.randbytes(5000)  # a rewrite of bytes already sent
            await remote.write(patch, 1_000_000)
            expected[1_000_000:1_005_000] = patch
            assert (await remote.stat()).size == len(expected)  # fstat sees every write so far
    assert (server.root("acme") / "inbox" / "shuffled.zip").read_bytes() == expected
    assert [u.size for u in server.uploads] == [len(expected)]


async def test_only_zip_names_or_partial_names_may_be_uploaded(server: Harness) -> None:
    """A CSV or any other file would wait in the inbox forever, unanswered: it is refused at once."""
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.open("/inbox/users.csv", "wb")
        async with sftp.open("/inbox/ROSTER.ZIP", "wb") as remote:  # any letter case
            await remote.write(b"z")
        async with sftp.open("/inbox/next.zip.part", "wb") as remote:
            await remote.write(b"p")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.rename("/inbox/next.zip.part", "/inbox/next.csv")
        await sftp.rename("/inbox/next.zip.part", "/inbox/next.zip")
    assert [u.name for u in server.uploads] == ["ROSTER.ZIP", "next.zip"]
    refused = [(e["op"], e["reason"]) for e in server.named("sftp.operation_refused")]
    assert refused == [("open", "not_a_zip_name"), ("rename", "not_a_zip_name")]
    assert sorted(os.listdir(server.root("acme") / "inbox")) == ["ROSTER.ZIP", "next.zip"]


@needs_openssh
async def test_openssh_put_of_a_csv_fails(server: Harness) -> None:
    (server.workdir / "users.csv").write_text("sourcedId\n")
    result = await server.sftp("acme", ["put users.csv /inbox/users.csv"])
    assert result.returncode != 0 and "Permission denied" in result.output
    assert os.listdir(server.root("acme") / "inbox") == []


async def test_many_small_writes_make_the_exact_file(server: Harness) -> None:
    """A client writing in tiny pieces: gathered writes are flushed by count as well as by size."""
    pieces = [bytes([n % 251]) * 37 for n in range(3000)]
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/inbox/tiny.zip", "wb") as remote:
            offset = 0
            for piece in pieces:
                await remote.write(piece, offset)
                offset += len(piece)
    assert (server.root("acme") / "inbox" / "tiny.zip").read_bytes() == b"".join(pieces)


async def test_sessions_work_while_the_default_thread_pool_is_busy(server: Harness) -> None:
    """Intake hashes and moves files in the loop's default pool; SFTP file work runs in the listener's own."""
    (server.root("acme") / "results" / "latest.json").write_text("{}")
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        released = threading.Event()
        loop = asyncio.get_running_loop()
        busy = [loop.run_in_executor(None, released.wait, 30) for _ in range(64)]  # more than its threads
        try:

            async def session_work() -> None:
                assert sorted(await sftp.listdir("/")) == ["inbox", "results"]
                async with sftp.open("/results/latest.json", "rb") as receipt:
                    assert await receipt.read() == b"{}"
                async with sftp.open("/inbox/while-busy.zip", "wb") as remote:
                    await remote.write(b"b" * 3 * 1024 * 1024)
                await sftp.rename("/inbox/while-busy.zip", "/inbox/renamed.zip")

            await asyncio.wait_for(session_work(), 20)
        finally:
            released.set()
            await asyncio.gather(*busy)
    assert [u.name for u in server.uploads] == ["while-busy.zip"]


async def test_the_listener_s_threads_end_when_it_closes(start) -> None:
    server: Harness = await start()
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open("/inbox/x.zip", "wb") as remote:
            await remote.write(b"x")
        await sftp.listdir("/inbox")
    assert _listener_threads()  # both pools did work

    server.acceptor.close()
    await server.acceptor.wait_closed()
    await server.wait_for(lambda: not _listener_threads())


def _listener_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("sftp-interactive", "sftp-bulk"))]
