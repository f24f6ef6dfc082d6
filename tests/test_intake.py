"""Intake with real files, the real watcher and a real process pool: arrivals, receipts, duplicates, resume.

The stages are wired as daemon/app.py wires them: intake hands each upload to the Processor
(daemon/snapshots/process.py), and both answer through the receipts writer (daemon/receipts/writer.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest

from daemon.intake import MAX_CRASHES, NAME_SEPARATOR, Intake, IntakeOptions, KeptFiles, TenantPaths
from daemon.intake.workers import Death, WorkerDied, WorkerPool
from daemon.objects import LocalStorage
from daemon.objects.mirror import Mirror
from daemon.objects.s3 import S3Storage
from daemon.receipts import Receipts
from daemon.sftp import UploadReceived
from daemon.snapshots import retention
from daemon.snapshots.job import TenantRules
from daemon.snapshots.process import INTERNAL_ERROR, ProcessOptions, Processor
from daemon.store import DeliveryState, State, Store

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(scope="module")
def pool():
    workers = WorkerPool(2)
    yield workers
    workers.terminate()


class Harness:
    def __init__(self, root: Path, pool: WorkerPool) -> None:
        self.root = root
        self.pool = pool
        self.events: list[tuple[str, dict]] = []
        self.tenants = {
            name: TenantPaths(name, root / "tenants" / name / "inbox", root / "tenants" / name / "results")
            for name in ("north", "south")
        }
        self.store = Store(root / "state" / "rosterd.db")
        self.configure(IntakeOptions(state_dir=root / "state", settle_seconds=0.2, rescan_seconds=0.5))

    def log(self, event: str, **fields) -> None:
        self.events.append((event, fields))

    def configure(self, options: IntakeOptions, snapshots_kept: int = 30, receipts_kept: int = 100) -> None:
        """Receipts, the Processor and intake, wired as daemon/app.py wires them (before `start`)."""
        state = self.root / "state"
        self.writer = Receipts(self.store, {name: t.results for name, t in self.tenants.items()}, receipts_kept)
        rules = {name: TenantRules() for name in self.tenants}  # the default validation options and thresholds
        self.processor = Processor(rules, self.store, self.pool, ProcessOptions(state, snapshots_kept), self.log,
                                   self.writer.answer, KeptFiles(state))  # fmt: skip
        self.intake = Intake(self.tenants, self.store, options, self.log, self.processor, self.writer.answer)

    async def start(self) -> None:
        await self.writer.prepare()
        await self.processor.prepare()
        await self.intake.start()

    def receipts(self, tenant: str) -> list[dict]:
        found = sorted(self.tenants[tenant].results.glob("*.json"))
        return [json.loads(p.read_text()) for p in found if p.name != "latest.json"]

    async def wait_for_receipts(self, tenant: str, count: int, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [r for r in self.receipts(tenant) if r["state"] in ("accepted", "rejected", "duplicate")]
            if len(done) >= count:
                return done
            await asyncio.sleep(0.1)
        raise AssertionError(f"{tenant}: {len(self.receipts(tenant))} receipts, wanted {count}; {self.events}")


@pytest.fixture
async def harness(tmp_path: Path, pool):
    h = Harness(tmp_path, pool)
    yield h
    await h.intake.stop()
    h.store.close()


def received(tenant: str, path: Path, session_id: str = "5e55i0n0000000id") -> UploadReceived:
    """What the SFTP server reports of an upload it completed."""
    return UploadReceived(tenant=tenant, path=path, name=path.name, size=path.stat().st_size, remote_ip="192.0.2.7",
                          session_id=session_id, elapsed_ms=1)  # fmt: skip


async def eventually(condition, timeout: float = 10) -> None:
    """Wait for `condition()` (a step that follows the receipt, such as dropping a duplicate's bytes)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


def copy_slowly(source: Path, target: Path) -> None:
    """Like cp: the file appears at once and grows; the settle period must wait for it."""
    data = source.read_bytes()
    with open(target, "wb") as out:
        for i in range(0, len(data), 1024):
            out.write(data[i : i + 1024])
            out.flush()
            time.sleep(0.002)


async def test_a_copied_zip_is_validated_and_answered_with_a_receipt(harness: Harness) -> None:
    # README's settle time (5 s) here, not the harness's 0.2 s: a copy stalled longer than that on a busy
    # machine would be taken half-written.
    harness.configure(dataclasses.replace(harness.intake.options, settle_seconds=5))
    await harness.start()
    await asyncio.to_thread(copy_slowly, SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / "day1.zip")
    (receipt,) = await harness.wait_for_receipts("north", 1)
    assert receipt["state"] == "accepted" and receipt["file"] == "day1.zip"
    assert receipt["validation"]["files"]["users.csv"]["rows"] == 46
    assert list(harness.tenants["north"].inbox.iterdir()) == []  # taken out of the inbox
    latest = json.loads((harness.tenants["north"].results / "latest.json").read_text())
    assert latest["upload_id"] == receipt["upload_id"]
    text = (harness.tenants["north"].results / f"day1.zip.{receipt['upload_id']}.txt").read_text()
    assert "ACCEPTED" in text
    assert [s for s, _, _ in harness.store.history(receipt["upload_id"])] == ["received", "validating", "accepted"]


async def test_a_rejected_zip_is_quarantined_with_its_findings(harness: Harness) -> None:
    await harness.start()
    shutil.copy(SAMPLES / "broken-school-not-a-school.zip", harness.tenants["south"].inbox / "bad.zip")
    (receipt,) = await harness.wait_for_receipts("south", 1)
    assert receipt["state"] == "rejected"
    assert "reference.target_type_mismatch" in receipt["validation"]["counts_by_code"]
    upload = harness.store.get(receipt["upload_id"])
    assert "quarantine" in upload.path and Path(upload.path).exists()
    assert harness.receipts("north") == []  # the other tenant sees nothing


async def test_the_same_zip_twice_is_a_duplicate(harness: Harness) -> None:
    await harness.start()
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / "a.zip")
    await harness.wait_for_receipts("north", 1)
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / "b.zip")
    receipts = await harness.wait_for_receipts("north", 2)
    states = {r["file"]: r["state"] for r in receipts}
    assert states == {"a.zip": "accepted", "b.zip": "duplicate"}


