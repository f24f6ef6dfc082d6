"""The SFTP push target with two running daemons: the district's rosterd pushes a scoped OneRoster zip to a
second rosterd acting as the vendor, which must accept it and end up with exactly the scoped roster.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from datetime import date

import polars as pl

from daemon import snapshots
from daemon.diff import diff_snapshots
from daemon.oneroster.churn import Churn, churn
from daemon.oneroster.generate import DistrictSpec, generate, write_zip
from daemon.targets.scope import scoped_view
from daemon.targets.settings import Scope

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


def same_roster(vendor: RunningDaemon, tenant: str, upload_id: str, district: RunningDaemon, source: str,
                scope: Scope) -> None:  # fmt: skip
    """The vendor's snapshot holds exactly the district's scoped roster."""
    theirs = snapshots.read_frames(vendor.state / "snapshots" / tenant / upload_id)
    ours, _ = scoped_view(snapshots.scan_frames(district.state / "snapshots" / "north" / source)[0], scope, date.today())
    ours = {e: f for e, f in ours.items() if f.height or e in theirs}
    changes = diff_snapshots(ours, theirs)
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

    day1 = generate(SPEC)
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
    same_roster(vendor, "south", taken["upload_id"], district, first["upload_id"],
                Scope(orgs=[school], roles=["student", "teacher"]))  # fmt: skip
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
    same_roster(vendor, "south", taken["upload_id"], district, second["upload_id"], Scope())
