"""The webhook target through the real outbox and store, against the fake vendor (tests/fakes/webhooks.py):
signed batches in order, each seen once despite faults and retries, the vendor's state equal to the scoped
roster, a scope change arriving as additions and removals, a 410 disabling the target.

The district is a small roster written below as the JSON the vendor should hold (the CSV uploaded is made
from it), and what each scope sends is written out by hand from the rule in daemon/targets/scope.py's
docstring, so a check compares the vendor's records with values no code of rosterd computed.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from daemon.snapshots.job import UploadJob, run_job
from daemon.oneroster import schema
from daemon.generator.generate import write_zip
from daemon.outbox import Job, Outbox, Outcome, RetryPolicy, delivered
from daemon.store import Delivery, DeliveryState, SnapshotRecord, State, Store
from daemon.targets.scope import COUNTS
from daemon.targets.settings import WebhookTarget
from daemon.targets.webhook import WebhookDelivery
from tests.fakes.webhooks import WebhookReceiver

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3QtdmVuZG9yLTAx"
VERSION = "1.1"
SINGULAR = {"orgs": "org", "academicSessions": "academicSession", "courses": "course", "classes": "class",
            "users": "user", "enrollments": "enrollment"}  # fmt: skip


# --- the district, as the vendor should hold it -----------------------------------------------------------------


def row(entity: str, **fields) -> dict:
    """One row as JSON: every field of the 1.1 table but the lifecycle ones, blank (null) unless given."""
    names = [n for n in schema.VERSIONS[VERSION].tables[entity].names if n not in ("status", "dateLastModified")]
    assert set(fields) <= set(names), set(fields) - set(names)
    return {name: fields.get(name) for name in names}


def person(sourced_id: str, role: str, org: str, email: str | None, **fields) -> dict:
    return row("users", sourcedId=sourced_id, enabledUser=True, orgSourcedIds=[org], role=role,
                  username=sourced_id, givenName=sourced_id.upper(), familyName="Person", email=email, **fields)  # fmt: skip


def enrollment(sourced_id: str, cls: str, user: str, role: str, **fields) -> dict:
    return row("enrollments", sourcedId=sourced_id, classSourcedId=cls, schoolSourcedId="sch-1",
                  userSourcedId=user, role=role, **fields)  # fmt: skip


ROSTER = {
    "orgs": [
        row("orgs", sourcedId="dst", name="North USD", type="district", identifier="0612345"),
        row("orgs", sourcedId="sch-1", name="North High", type="school", identifier="06123450000001",
               parentSourcedId="dst"),
    ],
    "academicSessions": [
        row("academicSessions", sourcedId="ay", title="2026-27", type="schoolYear", startDate="2026-08-15",
               endDate="2027-06-10", schoolYear=2027),
        row("academicSessions", sourcedId="fall", title="Fall", type="semester", startDate="2026-08-15",
               endDate="2026-12-19", parentSourcedId="ay", schoolYear=2027),
        row("academicSessions", sourcedId="spring", title="Spring", type="semester", startDate="2027-01-05",
               endDate="2027-06-10", parentSourcedId="ay", schoolYear=2027),
    ],
    "courses": [
        row("courses", sourcedId="crs-alg", schoolYearSourcedId="ay", title="Algebra I", courseCode="ALG1",
               grades=["09"], orgSourcedId="sch-1", subjects=["Mathematics"], subjectCodes=["02052"]),
        row("courses", sourcedId="crs-art", title="Studio Art", courseCode="ART", orgSourcedId="sch-1",
               subjects=["Fine and Performing Arts"], subjectCodes=["05154"]),
    ],
    "classes": [
        row("classes", sourcedId="cls-alg", title="Algebra I, fall", grades=["09"], courseSourcedId="crs-alg",
               classCode="ALG1-1", classType="scheduled", location="Room 12", schoolSourcedId="sch-1",
               termSourcedIds=["fall"], periods=["1"]),
        row("classes", sourcedId="cls-art", title="Studio Art, spring", courseSourcedId="crs-art",
               classType="scheduled", schoolSourcedId="sch-1", termSourcedIds=["spring"], periods=["2", "3"]),
    ],
    "users": [
        person("t-1", "teacher", "sch-1", "t1@north.example", identifier="T001", phone="+1 555 0100"),
        person("t-2", "teacher", "sch-1", "t2@north.example"),  # teaches Art only
        person("s-1", "student", "sch-1", "s1@students.north.example", agentSourcedIds=["p-1"], grades=["09"]),
        person("s-2", "student", "sch-1", "s2@students.north.example", grades=["10"], middleName="Zoë O'Brien, Jr."),
        person("p-1", "parent", "sch-1", "p1@family.example"),
        person("adm", "administrator", "dst", "adm@north.example"),
    ],
    "enrollments": [
        enrollment("e-1", "cls-alg", "t-1", "teacher", primary=True, beginDate="2026-08-15", endDate="2026-12-19"),
        enrollment("e-2", "cls-alg", "s-1", "student"),
        enrollment("e-3", "cls-alg", "s-2", "student"),
        enrollment("e-4", "cls-art", "t-2", "teacher"),
        enrollment("e-5", "cls-art", "s-1", "student"),
    ],
}


def state_of(roster: dict[str, list[dict]], keep: dict[str, set[str]] | None = None) -> dict[str, dict[str, dict]]:
    """The vendor's records for `roster` (only the sourcedIds in `keep`, for the entities it names)."""
    state = {}
    for entity, rows in roster.items():
        kept = {r["sourcedId"]: copy.deepcopy(r) for r in rows if keep is None or r["sourcedId"] in keep[entity]}
        if kept:
            state[SINGULAR[entity]] = kept
    return state