async def test_hidden_partial_and_non_zip_files_are_left_alone(harness: Harness) -> None:
    inbox = harness.tenants["north"].inbox
    await harness.start()
    for name in (".rosterd-tmp-1", "x.zip.part", "notes.txt", ".hidden.zip"):
        (inbox / name).write_bytes(b"data")
    await asyncio.sleep(1.5)  # several rescans
    assert sorted(p.name for p in inbox.iterdir()) == [".hidden.zip", ".rosterd-tmp-1", "notes.txt", "x.zip.part"]
    assert harness.receipts("north") == []


async def test_a_file_left_while_the_daemon_was_down_is_taken_at_start(harness: Harness) -> None:
    harness.tenants["north"].inbox.mkdir(parents=True)
    shutil.copy(SAMPLES / "valid-1.2-bulk.zip", harness.tenants["north"].inbox / "weekend.zip")
    await harness.start()
    (receipt,) = await harness.wait_for_receipts("north", 1)
    assert receipt["state"] == "accepted" and receipt["validation"]["version"] == "1.2"


async def test_a_recovered_file_that_was_sent_again_meanwhile_is_a_duplicate_of_that_copy(harness: Harness) -> None:
    """A replica died between moving a file out of the inbox and recording it; the SIS, never told `received`,
    sent the file again, and another replica recorded that copy. The first copy, found at the restart, must
    not be processed after the newer uploads (it would take the roster back): it is a duplicate of the copy."""
    uploads = harness.root / "state" / "uploads" / "north"
    uploads.mkdir(parents=True)
    found = uploads / f"u-20260101T000000Z-aaaaaa{NAME_SEPARATOR}day1.zip"
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", found)
    an_hour_ago = time.time() - 3600
    os.utime(found, (an_hour_ago, an_hour_ago))  # it arrived before the copy was recorded
    copy = uploads / "u-20260101T000001Z-bbbbbb.zip"
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", copy)
    sha = hashlib.sha256(copy.read_bytes()).hexdigest()
    harness.store.add("u-20260101T000001Z-bbbbbb", "north", "day1.zip", sha, copy.stat().st_size, str(copy))
    newer = uploads / "u-20260101T000002Z-cccccc.zip"  # and the next day's roster after it
    shutil.copy(SAMPLES / "lenient-excel-export.zip", newer)
    harness.store.add("u-20260101T000002Z-cccccc", "north", "day2.zip", hashlib.sha256(newer.read_bytes()).hexdigest(),
                      newer.stat().st_size, str(newer))  # fmt: skip
    await harness.start()
    receipts = {r["upload_id"]: r for r in await harness.wait_for_receipts("north", 3)}
    assert receipts["u-20260101T000001Z-bbbbbb"]["state"] == "accepted"
    assert receipts["u-20260101T000002Z-cccccc"]["state"] == "accepted"
    assert receipts["u-20260101T000000Z-aaaaaa"]["state"] == "duplicate"
    assert harness.store.current_snapshot("north").upload_id == "u-20260101T000002Z-cccccc"  # day 2 stays
    assert "u-20260101T000001Z-bbbbbb" in harness.store.last_detail("u-20260101T000000Z-aaaaaa")


