"""The webhook target through the real outbox and store, against the fake vendor (tests/fakes/webhooks.py):
signed batches in order, each seen once despite faults and retries, the vendor's state equal to the scoped
roster, a scope change arriving as additions and removals, a 410 disabling the target.
"""

from __future__ import annotations

import asyncio
import json
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from daemon import snapshots
from daemon.ingest import process_upload
from daemon.oneroster.churn import Churn, churn
from daemon.oneroster.generate import DistrictSpec, generate, write_zip
from daemon.outbox import Outbox, RetryPolicy
from daemon.store import DeliveryState, SnapshotRecord, State, Store
from daemon.targets.scope import scoped_view
from daemon.targets.settings import Scope, WebhookTarget
from daemon.targets.webhook import SINGULAR, WebhookDelivery
from tests.fakes.webhooks import WebhookReceiver

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3QtdmVuZG9yLTAx"
SPEC = DistrictSpec(schools=2, students_per_school=40, teachers_per_school=4, enrollments_per_student=3)


class District:
    """A tenant whose uploads are recorded as the daemon records them (snapshot folders and catalog rows)."""

    def __init__(self, root: Path, store: Store) -> None:
        self.root, self.store, self.count = root, store, 0

    def accept(self, tables: dict[str, pl.DataFrame]) -> str:
        self.count += 1
        upload_id = f"u-2026120{self.count}T000000Z-00000{self.count}"
        package = self.root / f"{upload_id}.zip"
        write_zip(tables, package, SPEC.version)
        folder = self.root / "snapshots" / upload_id
        folder.parent.mkdir(exist_ok=True)
        outcome = process_upload(str(package), {"staging": str(folder), "base": None, "holds": {}})
        assert "snapshot" in outcome
        self.store.add(upload_id, "north", package.name, f"{self.count:064d}", 1, str(package))
        self.store.set_state(upload_id, State.VALIDATING)
        current = self.store.current_snapshot("north")
        record = SnapshotRecord(tenant="north", version="1.1", path=str(folder), rows={}, changes={}, holds=[],
                                base_upload_id=current.upload_id if current else None)  # fmt: skip
        self.store.record_snapshot(upload_id, record, State.ACCEPTED, {})
        return upload_id


@pytest.fixture
async def vendor():
    receiver = WebhookReceiver(SECRET, hang_seconds=5)
    await receiver.start()
    yield receiver
    await receiver.close()


@pytest.fixture
def store(tmp_path: Path):
    opened = Store(tmp_path / "rosterd.db", {"north": ["vendor"]})
    yield opened
    opened.close()


def target_settings(vendor: WebhookReceiver, tmp_path: Path, **fields) -> WebhookTarget:
    secret = tmp_path / "webhook.secret"
    secret.write_text(SECRET)
    return WebhookTarget.model_validate({"type": "webhook", "name": "vendor", "url": vendor.url, "timeout_seconds": 1,
                                         "signing": {"secret_file": str(secret)}, **fields})  # fmt: skip


async def deliver_all(store: Store, target: WebhookDelivery, tmp_path: Path, timeout: float = 30) -> None:
    """Run the outbox until the target has no open delivery."""
    rules = RetryPolicy(first_seconds=0.05, max_seconds=0.2, give_up_seconds=60, poll_seconds=0.05,
                        rng=random.Random(3))  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        outbox = Outbox(store, {("north", "vendor"): target}, {"north": tmp_path}, pool, rules, lambda *a, **f: None)
        await outbox.start()
        try:
            async with asyncio.timeout(timeout + 20):  # a hang anywhere below fails here, with the outbox's state
                for _ in range(int(timeout / 0.05)):
                    if not any(d.state.open for d in store.deliveries("north")):
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError([(d.state, d.last_error) for d in store.deliveries("north")])
                await outbox.idle()
        finally:
            async with asyncio.timeout(20):
                await outbox.stop(grace_seconds=2)


def expected_state(folder: Path, scope: Scope) -> dict[str, dict[str, dict]]:
    """What the vendor should hold: the scoped view, per singular entity, sourcedId -> the sent fields."""
    view, _ = scoped_view(snapshots.scan_frames(folder)[0], scope, date.today())
    state = {}
    for entity, frame in view.items():
        data = frame.drop("status", "dateLastModified", strict=False)
        if data.height:
            state[SINGULAR[entity]] = {row["sourcedId"]: row for row in pl.DataFrame(data).to_dicts()}
    return state


