"""Readiness checks: each reason intake could stall, found by real means (a locked database, a disk limit,
the process's own file descriptors), and /readyz and /metrics telling it."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp

from daemon.health import HealthServer, Metrics
from daemon.readiness import Readiness, disk_check, fd_check, write_check
from daemon.store import Store

ROSTERD = Path(sys.executable).parent / "rosterd"


async def test_blockers_follow_the_checks_and_changes_are_reported() -> None:
    broken = {"database": "locked"}
    told: list[dict] = []
    readiness = Readiness({"database": lambda: broken["database"], "state_disk": lambda: None}, on_change=told.append)
    assert await readiness.refresh() == {"database": "locked"}
    await readiness.refresh()  # the same verdict again is not news
    broken["database"] = "disk I/O error"
    assert await readiness.refresh() == readiness.blockers == {"database": "disk I/O error"}  # nor a new detail
    broken["database"] = None
    assert await readiness.refresh() == {}
    assert told == [{"database": "locked"}, {}]


async def test_a_check_that_hangs_fails_and_is_not_started_twice() -> None:
    gate, calls = threading.Event(), []

    def hangs() -> None:
        calls.append(1)
        gate.wait(30)

    readiness = Readiness({"database": hangs}, timeout=0.2)
    try:
        first = await readiness.refresh()
        second = await readiness.refresh()
    finally:
        gate.set()
    assert first == second == {"database": "no answer within 0.2 s"}
    assert calls == [1]


async def test_a_check_that_raises_is_failing_with_its_error() -> None:
    def raises() -> None:
        raise OSError("Input/output error")

    blockers = await Readiness({"state_disk": raises}).refresh()
    assert blockers == {"state_disk": "check failed: OSError: Input/output error"}


def test_the_database_check_fails_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    store = Store(tmp_path / "rosterd.db")
    check = write_check(store.heartbeat)
    assert check() is None
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], isolation_level=None); "
         "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()", str(tmp_path / "rosterd.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        store._db.execute("PRAGMA busy_timeout = 200")  # the default five seconds would only make this slower
        detail = check()
    finally:
        holder.communicate("", timeout=30)
    assert detail is not None and detail.startswith("the database takes no writes") and "locked" in detail
    assert check() is None
    store.close()


def test_the_disk_check_compares_free_space_with_min_free_bytes(tmp_path: Path) -> None:
    vfs = os.statvfs(tmp_path)
    free = vfs.f_bavail * vfs.f_frsize
    assert disk_check(tmp_path, 0)() is None
    detail = disk_check(tmp_path, free * 1000 + 1)()
    assert detail is not None and "under min_free_bytes" in detail


def test_the_descriptor_check_counts_this_process_open_files(tmp_path: Path) -> None:
    assert fd_check(share=1.0)() is None  # never more open files than the limit
    detail = fd_check(share=0.0)()  # any open file is over a share of nothing
    assert detail is not None and "open files of a limit of" in detail


async def test_readyz_and_metrics_tell_the_failing_checks(tmp_path: Path) -> None:
    store = Store(tmp_path / "rosterd.db")
    blockers = {"database": "the database takes no writes: disk I/O error"}
    server = HealthServer("127.0.0.1", 0, Metrics(store, blockers=lambda: blockers), ready=lambda: True)
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as answer:
                assert answer.status == 503
                assert await answer.json() == {"status": "not_ready", "reasons": blockers}
            async with http.get(f"http://127.0.0.1:{port}/metrics") as answer:
                text = await answer.text()
            blockers.clear()
            async with http.get(f"http://127.0.0.1:{port}/readyz") as answer:
                assert answer.status == 200
    finally:
        await server.stop()
        store.close()
    lines = set(text.splitlines())
    assert {"rosterd_ready 0.0", 'rosterd_not_ready{reason="database"} 1.0',
            'rosterd_not_ready{reason="worker_pool"} 0.0'} <= lines  # fmt: skip


def test_status_lists_uploads_left_in_a_non_final_state(tmp_path: Path) -> None:
    config = tmp_path / "rosterd.toml"
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEsOcdcsTLHRGqwVJ5l0t7bkyDqDH0K0lFxj3WAE3UPH test"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "var"}"\n\n[[tenants]]\nname = "north"\n'
                      f'authorized_keys = ["{key}"]\n')  # fmt: skip
    store = Store(tmp_path / "var" / "rosterd.db")
    store.add("u-1", "north", "day1.zip", "a" * 64, 10, "/var/uploads/u-1")
    store.close()

    def status(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROSTERD), "status", "--config", str(config), *args], capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    now = json.loads(status("--format", "json").stdout)
    assert now[0]["stuck"] == []  # received a moment ago: not stuck under the default 15 minutes
    (stuck,) = json.loads(status("--format", "json", "--stuck-minutes", "0").stdout)[0]["stuck"]
    assert stuck["upload_id"] == "u-1" and stuck["state"] == "received" and stuck["file"] == "day1.zip"
    assert "STUCK         u-1 (day1.zip) received since" in status("--stuck-minutes", "0").stdout