async def test_a_file_left_in_the_inbox_that_was_sent_again_meanwhile_is_a_duplicate_of_that_copy(
    harness: Harness,
) -> None:
    """A replica died after the SFTP server completed a file in its inbox and before intake took it; the SIS
    sent the file again, another replica recorded that copy and a newer day after it. When the first replica
    comes back, the file it finds in its inbox is a duplicate of the copy, not a roster that takes the district
    back a day."""
    left = harness.tenants["north"].inbox / "day1.zip"
    left.parent.mkdir(parents=True)
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", left)  # completed before the copy below was recorded
    uploads = harness.root / "state" / "uploads" / "north"
    uploads.mkdir(parents=True)
    copy = uploads / "u-20260101T000001Z-bbbbbb.zip"
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", copy)
    harness.store.add("u-20260101T000001Z-bbbbbb", "north", "day1.zip", hashlib.sha256(copy.read_bytes()).hexdigest(),
                      copy.stat().st_size, str(copy))  # fmt: skip
    newer = uploads / "u-20260101T000002Z-cccccc.zip"
    shutil.copy(SAMPLES / "lenient-excel-export.zip", newer)
    harness.store.add("u-20260101T000002Z-cccccc", "north", "day2.zip", hashlib.sha256(newer.read_bytes()).hexdigest(),
                      newer.stat().st_size, str(newer))  # fmt: skip
    await harness.start()
    receipts = await harness.wait_for_receipts("north", 3)
    taken = [r for r in receipts if r["upload_id"] not in ("u-20260101T000001Z-bbbbbb", "u-20260101T000002Z-cccccc")]
    assert [(r["file"], r["state"]) for r in taken] == [("day1.zip", "duplicate")]
    assert harness.store.current_snapshot("north").upload_id == "u-20260101T000002Z-cccccc"  # day 2 stays
    assert "u-20260101T000001Z-bbbbbb" in harness.store.last_detail(taken[0]["upload_id"])
    await eventually(lambda: not list(uploads.glob(f"{taken[0]['upload_id']}*")))  # a duplicate's bytes go


async def test_uploads_interrupted_by_a_crash_resume(harness: Harness) -> None:
    """A file moved but not recorded, and one recorded as validating: both finish once, after restart. (Both
    named as versions before labels named them: `<upload_id>--<name>`.)"""
    uploads = harness.root / "state" / "uploads" / "north"
    uploads.mkdir(parents=True)
    orphan = uploads / f"u-20260101T000000Z-aaaaaa{NAME_SEPARATOR}orphan.zip"
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", orphan)
    midway = uploads / f"u-20260101T000001Z-bbbbbb{NAME_SEPARATOR}midway.zip"
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", midway)  # recorded first, so validated first: a bulk baseline
    harness.store.add("u-20260101T000001Z-bbbbbb", "north", "midway.zip", "f" * 64, midway.stat().st_size,
                      str(midway))  # fmt: skip
    harness.store.set_state("u-20260101T000001Z-bbbbbb", State.VALIDATING)
    await harness.start()
    receipts = await harness.wait_for_receipts("north", 2)
    assert sorted((r["file"], r["state"]) for r in receipts) == [("midway.zip", "accepted"),
                                                                ("orphan.zip", "accepted")]  # fmt: skip
    assert [u.state for u in harness.store.recent("north")] == [State.ACCEPTED, State.ACCEPTED]


async def test_the_server_notification_is_taken_without_settling(harness: Harness) -> None:
    # settling and rescanning take ten minutes here: a receipt within the wait's minute came by the notification
    harness.configure(IntakeOptions(state_dir=harness.root / "state", settle_seconds=600, rescan_seconds=600))
    await harness.start()
    inbox = harness.tenants["south"].inbox
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", inbox / "fast.zip")
    await harness.intake.notify(received("south", inbox / "fast.zip"))
    (receipt,) = await harness.wait_for_receipts("south", 1, timeout=60)
    assert receipt["state"] == "accepted"


async def test_upload_received_names_the_sftp_session_and_a_copied_file_names_none(harness: Harness) -> None:
    """README: `session_id` is the id of one SSH connection, shared by all its events; an upload the server
    reports is tied to its session by it. A file copied into the inbox came through no session."""
    harness.configure(IntakeOptions(state_dir=harness.root / "state", settle_seconds=0.2, rescan_seconds=30))
    await harness.start()
    inbox = harness.tenants["north"].inbox
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", inbox / "sent.zip")
    await harness.intake.notify(received("north", inbox / "sent.zip", session_id="a1b2c3d4e5f60718"))
    shutil.copy(SAMPLES / "broken-school-not-a-school.zip", inbox / "copied.zip")
    await harness.wait_for_receipts("north", 2)
    by_file = {fields["file"]: fields for event, fields in harness.events if event == "upload.received"}
    assert by_file["sent.zip"]["session_id"] == "a1b2c3d4e5f60718"
    assert "session_id" not in by_file["copied.zip"]


