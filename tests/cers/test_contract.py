"""Every group file rosterd builds passes the fake CERS's rules, and broken ones built from them do not.

The fake's checker (tests/fakes/cers.py) follows CERS's documented validation; here it judges the real
builder on generated districts under several mappings and on a real-world export, and is shown to refuse a
file that breaks each rule, so it cannot pass everything.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import polars as pl
import pytest

from daemon.oneroster.validate import ValidateOptions
from daemon.snapshots.job import TenantRules, UploadJob, run_job
from daemon.generator.generate import DistrictSpec, generate, write_zip
from daemon.targets.cers.settings import CersTarget
from daemon.targets.cers.target import build_files
from tests.fakes.cers import check_file

EXTERNAL = Path(__file__).resolve().parents[1] / "data" / "external"
RULES = {"schools": None, "school_years": set(range(2020, 2036)), "subjects": {"Math", "ELA", "ELPAC"}}


def snapshot_of(package: Path, folder: Path) -> Path:
    outcome = run_job(UploadJob(package, folder, rules=TenantRules(ValidateOptions(max_dropped_share=1.0))))
    assert outcome.snapshot is not None, outcome.validation["counts_by_code"]
    return folder


def files_for(folder: Path, **target) -> dict:
    return build_files(str(folder), None, CersTarget(type="cers", dry_run=True, **target).model_dump(mode="json"))


def failures(data: bytes, max_rows: int = 200_000) -> list[tuple[int, str]]:
    return check_file(data, max_rows=max_rows, **RULES).failures


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract")
    tables = generate(DistrictSpec(schools=3, students_per_school=80, teachers_per_school=5, version="1.2"))
    write_zip(tables, root / "d.zip", "1.2")
    return snapshot_of(root / "d.zip", root / "snapshot")


@pytest.mark.parametrize("target", [
    {},
    {"max_rows_per_file": 60},
    {"mapping": {"group_name": "{title} P{periods}", "student_id": "userIds:CA-SSID", "teachers": "primary"}},
    {"mapping": {"group_name": "{sourcedId}", "teacher_login": "username", "default_subject": "ELPAC"}},
    {"filters": {"class_types": ["scheduled"], "include_subjects": ["Math"]}},
], ids=["defaults", "small-files", "title-template", "sourcedid-names", "math-only"])  # fmt: skip
def test_every_file_built_from_a_district_is_accepted(district: Path, target: dict) -> None:
    built = files_for(district, **target)
    assert built["files"], built
    for data in built["files"]:
        assert failures(data, target.get("max_rows_per_file", 200_000)) == []
    rows = sum(data.count(b"\n") - 1 for data in built["files"])
    assert rows == sum(len(check_file(d, max_rows=200_000, **RULES).rows) for d in built["files"])


def test_a_real_world_export_without_cds_codes_is_skipped_with_a_finding_or_sent_by_sourced_id(tmp_path: Path) -> None:
    source = EXTERNAL / "LMS-Toolkit" / "OneRoster 1.1 Sample Data"
    package = tmp_path / "lms.zip"
    with zipfile.ZipFile(package, "w") as zf:
        for path in sorted(source.glob("*.csv")):
            zf.write(path, path.name)
    folder = snapshot_of(package, tmp_path / "snapshot")

    skipped = files_for(folder)  # its school has no identifier, its students none either, and it has no teachers
    assert skipped["files"] == [] and [f["code"] for f in skipped["findings"]] == ["cers.school_without_id"]
    no_ssid = files_for(folder, mapping={"school_id": "sourcedId"})
    assert no_ssid["files"] == [] and [f["code"] for f in no_ssid["findings"]] == ["cers.student_without_id"]
    by_id = files_for(folder, mapping={"school_id": "sourcedId", "student_id": "sourcedId"})
    (data,) = by_id["files"]
    assert failures(data) == [] and by_id["counts"]["groups"] == 2
    subjects = {row[0]: row[3] for row in check_file(data, max_rows=10, **RULES).rows if row[3]}
    assert sorted(subjects.values()) == ["ELA", "Math"]  # SCED codes 01001 and 02052


def broken(data: bytes, how: str) -> bytes:
    """A file the builder made, broken in one way."""
    lines = data.decode().splitlines()
    header, rows = lines[0], lines[1:]
    first = rows[0].split(",")
    if how == "non-contiguous group":
        return "\n".join([header, *rows, rows[0]]).encode() + b"\n"
    if how == "two subjects":
        other = ",".join([*first[:3], "ELA" if first[3] != "ELA" else "Math", *first[4:]])
        return "\n".join([header, rows[0], other, *rows[1:]]).encode() + b"\n"
    if how == "bad name":
        return "\n".join([header, *(r.replace(first[0], first[0] + " x!", 1) for r in rows)]).encode() + b"\n"
    if how == "padded year":
        return "\n".join([header, rows[0].replace(f",{first[2]},", f", {first[2]},", 1), *rows[1:]]).encode() + b"\n"
    if how == "201 students":
        extra = [",".join([*first[:3], "", f"9{n:09d}", ""]) for n in range(201)]
        return "\n".join([header, rows[0], *extra]).encode() + b"\n"
    if how == "header":
        return "\n".join([header.replace("student_ssid,group_user_login", "group_user_login,student_ssid"),
                          *rows]).encode() + b"\n"  # fmt: skip
    raise ValueError(how)


@pytest.mark.parametrize(("how", "message"), [
    ("non-contiguous group", "Record is out-of-order: sort CSV by school, group, year"),
    ("two subjects", "Record is attempting to re-define group subject from"),
    ("bad name", "Invalid group name"),
    ("padded year", "Record does not contain a school year"),
    ("201 students", "contains 201 students.  Maximum students allowed per group is 200"),
    ("header", "Invalid headers. Headers must be in order"),
])  # fmt: skip
def test_a_broken_builder_output_is_refused(district: Path, how: str, message: str) -> None:
    (data, *_rest) = files_for(district)["files"]
    assert failures(data) == []
    found = failures(broken(data, how))
    assert any(message in text for _row, text in found), found


def test_a_file_over_the_row_cap_is_refused(district: Path) -> None:
    (data,) = files_for(district)["files"]
    rows = data.count(b"\n") - 1
    assert failures(data, max_rows=rows) == []
    assert any("Maximum rows allowed per file" in text for _r, text in failures(data, max_rows=rows - 1))
    assert all(len(pl.read_csv(d, infer_schema=False)) <= 60 for d in files_for(district, max_rows_per_file=60)["files"])
