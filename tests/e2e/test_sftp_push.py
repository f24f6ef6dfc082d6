"""The SFTP push target with two running daemons: the district's rosterd pushes a scoped OneRoster zip to a
second rosterd acting as the vendor, which must accept it and end up with exactly the scoped roster.

What the vendor should hold is read off the district's own snapshot of the upload with the scope rule of
daemon/targets/scope.py written out for the one scope used (a school's students and teachers: those enrolled
in its classes), not made by `scoped_view`.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import polars as pl

from daemon.snapshots import storage
from daemon.snapshots.diff import diff_snapshots
from daemon.generator.churn import Churn, churn
from daemon.generator.generate import DistrictSpec, generate, write_zip

from .conftest import ROSTERD, RunningDaemon, Tenant

SPEC = DistrictSpec(schools=3, students_per_school=30, teachers_per_school=3, enrollments_per_student=3)
DEADLINE = 60.0


def push_target(name: str, vendor: RunningDaemon, vendor_tenant: Tenant, scope: str, *, mode: str = "bulk",
                host_key: str | None = None, password_file: Path | None = None) -> str:  # fmt: skip
    pinned = host_key or (vendor.state / "hostkeys" / "ssh_host_ed25519_key.pub").read_text().strip()
    login = f"key_file = {json.dumps(str(vendor_tenant.key))}"
    if password_file is not None:
        login = f"secret_file = {json.dumps(str(password_file))}"
    return "\n".join([
        "[[tenants.targets]]", 'type = "sftp"', f'name = "{name}"', 'host = "127.0.0.1"', f"port = {vendor.port}",
        f"host_key = {json.dumps(pinned)}", 'remote_dir = "inbox"', f'mode = "{mode}"', "timeout_seconds = 10",
        f"auth = {{ username = {json.dumps(vendor_tenant.name)}, {login} }}", f'file_name = "{{tenant}}-{name}-{{upload_id}}.zip"',
        f"scope = {scope}",
    ])  # fmt: skip


def put(daemon: RunningDaemon, tenant: str, tables: dict[str, pl.DataFrame], name: str) -> dict:
    write_zip(tables, daemon.client_dir / name, SPEC.version)
    sent = daemon.sftp_batch(tenant, [f"put {name} inbox/{name}"])
    assert sent.returncode == 0, sent.stderr
    return daemon.wait_for_receipt(tenant, name)


def delivery(daemon: RunningDaemon, tenant: str, receipt: dict, target: str, states=("delivered", "dead")) -> dict:
    path = daemon.results(tenant) / f"{receipt['file']}.{receipt['upload_id']}.json"
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = [d for d in json.loads(path.read_text()).get("deliveries", []) if d["target"] == target]
        if found and found[0]["state"] in states:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"{target}: no delivery in {states}\n{daemon.diagnosis()}")


def vendor_receipts(vendor: RunningDaemon, tenant: str, count: int) -> list[dict]:
    """The vendor's receipts once at least `count` are final (all of them, in arrival order). A push that
    timed out after the zip arrived is pushed again: the vendor sees the same bytes as a duplicate."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = [json.loads(p.read_text()) for p in vendor.results(tenant).glob("*.u-*.json")]
        final = sorted((r for r in found if r["state"] not in ("received", "validating")),
                       key=lambda r: (r["received_at"], r["upload_id"]))  # fmt: skip
        if len(final) >= count and len(final) == len(found):
            return final
        time.sleep(0.2)
    raise AssertionError(f"the vendor has no {count} final receipts\n{vendor.diagnosis()}")