async def test_a_duplicate_names_the_earlier_upload_and_its_bytes_are_dropped(harness: Harness) -> None:
    await harness.start()
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / "a.zip")
    (first,) = await harness.wait_for_receipts("north", 1)
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / "b.zip")
    second = next(r for r in await harness.wait_for_receipts("north", 2) if r["file"] == "b.zip")
    assert second["state"] == "duplicate" and first["upload_id"] in second["detail"]
    uploads = harness.root / "state" / "uploads" / "north"
    await eventually(lambda: sorted(p.name for p in uploads.iterdir()) == [f"{first['upload_id']}.zip"])


async def test_a_crash_between_record_and_receipt_is_finished_at_start(harness: Harness) -> None:
    """Recorded as rejected, file not yet in quarantine, no receipt: the restart moves it and answers it
    from the stored result, without validating again."""
    uploads = harness.root / "state" / "uploads" / "north"
    uploads.mkdir(parents=True)
    upload_id = "u-20260101T000000Z-cccccc"
    kept = uploads / f"{upload_id}{NAME_SEPARATOR}bad.zip"
    kept.write_bytes(b"not even a zip")
    store = harness.store
    store.add(upload_id, "north", "bad.zip", "e" * 64, kept.stat().st_size, str(kept))
    store.set_state(upload_id, State.VALIDATING)
    stored = {"verdict": "rejected", "version": None, "mode": "lenient", "files": {}, "findings_truncated": False,
              "counts_by_code": {"zip.not_a_zip": 1},
              "findings": [{"code": "zip.not_a_zip", "severity": "error", "message": "stored before the crash",
                            "file": None, "row": None, "column": None, "value": None}]}  # fmt: skip
    quarantined = harness.root / "state" / "quarantine" / "north" / kept.name
    store.set_state(upload_id, State.REJECTED, path=str(quarantined), result=stored)
    assert [u.id for u in store.unanswered()] == [upload_id]

    await harness.start()

    (receipt,) = await harness.wait_for_receipts("north", 1)
    assert receipt["state"] == "rejected"
    assert receipt["validation"]["findings"][0]["message"] == "stored before the crash"  # not validated again
    assert quarantined.read_bytes() == b"not even a zip" and not kept.exists()
    assert store.unanswered() == []
    assert [state for state, _, _ in store.history(upload_id)] == ["received", "validating", "rejected"]


async def test_each_state_is_recorded_in_order_and_the_final_receipt_marked_answered(harness: Harness) -> None:
    await harness.start()
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["south"].inbox / "early.zip")
    await harness.intake.notify(received("south", harness.tenants["south"].inbox / "early.zip"))
    (receipt,) = await harness.wait_for_receipts("south", 1)
    states = [state for state, _, _ in harness.store.history(receipt["upload_id"])]
    assert states == ["received", "validating", "accepted"]
    await asyncio.wait_for(harness.intake.idle.wait(), 10)  # marked answered just after the receipt is written
    assert harness.store.get(receipt["upload_id"]).answered_at is not None


async def test_only_the_newest_snapshots_are_kept_and_always_the_current_one(harness: Harness) -> None:
    from daemon.generator.churn import Churn, churn
    from daemon.generator.generate import DistrictSpec, generate, write_zip

    harness.configure(IntakeOptions(state_dir=harness.root / "state", settle_seconds=0.2, rescan_seconds=0.5),
                      snapshots_kept=2)  # fmt: skip
    await harness.start()
    spec = DistrictSpec(schools=1, students_per_school=30, teachers_per_school=3, enrollments_per_student=2)
    day = generate(spec)
    inbox = harness.tenants["north"].inbox
    for number in range(1, 5):  # four small, accepted changes in a row
        write_zip(day, inbox / f".day{number}.zip", spec.version)
        (inbox / f".day{number}.zip").rename(inbox / f"day{number}.zip")
        await harness.wait_for_receipts("north", number)
        day = churn(day, spec.version, Churn(withdrawn=0, arrivals=1, new_emails=0, seed=number)).bulk

    history = harness.store.snapshots("north")
    assert [record.pruned_at is None for record, _ in history] == [True, True, False, False]
    folders = sorted(p.name for p in (harness.root / "state" / "snapshots" / "north").iterdir())
    assert folders == sorted(record.upload_id for record, _ in history[:2])
    assert harness.store.current_snapshot("north").upload_id == history[0][0].upload_id
    assert [e for e, _ in harness.events].count("snapshot.pruned") == 2