def edited(roster: dict[str, list[dict]], entity: str, sourced_id: str, **fields) -> dict[str, list[dict]]:
    """A copy of `roster` with one row's fields changed."""
    changed = copy.deepcopy(roster)
    (row,) = [r for r in changed[entity] if r["sourcedId"] == sourced_id]
    row.update(fields)
    return changed


def as_csv_tables(roster: dict[str, list[dict]]) -> dict[str, pl.DataFrame]:
    """The roster as the string tables of a bulk 1.1 package."""

    def text(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return ",".join(value) if isinstance(value, list) else str(value)

    tables = {}
    for entity, rows in roster.items():
        names = schema.VERSIONS[VERSION].tables[entity].names
        tables[entity] = pl.DataFrame({n: [text(r.get(n)) for r in rows] for n in names}, schema=dict.fromkeys(names, pl.String))
    return tables


# --- the daemon's side -----------------------------------------------------------------------------------------


class District:
    """A tenant whose uploads are recorded as the daemon records them (snapshot folders and catalog rows)."""

    def __init__(self, root: Path, store: Store) -> None:
        self.root, self.store, self.count = root, store, 0

    def accept(self, roster: dict[str, list[dict]]) -> str:
        self.count += 1
        upload_id = f"u-2026120{self.count}T000000Z-00000{self.count}"
        package = self.root / f"{upload_id}.zip"
        write_zip(as_csv_tables(roster), package, VERSION)
        folder = self.root / "snapshots" / upload_id
        folder.parent.mkdir(exist_ok=True)
        assert run_job(UploadJob(package, folder)).snapshot is not None
        self.store.add(upload_id, "north", package.name, f"{self.count:064d}", 1, str(package))
        self.store.set_state(upload_id, State.VALIDATING)
        current = self.store.current_snapshot("north")
        record = SnapshotRecord(tenant="north", version=VERSION, path=str(folder), rows={}, changes={}, holds=[],
                                base_upload_id=current.upload_id if current else None)  # fmt: skip
        self.store.record_snapshot(upload_id, record, State.ACCEPTED, {})
        return upload_id


class Witness:
    """A second target of the tenant that takes every delivery: once it has one, the outbox has looked at
    every target's waiting delivery at least once."""

    tenant, name = "north", "witness"

    async def deliver(self, job: Job) -> Outcome:
        return delivered({"ok": True})

    def next_open(self, now):
        return None

    def dated_zone(self):
        return None

    async def close(self) -> None:
        pass


@pytest.fixture
async def vendor():
    receiver = WebhookReceiver(SECRET, hang_seconds=5)
    await receiver.start()
    yield receiver
    await receiver.close()


@pytest.fixture
def store(tmp_path: Path):
    opened = Store(tmp_path / "rosterd.db", {"north": ["vendor", "witness"]})
    yield opened
    opened.close()


def target_settings(vendor: WebhookReceiver, tmp_path: Path, **fields) -> WebhookTarget:
    secret = tmp_path / "webhook.secret"
    secret.write_text(SECRET)
    return WebhookTarget.model_validate({"type": "webhook", "name": "vendor", "url": vendor.url, "timeout_seconds": 1,
                                         "signing": {"secret_file": str(secret)}, **fields})  # fmt: skip


def of_target(store: Store, name: str = "vendor") -> list[Delivery]:
    """The target's deliveries, newest first."""
    return [d for d in store.deliveries("north") if d.target == name]


def nothing_open(store: Store) -> bool:
    return not any(d.state.open for d in store.deliveries("north"))


async def deliver_until(store: Store, target: WebhookDelivery, tmp_path: Path, done=nothing_open) -> None:
    """Run the outbox (the vendor's target and the witness) until `done(store)` holds."""
    rules = RetryPolicy(first_seconds=0.05, max_seconds=0.2, give_up_seconds=60, poll_seconds=0.05,
                        rng=random.Random(3))  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        targets = {("north", "vendor"): target, ("north", "witness"): Witness()}
        outbox = Outbox(store, targets, pool, rules, lambda *a, **f: None)
        await outbox.start()
        try:
            async with asyncio.timeout(50):  # a hang anywhere below fails here, with the outbox's state
                while not done(store):
                    await asyncio.sleep(0.05)
                await outbox.idle()
        except TimeoutError:
            raise AssertionError([(d.target, d.state, d.last_error) for d in store.deliveries("north")]) from None
        finally:
            async with asyncio.timeout(20):
                await outbox.stop(grace_seconds=2)


def assert_clean(vendor: WebhookReceiver) -> None:
    """Nothing a correct sender causes: batches in order, none applied twice, none refused."""
    assert vendor.anomalies == [] and vendor.rejected == []


def sent(batches: list[dict]) -> list[tuple[str, str, str]]:
    return [(e["entity"], e["action"], e["sourcedId"]) for b in batches for e in b["events"]]


# --- tests -----------------------------------------------------------------------------------------------------


async def test_batches_are_signed_ordered_and_seen_once_despite_faults(
    vendor: WebhookReceiver, store: Store, tmp_path: Path
) -> None:
    district = District(tmp_path, store)
    first = district.accept(ROSTER)
    target = WebhookDelivery("north", target_settings(vendor, tmp_path, batch_size=4), tmp_path / "state")
    vendor.faults.extend(["503", "reset", "429:0", "timeout", "500"])
    await deliver_until(store, target, tmp_path)

    (delivery,) = of_target(store)
    assert delivery.state is DeliveryState.DELIVERED and delivery.attempts > 1
    result = delivery.result
    # 2 orgs, 3 sessions, 2 courses, 2 classes, 6 users and 5 enrollments: 20 events, 4 to a batch
    assert result["events"] == 20 and result["batches_delivered"] == result["batches"] == len(vendor.batches) == 5
    assert [b["batch"] for b in vendor.batches] == [1, 2, 3, 4, 5]
    assert_clean(vendor)
    assert vendor.duplicates >= 1  # the batch whose answer timed out, sent again under its webhook-id
    assert vendor.state() == state_of(ROSTER)  # the empty scope: the whole roster, every field
    assert result["left_out"] == dict.fromkeys(COUNTS, 0)

    # day 2: s-2 leaves, s-3 arrives in Algebra, t-1's address changes
    s3 = person("s-3", "student", "sch-1", "s3@students.north.example")
    day2 = edited(ROSTER, "users", "t-1", email="t1@staff.north.example")
    day2["users"] = [u for u in day2["users"] if u["sourcedId"] != "s-2"] + [s3]
    day2["enrollments"] = [e for e in day2["enrollments"] if e["sourcedId"] != "e-3"] + [
        enrollment("e-6", "cls-alg", "s-3", "student")]  # fmt: skip
    second = district.accept(day2)
    await deliver_until(store, target, tmp_path)
    latest = of_target(store)[0]
    assert latest.upload_id == second and latest.state is DeliveryState.DELIVERED
    assert latest.base_upload_id == first
    # creations and updates in dependency order, then deletions in reverse order
    assert sent(vendor.batches[5:]) == [("user", "created", "s-3"), ("user", "updated", "t-1"),
                                        ("enrollment", "created", "e-6"), ("enrollment", "deleted", "e-3"),
                                        ("user", "deleted", "s-2")]  # fmt: skip
    (update,) = [e for e in vendor.events() if e["action"] == "updated"]
    assert update["changed"] == ["email"]
    assert vendor.state() == state_of(day2)
    assert_clean(vendor)


SUBJECT_SCOPE = {"orgs": ["sch-1"], "subjects": ["Mathematics"],
                 "email_domains": ["north.example", "students.north.example"]}  # fmt: skip
# What SUBJECT_SCOPE sends (rules 1-6 of the scope docstring): the Algebra class, its course, its term with the
# school year, the school and its district (an ancestor), and the people of the Algebra class only: not t-2
# (no class kept), p-1 or adm (roles names no other role); s-1's guardian reference is trimmed.
SUBJECT_VIEW = {"orgs": {"dst", "sch-1"}, "academicSessions": {"ay", "fall"}, "courses": {"crs-alg"},
                "classes": {"cls-alg"}, "users": {"t-1", "s-1", "s-2"}, "enrollments": {"e-1", "e-2", "e-3"}}  # fmt: skip
SUBJECT_LEFT_OUT = dict.fromkeys(COUNTS, 0) | {
    "classes_out_of_scope": 1, "enrollments_of_classes_left_out": 2, "courses_out_of_scope": 1,
    "users_not_in_kept_classes": 1, "users_role_not_listed": 2,
}  # fmt: skip


def subject_state(roster: dict[str, list[dict]], users: set[str] = SUBJECT_VIEW["users"],
                  enrollments: set[str] = SUBJECT_VIEW["enrollments"]) -> dict[str, dict[str, dict]]:  # fmt: skip
    state = state_of(roster, SUBJECT_VIEW | {"users": users, "enrollments": enrollments})
    state["user"]["s-1"]["agentSourcedIds"] = None  # p-1 is not sent
    return state


async def test_a_subject_scope_then_leaving_it_then_a_410_disabling_the_target(
    vendor: WebhookReceiver, store: Store, tmp_path: Path
) -> None:
    district = District(tmp_path, store)
    district.accept(ROSTER)
    target = WebhookDelivery("north", target_settings(vendor, tmp_path, scope=SUBJECT_SCOPE), tmp_path / "state")
    await deliver_until(store, target, tmp_path)
    (first,) = of_target(store)
    assert first.state is DeliveryState.DELIVERED and first.result["left_out"] == SUBJECT_LEFT_OUT
    assert vendor.state() == subject_state(ROSTER)
    assert_clean(vendor)

    # s-2's address leaves the allowed domains: a removal, with the enrollment
    day2 = edited(ROSTER, "users", "s-2", email="s2@elsewhere.example")
    district.accept(day2)
    await deliver_until(store, target, tmp_path)
    second = of_target(store)[0]
    assert sent(vendor.batches[first.result["batches"]:]) == [("enrollment", "deleted", "e-3"),
                                                              ("user", "deleted", "s-2")]  # fmt: skip
    assert second.result["left_out"] == SUBJECT_LEFT_OUT | {"users_outside_domains": 1,
                                                            "enrollments_of_users_left_out": 1}  # fmt: skip
    assert vendor.state() == subject_state(day2, {"t-1", "s-1"}, {"e-1", "e-2"})
    assert_clean(vendor)

    vendor.faults.append("410")
    day3 = edited(day2, "users", "t-1", givenName="Renamed")
    district.accept(day3)
    await deliver_until(store, target, tmp_path)
    dead = of_target(store)[0]
    assert dead.state is DeliveryState.DEAD and "410 Gone" in dead.last_error
    (when, why), = [v for k, v in store.disabled_targets().items() if k == ("north", "vendor")]
    assert "410 Gone" in why

    requests = len(vendor.requests)
    day4 = edited(day3, "users", "s-1", middleName="Lee")
    last = district.accept(day4)
    # the witness took upload `last`: the outbox has since looked at the vendor's delivery and left it waiting
    await deliver_until(store, target, tmp_path,
                        done=lambda s: of_target(s, "witness")[0].state is DeliveryState.DELIVERED)  # fmt: skip
    waiting = of_target(store)[0]
    assert (waiting.upload_id, waiting.state, waiting.attempts) == (last, DeliveryState.PENDING, 0)
    assert ("north", "vendor") in store.disabled_targets() and len(vendor.requests) == requests

    store.enable_target("north", "vendor")
    await deliver_until(store, target, tmp_path)
    assert of_target(store)[0].state is DeliveryState.DELIVERED  # it carries the dead one's changes too
    assert sent(vendor.batches[-1:]) == [("user", "updated", "s-1"), ("user", "updated", "t-1")]
    assert vendor.state() == subject_state(day4, {"t-1", "s-1"}, {"e-1", "e-2"})
    assert vendor.state()["user"]["t-1"]["givenName"] == "Renamed"
    assert_clean(vendor)


def test_the_date_window_moves_classes_in_and_out_between_deliveries(tmp_path: Path) -> None:
    """Prepared as the target prepares a delivery, on three days: the spring class held back in the autumn
    arrives as a creation shortly before its term, and the fall class leaves as a deletion after its own."""
    from daemon.targets import views
    from daemon.targets.webhook import prepare

    district = District(tmp_path, Store(tmp_path / "rosterd.db"))
    snapshot = Path(district.store.snapshot(district.accept(ROSTER)).path)
    scope = {"class_start_days": 14, "class_end_days": 7}
    folder = views.target_folder(tmp_path / "state", "north", "vendor")

    def day(today: str, upload_id: str, base: str | None) -> tuple[dict, list[tuple[str, str, str]]]:
        base_view = views.sent_view(folder, base)
        meta = {"key": f"north.vendor.{upload_id}", "tenant": "north", "upload_id": upload_id, "base_upload_id": base}
        summary = prepare(str(snapshot), str(base_view) if base_view else None, None, scope, today,
                          str(views.staging(folder, upload_id)), meta, 1000)  # fmt: skip
        batches = sorted((views.staging(folder, upload_id) / "batches").glob("*.json"))
        events = sent([json.loads(path.read_text()) for path in batches])
        views.publish(folder, upload_id)
        return summary, events

    # 1 September: Algebra (fall) runs; Art (spring, from 2027-01-05) is 126 days ahead, held back. The window
    # narrows no classes by what they are, so every person is sent (rule 3); sessions are the fall term's
    autumn, events = day("2026-09-01", "u-1", None)
    assert autumn["left_out"] == dict.fromkeys(COUNTS, 0) | {"classes_not_started": 1,
                                                             "enrollments_of_classes_left_out": 2}  # fmt: skip
    assert {s for e, a, s in events if e in ("class", "academicSession", "enrollment")} == {
        "cls-alg", "ay", "fall", "e-1", "e-2", "e-3"}  # fmt: skip
    assert {s for e, a, s in events if e == "user"} == {"t-1", "t-2", "s-1", "s-2", "p-1", "adm"}

    # 28 December: Art starts in 8 days (within 14); Algebra ended 9 days ago (more than 7)
    winter, events = day("2026-12-28", "u-2", "u-1")
    assert events == [
        ("academicSession", "created", "spring"), ("class", "created", "cls-art"),
        ("enrollment", "created", "e-4"), ("enrollment", "created", "e-5"),
        ("enrollment", "deleted", "e-1"), ("enrollment", "deleted", "e-2"), ("enrollment", "deleted", "e-3"),
        ("class", "deleted", "cls-alg"), ("academicSession", "deleted", "fall"),
    ]  # fmt: skip
    assert winter["left_out"] == dict.fromkeys(COUNTS, 0) | {"classes_ended": 1, "enrollments_of_classes_left_out": 3}

    same, events = day("2026-12-29", "u-3", "u-2")  # nothing moved since yesterday: nothing to send
    assert events == [] and same["batches"] == 0


def test_passwords_never_leave_rosterd(tmp_path: Path) -> None:
    from daemon.targets import views
    from daemon.targets.webhook import prepare

    district = District(tmp_path, Store(tmp_path / "rosterd.db"))
    with_passwords = copy.deepcopy(ROSTER)
    for user in with_passwords["users"]:
        user["password"] = "hunter2-secret"
    snapshot = Path(district.store.snapshot(district.accept(with_passwords)).path)
    assert (pl.read_parquet(snapshot / "users.parquet")["password"] == "hunter2-secret").all()
    folder = views.target_folder(tmp_path / "state", "north", "vendor")
    meta = {"key": "north.vendor.u-1", "tenant": "north", "upload_id": "u-1", "base_upload_id": None}
    summary = prepare(str(snapshot), None, None, {}, "2026-12-01", str(views.staging(folder, "u-1")), meta, 1000)
    bodies = [p.read_text() for p in (views.staging(folder, "u-1") / "batches").glob("*.json")]
    assert summary["events"] == 20 and bodies and not any("hunter2" in b for b in bodies)
    users = [e for b in bodies for e in json.loads(b)["events"] if e["entity"] == "user"]
    assert len(users) == 6 and all(e["data"]["password"] is None for e in users)
