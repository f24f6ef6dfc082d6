"""Deliveries to CERS with the running daemon: dry run into results/cers/, and sending to the fake CERS with
a Cognito token from moto, through a server fault, a refusal, and `rosterd replay`.

The district is tests/cers/small_district.py, whose CERS groups are worked out by hand from README's rules:
what CERS holds after each delivery is compared with them, every field (name, school, year, subject, teachers,
students), and so is what each file carried.

The fake CERS runs on its own event loop in a thread (tests/fakes/threaded.py), since the daemon harness
waits synchronously.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cers import small_district as sd
from tests.cers.moto_cognito import MotoCognito, running_cognito
from tests.fakes.cers import FakeCers
from tests.fakes.threaded import served_in_thread

from .conftest import ROSTERD, RunningDaemon, Tenant

DELIVERY_DEADLINE = 45.0


@pytest.fixture
def cognito(tmp_path: Path) -> Iterator[MotoCognito]:
    with running_cognito(tmp_path / "cognito") as pool:
        yield pool


@pytest.fixture
def cers(cognito: MotoCognito) -> Iterator[FakeCers]:
    with served_in_thread(FakeCers(verify_token=cognito.verify)) as fake:
        yield fake


def admin(daemon: RunningDaemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROSTERD), *args, "--config", str(daemon.config)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def put(daemon: RunningDaemon, tables: sd.Tables, name: str) -> dict:
    sd.write_package(tables, daemon.client_dir / name)
    sent = daemon.sftp_batch("north", [f"put {name} inbox/{name}"])
    assert sent.returncode == 0, sent.stderr
    return daemon.wait_for_receipt("north", name)


def delivery_in_receipt(daemon: RunningDaemon, receipt: dict, states: tuple[str, ...]) -> dict:
    """Read the upload's receipt on disk until its CERS delivery reaches one of `states`."""
    path = daemon.results("north") / f"{receipt['file']}.{receipt['upload_id']}.json"
    deadline = time.monotonic() + DELIVERY_DEADLINE
    last = None
    while time.monotonic() < deadline:
        last = json.loads(path.read_text())
        found = [d for d in last.get("deliveries", []) if d["state"] in states]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"delivery not {states} in {DELIVERY_DEADLINE}s: {last.get('deliveries')}\n{daemon.diagnosis()}")


def test_dry_run_writes_the_group_files_to_results_cers(rosterd, tenants: dict[str, Tenant]) -> None:
    north = dataclasses.replace(tenants["north"], extra='[[tenants.targets]]\ntype = "cers"\ndry_run = true')
    daemon = rosterd(north)
    receipt = put(daemon, sd.day1(), "day1.zip")
    assert receipt["state"] == "accepted"
    delivered = delivery_in_receipt(daemon, receipt, ("delivered", "dead"))
    assert delivered["state"] == "delivered" and delivered["dry_run"] is True
    (entry,) = delivered["files"]
    assert entry["name"] == f"rosterd-north-{receipt['upload_id']}-1.csv"
    assert [f["sourcedId"] for f in delivered["findings"]] == ["sch-new"]  # the school without a CDS code

    got = daemon.sftp_batch("north", ["ls results/cers", f"get results/cers/{entry['name']}"])
    assert got.returncode == 0, got.stderr
    rows = list(csv.reader(io.StringIO((daemon.client_dir / entry["name"]).read_text(), newline="")))
    assert rows[0] == sd.HEADER and len(rows) - 1 == entry["rows"]
    assert sd.blocks(rows[1:]) == sd.expected_blocks(sd.DAY1_GROUPS)
    listed = admin(daemon, "outbox", "north", "--format", "json")
    (row,) = json.loads(listed.stdout)
    assert (row["target"], row["state"], row["upload_id"]) == ("cers", "delivered", receipt["upload_id"])
    assert "delivery.delivered" in [e["event"] for e in daemon.events()]


def live_target(cognito: MotoCognito, cers: FakeCers) -> str:
    """The TOML of a CERS target that sends to the fake with the moto credential (the secret in a file)."""
    return "\n".join([
        "[[tenants.targets]]", 'type = "cers"', f"imports_url = {json.dumps(cers.imports_url)}",
        "timeout_seconds = 10", "[tenants.targets.cognito]", f"endpoint_url = {json.dumps(cognito.endpoint_url)}",
        f"region = {json.dumps(cognito.region)}", f"client_id = {json.dumps(cognito.client_id)}",
        f"username = {json.dumps(cognito.username)}", f"secret_file = {json.dumps(str(cognito.secret_file))}",
    ])  # fmt: skip