async def test_snapshots_the_outbox_still_needs_are_kept(harness: Harness) -> None:
    """With no delivery ever going out, the first snapshot is the target's base and the later ones wait to
    be sent: none of them may be pruned, whatever `snapshots_kept` says."""
    from daemon.generator.churn import Churn, churn
    from daemon.generator.generate import DistrictSpec, generate, write_zip

    harness.store.targets = {"north": ["cers"]}
    harness.configure(IntakeOptions(state_dir=harness.root / "state", settle_seconds=0.2, rescan_seconds=0.5),
                      snapshots_kept=1)  # fmt: skip
    await harness.start()
    spec = DistrictSpec(schools=1, students_per_school=30, teachers_per_school=3, enrollments_per_student=2)
    day = generate(spec)
    inbox = harness.tenants["north"].inbox
    for number in range(1, 4):
        write_zip(day, inbox / f".day{number}.zip", spec.version)
        (inbox / f".day{number}.zip").rename(inbox / f"day{number}.zip")
        await harness.wait_for_receipts("north", number)
        day = churn(day, spec.version, Churn(withdrawn=0, arrivals=1, new_emails=0, seed=number)).bulk

    history = harness.store.snapshots("north")
    assert [record.pruned_at for record, _ in history] == [None, None, None]
    pending = harness.store.deliveries("north")
    assert sorted(d.upload_id for d in pending) == sorted(record.upload_id for record, _ in history)
    for d in reversed(pending):  # all delivered, oldest first: only the newest is needed any more
        harness.store.claim_delivery(d.id)
        harness.store.finish_delivery(d.id, DeliveryState.DELIVERED)
    await asyncio.to_thread(retention.prune, harness.store, "north", 1, harness.log)
    assert [record.pruned_at is None for record, _ in harness.store.snapshots("north")] == [True, False, False]


async def test_a_name_as_long_as_the_filesystem_allows_is_taken_and_answered(harness: Harness) -> None:
    name = "d" * 246 + ".zip"  # 250 bytes: too long once an upload id is put in front of it
    await harness.start()
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / name)
    (receipt,) = await harness.wait_for_receipts("north", 1)
    assert receipt["state"] == "accepted" and receipt["file"] == name
    assert list(harness.tenants["north"].inbox.iterdir()) == []
    assert harness.store.get(receipt["upload_id"]).name == name


async def test_many_receipts_at_once_beyond_the_kept_number_all_get_written(harness: Harness) -> None:
    """Receipts written by many uploads at the same moment, with pruning on every write: none fails, and
    every upload is marked answered."""
    harness.configure(IntakeOptions(state_dir=harness.root / "state", settle_seconds=0.2, rescan_seconds=30),
                      receipts_kept=3)  # fmt: skip
    await harness.start()
    store, uploads = harness.store, []
    for number in range(60):
        kept = harness.root / "state" / "uploads" / "north" / f"u-20260101T000000Z-{number:06x}.zip"
        kept.write_bytes(b"%d" % number)
        upload = store.add(kept.stem, "north", f"{number}.zip", f"{number:064x}", 1, str(kept))
        uploads.append(store.set_state(upload.id, State.DUPLICATE, detail="made up for this test"))
    await asyncio.gather(*(harness.intake.supervisor.reanswer(upload) for upload in uploads))
    assert store.unanswered() == []
    kept = [p for p in harness.tenants["north"].results.glob("*.json") if p.name != "latest.json"]
    assert len(kept) == 3


def options(harness: Harness, **changes) -> IntakeOptions:
    """The harness's options with `changes` (supervise_seconds short: the supervisor's rounds are awaited)."""
    return IntakeOptions(**{"state_dir": harness.root / "state", "settle_seconds": 0.2, "rescan_seconds": 0.5,
                            "supervise_seconds": 0.2, **changes})  # fmt: skip


def upload_folder(harness: Harness, tenant: str = "north") -> Path:
    folder = harness.root / "state" / "uploads" / tenant
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_a_file_moved_but_not_recorded_gets_the_name_in_its_label(harness: Harness) -> None:
    """A crash between the move and the record: the kept file is `<id>.zip`, its original name is in the
    label beside it; a label whose file never moved is dropped (the file is still in the inbox)."""
    name = "é" * 120 + ".zip"  # 244 bytes
    uploads = upload_folder(harness)
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", uploads / "u-20260101T000000Z-dddddd.zip")
    (uploads / "u-20260101T000000Z-dddddd.name").write_text(name, encoding="utf-8")
    (uploads / "u-20260101T000001Z-eeeeee.name").write_text("never-moved.zip", encoding="utf-8")
    await harness.start()
    (receipt,) = await harness.wait_for_receipts("north", 1)
    assert receipt["state"] == "accepted" and receipt["file"] == name
    assert receipt["upload_id"] == "u-20260101T000000Z-dddddd"
    assert sorted(p.name for p in uploads.iterdir()) == ["u-20260101T000000Z-dddddd.zip"]


