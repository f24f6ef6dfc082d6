"""Mass-change holds with the running daemon and the admin commands: held, approved, discarded, superseded.

Day 1 is a small generated district; later days drop a share of its students (with their enrollments and
demographics), which crosses the users-deleted threshold, or change one teacher's e-mail, which does not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import polars as pl
import pytest

from daemon.generator.generate import DistrictSpec, generate, write_zip

from .conftest import ROSTERD, RunningDaemon, Tenant

SPEC = DistrictSpec(schools=2, students_per_school=40, teachers_per_school=4, enrollments_per_student=3)


def without_students(tables: dict[str, pl.DataFrame], share_in_100: int) -> dict[str, pl.DataFrame]:
    """Day 1 minus about `share_in_100`% of its students, with everything that points at them."""
    users = tables["users"]
    students = users.filter(pl.col("role") == "student").get_column("sourcedId")
    gone = set(students.head(len(students) * share_in_100 // 100).to_list())
    changed = dict(tables)
    changed["users"] = users.filter(~pl.col("sourcedId").is_in(gone))
    changed["enrollments"] = tables["enrollments"].filter(~pl.col("userSourcedId").is_in(gone))
    changed["demographics"] = tables["demographics"].filter(~pl.col("sourcedId").is_in(gone))
    return changed


def with_new_email(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    users = tables["users"]
    teacher = users.filter(pl.col("role") == "teacher").get_column("sourcedId")[0]
    email = pl.when(pl.col("sourcedId") == teacher).then(pl.lit("moved@new-domain.example")).otherwise(pl.col("email"))
    return {**tables, "users": users.with_columns(email.alias("email"))}


OPERATOR = "ops-alice"  # who runs the admin commands (rosterd takes the user behind sudo)
ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def admin(daemon: RunningDaemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROSTERD), *args, "--config", str(daemon.config)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SUDO_USER": OPERATOR})  # fmt: skip


def receipt_of(daemon: RunningDaemon, name: str, upload_id: str) -> dict:
    return json.loads((daemon.results("north") / f"{name}.{upload_id}.json").read_text())


def put(daemon: RunningDaemon, tables: dict[str, pl.DataFrame], name: str) -> dict:
    earlier = _earlier(daemon)
    write_zip(tables, daemon.client_dir / name, SPEC.version)
    sent = daemon.sftp_batch("north", [f"put {name} inbox/{name}"])
    assert sent.returncode == 0, sent.stderr
    return daemon.wait_for_receipt("north", name, exclude=earlier)


def _earlier(daemon: RunningDaemon) -> list[str]:
    return [json.loads(p.read_text())["upload_id"] for p in daemon.results("north").glob("*.u-*.json")]


@pytest.fixture
def day1() -> dict[str, pl.DataFrame]:
    return generate(SPEC)


def test_held_then_superseded_approved_and_discarded(rosterd, tenants: dict[str, Tenant], day1) -> None:
    daemon = rosterd(tenants["north"])
    first = put(daemon, day1, "day1.zip")
    assert first["state"] == "accepted" and first["changes"]["against_upload_id"] is None
    assert first["changes"]["counts"]["users"]["added"] == day1["users"].height

    held = put(daemon, without_students(day1, 20), "day2.zip")
    assert held["state"] == "held"
    (hold,) = [h for h in held["holds"] if h["threshold"] == "users_deleted_share"]
    assert hold["value"] == 16 and hold["of"] == day1["users"].height  # 20% of 80 students
    assert held["changes"]["against_upload_id"] == first["upload_id"]

    fixed = put(daemon, with_new_email(day1), "day2-fixed.zip")  # the district re-exports correctly
    assert fixed["state"] == "accepted"
    assert fixed["changes"]["counts"]["users"] == {"added": 0, "updated": 1, "deleted": 0}
    superseded = json.loads((daemon.results("north") / f"day2.zip.{held['upload_id']}.json").read_text())
    assert superseded["state"] == "superseded" and fixed["upload_id"] in superseded["detail"]

    big = put(daemon, without_students(with_new_email(day1), 25), "day3.zip")
    assert big["state"] == "held"
    assert len(big["changes"]["samples"]["users"]["deleted"]) == 3  # examples of the 20 students it deletes
    approved = admin(daemon, "approve", big["upload_id"])
    assert approved.returncode == 0, approved.stderr
    receipt = receipt_of(daemon, "day3.zip", big["upload_id"])
    assert receipt["state"] == "accepted" and f"approved by {OPERATOR}" in receipt["detail"]
    assert receipt["changes"] == big["changes"]  # the examples too: the rewrite keeps every section
    assert set(big) - set(receipt) == set() and receipt["validation"] == big["validation"]
    (decision,) = receipt["decisions"]
    assert decision["decision"] == "approved" and decision["operator"] == OPERATOR
    assert re.fullmatch(ISO_UTC, decision["at"])
    assert json.loads((daemon.results("north") / "latest.json").read_text())["upload_id"] == big["upload_id"]
    logged = daemon.wait_for_event("upload.approved", upload_id=big["upload_id"])  # the daemon's own log
    assert (logged["tenant"], logged["operator"], logged["at"]) == ("north", OPERATOR, decision["at"])

    again = put(daemon, without_students(with_new_email(day1), 60), "day4.zip")
    assert again["state"] == "held"
    assert again["changes"]["against_upload_id"] == big["upload_id"]  # the approved snapshot is current
    discarded = admin(daemon, "discard", again["upload_id"])
    assert discarded.returncode == 0, discarded.stderr
    assert admin(daemon, "approve", again["upload_id"]).returncode == 1  # discarded for good
    logged = daemon.wait_for_event("upload.discarded", upload_id=again["upload_id"])
    (decision,) = receipt_of(daemon, "day4.zip", again["upload_id"])["decisions"]
    assert decision["operator"] == logged["operator"] == OPERATOR and logged["at"] == decision["at"]
    assert receipt_of(daemon, "day4.zip", again["upload_id"])["changes"] == again["changes"]

    table = admin(daemon, "snapshots", "north")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == ["upload", "state", "created"]
    assert f"{again['upload_id']}   discarded" in table.stdout and "day3.zip" in table.stdout
    assert f"\n* {big['upload_id']}   accepted" in table.stdout  # the current roster, marked
    assert sum(line.startswith("* u-") for line in table.stdout.splitlines()) == 1
    assert admin(daemon, "snapshots", "nobody").returncode == 2

    history = admin(daemon, "snapshots", "north", "--format", "json")
    states = [(row["upload_id"], row["state"], row["current"]) for row in json.loads(history.stdout)]
    assert states == [(again["upload_id"], "discarded", False), (big["upload_id"], "accepted", True),
                      (fixed["upload_id"], "accepted", False), (held["upload_id"], "superseded", False),
                      (first["upload_id"], "accepted", False)]  # fmt: skip


def test_rebaseline_takes_the_next_upload_as_all_additions(rosterd, tenants: dict[str, Tenant], day1) -> None:
    daemon = rosterd(tenants["north"])
    put(daemon, day1, "day1.zip")
    refused = admin(daemon, "rebaseline", "north")
    assert refused.returncode == 2 and "--confirm" in refused.stderr
    assert admin(daemon, "rebaseline", "north", "--confirm").returncode == 0
    requested = daemon.wait_for_event("tenant.rebaseline_requested", tenant="north")  # the daemon saw it
    assert requested["operator"] == OPERATOR and re.fullmatch(ISO_UTC, requested["at"])

    fresh = put(daemon, without_students(day1, 50), "new-sis.zip")  # would be held, but it is a new baseline
    assert fresh["state"] == "accepted" and fresh["holds"] == []
    assert fresh["changes"]["against_upload_id"] is None
    assert fresh["changes"]["counts"]["users"]["deleted"] == 0
    assert fresh["decisions"] == [{"decision": "rebaseline", "operator": OPERATOR, "at": requested["at"]}]
    assert daemon.events("snapshot.accepted", upload_id=fresh["upload_id"], rebaseline_by=OPERATOR)