def test_check_targets_shows_who_the_credential_is_and_whether_it_may_write_groups(
    rosterd, tenants: dict[str, Tenant], cognito: MotoCognito, cers: FakeCers
) -> None:
    daemon = rosterd(dataclasses.replace(tenants["north"], extra=live_target(cognito, cers)), start=False)
    checked = admin(daemon, "check-targets", "north")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"credential: {cognito.username}" in checked.stdout and "PERM_GROUP_WRITE" in checked.stdout
    assert "may write student groups: yes" in checked.stdout
    assert [(r.method, r.path, r.status) for r in cers.requests] == [("GET", "/imports/user", 200)]

    cers.group_write = lambda user: False
    refused = admin(daemon, "check-targets")
    assert refused.returncode == 1 and "may write student groups: NO" in refused.stdout

    cognito.secret_file.write_text("a-wrong-secret")
    failed = admin(daemon, "check-targets", "north")
    assert failed.returncode == 1 and "FAILED" in failed.stdout and "NotAuthorizedException" in failed.stdout
    assert "a-wrong-secret" not in failed.stdout + failed.stderr
    assert admin(daemon, "check-targets", "nobody").returncode == 2


def test_sending_to_cers_through_a_fault_a_refusal_and_a_replay(
    rosterd, tenants: dict[str, Tenant], cognito: MotoCognito, cers: FakeCers
) -> None:
    outbox = "[outbox]\nretry_first_seconds = 0.3\nretry_max_seconds = 1\npoll_seconds = 0.3\n"
    north = dataclasses.replace(tenants["north"], extra=sd.HOLDS + "\n" + live_target(cognito, cers))
    daemon = rosterd(north, extra_config=outbox)
    day1 = sd.day1()

    first = put(daemon, day1, "day1.zip")
    sent = delivery_in_receipt(daemon, first, ("delivered", "dead"))
    assert sent["state"] == "delivered" and sent["files"][0]["status"] == "ACCEPTED", sent
    (posted,) = cers.imports
    assert (posted.field, posted.batch) == ("file", sent["files"][0]["name"])  # multipart, in the field `file`
    assert sd.blocks(posted.rows) == sd.expected_blocks(sd.DAY1_GROUPS)
    assert cers.groups() == sd.DAY1_CERS

    cers.faults.append("503")  # CERS has trouble once: the delivery is retried
    day2 = sd.day2(day1)
    second = put(daemon, day2, "day2.zip")
    retried = delivery_in_receipt(daemon, second, ("delivered", "dead"))
    assert retried["state"] == "delivered" and retried["attempts"] == 2
    assert (retried["counts"]["sent"], retried["counts"]["groups"]) == (4, 4)
    assert retried["against_upload_id"] == first["upload_id"]
    assert sd.blocks(cers.imports[-1].rows) == sd.expected_blocks(sd.DAY2_SENT)  # only what changed
    assert cers.groups() == sd.DAY2_CERS

    cers.group_write = lambda user: False  # the credential loses its permission
    third = put(daemon, sd.day3(day2), "day3.zip")
    dead = delivery_in_receipt(daemon, third, ("dead",))
    assert "403" in dead["error"] and "GROUP_WRITE" in dead["error"]
    assert [e["delivery_id"] for e in daemon.events("delivery.dead")] == [dead["delivery_id"]]
    assert cers.groups() == sd.DAY2_CERS

    cers.group_write = lambda user: True  # fixed in TOMS; the operator replays
    replayed = admin(daemon, "replay", dead["delivery_id"])
    assert replayed.returncode == 0, replayed.stderr
    done = delivery_in_receipt(daemon, third, ("delivered",))
    assert done["attempts"] == 1 and done["against_upload_id"] == second["upload_id"]
    assert sd.blocks(cers.imports[-1].rows) == sd.expected_blocks(sd.DAY3_SENT)
    assert cers.groups() == sd.DAY3_CERS
    table = admin(daemon, "outbox", "north").stdout.splitlines()
    assert table[0].split()[:3] == ["delivery", "tenant", "target"] and len(table) == 4
    replayed_row = next(line for line in table if line.startswith(dead["delivery_id"]))
    assert replayed_row.split()[4] == "delivered"
    assert cognito.secret not in daemon.output()  # never logged


def test_a_delivery_cut_off_by_kill_9_is_sent_again_after_the_restart(
    rosterd, tenants: dict[str, Tenant], cognito: MotoCognito, cers: FakeCers
) -> None:
    daemon = rosterd(dataclasses.replace(tenants["north"], extra=live_target(cognito, cers)),
                     extra_config="[outbox]\npoll_seconds = 0.3\n")  # fmt: skip
    cers.hang_seconds = 60
    cers.faults.append("timeout")  # CERS takes the file, and the answer never comes back before the kill
    receipt = put(daemon, sd.day1(), "day1.zip")
    started = daemon.wait_for_event("delivery.started", upload_id=receipt["upload_id"])
    deadline = time.monotonic() + 20
    while not cers.imports and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cers.imports, "the POST never reached CERS"
    daemon.kill()  # kill -9 in the middle of the delivery

    daemon.start()
    assert daemon.wait_for_event("delivery.resumed")["count"] == 1
    done = delivery_in_receipt(daemon, receipt, ("delivered", "dead"))
    assert done["state"] == "delivered" and done["attempts"] == 2 and done["delivery_id"] == started["delivery_id"]
    assert done["files"][0]["status"] == "PROCESSED"  # the same bytes again: CERS applies nothing twice
    assert len(cers.imports) == 1 and cers.groups() == sd.DAY1_CERS