async def test_an_upload_left_received_by_an_error_is_taken_up_without_a_restart(harness: Harness) -> None:
    harness.configure(options(harness))
    await harness.start()
    kept = upload_folder(harness) / "u-20260101T000000Z-ffffff.zip"
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", kept)
    harness.store.add(kept.stem, "north", "stranded.zip", "a" * 64, kept.stat().st_size, str(kept))  # never queued
    (receipt,) = await harness.wait_for_receipts("north", 1)
    assert receipt["state"] == "accepted" and receipt["file"] == "stranded.zip"
    assert [s for s, _, _ in harness.store.history(kept.stem)] == ["received", "validating", "accepted"]


async def test_a_decided_upload_without_its_receipt_is_answered_without_a_restart(harness: Harness) -> None:
    harness.configure(options(harness))
    await harness.start()
    kept = upload_folder(harness) / "u-20260101T000000Z-abcabc.zip"
    kept.write_bytes(b"not a zip")
    harness.store.add(kept.stem, "north", "bad.zip", "b" * 64, 9, str(kept))
    harness.store.set_state(kept.stem, State.REJECTED, detail="decided, and then the receipt could not be written")
    (receipt,) = await harness.wait_for_receipts("north", 1)
    assert receipt["state"] == "rejected" and receipt["detail"].startswith("decided, and then")
    await eventually(lambda: harness.store.unanswered() == [])


async def test_an_error_right_after_the_move_loses_nothing(harness: Harness) -> None:
    """The store refuses the first record (a full disk, say): the file is in the uploads folder with its label,
    and the supervisor records and validates it, under its own name."""
    harness.configure(options(harness))
    real_add, refusals = harness.store.add, []

    def add_refusing_once(*args, **kwargs):
        if not refusals:
            refusals.append(args[0])
            raise OSError(28, "No space left on device")
        return real_add(*args, **kwargs)

    harness.store.add = add_refusing_once
    await harness.start()
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / "monday.zip")
    (receipt,) = await harness.wait_for_receipts("north", 1)
    assert receipt["state"] == "accepted" and receipt["file"] == "monday.zip"
    assert receipt["upload_id"] == refusals[0]  # the same upload, not a second one
    assert ("upload.failed", "take") in [(e, f.get("stage")) for e, f in harness.events]


async def test_an_upload_whose_processing_keeps_raising_is_failed_after_a_few_tries(harness: Harness) -> None:
    harness.configure(options(harness))

    async def broken(upload, rules):
        raise RuntimeError("a bug in rosterd")

    harness.processor._job = broken
    await harness.start()
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / "x.zip")
    receipt = await wait_for_state(harness, "north", "failed")
    assert receipt["detail"] == INTERNAL_ERROR and "did nothing wrong" in receipt["next"]
    tries = [f for e, f in harness.events if e == "upload.failed" and f.get("attempt")]
    assert [f["attempt"] for f in tries] == [1, 2, 3]


class DyingPool:
    """A pool whose every worker dies twice, as the real one reports it."""

    memory_bytes = 8 * 1024**3

    async def run(self, fn, *args, about=None):
        raise WorkerDied(Death(4242, None, "SIGKILL"))


async def test_an_upload_whose_worker_dies_twice_is_failed_not_rejected_and_may_be_sent_again(
    harness: Harness, pool: WorkerPool
) -> None:
    harness.processor.pool = DyingPool()
    await harness.start()
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / "big.zip")
    failed = await wait_for_state(harness, "north", "failed")
    assert failed["detail"].startswith("The worker process validating this upload died twice (killed by SIGKILL")
    assert "`[intake] worker_memory_bytes` = 8 GiB" in failed["detail"] and "validation" not in failed
    upload = harness.store.get(failed["upload_id"])
    assert upload.state is State.FAILED and Path(upload.path).exists() and "quarantine" in upload.path

    harness.processor.pool = pool  # the operator fixed the machine; the district sends the same file again
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / "big-again.zip")
    again = await wait_for_state(harness, "north", "accepted")
    assert again["file"] == "big-again.zip"


async def test_an_upload_waits_while_no_worker_can_run_and_is_not_failed(harness: Harness, pool: WorkerPool) -> None:
    """No worker pool to run it (shut down, or none can be made): the upload is not to blame, so it waits,
    however often it is tried, and goes on once workers can run again."""
    harness.configure(options(harness))
    unavailable = WorkerPool(1)
    unavailable.terminate()
    harness.processor.pool = unavailable
    await harness.start()
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / "patient.zip")
    await eventually(lambda: len([f for e, f in harness.events if e == "upload.failed"]) > MAX_CRASHES)
    assert [r["state"] for r in harness.receipts("north")] == ["received"]
    harness.processor.pool = pool
    receipt = await wait_for_state(harness, "north", "accepted")
    assert receipt["file"] == "patient.zip"


