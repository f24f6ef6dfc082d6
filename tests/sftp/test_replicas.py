"""Two real SFTP servers as two replicas sharing one PostgreSQL store: a client meets one server whichever it
reaches. The same host keys (the first replica's), failures on both counted together, and a ban decided on one
refusing the address on the other within a few seconds. The rules come from README's "Security" section:
a bad password scores 1, and the threshold is reached on the sum.
"""

from __future__ import annotations

import asyncio
import shutil
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncssh
import pytest

from daemon.sftp import ServerOptions, TenantAccess, start_server
from daemon.sftp.defender import DefenderOptions
from daemon.sftp.hostkeys import load_or_create
from daemon.store.postgres import PostgresStore
from tests.postgres import Database

from .conftest import ACME_PASSWORD, ClientKey, Harness

IP = "127.0.0.1"
SYNC_SECONDS = 0.2  # the defender's trading interval here (2 s by default)
StartReplicas = Callable[..., "asyncio.Future[tuple[Harness, Harness]]"]


@pytest.fixture
async def replicas(
    tmp_path: Path, keys: dict[str, ClientKey], acme_password_hash: str, postgres_database: Database
) -> AsyncIterator[StartReplicas]:
    """Start replicas `a` and `b`, each with its own store handle, host key folder and tenant roots."""
    stores: list[PostgresStore] = []
    harnesses: list[Harness] = []
    workdir = tmp_path / "client"
    workdir.mkdir()

    async def _start(key_dirs: tuple[Path, Path], threshold: int) -> tuple[Harness, Harness]:
        for name, key_dir in zip(("a", "b"), key_dirs, strict=True):
            store = PostgresStore(postgres_database.url, postgres_database.password, {})
            stores.append(store)
            store.replica = name
            tenant = TenantAccess(name="acme", root=tmp_path / name / "acme", password_hash=acme_password_hash)
            options = ServerOptions(
                host=IP, port=0, host_key_dir=key_dir, tenants={"acme": tenant}, min_free_bytes=1024**2,
                defender=DefenderOptions(threshold=threshold, sync_seconds=SYNC_SECONDS),
                defender_file=tmp_path / name / "defender.json", shared_state=store,
            )  # fmt: skip
            harness = Harness(options, keys, workdir)
            harness.acceptor = await start_server(
                options, harness.uploads.append, lambda event, fields, h=harness: h.events.append((event, fields))
            )
            harnesses.append(harness)
        return harnesses[0], harnesses[1]

    yield _start
    for harness in harnesses:
        harness.acceptor.close()
        await harness.acceptor.wait_closed()
    for store in stores:
        store.close()


@pytest.fixture
def key_dirs(tmp_path: Path, host_key_dir: Path) -> tuple[Path, Path]:
    """Two folders holding the same keys, copied from the run's (RSA-3072 takes a moment to make)."""
    load_or_create(host_key_dir)
    return shutil.copytree(host_key_dir, tmp_path / "keys-a"), shutil.copytree(host_key_dir, tmp_path / "keys-b")


async def presented_keys(server: Harness) -> list[str]:
    """The fingerprints a client sees, one per host key algorithm the server offers."""
    prints = []
    for algorithm in ("ssh-ed25519", "rsa-sha2-256"):
        key = await asyncssh.get_server_host_key(IP, server.port, server_host_key_algs=[algorithm])
        prints.append(f"{algorithm} {key.get_fingerprint('sha256')}")
    return prints


async def fail_passwords(server: Harness, times: int) -> None:
    """`times` connections with a bad password at once (each waits out the 1 s pause after a failure)."""

    async def once() -> None:
        with pytest.raises(asyncssh.PermissionDenied):
            async with server.connect("acme", "not the password"):
                pass

    await asyncio.gather(*(once() for _ in range(times)))


async def refused(server: Harness) -> bool:
    """Whether the right password is turned away (a banned address is dropped before it can log in)."""
    try:
        async with server.connect("acme", ACME_PASSWORD):
            return False
    except (asyncssh.DisconnectError, ConnectionError):
        return True


async def until(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.05)


async def test_both_replicas_present_the_first_replicas_host_keys(replicas: StartReplicas, tmp_path: Path) -> None:
    own_dirs = (tmp_path / "fresh-a", tmp_path / "fresh-b")  # each would make keys of its own
    a, b = await replicas(own_dirs, threshold=15)

    assert len(a.named("hostkey.generated")) == 2 and a.named("hostkey.adopted") == []
    assert b.named("hostkey.generated") == [] and len(b.named("hostkey.adopted")) == 2
    (a_started,), (b_started,) = a.named("sftp.server_started"), b.named("sftp.server_started")
    assert a_started["host_keys"] == b_started["host_keys"]
    assert await presented_keys(a) == await presented_keys(b)
    for name in ("ssh_host_ed25519_key", "ssh_host_rsa_key"):  # b's files now hold a's keys, for its next start
        a_file, b_file = own_dirs[0] / name, own_dirs[1] / name
        assert stat.S_IMODE(b_file.stat().st_mode) == 0o600
        assert asyncssh.read_private_key(b_file).public_data == asyncssh.read_private_key(a_file).public_data
        assert (own_dirs[1] / f"{name}.pub").read_text() == (own_dirs[0] / f"{name}.pub").read_text()


async def test_failures_on_both_replicas_add_up_to_a_ban_on_both(replicas: StartReplicas, key_dirs) -> None:
    a, b = await replicas(key_dirs, threshold=5)
    await fail_passwords(a, 3)
    assert a.acceptor.banned_until(IP) is None  # 3 < 5
    await fail_passwords(b, 2)  # 3 + 2 = 5: banned on both, whichever replica counts the sum first

    await until(lambda: a.acceptor.banned_until(IP) is not None and b.acceptor.banned_until(IP) is not None)
    assert await refused(a) and await refused(b)
    assert a.named("sftp.login_succeeded") == b.named("sftp.login_succeeded") == []
    assert not a.options.defender_file.exists() and not b.options.defender_file.exists()  # bans live in the store


async def test_a_ban_decided_on_one_replica_refuses_the_address_on_the_other(replicas: StartReplicas,
                                                                           key_dirs) -> None:  # fmt: skip
    a, b = await replicas(key_dirs, threshold=3)
    await fail_passwords(a, 3)
    (banned,) = a.named("sftp.ip_banned")
    assert (banned["remote_ip"], banned["ban_count"]) == (IP, 1)

    await until(lambda: b.acceptor.banned_until(IP) is not None)

    assert b.acceptor.banned_until(IP) == a.acceptor.banned_until(IP)
    assert await refused(b)
    assert b.named("sftp.connection_refused")[0]["reason"] == "banned"
    assert b.named("sftp.ip_banned") == []  # a decided it; b only applies it