def vendor_accepted(vendor: RunningDaemon, tenant: str, count: int) -> list[dict]:
    """The vendor's accepted receipts once `count` of them are there."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        accepted = [r for r in vendor_receipts(vendor, tenant, count) if r["state"] == "accepted"]
        if len(accepted) >= count:
            return accepted
        time.sleep(0.2)
    raise AssertionError(f"the vendor has not accepted {count} zips\n{vendor.diagnosis()}")


def with_other_people(tables: dict[str, pl.DataFrame], school: str) -> dict[str, pl.DataFrame]:
    """The generated district (students and teachers, all in classes) with three people at `school` whom a
    scope of its students and teachers must not send: an administrator, a parent of its first student and a
    teacher with no class."""
    users = tables["users"]
    first = users.filter((pl.col("role") == "student") & (pl.col("orgSourcedIds") == school))["sourcedId"][0]
    extra = pl.DataFrame({"sourcedId": ["adm-x", "par-x", "tch-idle"], "role": ["administrator", "parent", "teacher"]})
    extra = extra.with_columns(enabledUser=pl.lit("true"), orgSourcedIds=pl.lit(school), username="sourcedId",
                               givenName=pl.lit("Pat"), familyName=pl.lit("Other"))  # fmt: skip
    extra = extra.select(pl.col(c) if c in extra.columns else pl.lit("").alias(c) for c in users.columns)
    linked = pl.when(pl.col("sourcedId") == first).then(pl.lit("par-x")).otherwise(pl.col("agentSourcedIds"))
    return {**tables, "users": pl.concat([users.with_columns(linked.alias("agentSourcedIds")), extra])}


def school_view(frames: dict[str, pl.DataFrame], school: str) -> dict[str, pl.DataFrame]:
    """The rule for `orgs = [school], roles = ["student", "teacher"]` on a district of one level of schools:
    the school's classes and their student and teacher enrollments; the people of those enrollments only
    (rule 4a; with no agents left to point at); the courses the classes use and the school's own; the terms
    the classes use with their parents; the school and the district; demographics of the people sent."""
    classes = frames["classes"].filter(pl.col("schoolSourcedId") == school)
    enrollments = frames["enrollments"].filter(pl.col("classSourcedId").is_in(classes["sourcedId"].implode())
                                               & pl.col("role").is_in(["student", "teacher"]))  # fmt: skip
    people = enrollments["userSourcedId"].unique().implode()
    used = classes["courseSourcedId"].implode()
    courses = frames["courses"].filter(pl.col("sourcedId").is_in(used) | (pl.col("orgSourcedId") == school))
    terms = classes["termSourcedIds"].explode().append(courses["schoolYearSourcedId"]).drop_nulls().implode()
    sessions = frames["academicSessions"]
    parents = sessions.filter(pl.col("sourcedId").is_in(terms))["parentSourcedId"].drop_nulls().implode()
    return {
        "orgs": frames["orgs"].filter(pl.col("sourcedId").is_in([school, "dst-0001"])),
        "academicSessions": sessions.filter(pl.col("sourcedId").is_in(terms) | pl.col("sourcedId").is_in(parents)),
        "courses": courses, "classes": classes, "enrollments": enrollments,
        "users": frames["users"].filter(pl.col("sourcedId").is_in(people)).with_columns(
            agentSourcedIds=pl.lit(None, dtype=pl.List(pl.String))),
        "demographics": frames["demographics"].filter(pl.col("sourcedId").is_in(people)),
    }  # fmt: skip


def district_snapshot(district: RunningDaemon, upload_id: str) -> dict[str, pl.DataFrame]:
    """What the district's rosterd stored for the upload, as the vendor would get it: passwords empty."""
    frames = storage.read_frames(district.state / "snapshots" / "north" / upload_id)
    return {e: f.with_columns(pl.lit(None, dtype=f.schema[c]).alias(c) for c in ("password",) if c in f.columns)
            for e, f in frames.items()}  # fmt: skip


def vendor_holds(vendor: RunningDaemon, tenant: str, upload_id: str, expected: dict[str, pl.DataFrame]) -> None:
    """The vendor's snapshot holds exactly `expected` (rows and every field; lifecycle columns aside)."""
    theirs = storage.read_frames(vendor.state / "snapshots" / tenant / upload_id)
    assert {e for e, f in theirs.items() if f.height} == {e for e, f in expected.items() if f.height}
    changes = diff_snapshots(expected, {e: f for e, f in theirs.items() if e in expected})
    assert changes.is_empty(), changes.counts()