async def test_an_upload_waits_while_the_shared_storage_is_out_of_reach_and_is_not_failed(
    harness: Harness, tmp_path: Path
) -> None:
    """Replicas: the bucket does not answer (here an S3 endpoint where nothing listens, so the real client
    meets a refused connection) when the upload's snapshot is to be put there. Not the upload's doing: it waits,
    however often it is tried, and is accepted once the storage answers again."""
    harness.configure(options(harness))
    state = harness.root / "state"
    with socket.socket() as probe:  # a port nobody listens on once this closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = S3Storage("rosterd", "", "us-east-1", f"http://127.0.0.1:{port}", "key-id", "secret", attempts=1)
    harness.processor.options = dataclasses.replace(harness.processor.options, mirror=Mirror(down, state))
    await harness.start()
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / "patient.zip")
    await eventually(lambda: len([f for e, f in harness.events if e == "upload.failed"]) > MAX_CRASHES, 60)
    assert all("StorageError" in f["error"] for e, f in harness.events if e == "upload.failed")
    assert [r["state"] for r in harness.receipts("north")] == ["received"]
    back = LocalStorage(tmp_path / "bucket")  # the storage answers again
    harness.processor.options = dataclasses.replace(harness.processor.options, mirror=Mirror(back, state))
    receipt = await wait_for_state(harness, "north", "accepted")
    assert receipt["file"] == "patient.zip"
    assert back.info(f"snapshots/north/{receipt['upload_id']}/snapshot.json") is not None


async def test_an_upload_over_the_worker_memory_limit_is_failed_with_the_limit_named(harness: Harness) -> None:
    """100 MiB per worker: enough to start one (60 MiB here), not to validate the sample (180 MiB)."""
    small = WorkerPool(1, memory_bytes=100 * 1024**2, stall_seconds=5, max_call_seconds=15)  # polars may also hang
    # (idle or spinning: both are killed sooner than the daemon would)
    harness.processor.pool = small
    try:
        await harness.start()
        shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["south"].inbox / "sample.zip")
        receipt = await wait_for_state(harness, "south", "failed")
    finally:
        small.terminate()
    # Past the limit polars aborts the worker or hangs (killed: twice, failed), or Python raises MemoryError:
    # whichever happens, the receipt names the limit.
    assert "the worker memory limit (`[intake] worker_memory_bytes` = 100 MiB)" in receipt["detail"]


