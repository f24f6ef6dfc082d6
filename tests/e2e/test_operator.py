"""What an operator relies on, with the running daemon: a target's Retry-After sets the next attempt,
`rosterd enable-target` after a 410, quarantined files expire after `quarantine_days`, and `rosterd
check-targets` for a webhook target.

The fakes (CERS, the webhook vendor) run on their own event loops in threads (tests/fakes/threaded.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.cers import small_district as sd
from tests.cers.moto_cognito import MotoCognito, running_cognito
from tests.fakes.cers import FakeCers
from tests.fakes.threaded import served_in_thread
from tests.fakes.webhooks import WebhookReceiver

from .conftest import RunningDaemon, Tenant, copy_sample
from .test_cers import admin, live_target, put

SECRET = "operator-test-signing-secret-0123456789"
OUTBOX = "[outbox]\nretry_first_seconds = 0.2\nretry_max_seconds = 1\npoll_seconds = 0.3\n"
DEADLINE = 45.0


def outbox(daemon: RunningDaemon) -> dict[tuple[str, str], dict]:
    """(target, upload id) -> the delivery, as `rosterd outbox --format json` lists it."""
    listed = admin(daemon, "outbox", "north", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return {(d["target"], d["upload_id"]): d for d in json.loads(listed.stdout)}


def wait_for_delivery(daemon: RunningDaemon, target: str, upload_id: str, states: tuple[str, ...]) -> dict:
    deadline = time.monotonic() + DEADLINE
    while (found := outbox(daemon).get((target, upload_id))) is None or found["state"] not in states:
        assert time.monotonic() < deadline, f"{target} {upload_id}: {found}\n{daemon.diagnosis()}"
        time.sleep(0.2)
    return found


def accepted(daemon: RunningDaemon, tables: sd.Tables, name: str) -> str:
    receipt = put(daemon, tables, name)
    assert receipt["state"] == "accepted", receipt
    return receipt["upload_id"]


def webhook_target(vendor: WebhookReceiver, secret_file: Path) -> str:
    return "\n".join([
        "[[tenants.targets]]", 'type = "webhook"', 'name = "vendor"', f"url = {json.dumps(vendor.url)}",
        "timeout_seconds = 5", f"signing = {{ secret_file = {json.dumps(str(secret_file))} }}",
    ])  # fmt: skip


@pytest.fixture
def vendor() -> Iterator[WebhookReceiver]:
    with served_in_thread(WebhookReceiver(SECRET)) as receiver:
        yield receiver


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "webhook.secret"
    path.write_text(SECRET)
    return path


@pytest.fixture
def cognito(tmp_path: Path) -> Iterator[MotoCognito]:
    with running_cognito(tmp_path / "cognito") as pool:
        yield pool


def moment(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# --- Retry-After ------------------------------------------------------------------------------------------------


def test_a_retry_after_from_cers_or_a_vendor_sets_the_next_attempt(
    rosterd, tenants: dict[str, Tenant], cognito: MotoCognito, vendor: WebhookReceiver, secret_file: Path
) -> None:
    """Both answer the first attempt with 429 and Retry-After: 120; the outbox's own first wait would be at
    most 0.2 s, so a next attempt recorded 120 s or more after the answer can only come from the header."""
    with served_in_thread(FakeCers(verify_token=cognito.verify)) as cers:
        targets = live_target(cognito, cers) + "\n" + webhook_target(vendor, secret_file)
        daemon = rosterd(dataclasses.replace(tenants["north"], extra=targets), extra_config=OUTBOX)
        cers.faults.append("429:120")
        vendor.faults.append("429:120")
        upload_id = accepted(daemon, sd.day1(), "day1.zip")
        to_cers = wait_for_delivery(daemon, "cers", upload_id, ("failed", "dead"))
        to_vendor = wait_for_delivery(daemon, "vendor", upload_id, ("failed", "dead"))

        (post,) = [r for r in cers.requests if r.method == "POST"]
        answered_no_sooner_than = {"cers": post.at, "vendor": datetime.fromtimestamp(int(vendor.requests[0].timestamp), UTC)}
        for delivery in (to_cers, to_vendor):
            assert (delivery["state"], delivery["attempts"]) == ("failed", 1), delivery
            assert "429" in delivery["last_error"]
            wait = moment(delivery["next_attempt_at"]) - answered_no_sooner_than[delivery["target"]]
            assert timedelta(seconds=120) <= wait < timedelta(seconds=180), (delivery["target"], wait)
        logged = {e["target"]: e["next_attempt_at"] for e in daemon.events("delivery.failed")}
        assert logged == {"cers": to_cers["next_attempt_at"], "vendor": to_vendor["next_attempt_at"]}
        assert cers.groups() == {} and vendor.batches == []


# --- enable-target ------------------------------------------------------------------------------------------------


def test_enable_target_sends_again_to_a_vendor_that_answered_410(
    rosterd, tenants: dict[str, Tenant], vendor: WebhookReceiver, secret_file: Path
) -> None:
    north = dataclasses.replace(tenants["north"], extra=sd.HOLDS + "\n" + webhook_target(vendor, secret_file))
    daemon = rosterd(north, extra_config=OUTBOX)
    vendor.faults.append("410")  # the vendor wants nothing more (for now)
    day1 = sd.day1()
    first = accepted(daemon, day1, "day1.zip")
    dead = wait_for_delivery(daemon, "vendor", first, ("dead",))
    assert "410" in dead["last_error"]
    (disabled,) = daemon.events("target.disabled")
    assert (disabled["target"], disabled["level"]) == ("vendor", "error")

    second = accepted(daemon, sd.day2(day1), "day2.zip")
    waiting = outbox(daemon)[("vendor", second)]
    assert (waiting["state"], waiting["attempts"]) == ("pending", 0)
    listed = admin(daemon, "outbox", "north")
    assert "target vendor of north is DISABLED" in listed.stderr and "rosterd enable-target north vendor" in listed.stderr

    enabled = admin(daemon, "enable-target", "north", "vendor")
    assert enabled.returncode == 0, enabled.stderr
    assert "enabled again" in enabled.stdout
    done = wait_for_delivery(daemon, "vendor", second, ("delivered", "dead"))
    assert done["state"] == "delivered" and done["against_upload_id"] is None  # the vendor had nothing yet
    assert {b["upload_id"] for b in vendor.batches} == {second} and vendor.anomalies == []
    assert "DISABLED" not in admin(daemon, "outbox", "north").stderr

    again = admin(daemon, "enable-target", "north", "vendor")
    assert again.returncode == 1 and "is not disabled" in again.stderr
    assert admin(daemon, "enable-target", "nobody", "vendor").returncode == 2


# --- quarantine -------------------------------------------------------------------------------------------------


def test_quarantined_files_are_deleted_after_quarantine_days(rosterd, tenants: dict[str, Tenant]) -> None:
    daemon = rosterd(tenants["north"])  # quarantine_days: the default, 30
    kept = {}
    for name, sample in (("old.zip", "broken-school-not-a-school.zip"), ("young.zip", "broken-invalid-enum.zip")):
        copy_sample(sample, daemon.client_dir / name)
        sent = daemon.sftp_batch("north", [f"put {name} inbox/{name}"])
        assert sent.returncode == 0, sent.stderr
        receipt = daemon.wait_for_receipt("north", name)
        assert receipt["state"] == "rejected"
        kept[name] = daemon.quarantine("north") / f"{receipt['upload_id']}.zip"
        assert kept[name].is_file()
    assert daemon.stop() == 0

    now = time.time()
    os.utime(kept["old.zip"], (now - 31 * 86400, now - 31 * 86400))
    os.utime(kept["young.zip"], (now - 29 * 86400, now - 29 * 86400))
    daemon.start()  # quarantine is cleared at start, then hourly
    deadline = time.monotonic() + 30
    while kept["old.zip"].exists():
        assert time.monotonic() < deadline, f"a 31-day-old quarantined file is still there\n{daemon.diagnosis()}"
        time.sleep(0.1)
    assert kept["young.zip"].is_file()


# --- check-targets ------------------------------------------------------------------------------------------------


def test_check_targets_for_a_webhook_target_reads_its_secret_and_sends_nothing(
    rosterd, tenants: dict[str, Tenant], vendor: WebhookReceiver, secret_file: Path
) -> None:
    daemon = rosterd(dataclasses.replace(tenants["north"], extra=webhook_target(vendor, secret_file)), start=False)
    checked = admin(daemon, "check-targets", "north")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"north -> vendor (webhook, {vendor.url})" in checked.stdout
    assert "signing secret: readable" in checked.stdout

    secret_file.write_text("whsec_not base64!")
    broken = admin(daemon, "check-targets")
    assert broken.returncode == 1 and "FAILED" in broken.stdout

    secret_file.unlink()
    missing = admin(daemon, "check-targets", "north")
    assert missing.returncode == 1 and "FAILED" in missing.stdout and str(secret_file) in missing.stdout
    assert SECRET not in checked.stdout + checked.stderr + broken.stdout + broken.stderr
    assert vendor.requests == []  # Standard Webhooks has no probe: nothing was sent
