"""Uploads end to end: an SIS puts a zip into its inbox and reads the verdict back from results/.

Every test drives the real daemon with a real client (OpenSSH `sftp`, or asyncssh with a password) or,
for files that arrive by other means, with a plain copy on the host.

One daemon serves the whole module (its tests go to one xdist worker: `make test` runs --dist loadgroup), as
starting one costs seconds of CPU. Each test has a tenant of its own on it, named after the test, and a client
folder of its own, so none sees another's uploads, receipts, quarantine or duplicates (a duplicate is one of
the same tenant's uploads).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from copy import copy
from pathlib import Path

import pytest

from .conftest import SAMPLES, RunningDaemon, Tenant, copy_sample, make_tenant, poll_receipt, require_openssh

pytestmark = pytest.mark.xdist_group("uploads")

# each test's own tenant on the module's daemon
KEYED, PASSWORDED, REJECTED, COPIED, TWICE, UNDONE, KILLED = (
    "keyed", "passworded", "rejected", "copied", "twice", "undone", "killed",
)  # fmt: skip

ROWS = {  # what the generated district in samples/ holds (samples/README.md)
    "academicSessions.csv": 3,
    "classes.csv": 36,
    "courses.csv": 15,
    "demographics.csv": 40,
    "enrollments.csv": 196,
    "orgs.csv": 3,
    "users.csv": 46,
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows_of(receipt: dict) -> dict[str, int]:
    return {name: counts["rows"] for name, counts in receipt["validation"]["files"].items()}


@pytest.fixture(scope="module")
def uploaders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tenant]:
    require_openssh()
    folder = tmp_path_factory.mktemp("uploaders")
    return {name: make_tenant(folder, name) for name in (KEYED, PASSWORDED, REJECTED, COPIED, TWICE, UNDONE, KILLED)}


@pytest.fixture(scope="module")
def module_daemon(
    tmp_path_factory: pytest.TempPathFactory, host_keys: Path, uploaders: dict[str, Tenant]
) -> Iterator[RunningDaemon]:
    running = RunningDaemon(tmp_path_factory.mktemp("uploads") / "daemon", uploaders.values(), host_keys)
    try:
        yield running.start()
    finally:
        running.close()


@pytest.fixture
def daemon(module_daemon: RunningDaemon, tmp_path: Path) -> RunningDaemon:
    """The module's daemon, still running, with this test's own client folder (the SIS's working folder)."""
    assert module_daemon.proc is not None and module_daemon.proc.poll() is None, (
        f"the module's daemon has exited:\n{module_daemon.output()[-4000:]}"
    )
    view = copy(module_daemon)  # the same process, log and clients list
    view.client_dir = tmp_path / "client"
    view.client_dir.mkdir()
    return view


def put(daemon: RunningDaemon, tenant: str, local: str, remote: str) -> None:
    got = daemon.sftp_batch(tenant, [f"put {local} {remote}"])
    assert got.returncode == 0, got.stdout + got.stderr


def test_openssh_key_upload_is_accepted_and_both_receipts_read_back(daemon: RunningDaemon) -> None:
    sample = copy_sample("valid-1.1-bulk.zip", daemon.client_dir / "day1.zip")
    put(daemon, KEYED, "day1.zip", "inbox/day1.zip")
    receipt = daemon.wait_for_receipt(KEYED, "day1.zip")

    assert receipt["state"] == "accepted" and receipt["tenant"] == KEYED
    assert receipt["sha256"] == sha256(sample) and receipt["bytes"] == sample.stat().st_size
    assert receipt["validation"]["verdict"] == "accepted" and receipt["validation"]["version"] == "1.1"
    assert rows_of(receipt) == ROWS
    assert all(counts["dropped"] == 0 for counts in receipt["validation"]["files"].values())

    stem = f"day1.zip.{receipt['upload_id']}"
    got = daemon.sftp_batch(KEYED, [f"get results/{stem}.json", f"get results/{stem}.txt", "ls -1 results"])
    assert got.returncode == 0, got.stderr
    assert json.loads((daemon.client_dir / f"{stem}.json").read_text()) == receipt
    text = (daemon.client_dir / f"{stem}.txt").read_text()
    assert text.startswith(f"Upload {receipt['upload_id']}: ACCEPTED")
    for name, rows in ROWS.items():  # file, mode, rows: with nothing dropped there is no dropped column
        assert re.search(rf"^\s+{re.escape(name)}\s+bulk\s+{rows}$", text, re.MULTILINE), text
    assert "dropped" not in text.lower() and "left out" not in text
    assert f"{stem}.json" in got.stdout and f"{stem}.txt" in got.stdout

    received = daemon.wait_for_event("upload.accepted", upload_id=receipt["upload_id"])
    assert received["tenant"] == KEYED and received["sha256"] == receipt["sha256"]
    assert daemon.events("upload.received", upload_id=receipt["upload_id"], file="day1.zip")
    assert daemon.events("sftp.login_succeeded", tenant=KEYED, method="publickey")
    assert list(daemon.inbox(KEYED).iterdir()) == []


async def test_password_login_with_asyncssh_uploads_a_1_2_package(
    daemon: RunningDaemon, uploaders: dict[str, Tenant]
) -> None:
    async with daemon.connect(PASSWORDED, uploaders[PASSWORDED].password) as conn, conn.start_sftp_client() as sftp:
        await sftp.put(str(SAMPLES / "valid-1.2-bulk.zip"), "inbox/roster-1.2.zip")
        receipt = await poll_receipt(sftp, "roster-1.2.zip")
        async with sftp.open(f"results/roster-1.2.zip.{receipt['upload_id']}.json", "rb") as handle:
            by_name = json.loads(await handle.read())
        async with sftp.open(f"results/roster-1.2.zip.{receipt['upload_id']}.txt") as handle:
            text = await handle.read()

    assert receipt["state"] == "accepted" and receipt["tenant"] == PASSWORDED
    assert receipt["validation"]["version"] == "1.2"
    assert rows_of(receipt) == {**ROWS, "roles.csv": 46}
    assert by_name == receipt
    assert "ACCEPTED" in text and "OneRoster 1.2" in text
    assert daemon.events("sftp.login_succeeded", tenant=PASSWORDED, method="password")


def test_a_rejected_upload_lists_its_findings_and_is_kept_in_quarantine(daemon: RunningDaemon) -> None:
    sample = copy_sample("broken-school-not-a-school.zip", daemon.client_dir / "bad.zip")
    put(daemon, REJECTED, "bad.zip", "inbox/bad.zip")
    receipt = daemon.wait_for_receipt(REJECTED, "bad.zip")

    assert receipt["state"] == "rejected" and receipt["validation"]["verdict"] == "rejected"
    codes = receipt["validation"]["counts_by_code"]
    assert {"reference.target_type_mismatch", "reference.target_dropped", "file.too_many_dropped_rows"} <= set(codes)
    mismatch = next(f for f in receipt["validation"]["findings"] if f["code"] == "reference.target_type_mismatch")
    assert (mismatch["file"], mismatch["row"], mismatch["column"], mismatch["value"]) == (
        "classes.csv", 2, "schoolSourcedId", "dst-0001",
    )  # fmt: skip

    stem = f"bad.zip.{receipt['upload_id']}"
    got = daemon.sftp_batch(REJECTED, [f"get results/{stem}.txt"])
    assert got.returncode == 0, got.stderr
    text = (daemon.client_dir / f"{stem}.txt").read_text()
    assert text.startswith(f"Upload {receipt['upload_id']}: REJECTED")
    assert "reference.target_type_mismatch" in text and "classes.csv:2 schoolSourcedId" in text

    (kept,) = daemon.quarantine(REJECTED).iterdir()
    assert kept.name == f"{receipt['upload_id']}.zip"  # the uploader's name is in the store, not on disk
    assert kept.read_bytes() == sample.read_bytes()
    assert daemon.events("upload.rejected", upload_id=receipt["upload_id"], tenant=REJECTED)
    assert list(daemon.inbox(REJECTED).iterdir()) == []


def test_a_zip_copied_into_the_inbox_on_the_host_is_taken(daemon: RunningDaemon) -> None:
    copy_sample("valid-1.1-bulk.zip", daemon.inbox(COPIED) / "copied.zip")
    receipt = daemon.wait_for_receipt(COPIED, "copied.zip")

    assert receipt["state"] == "accepted" and rows_of(receipt) == ROWS
    assert daemon.events("upload.received", tenant=COPIED, file="copied.zip")
    assert list(daemon.inbox(COPIED).iterdir()) == []


def test_the_same_zip_sent_twice_is_answered_as_a_duplicate(daemon: RunningDaemon) -> None:
    copy_sample("valid-1.1-bulk.zip", daemon.client_dir / "monday.zip")
    copy_sample("valid-1.1-bulk.zip", daemon.client_dir / "tuesday.zip")  # same bytes, another name
    put(daemon, TWICE, "monday.zip", "inbox/monday.zip")
    first = daemon.wait_for_receipt(TWICE, "monday.zip")
    put(daemon, TWICE, "tuesday.zip", "inbox/tuesday.zip")
    second = daemon.wait_for_receipt(TWICE, "tuesday.zip")

    assert first["state"] == "accepted"
    assert second["state"] == "duplicate" and second["upload_id"] != first["upload_id"]
    assert second["sha256"] == first["sha256"] and "validation" not in second
    assert first["upload_id"] in second.get("detail", "")
    assert daemon.wait_for_receipt(TWICE, receipt=f"monday.zip.{first['upload_id']}.json") == first
    assert daemon.events("upload.duplicate", upload_id=second["upload_id"], tenant=TWICE)
    uploads = daemon.state / "uploads" / TWICE
    deadline = time.monotonic() + 10
    while len(list(uploads.iterdir())) > 1 and time.monotonic() < deadline:  # dropped just after its receipt
        time.sleep(0.05)
    (kept,) = uploads.iterdir()  # the duplicate's bytes were not kept
    assert first["upload_id"] in kept.name


def test_an_older_export_sent_again_takes_the_roster_back(daemon: RunningDaemon) -> None:
    """Monday's export, then Tuesday's (one teacher's e-mail changed), then Monday's again to undo Tuesday:
    the third is validated and diffed like any upload and changes the e-mail back. Monday's bytes once more
    are the current roster's: a duplicate."""
    import polars as pl

    from daemon.generator.generate import DistrictSpec, generate, write_zip

    spec = DistrictSpec(schools=1, students_per_school=20, teachers_per_school=2, enrollments_per_student=2)
    monday = generate(spec)
    users = monday["users"]
    teacher = users.filter(pl.col("role") == "teacher").get_column("sourcedId")[0]
    old_email = users.filter(pl.col("sourcedId") == teacher).get_column("email")[0]
    moved = pl.when(pl.col("sourcedId") == teacher).then(pl.lit("moved@new-domain.example")).otherwise(pl.col("email"))
    write_zip(monday, daemon.client_dir / "monday.zip", spec.version)
    write_zip({**monday, "users": users.with_columns(moved.alias("email"))}, daemon.client_dir / "tuesday.zip",
              spec.version)  # fmt: skip

    sent: dict[str, dict] = {}
    for local, remote in (("monday", "monday"), ("tuesday", "tuesday"), ("monday", "undo"), ("monday", "undo-again")):
        put(daemon, UNDONE, f"{local}.zip", f"inbox/{remote}.zip")
        sent[remote] = daemon.wait_for_receipt(UNDONE, f"{remote}.zip")

    undo = sent["undo"]
    assert [sent[name]["state"] for name in ("monday", "tuesday", "undo")] == ["accepted"] * 3
    assert undo["changes"]["against_upload_id"] == sent["tuesday"]["upload_id"]
    changed = {entity: counts for entity, counts in undo["changes"]["counts"].items() if any(counts.values())}
    assert changed == {"users": {"added": 0, "updated": 1, "deleted": 0}}
    assert undo["changes"]["samples"]["users"]["updated"] == [{"sourcedId": teacher, "changed": [
        {"field": "email", "old": "moved@new-domain.example", "new": old_email}]}]  # fmt: skip
    monday_id = sent["monday"]["upload_id"]
    assert undo["matches_earlier_upload"] == {"upload_id": monday_id, "file": "monday.zip",
                                              "received_at": sent["monday"]["received_at"]}  # fmt: skip
    stem = f"undo.zip.{undo['upload_id']}"
    got = daemon.sftp_batch(UNDONE, [f"get results/{stem}.txt"])
    assert got.returncode == 0, got.stderr
    assert f"  same as   {monday_id} (monday.zip, received {sent['monday']['received_at']})" in (
        daemon.client_dir / f"{stem}.txt").read_text()  # fmt: skip

    again = sent["undo-again"]
    assert again["state"] == "duplicate" and undo["upload_id"] in again["detail"] and "validation" not in again
    assert daemon.events("upload.duplicate", upload_id=again["upload_id"], tenant=UNDONE)


def test_a_client_killed_mid_upload_leaves_nothing_to_ingest(daemon: RunningDaemon) -> None:
    with open(daemon.client_dir / "huge.zip", "wb") as out:
        out.truncate(300 * 1024**2)
    client = daemon.start_sftp(KILLED, ["put huge.zip inbox/huge.zip"])
    inbox = daemon.inbox(KILLED)

    deadline = time.monotonic() + 20
    while not any(p.name.startswith(".rosterd-tmp-") and p.stat().st_size > 0 for p in _entries(inbox)):
        assert client.poll() is None, f"sftp ended ({client.returncode}) before the upload was seen growing"
        assert time.monotonic() < deadline, "no growing .rosterd-tmp-* file in the inbox"
        time.sleep(0.005)
    os.killpg(client.pid, signal.SIGKILL)  # sftp and its ssh child at once: the SIS machine went away
    client.wait(10)

    aborted = daemon.wait_for_event("upload.aborted", tenant=KILLED, name="huge.zip")
    assert aborted["reason"] == "client_gone" and 0 < aborted["bytes"] < 300 * 1024**2
    time.sleep(2.5)  # a full rescan period: nothing may turn up late
    assert list(inbox.iterdir()) == []
    assert list(daemon.results(KILLED).iterdir()) == []
    assert not daemon.events("upload.received", tenant=KILLED)

    copy_sample("valid-1.1-bulk.zip", daemon.client_dir / "huge.zip")  # the retry goes through
    put(daemon, KILLED, "huge.zip", "inbox/huge.zip")
    assert daemon.wait_for_receipt(KILLED, "huge.zip")["state"] == "accepted"


def _entries(folder: Path) -> Iterator[Path]:
    """The folder's entries that still exist by the time they are looked at (uploads come and go)."""
    for entry in folder.iterdir():
        try:
            entry.stat()
        except FileNotFoundError:
            continue
        yield entry