async def wait_for_state(harness: Harness, tenant: str, state: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in harness.receipts(tenant) if r["state"] == state]
        if found:
            return found[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{tenant}: no {state} receipt in {harness.receipts(tenant)}; {harness.events}")


def export(tables: dict, path: Path) -> Path:
    from daemon.generator.generate import write_zip

    write_zip(tables, path, "1.1")
    return path


async def test_an_older_export_sent_again_is_a_real_upload_that_takes_the_roster_back(harness: Harness) -> None:
    """Monday's export, Tuesday's (one teacher's e-mail changed), then Monday's again right behind it: the
    third is judged when its turn comes, against Tuesday's roster, so it is validated and changes the e-mail
    back. Monday's bytes a fourth time are the current roster's: a duplicate."""
    import polars as pl

    from daemon.generator.generate import DistrictSpec, generate

    monday = generate(DistrictSpec(schools=1, students_per_school=20, teachers_per_school=2, enrollments_per_student=2))
    users = monday["users"]
    teacher = users.filter(pl.col("role") == "teacher").get_column("sourcedId")[0]
    old_email = users.filter(pl.col("sourcedId") == teacher).get_column("email")[0]
    moved = pl.when(pl.col("sourcedId") == teacher).then(pl.lit("moved@new-domain.example")).otherwise(pl.col("email"))
    files = {"monday": export(monday, harness.root / "monday.zip"),
             "tuesday": export({**monday, "users": users.with_columns(moved.alias("email"))}, harness.root / "tue.zip")}
    inbox = harness.tenants["north"].inbox

    async def send(export: str, name: str) -> None:
        shutil.copy(files[export], inbox / name)
        await harness.intake.notify(received("north", inbox / name))

    await harness.start()
    await send("monday", "monday.zip")
    (first,) = await harness.wait_for_receipts("north", 1)
    await send("tuesday", "tuesday.zip")
    await send("monday", "monday-again.zip")
    by_file = {r["file"]: r for r in await harness.wait_for_receipts("north", 3)}

    again = by_file["monday-again.zip"]
    assert by_file["tuesday.zip"]["state"] == "accepted" and again["state"] == "accepted"
    assert again["changes"]["against_upload_id"] == by_file["tuesday.zip"]["upload_id"]
    changed = {entity: counts for entity, counts in again["changes"]["counts"].items() if any(counts.values())}
    assert changed == {"users": {"added": 0, "updated": 1, "deleted": 0}}
    assert again["changes"]["samples"] == {"users": {"updated": [{"sourcedId": teacher, "changed": [
        {"field": "email", "old": "moved@new-domain.example", "new": old_email}]}]}}  # fmt: skip
    assert again["matches_earlier_upload"] == {"upload_id": first["upload_id"], "file": "monday.zip",
                                               "received_at": first["received_at"]}  # fmt: skip
    assert "matches_earlier_upload" not in by_file["tuesday.zip"]

    await send("monday", "monday-third.zip")
    third = next(r for r in await harness.wait_for_receipts("north", 4) if r["file"] == "monday-third.zip")
    assert third["state"] == "duplicate" and again["upload_id"] in third["detail"] and "validation" not in third
    assert ("upload.duplicate", third["upload_id"]) in [(e, f.get("upload_id")) for e, f in harness.events]


async def test_a_receipt_rewritten_after_a_delivery_keeps_the_change_set_examples(harness: Harness) -> None:
    """The first receipt of an accepted upload has its change set's examples; the rewrite after its delivery
    moved on (what the outbox asks for) has them too, with every other section."""
    harness.store.targets = {"north": ["vendor"]}
    await harness.start()
    shutil.copy(SAMPLES / "valid-1.1-bulk.zip", harness.tenants["north"].inbox / "day1.zip")
    (first,) = await harness.wait_for_receipts("north", 1)
    assert first["changes"]["samples"]["users"]["added"][0]["sourcedId"]  # a first upload: all additions
    (delivery,) = harness.store.deliveries(upload_id=first["upload_id"])
    harness.store.claim_delivery(delivery.id)
    harness.store.finish_delivery(delivery.id, DeliveryState.FAILED, error="503 from the vendor",
                                  next_attempt_at="2099-01-01T00:00:00.000Z")  # fmt: skip
    await harness.writer.refresh(first["upload_id"])
    (rewritten,) = harness.receipts("north")
    assert set(first) - set(rewritten) == set()
    assert rewritten["changes"] == first["changes"] and rewritten["validation"] == first["validation"]
    assert rewritten["deliveries"][0]["state"] == "failed" and rewritten["deliveries"][0]["error"] == "503 from the vendor"


async def test_operators_decisions_are_logged_once_with_who_and_when(harness: Harness) -> None:
    """Decisions taken with `rosterd` (recorded in the store) reach the daemon's log, each once, with the
    operator and the time it was taken; an approval also tells the outbox its deliveries may go."""
    from tests.test_snapshot_store import record, upload

    store = harness.store
    store.targets = {"north": ["vendor"]}
    approvals: list[tuple[str, str]] = []
    harness.configure(options(harness, on_accepted=lambda tenant, upload_id: approvals.append((tenant, upload_id))))
    first, held, dropped = upload(store, 1), upload(store, 2), upload(store, 3)
    record(store, first)
    record(store, held, held=True)
    approved_at = store.decide(held, approve=True, operator="alice").updated_at
    record(store, dropped, held=True)
    discarded_at = store.decide(dropped, approve=False, operator="bob").updated_at
    rebaseline_at = store.request_rebaseline("north", "carol")
    (dead,) = store.deliveries(upload_id=first)
    store.claim_delivery(dead.id)
    store.finish_delivery(dead.id, DeliveryState.DEAD, error="refused")
    replayed_at = store.replay_delivery(dead.id, "dave").updated_at
    store.disable_target("north", "vendor", "410 Gone")
    enabled_at = store.enable_target("north", "vendor", "erin")

    await harness.intake.log_decisions()
    await harness.intake.log_decisions()  # a second look finds nothing new

    assert harness.events == [
        ("upload.approved", {"tenant": "north", "upload_id": held, "operator": "alice", "at": approved_at}),
        ("upload.discarded", {"tenant": "north", "upload_id": dropped, "operator": "bob", "at": discarded_at}),
        ("tenant.rebaseline_requested", {"tenant": "north", "upload_id": None, "operator": "carol",
                                         "at": rebaseline_at}),
        ("delivery.replayed", {"tenant": "north", "upload_id": first, "operator": "dave", "at": replayed_at,
                               "delivery_id": dead.id, "target": "vendor"}),
        ("target.enabled", {"tenant": "north", "upload_id": None, "operator": "erin", "at": enabled_at,
                            "target": "vendor"}),
    ]  # fmt: skip
    stamps = [fields["at"] for _, fields in harness.events]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", at) for at in stamps)  # ISO-8601, UTC
    assert approvals == [("north", held)]