def test_a_scoped_zip_pushed_to_a_second_rosterd_is_accepted_there(
    rosterd, tenants: dict[str, Tenant], tmp_path: Path
) -> None:
    vendor = rosterd(tenants["south"])
    school = "sch-0002"
    scope = f'{{ orgs = ["{school}"], roles = ["student", "teacher"] }}'
    password = tmp_path / "vendor-password"
    password.write_text(tenants["south"].password)
    targets = "\n".join([push_target("bulky", vendor, tenants["south"], scope),
                         push_target("wrongkey", vendor, tenants["south"], scope, host_key=tenants["north"].public_key),
                         push_target("bypassword", vendor, tenants["south"], scope, password_file=password)])  # fmt: skip
    district = rosterd(dataclasses.replace(tenants["north"], extra=targets))

    day1 = with_other_people(generate(SPEC), school)
    first = put(district, "north", day1, "day1.zip")
    pushed = delivery(district, "north", first, "bulky")
    assert pushed["state"] == "delivered", pushed
    assert pushed["mode"] == "bulk" and pushed["file"] == f"inbox/north-bulky-{first['upload_id']}.zip"
    refused = delivery(district, "north", first, "wrongkey")
    assert refused["state"] == "dead" and "not the pinned one" in refused["error"]
    assert delivery(district, "north", first, "bypassword")["state"] == "delivered"

    got = vendor_receipts(vendor, "south", 2)  # the same zip by key and by password (and again, if a push retried)
    assert [r["state"] for r in got].count("accepted") == 1 and {r["state"] for r in got} == {"accepted", "duplicate"}
    assert {r["file"] for r in got} == {f"north-{t}-{first['upload_id']}.zip" for t in ("bulky", "bypassword")}
    taken = next(r for r in got if r["state"] == "accepted")
    assert taken["validation"]["counts_by_code"] == {}
    expected = school_view(district_snapshot(district, first["upload_id"]), school)
    assert not {"adm-x", "par-x", "tch-idle"} & set(expected["users"]["sourcedId"])  # not enrolled, not named
    assert expected["users"].height == 30 + 3  # the generator's students and teachers of the school
    vendor_holds(vendor, "south", taken["upload_id"], expected)
    # in the receipt, why the others were not sent: the other two schools' 66 students and teachers and the idle
    # teacher are in no kept class; the administrator's and the parent's roles are not listed
    left_out = pushed["left_out"]
    assert left_out["users_not_in_kept_classes"] == 2 * 33 + 1 and left_out["users_role_not_listed"] == 2
    classes = pl.read_parquet(vendor.state / "snapshots" / "south" / taken["upload_id"] / "classes.parquet")
    assert set(classes["schoolSourcedId"]) == {school}

    checked = subprocess.run([str(ROSTERD), "check-targets", "north", "--config", str(district.config)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 1, checked.stdout + checked.stderr  # the wrong key fails; the others pass
    blocks = {b.split(" ", 3)[2]: b for b in checked.stdout.strip().split("\n\n")}
    assert "logged in; host key matches the pinned one; inbox holds 0 entries" in blocks["bulky"]
    assert "logged in" in blocks["bypassword"] and "not the pinned one" in blocks["wrongkey"]


def test_delta_pushes_apply_on_the_vendor_side(rosterd, tenants: dict[str, Tenant]) -> None:
    vendor = rosterd(tenants["south"])
    district = rosterd(dataclasses.replace(tenants["north"], extra=push_target("delta", vendor, tenants["south"], "{}",
                                                                              mode="delta")))  # fmt: skip
    day1 = generate(SPEC)
    first = put(district, "north", day1, "day1.zip")
    assert delivery(district, "north", first, "delta")["mode"] == "bulk"  # nothing to apply a delta to yet
    vendor_accepted(vendor, "south", 1)

    day2 = churn(day1, SPEC.version, Churn(withdrawn=2, arrivals=2, new_emails=1, period_changes=1)).bulk
    second = put(district, "north", day2, "day2.zip")
    pushed = delivery(district, "north", second, "delta")
    assert pushed["state"] == "delivered" and pushed["mode"] == "delta", pushed
    taken = vendor_accepted(vendor, "south", 2)[-1]
    assert all(s["mode"] == "delta" for s in taken["validation"]["files"].values())
    assert taken["changes"]["counts"]["users"] == {"added": 2, "updated": 1, "deleted": 2}
    vendor_holds(vendor, "south", taken["upload_id"], district_snapshot(district, second["upload_id"]))  # all
