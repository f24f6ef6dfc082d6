"""Fault proof: the fake CERS and the fake vendor inject 500, 503, 429, timeouts, resets and an expired token
while a running daemon delivers several uploads; every delivery ends delivered or dead, each with a clear
record (attempts, the error of each failed attempt in the log, the last error in the outbox and receipt). On
SQLite and the state directory, and on PostgreSQL and an S3 bucket (`backend`)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest

from daemon.generator.churn import Churn, churn
from daemon.generator.generate import DistrictSpec, generate, write_zip
from tests.cers.moto_cognito import running_cognito
from tests.fakes.cers import FakeCers
from tests.fakes.threaded import served_in_thread
from tests.fakes.webhooks import WebhookReceiver

from .conftest import ROSTERD, Backend, RunningDaemon, Tenant
from .test_cers import live_target

SPEC = DistrictSpec(schools=2, students_per_school=40, teachers_per_school=4, enrollments_per_student=3)
SECRET = "fault-test-signing-secret-0123456789"
CERS_FAULTS = ["500", "503", "timeout", "reset", "401"]
VENDOR_FAULTS = ["500", "503", "429:1", "timeout", "reset"]


def outbox(daemon: RunningDaemon) -> list[dict]:
    done = subprocess.run([str(ROSTERD), "outbox", "north", "--format", "json", "--config", str(daemon.config)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    return json.loads(done.stdout)


def put(daemon: RunningDaemon, tables: dict[str, pl.DataFrame], name: str) -> dict:
    write_zip(tables, daemon.client_dir / name, SPEC.version)
    sent = daemon.sftp_batch("north", [f"put {name} inbox/{name}"])
    assert sent.returncode == 0, sent.stderr
    return daemon.wait_for_receipt("north", name)


def settle(daemon: RunningDaemon, count: int) -> list[dict]:
    """Wait until the outbox holds `count` deliveries, each delivered or dead."""
    deadline = time.monotonic() + 120
    while not (len(rows := outbox(daemon)) == count and all(r["state"] in ("delivered", "dead") for r in rows)):
        assert time.monotonic() < deadline, f"{rows}\n{daemon.diagnosis()}"
        time.sleep(0.3)
    return rows


@pytest.mark.slow
def test_every_delivery_ends_delivered_or_dead_with_a_clear_record(
    backend: Backend, rosterd, tenants: dict[str, Tenant], tmp_path: Path
) -> None:
    with running_cognito(tmp_path / "cognito") as cognito, \
            served_in_thread(FakeCers(verify_token=cognito.verify, hang_seconds=4)) as cers, \
            served_in_thread(WebhookReceiver(SECRET, hang_seconds=4)) as vendor:  # fmt: skip
        secret = tmp_path / "webhook.secret"
        secret.write_text(SECRET)
        targets = live_target(cognito, cers).replace("timeout_seconds = 10", "timeout_seconds = 2") + "\n" + "\n".join([
            "[[tenants.targets]]", 'type = "webhook"', 'name = "vendor"', f'url = "{vendor.url}"', "batch_size = 100",
            "timeout_seconds = 2", f'signing = {{ secret_file = "{secret}" }}',
        ])  # fmt: skip
        config = "[outbox]\nretry_first_seconds = 0.2\nretry_max_seconds = 1.5\npoll_seconds = 0.2\n"
        daemon = rosterd(dataclasses.replace(tenants["north"], extra=targets), extra_config=config + backend.config)

        cers.faults.extend(CERS_FAULTS)
        vendor.faults.extend(VENDOR_FAULTS)
        day1 = generate(SPEC)
        receipts = [put(daemon, day1, "day1.zip")]
        cognito.verify.reject_issued_so_far()  # the token the daemon holds has expired: CERS answers 401
        day2 = churn(day1, SPEC.version, Churn(withdrawn=1, arrivals=1, new_emails=1, seed=2)).bulk
        receipts.append(put(daemon, day2, "day2.zip"))
        settle(daemon, 4)
        assert not cers.faults and not vendor.faults  # every fault was met
        vendor.faults.append("400")  # a vendor bug: refused for good
        day3 = churn(day2, SPEC.version, Churn(withdrawn=1, arrivals=1, new_emails=1, seed=3)).bulk
        receipts.append(put(daemon, day3, "day3.zip"))
        rows = settle(daemon, 6)

    by = {(r["target"], r["upload_id"]): r for r in rows}
    ids = [r["upload_id"] for r in receipts]
    assert all(by[("cers", i)]["state"] == "delivered" for i in ids)
    assert [by[("vendor", i)]["state"] for i in ids] == ["delivered", "delivered", "dead"]
    assert "HTTP 400" in by[("vendor", ids[2])]["last_error"]
    failed = daemon.events("delivery.failed")
    errors = " | ".join(e["error"] for e in failed)
    for seen in ("HTTP 500", "HTTP 503", "HTTP 429", "no answer within 2 s", "ClientOSError"):
        assert seen in errors, (seen, errors)
    assert all(e["next_attempt_at"] for e in failed)  # each failure says when it is tried again
    assert by[("cers", ids[0])]["attempts"] > 1 and by[("vendor", ids[0])]["attempts"] > 1
    assert vendor.anomalies == [] and cers.groups()  # every batch once, in order; CERS holds the groups
    receipt = json.loads((daemon.results("north") / f"day3.zip.{ids[2]}.json").read_text())
    dead = next(d for d in receipt["deliveries"] if d["target"] == "vendor")
    assert dead["state"] == "dead" and "HTTP 400" in dead["error"]
