"""Crash proof: kill -9 the daemon at chosen moments across a series of uploads and deliveries, start it
again each time, and check that nothing was lost or done twice.

A district uploads a day-1 roster and then a day of changes after another; a vendor takes the changes as
signed webhook batches (small batches, so a delivery takes a while). Each day's kill is aimed at a moment
chosen by a seeded random generator (ROSTERD_CRASH_SEED picks another series; bench/crash.py runs longer
ones): while the day's upload is being validated, while its delivery is being sent, after a random pause,
or not at all. Right after each kill, with the daemon dead, the store says what the kill cut off; the series
must have cut off at least one validation and at least one delivery (a moment missed is aimed at again on a
later day). At the end: every upload the client completed has exactly one record and a final receipt, no
upload is stuck, every delivery is delivered, the vendor saw each batch once by its webhook-id and in order,
the vendor's roster equals the district's, and every kept snapshot reads back whole.

It runs on SQLite and the state directory, and in a reduced form on PostgreSQL and an S3 bucket (`backend`
`shared`): two days, the first day's delivery (the whole roster, many batches) and the second day's
validation each cut off once, at a random point within the moment. There the database and the bucket are
checked too: one record per day, one final receipt per upload in the bucket, and every catalogued snapshot
whole in the bucket.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sqlite3
import subprocess
import time
from pathlib import Path

import polars as pl
import psycopg
import pytest

from daemon.snapshots import storage
from daemon.generator.churn import Churn, churn
from daemon.generator.generate import DistrictSpec, generate, write_zip
from daemon.targets.webhook import SINGULAR
from tests.fakes.threaded import served_in_thread
from tests.fakes.webhooks import WebhookReceiver

from .conftest import ROSTERD, Backend, RunningDaemon, Tenant
from .shared_state import check_one_final_receipt_each, check_snapshots_whole, fetch_snapshot, open_bucket

SPEC = DistrictSpec(schools=2, students_per_school=40, teachers_per_school=4, enrollments_per_student=3)
SECRET = "crash-test-signing-secret-0123456789"
DAYS = 5
DEADLINE = 90.0
MOMENTS = ("validating", "delivering", "after a pause", "no kill")
MUST_CUT = ("validating", "delivering")  # cut off at least once in every series
SHARED_AIMS = ("delivering", "validating")  # the reduced series on `shared`: one day each


def rosterd_json(daemon: RunningDaemon, *args: str) -> list[dict]:
    done = subprocess.run([str(ROSTERD), *args, "--format", "json", "--config", str(daemon.config)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def days(seed: int, count: int = DAYS) -> list[dict[str, pl.DataFrame]]:
    tables = [generate(SPEC)]
    for n in range(1, count):
        tables.append(churn(tables[-1], SPEC.version, Churn(withdrawn=1, arrivals=1, new_emails=1,
                                                            period_changes=1, seed=seed * 100 + n)).bulk)  # fmt: skip
    return tables


def vendor_roster(receiver: WebhookReceiver) -> dict:
    return {e: {k: {f: v for f, v in row.items()} for k, row in rows.items()} for e, rows in receiver.state().items()}


def district_roster(folder: Path) -> dict:
    """The district's stored snapshot as the vendor should hold it: README says an empty scope sends the
    roster unchanged (every rostering entity; users.password always empty)."""
    frames, _ = storage.scan_frames(folder)
    out = {}
    for entity in SINGULAR:
        if entity not in frames:
            continue
        data = frames[entity].collect().drop("status", "dateLastModified", strict=False)
        if "password" in data.columns:
            data = data.with_columns(password=pl.lit(None, dtype=data.schema["password"]))
        if data.height:
            rows = json.loads(data.write_json())  # JSON's own view of dates and lists, as the vendor got them
            out[SINGULAR[entity]] = {row["sourcedId"]: row for row in rows}
    return out


class Records:
    """The daemon's store read from outside, with `?` placeholders: its SQLite file (read only), or on
    `shared` the PostgreSQL database (one connection, each statement its own transaction)."""

    def __init__(self, daemon: RunningDaemon, backend: Backend) -> None:
        self.daemon = daemon
        self.postgres = None
        if backend.shared:
            database = backend.database
            self.postgres = psycopg.connect(database.url, password=database.password, autocommit=True)

    def __call__(self, query: str, *args: object) -> list[tuple]:
        if self.postgres is not None:
            return self.postgres.execute(query.replace("?", "%s"), args).fetchall()
        db = sqlite3.connect(f"file:{self.daemon.state / 'rosterd.db'}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(query, args).fetchall()
        finally:
            db.close()

    def close(self) -> None:
        if self.postgres is not None:
            self.postgres.close()


def moment(store: Records, aim: str, name: str) -> bool | None:
    """Whether the upload `name` is in the `aim` moment now (True), is past it (False), or not there yet."""
    if aim == "validating":
        rows = store("SELECT state FROM uploads WHERE name = ?", name)
        now, before = "validating", ("received",)
    else:
        rows = store("SELECT d.state FROM deliveries d JOIN uploads u ON u.id = d.upload_id WHERE u.name = ?", name)
        now, before = "in_flight", ("pending", "failed")
    if not rows or rows[0][0] in before:
        return None
    return rows[0][0] == now


def wait_for_moment(store: Records, aim: str, name: str, timeout: float = 60.0) -> bool:
    """Look every 10 ms until `name` is in the moment (True) or past it (False: aimed at again later)."""
    deadline = time.monotonic() + timeout
    while (found := moment(store, aim, name)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(found)


def cut_off(store: Records) -> dict[str, list[str]]:
    """What the store says was under way when the daemon died: uploads being validated, deliveries sent."""
    return {"validating": [r[0] for r in store("SELECT name FROM uploads WHERE state = 'validating'")],
            "delivering": [r[0] for r in store("SELECT u.name FROM deliveries d JOIN uploads u ON u.id = "
                                               "d.upload_id WHERE d.state = 'in_flight'")]}  # fmt: skip


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_and_repeats_nothing(
    backend: Backend, rosterd, tenants: dict[str, Tenant]
) -> None:
    seed = int(os.environ.get("ROSTERD_CRASH_SEED", "7"))
    rng = random.Random(seed)
    series = days(seed, len(SHARED_AIMS)) if backend.shared else days(seed)
    with served_in_thread(WebhookReceiver(SECRET)) as receiver:
        daemon = _configure(rosterd, tenants, receiver, backend)
        store = Records(daemon, backend)
        try:
            kills = _run_series(daemon, store, series, rng, SHARED_AIMS if backend.shared else None)
            _check(daemon, receiver, len(series))
            if backend.shared:
                _check_shared(backend, store, receiver, len(series), daemon.home / "from-the-bucket")
        finally:
            store.close()
    for must in MUST_CUT:
        assert any(kill["cut off"][must] for kill in kills), f"no kill landed while {must}: {kills}"


def _configure(rosterd, tenants: dict[str, Tenant], receiver: WebhookReceiver, backend: Backend) -> RunningDaemon:
    north = dataclasses.replace(tenants["north"], extra="")
    daemon = rosterd(north, start=False)
    secret_file = daemon.home / "webhook.secret"
    secret_file.write_text(SECRET)
    daemon.tenants["north"] = dataclasses.replace(north, extra="\n".join([
        "[[tenants.targets]]", 'type = "webhook"', 'name = "vendor"', f'url = "{receiver.url}"', "batch_size = 40",
        "timeout_seconds = 5", f'signing = {{ secret_file = "{secret_file}" }}',
    ]))  # fmt: skip
    daemon.extra_config = ("[outbox]\nretry_first_seconds = 0.2\nretry_max_seconds = 1\npoll_seconds = 0.2\n"
                           + backend.config)  # fmt: skip
    daemon.write_config()
    return daemon.start()


def _run_series(daemon: RunningDaemon, store: Records, series: list[dict[str, pl.DataFrame]], rng: random.Random,
                planned: tuple[str, ...] | None) -> list[dict]:  # fmt: skip
    """Each day's upload and its kill: the `planned` moment of the day, or one chosen at random."""
    kills, wanted = [], set(MUST_CUT)
    for number, tables in enumerate(series, start=1):
        name = f"day{number}.zip"
        write_zip(tables, daemon.client_dir / name, SPEC.version)
        sent = daemon.sftp_batch("north", [f"put {name} inbox/{name}"])
        assert sent.returncode == 0, sent.stderr
        if planned:
            aim = planned[number - 1]
        else:
            aim = rng.choice(sorted(wanted)) if wanted else rng.choice(MOMENTS)
        if aim == "no kill":
            continue
        if aim == "after a pause":
            time.sleep(rng.uniform(0.0, 1.2))  # somewhere in validation, snapshot writing, or a delivery
        elif not wait_for_moment(store, aim, name):
            continue  # it went by between two looks
        time.sleep(rng.uniform(0.0, 0.02))
        daemon.kill()
        kills.append({"day": name, "aim": aim, "cut off": cut_off(store)})  # read with the daemon dead
        wanted -= {must for must in MUST_CUT if kills[-1]["cut off"][must]}
        daemon.start()
    return kills


