"""`rosterd diff OLD.zip NEW.zip` as a user runs it: exit codes, JSON and text output, on generated
day-1/day-2 packages with known changes and on the broken samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from daemon.cli import main
from daemon.generator.churn import Churn, churn
from daemon.generator.generate import DELTA_MODIFIED, DistrictSpec, generate, write_zip

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
ROSTERD = Path(sys.executable).parent / "rosterd"
SPEC = DistrictSpec(schools=2, students_per_school=30, teachers_per_school=4, enrollments_per_student=4)
CHURN = Churn(withdrawn=2, arrivals=1, new_emails=1, period_changes=1)


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("diff-cli")
    day1 = generate(SPEC)
    day2 = churn(day1, SPEC.version, CHURN)
    paths = {"day1": folder / "day1.zip", "bulk": folder / "day2.zip", "delta": folder / "day2-delta.zip",
             "dangling": folder / "dangling.zip"}  # fmt: skip
    write_zip(day1, paths["day1"], SPEC.version)
    write_zip(day2.bulk, paths["bulk"], SPEC.version)
    write_zip(day2.delta, paths["delta"], SPEC.version, "delta")
    closed = day1["classes"].head(1).with_columns(status=pl.lit("tobedeleted"), dateLastModified=pl.lit(DELTA_MODIFIED))
    write_zip({"classes": closed}, paths["dangling"], SPEC.version, "delta")  # its enrollments stay behind
    orphans = day1["enrollments"].filter(pl.col("classSourcedId") == closed["sourcedId"][0]).height
    return {**paths, "expected": day2.expected, "orphans": orphans}


def diff(capsys, *args: object) -> tuple[int, str, str]:
    code = main(["diff", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_explains_the_command():
    out = subprocess.run([str(ROSTERD), "diff", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for words in ("OLD.zip", "NEW.zip", "--format", "--strict", "delta", "sourcedId", "Exit status: 0 compared"):
        assert words in text
    top = subprocess.run([str(ROSTERD), "--help"], capture_output=True, text=True, timeout=120)
    assert "diff" in top.stdout


def test_json_gives_exact_counts_for_every_entity_and_samples(zips):
    out = subprocess.run([str(ROSTERD), "diff", "--format", "json", str(zips["day1"]), str(zips["bulk"])],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"entities", "samples"}
    assert doc["entities"] == zips["expected"]
    assert doc["entities"]["users"] == {"added": 1, "updated": 1, "deleted": 2}
    assert doc["entities"]["enrollments"] == {"added": 4, "updated": 0, "deleted": 8}
    assert doc["entities"]["orgs"] == {"added": 0, "updated": 0, "deleted": 0}  # present, unchanged
    update = doc["samples"]["users"]["updated"][0]
    assert update["changed"][0]["field"] == "email" and "@staff." in update["changed"][0]["new"]
    assert len(doc["samples"]["enrollments"]["deleted"]) == 3  # the default number of examples


def test_a_delta_package_as_new_gives_the_same_change_set_as_the_bulk(capsys, zips):
    code, bulk, _ = diff(capsys, "--format", "json", zips["day1"], zips["bulk"])
    assert code == 0
    code, delta, _ = diff(capsys, "--format", "json", zips["day1"], zips["delta"])
    assert code == 0
    assert json.loads(delta) == json.loads(bulk)


def test_text_is_a_table_of_counts_with_examples(capsys, zips):
    code, out, _ = diff(capsys, zips["day1"], zips["bulk"], "--samples", "1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("(OneRoster 1.1): 20 changed rows")
    assert lines[2].split() == ["entity", "added", "updated", "deleted"]
    assert "users 1 1 2" in [" ".join(line.split()) for line in lines]
    assert "total 6 2 12" in [" ".join(line.split()) for line in lines]
    assert any(line.strip().startswith("updated  tch-") and "email: '" in line for line in lines)
    assert any("… and 7 more deleted" in line for line in lines)


def test_the_same_package_twice_has_no_changes(capsys, zips):
    code, out, _ = diff(capsys, zips["day1"], zips["day1"])
    assert code == 0 and out.rstrip().endswith("no changes")
    code, out, _ = diff(capsys, "--format", "json", zips["day1"], zips["day1"])
    assert json.loads(out)["samples"] == {}


def test_a_rejected_package_exits_1_with_its_counts_by_code(capsys, zips):
    code, out, _ = diff(capsys, zips["day1"], SAMPLES / "broken-school-not-a-school.zip")
    assert code == 1
    assert "REJECTED (NEW was rejected)" in out and "reference.target_type_mismatch" in out
    code, out, _ = diff(capsys, "--format", "json", SAMPLES / "broken-invalid-enum.zip", zips["day1"])
    assert code == 1
    doc = json.loads(out)
    assert doc["reason"] == "OLD was rejected" and doc["counts_by_code"]["row.invalid_enum"] >= 1


def test_strict_validates_both_packages_strictly(capsys, zips):
    assert diff(capsys, SAMPLES / "valid-1.1-bulk.zip", SAMPLES / "lenient-excel-export.zip")[0] == 0
    code, out, _ = diff(capsys, "--strict", SAMPLES / "valid-1.1-bulk.zip", SAMPLES / "lenient-excel-export.zip")
    assert code == 1 and "row.invalid_boolean" in out


def test_a_delta_that_leaves_references_dangling_is_rejected(capsys, zips):
    code, out, _ = diff(capsys, "--format", "json", zips["day1"], zips["dangling"])
    assert code == 1
    doc = json.loads(out)
    assert doc["reason"] == "NEW leaves references dangling once applied to OLD"
    assert doc["counts_by_code"] == {"reference.missing_target_record": zips["orphans"]}
    assert zips["orphans"] > 1  # the class's teacher and students


@pytest.mark.parametrize("args", [("missing-old.zip", "NEW"), ("OLD", "missing-new.zip"), ("OLD", "NEW", "--samples", "-1")])
def test_unusable_arguments_exit_2(capsys, zips, tmp_path, args):
    named = {"OLD": zips["day1"], "NEW": zips["bulk"]}
    code, out, err = diff(capsys, *(named.get(a, tmp_path / a if a.endswith(".zip") else a) for a in args))
    assert code == 2 and out == "" and "rosterd diff:" in err


def test_a_delta_package_as_old_exits_2(capsys, zips):
    code, out, err = diff(capsys, zips["delta"], zips["bulk"])
    assert code == 2 and "snapshot.delta_without_baseline" in err and "bulk package as OLD" in err