def normalised(state: dict) -> dict:
    """JSON's view of values (dates as text) made comparable with polars rows."""
    return {e: {k: {f: (v.isoformat() if hasattr(v, "isoformat") else v) for f, v in row.items()}
                for k, row in rows.items()} for e, rows in state.items()}  # fmt: skip


async def test_batches_are_signed_ordered_and_seen_once_despite_faults(
    vendor: WebhookReceiver, store: Store, tmp_path: Path
) -> None:
    district = District(tmp_path, store)
    day1 = generate(SPEC)
    first = district.accept(day1)
    target = WebhookDelivery("north", target_settings(vendor, tmp_path, batch_size=100), tmp_path / "state")
    vendor.faults.extend(["503", "reset", "429:0", "timeout", "500"])
    await deliver_all(store, target, tmp_path)

    (delivery,) = store.deliveries("north")
    assert delivery.state is DeliveryState.DELIVERED and delivery.attempts > 1
    result = delivery.result
    assert result["batches_delivered"] == result["batches"] == len(vendor.batches) > 3
    assert [b["batch"] for b in vendor.batches] == list(range(1, result["batches"] + 1))
    assert vendor.anomalies == [] and vendor.rejected == [] and vendor.duplicates >= 1  # the timed-out one
    assert all(len(b["events"]) <= 100 for b in vendor.batches)
    assert normalised(vendor.state()) == normalised(expected_state(Path(store.snapshot(first).path), Scope()))

    day2 = churn(day1, SPEC.version, Churn(withdrawn=2, arrivals=1, new_emails=1, period_changes=1)).bulk
    second = district.accept(day2)
    await deliver_all(store, target, tmp_path)
    latest = store.deliveries("north")[0]
    assert latest.upload_id == second and latest.state is DeliveryState.DELIVERED
    assert latest.base_upload_id == first
    actions = {(e["entity"], e["action"]) for b in vendor.batches[result["batches"]:] for e in b["events"]}
    assert ("user", "created") in actions and ("user", "deleted") in actions and ("user", "updated") in actions
    assert normalised(vendor.state()) == normalised(expected_state(Path(store.snapshot(second).path), Scope()))
    assert vendor.anomalies == []


async def test_leaving_the_scope_is_a_removal_and_a_410_disables_the_target(
    vendor: WebhookReceiver, store: Store, tmp_path: Path
) -> None:
    district = District(tmp_path, store)
    day1 = generate(SPEC)
    district.accept(day1)
    domains = {"email_domains": ["sample-usd.example"]}  # the generator's staff domain: only teachers
    settings = target_settings(vendor, tmp_path, scope=domains)
    target = WebhookDelivery("north", settings, tmp_path / "state")
    await deliver_all(store, target, tmp_path)
    (first,) = store.deliveries("north")
    assert first.result["left_out"]["users_outside_domains"] > 0
    users = vendor.state()["user"]
    assert users and all(u["email"].endswith("@sample-usd.example") for u in users.values())

    teachers = day1["users"].filter(pl.col("role") == "teacher")
    moved = teachers["sourcedId"][0]  # this teacher's address leaves the allowed domain: a removal for the vendor
    email = pl.when(pl.col("sourcedId") == moved).then(pl.lit("moved@elsewhere.example")).otherwise(pl.col("email"))
    district.accept({**day1, "users": day1["users"].with_columns(email.alias("email"))})
    await deliver_all(store, target, tmp_path)
    events = [e for b in vendor.batches[first.result["batches"]:] for e in b["events"]]
    assert {"entity": "user", "action": "deleted", "sourcedId": moved} in [
        {k: e[k] for k in ("entity", "action", "sourcedId")} for e in events]  # fmt: skip
    assert moved not in vendor.state()["user"]

    vendor.faults.append("410")
    renamed = pl.when(pl.col("sourcedId") == teachers["sourcedId"][1]).then(pl.lit("Renamed")).otherwise(
        pl.col("givenName"))  # fmt: skip
    day3 = {**day1, "users": day1["users"].with_columns(email.alias("email"), renamed.alias("givenName"))}
    district.accept(day3)
    await deliver_all(store, target, tmp_path)
    dead = store.deliveries("north")[0]
    assert dead.state is DeliveryState.DEAD and "410 Gone" in dead.last_error
    assert ("north", "vendor") in store.disabled_targets()

    last = district.accept({**day3, "users": day3["users"].with_columns(pl.lit("x").alias("middleName"))})
    with pytest.raises(AssertionError):  # disabled: the new delivery waits
        await deliver_all(store, target, tmp_path, timeout=1)
    assert store.deliveries("north")[0].state is DeliveryState.PENDING
    store.enable_target("north", "vendor")
    await deliver_all(store, target, tmp_path)
    assert store.deliveries("north")[0].state is DeliveryState.DELIVERED  # it carries the dead one's changes too
    assert vendor.state()["user"][teachers["sourcedId"][1]]["givenName"] == "Renamed"
    assert normalised(vendor.state()) == normalised(expected_state(Path(store.snapshot(last).path),
                                                                   Scope(email_domains=["sample-usd.example"])))