def _check(daemon: RunningDaemon, receiver: WebhookReceiver, count: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        # receipts first: a final receipt is written after its record, so the records read next include it
        receipts = {f"day{n}.zip": daemon.results("north").glob(f"day{n}.zip.u-*.json") for n in range(1, count + 1)}
        finals = {name: [json.loads(p.read_text()) for p in paths] for name, paths in receipts.items()}
        history = rosterd_json(daemon, "snapshots", "north")
        outbox = rosterd_json(daemon, "outbox", "north")
        settled = all(len(r) == 1 and r[0]["state"] in ("accepted", "duplicate") for r in finals.values())
        if settled and len(outbox) == len(history) and all(d["state"] == "delivered" for d in outbox):
            break
        assert time.monotonic() < deadline, f"not settled: {finals}\n{outbox}\n{daemon.diagnosis()}"
        time.sleep(0.3)

    # every completed upload: exactly one record, accepted (each day differs from the one before)
    every_day = {f"day{n}.zip": "accepted" for n in range(1, count + 1)}
    assert {name: r[0]["state"] for name, r in finals.items()} == every_day
    assert len(history) == count and all(row["state"] == "accepted" for row in history)
    # each delivery once: the vendor deduplicated only by webhook-id, never saw a batch under a second id,
    # and got every upload's batches in order
    assert receiver.anomalies == [], receiver.anomalies
    assert receiver.rejected == []
    assert len({b["upload_id"] for b in receiver.batches}) == count
    newest = history[0]
    folder = daemon.state / "snapshots" / "north" / newest["upload_id"]
    assert vendor_roster(receiver) == district_roster(folder)
    # every snapshot still kept reads back whole, with the rows its catalog row names
    for row in history:
        kept = daemon.state / "snapshots" / "north" / row["upload_id"]
        if row["pruned"]:
            continue
        frames = storage.read_frames(kept)
        assert {e: f.height for e, f in frames.items()} == row["rows"], row["upload_id"]
    leftovers = [p.name for p in (daemon.state / "snapshots" / "north").iterdir() if p.name.startswith(".staging")]
    assert leftovers == [] and not daemon.events("upload.failed")


def _check_shared(backend: Backend, store: Records, receiver: WebhookReceiver, count: int, folder: Path) -> None:
    """On `shared`, the database and the bucket themselves: one record per day, accepted, with one final receipt
    each in the bucket; the vendor's roster that of the last day's snapshot as the bucket holds it; every
    catalogued snapshot whole there."""
    uploads = store("SELECT name, id, state FROM uploads WHERE tenant = 'north' ORDER BY rowid")
    assert [(name, state) for name, _, state in uploads] == [(f"day{n}.zip", "accepted") for n in range(1, count + 1)]
    bucket = open_bucket(backend.seaweed, backend.prefix)
    try:
        check_one_final_receipt_each(bucket, "north", uploads)
        assert vendor_roster(receiver) == district_roster(fetch_snapshot(bucket, folder, "north", uploads[-1][1]))
        check_snapshots_whole(backend.database, bucket)
    finally:
        bucket.close()
