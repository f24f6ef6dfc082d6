"""Intake under faults, end to end: worker processes killed, a burst of uploads past the receipts kept, a
name as long as a file name may be, and the daemon itself killed with -9.

Worker processes are found as the daemon's children in /proc; one is known to be validating once polars has
started its threads in it (a thread named `polars-0`): an idle worker has none.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path

import pytest

from daemon.generator.generate import DistrictSpec, generate, write_zip

from .conftest import SAMPLES, RunningDaemon, Tenant

# Big enough that validating it takes seconds (a worker can be caught at it), small enough to make quickly.
DISTRICT = DistrictSpec(schools=300, students_per_school=300, teachers_per_school=20, enrollments_per_student=5)
DEADLINE = 120.0
WORKERS_GONE_WITHIN = 10.0


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("district") / "district.zip"
    write_zip(generate(DISTRICT), path, DISTRICT.version)
    return path


# -- processes ------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def running(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has ended; only its record is left


def children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None and int(fields[1]) == parent:
            found.append(int(entry))
    return found


def workers(daemon: RunningDaemon) -> list[int]:
    """The daemon's worker processes (spawned by multiprocessing; its resource tracker is not one)."""
    found = []
    for pid in children(daemon.proc.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command and b"resource_tracker" not in command:
            found.append(pid)
    return found


def validating(pid: int) -> bool:
    try:
        return any(Path(t, "comm").read_text().strip() == "polars-0" for t in Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False


def wait_for_validating_worker(daemon: RunningDaemon, exclude: set[int] = frozenset(), timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in workers(daemon):
            if pid not in exclude and validating(pid):
                return pid
        time.sleep(0.02)
    raise AssertionError(f"no worker began validating within {timeout}s:\n{daemon.diagnosis()}")


# -- receipts and records -------------------------------------------------------------------------------


def receipt_in_state(daemon: RunningDaemon, tenant: str, file: str, states: tuple[str, ...]) -> dict:
    """The receipt of `file` once it is in one of `states`, read on the host."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        for path in daemon.results(tenant).glob("*.u-*.json"):
            receipt = json.loads(path.read_text())  # renamed into place: never half written
            if receipt["file"] == file and receipt["state"] in states:
                return receipt
        time.sleep(0.1)
    raise AssertionError(f"no receipt of {file} in {states} within {DEADLINE}s:\n{daemon.diagnosis()}")


def recorded(daemon: RunningDaemon) -> list[sqlite3.Row]:
    db = sqlite3.connect(f"file:{daemon.state / 'rosterd.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT id, name, state, answered_at FROM uploads ORDER BY rowid").fetchall()
    finally:
        db.close()


def put(daemon: RunningDaemon, tenant: str, local: Path, remote_name: str) -> None:
    sent = daemon.sftp_batch(tenant, [f"put {local} inbox/{remote_name}"])
    assert sent.returncode == 0, sent.stderr


# -- the tests ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_killed_while_validating_is_replaced_and_the_upload_done_again(
    rosterd, tenants: dict[str, Tenant], district: Path
) -> None:
    daemon = rosterd(*tenants.values())
    put(daemon, "north", district, "district.zip")
    victim = wait_for_validating_worker(daemon)
    os.kill(victim, signal.SIGKILL)  # as the OOM killer would

    receipt = receipt_in_state(daemon, "north", "district.zip", ("accepted", "rejected", "failed"))
    assert receipt["state"] == "accepted", receipt
    died = daemon.wait_for_event("worker.died", pid=victim)
    assert died["level"] == "error" and died["signal"] == "SIGKILL" and died["upload_id"] == receipt["upload_id"]
    put(daemon, "south", SAMPLES / "valid-1.1-bulk.zip", "after.zip")  # the pool serves every tenant again
    assert daemon.wait_for_receipt("south", "after.zip")["state"] == "accepted"
    assert not daemon.events("upload.rejected")
    port = daemon.events("daemon.started")[0]["health_port"]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode().splitlines()
    assert "rosterd_worker_deaths_total 1.0" in metrics
    assert 'rosterd_not_ready{reason="worker_pool"} 0.0' in metrics  # replaced: ready again


@pytest.mark.slow
def test_an_upload_whose_worker_dies_twice_is_failed_and_may_be_sent_again(
    rosterd, tenants: dict[str, Tenant], district: Path
) -> None:
    daemon = rosterd(tenants["north"])
    put(daemon, "north", district, "district.zip")
    first = wait_for_validating_worker(daemon)
    os.kill(first, signal.SIGKILL)
    os.kill(wait_for_validating_worker(daemon, exclude={first}), signal.SIGKILL)  # the same upload, run again

    failed = receipt_in_state(daemon, "north", "district.zip", ("accepted", "rejected", "failed"))
    assert failed["state"] == "failed" and "validation" not in failed, failed
    assert failed["detail"].startswith("The worker process validating this upload died twice (killed by SIGKILL")
    assert "`[intake] worker_memory_bytes` = 8 GiB" in failed["detail"]
    assert "did nothing wrong" in failed["next"]
    assert len(daemon.events("worker.died", upload_id=failed["upload_id"])) == 2

    put(daemon, "north", district, "district-again.zip")  # the same bytes: tried again, not a duplicate
    again = receipt_in_state(daemon, "north", "district-again.zip", ("accepted", "rejected", "failed", "duplicate"))
    assert again["state"] == "accepted", again


def test_eighty_uploads_in_one_session_past_the_receipts_kept_all_end_answered(
    rosterd, tenants: dict[str, Tenant]
) -> None:
    """Every upload writes two receipts (received, then its verdict), each write prunes results/ to the newest
    five: eighty uploads in one OpenSSH session (sixteen times the receipts kept) make many writes and prunes
    at once."""
    daemon = rosterd(tenants["north"], settings={"intake": {"receipts_kept": 5}})
    names = [f"burst-{number:03}.zip" for number in range(80)]
    for name in names:
        (daemon.client_dir / name).write_bytes(f"not a zip, number {name}".encode())  # distinct: no duplicates
    sent = daemon.sftp_batch("north", [f"put {name} inbox/{name}" for name in names], timeout=180)
    assert sent.returncode == 0, sent.stderr

    deadline = time.monotonic() + DEADLINE
    while True:
        rows = recorded(daemon)
        if len(rows) == len(names) and all(row["answered_at"] for row in rows):
            break
        unanswered = [dict(row) for row in rows if not row["answered_at"]]
        assert time.monotonic() < deadline, f"{len(rows)} recorded; unanswered: {unanswered[:5]}"
        time.sleep(0.2)
    assert sorted(row["name"] for row in rows) == names and {row["state"] for row in rows} == {"rejected"}
    kept = [json.loads(p.read_text()) for p in daemon.results("north").glob("*.json") if p.name != "latest.json"]
    assert len(kept) == 5 and len({r["upload_id"] for r in kept}) == 5
    assert all(r["state"] == "rejected" for r in kept)
    assert not daemon.events("upload.failed") and "Task exception was never retrieved" not in daemon.output()


def test_a_name_as_long_as_a_file_name_may_be_gets_its_receipt(rosterd, tenants: dict[str, Tenant]) -> None:
    daemon = rosterd(tenants["north"])
    name = "roster-" + "x" * 239 + ".zip"  # 250 bytes: fits a file name, not with an upload id in front
    put(daemon, "north", SAMPLES / "valid-1.1-bulk.zip", name)
    receipt = daemon.wait_for_receipt("north", name)
    assert receipt["state"] == "accepted" and receipt["file"] == name
    assert list(daemon.inbox("north").iterdir()) == []  # taken: it no longer counts against the quota
    assert not daemon.events("upload.not_taken") and not daemon.events("upload.failed")


def test_worker_processes_end_when_the_daemon_is_killed(rosterd, tenants: dict[str, Tenant]) -> None:
    """The workers are stopped (SIGSTOP) before the daemon is killed, so none can end on its own, as one in
    the middle of a long validation would not: only the kernel's parent-death signal ends them."""
    daemon = rosterd(tenants["north"])
    put(daemon, "north", SAMPLES / "valid-1.1-bulk.zip", "day1.zip")
    assert daemon.wait_for_receipt("north", "day1.zip")["state"] == "accepted"
    stopped = workers(daemon)
    assert stopped, "no worker process to watch"
    left = children(daemon.proc.pid)  # the workers, and multiprocessing's resource tracker
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)

    deadline = time.monotonic() + WORKERS_GONE_WITHIN
    while (still := [pid for pid in left if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in still:  # leave nothing behind, whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert still == [], f"processes of the killed daemon still running after {WORKERS_GONE_WITHIN}s: {still}"