def test_the_date_window_moves_classes_in_and_out_between_deliveries(tmp_path: Path) -> None:
    """Prepared as the target prepares a delivery, on three days: spring classes held back in the autumn
    arrive as creations shortly before their term, and fall classes leave as deletions after theirs."""
    from daemon.targets import views
    from daemon.targets.webhook import prepare

    district = District(tmp_path, Store(tmp_path / "rosterd.db"))
    snapshot = Path(district.store.snapshot(district.accept(generate(SPEC))).path)
    scope = {"class_start_days": 14, "class_end_days": 7}
    folder = views.target_folder(tmp_path / "state", "north", "vendor")

    def day(today: str, upload_id: str, base: str | None) -> tuple[dict, list[dict]]:
        base_view = views.sent_view(folder, base)
        meta = {"key": f"north.vendor.{upload_id}", "tenant": "north", "upload_id": upload_id, "base_upload_id": base}
        summary = prepare(str(snapshot), str(base_view) if base_view else None, None, scope, today,
                          str(views.staging(folder, upload_id)), meta, 1000)  # fmt: skip
        batches = sorted((views.staging(folder, upload_id) / "batches").glob("*.json"))
        sent = [e for path in batches for e in json.loads(path.read_text())["events"]]
        views.publish(folder, upload_id)
        return summary, sent

    autumn, sent = day("2026-09-01", "u-1", None)  # the fall term runs; spring (from 2027-01-05) is held back
    held = autumn["left_out"]["classes_not_started"]
    assert held > 0 and autumn["left_out"]["classes_ended"] == 0
    first_classes = {e["sourcedId"] for e in sent if e["entity"] == "class"}

    winter, sent = day("2026-12-28", "u-2", "u-1")  # spring starts within 14 days; fall ended 9 days ago
    created = {e["sourcedId"] for e in sent if (e["entity"], e["action"]) == ("class", "created")}
    deleted = {e["sourcedId"] for e in sent if (e["entity"], e["action"]) == ("class", "deleted")}
    assert len(created) == held and not created & first_classes
    assert deleted and deleted <= first_classes and winter["left_out"]["classes_ended"] == len(deleted)
    assert {e["action"] for e in sent if e["entity"] == "enrollment"} == {"created", "deleted"}

    same, sent = day("2026-12-29", "u-3", "u-2")  # nothing moved since yesterday: nothing to send
    assert sent == [] and same["batches"] == 0


def test_passwords_never_leave_rosterd(tmp_path: Path) -> None:
    from daemon.targets import views
    from daemon.targets.webhook import prepare

    district = District(tmp_path, Store(tmp_path / "rosterd.db"))
    day1 = generate(SPEC)
    day1 = {**day1, "users": day1["users"].with_columns(pl.lit("hunter2-secret").alias("password"))}
    snapshot = Path(district.store.snapshot(district.accept(day1)).path)
    assert (pl.read_parquet(snapshot / "users.parquet")["password"] == "hunter2-secret").all()
    folder = views.target_folder(tmp_path / "state", "north", "vendor")
    meta = {"key": "north.vendor.u-1", "tenant": "north", "upload_id": "u-1", "base_upload_id": None}
    summary = prepare(str(snapshot), None, None, {}, "2026-12-01", str(views.staging(folder, "u-1")), meta, 1000)
    bodies = [p.read_text() for p in (views.staging(folder, "u-1") / "batches").glob("*.json")]
    assert summary["events"] > 0 and bodies and not any("hunter2" in b for b in bodies)
    users = [e for b in bodies for e in json.loads(b)["events"] if e["entity"] == "user"]
    assert users and all(e["data"]["password"] is None for e in users)
