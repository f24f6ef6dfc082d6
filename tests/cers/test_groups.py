"""CERS student groups from snapshots: the sample packages and generated districts give the expected groups,
day-2 churn gives exactly the expected changed groups, every finding code has a case, names always follow
CERS's rule, and the files obey CERS's layout (checked by a small CERS-rule checker written here)."""

from __future__ import annotations

import csv
import io
import random
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.snapshots import storage
from daemon.snapshots.job import UploadJob, run_job
from daemon.generator.churn import Churn, churn
from daemon.generator.generate import DistrictSpec, generate, write_zip
from daemon.targets.cers.groups import (
    COLUMNS, HEADER, base_name, build_groups, changed_groups, group_files, stable_hex, unique_names,
)  # fmt: skip
from daemon.targets.cers.settings import CersFilters, CersMapping

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SPEC = dict(schools=3, students_per_school=120, teachers_per_school=6, enrollments_per_student=5)
CLASSES = 3 * 6 * 6  # every generated teacher teaches six classes
NAME_RULE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
ALL = CersFilters()
DEFAULT = CersMapping()
Frames = dict[str, pl.DataFrame]


def snapshot(zip_path: Path, folder: Path, base: Path | None = None) -> Path:
    """The snapshot folder the worker's job stages for `zip_path` (diffed against `base`)."""
    outcome = run_job(UploadJob(zip_path, folder, base))
    assert outcome.validation["verdict"] != "rejected", outcome.validation["findings"][:3]
    return folder


def read(folder: Path) -> Frames:
    return storage.read_frames(folder)


def codes(found: list[dict]) -> list[str]:
    return [f["code"] for f in found]


def group_of(groups: pl.DataFrame, class_id: str) -> dict:
    rows = groups.filter(pl.col("class_sourced_id") == class_id).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


def edit(frame: pl.DataFrame, where: pl.Expr, **columns: object) -> pl.DataFrame:
    """`frame` with `columns` set (to literals or expressions) on the rows where `where` holds."""
    return frame.with_columns(
        pl.when(where).then(value if isinstance(value, pl.Expr) else pl.lit(value, frame.schema[name]))
        .otherwise(pl.col(name)).alias(name)
        for name, value in columns.items()
    )  # fmt: skip


@pytest.fixture(scope="module")
def district(tmp_path_factory) -> tuple[dict[str, pl.DataFrame], Path]:
    """A generated 1.1 district (its string tables) and its snapshot folder."""
    folder = tmp_path_factory.mktemp("district")
    tables = generate(DistrictSpec(**SPEC))
    write_zip(tables, folder / "day1.zip", "1.1")
    return tables, snapshot(folder / "day1.zip", folder / "snapshot")


@pytest.fixture
def frames(district) -> Frames:
    return read(district[1])


# --- a CERS-rule checker ----------------------------------------------------------------------------------


def cers_problems(data: bytes, subjects: tuple[str, ...] = ("all", "math", "ela")) -> list[str]:
    """What CERS's validator (and its FAQ's name rule) would reject in one group file; [] if nothing."""
    problems = []
    if data.startswith(b"\xef\xbb\xbf") or b"\r" in data or not data.endswith(b"\n"):
        problems.append("not UTF-8 without BOM with LF line ends")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    if not rows or tuple(rows[0]) != HEADER:
        return [*problems, f"header {rows[:1]}"]
    seen_schools, seen_groups, subject_of, students = set(), set(), {}, {}
    school = group = None
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != 6:
            problems.append(f"row {number}: {len(row)} cells")
            continue
        name, school_id, year, subject, ssid, _login = row
        if not NAME_RULE.match(name):
            problems.append(f"row {number}: group name {name!r}")
        if not school_id or not re.fullmatch(r"-?\d+", year):
            problems.append(f"row {number}: school {school_id!r} or year {year!r}")
        if subject and subject.lower() not in subjects:
            problems.append(f"row {number}: subject {subject!r}")
        key = (school_id, name.lower(), year)
        if school_id != school:
            if school_id in seen_schools:
                problems.append(f"row {number}: school {school_id} out of order")
            seen_schools.add(school_id)
            school = school_id
        if key != group:
            if key in seen_groups:
                problems.append(f"row {number}: group {name} out of order")
            seen_groups.add(key)
            group = key
        if subject:
            if subject_of.setdefault(key, subject.lower()) != subject.lower():
                problems.append(f"row {number}: group {name} re-defines its subject")
        students[key] = students.get(key, 0) + bool(ssid)
    problems += [f"group {k[1]} has {n} students" for k, n in students.items() if n > 200]
    return problems


def parse(files: list[bytes]) -> list[list[dict]]:
    return [list(csv.DictReader(io.StringIO(f.decode("utf-8"), newline=""))) for f in files]


def test_the_checker_passes_a_well_formed_file_and_catches_each_broken_rule():
    good = (
        "group_name,school_natural_id,school_year,subject_code,student_ssid,group_user_login\n"
        "Grade4,01612590130001,2027,All,,\nGrade4,01612590130001,2027,,,t@example.com\n"
        "Grade4,01612590130001,2027,,1000000001,\nMath6,01612590130001,2027,Math,,\n"
        "Math6,01612590130001,2027,,1000000002,\nArt,01612590130002,2027,,1000000003,\n"
    )
    assert cers_problems(good.encode()) == []
    lines = good.splitlines(keepends=True)
    broken = {
        "header": "Group_Name" + good[len("group_name"):],
        "school out of order": good + lines[1],
        "group out of order": good.replace(lines[4], lines[4] + lines[1].replace("All", "")),
        "re-defines": good.replace(lines[5], lines[5].replace(",,1000000002", "ELA,1000000002")),
        "group name": good.replace("Art,", "Art 1,"),
        "year": good.replace("Art,01612590130002,2027", "Art,01612590130002, 2027"),
        "students": "".join(lines[:1]) + "".join(f"Big,1,2027,,{n},\n" for n in range(201)),
        "CRLF": good.replace("\n", "\r\n"),
    }
    for rule, text in broken.items():
        assert cers_problems(text.encode()), rule


# --- groups from snapshots --------------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["valid-1.1-bulk.zip", "valid-1.2-bulk.zip"])
def test_the_sample_packages_give_one_group_per_class(package, tmp_path):
    frames = read(snapshot(SAMPLES / package, tmp_path / "snapshot"))
    groups, found = build_groups(frames, DEFAULT, ALL)
    assert found == []
    assert groups.columns == list(COLUMNS)
    assert groups.height == 36  # 2 schools x 3 teachers x 6 classes, each with its teacher
    assert groups["school_natural_id"].unique().sort().to_list() == ["01612590130001", "01612590130002"]
    assert groups["school_year"].unique().to_list() == [2027]
    assert groups["students"].list.len().sum() == 160  # 40 students x 4 classes
    assert groups["teachers"].list.len().to_list() == [1] * 36
    assert groups["subject_code"].value_counts().sort("subject_code").rows() == [("All", 18), ("ELA", 12), ("Math", 6)]
    assert group_of(groups, "cls-0001-t001-p1")["group_name"] == "MATH-001-1"
    files = group_files(groups, 200_000)
    assert len(files) == 1 and cers_problems(files[0]) == []
    assert len(files[0].decode().splitlines()) == 1 + 36 + 36 + 160


def test_a_generated_district_gives_its_classes_members_and_subjects(district, frames):
    tables, _ = district
    groups, found = build_groups(frames, DEFAULT, ALL)
    assert found == [] and groups.height == CLASSES
    assert groups["students"].list.len().sum() == 3 * 120 * 5
    # each class's teacher and students, straight from the generated string tables
    users = tables["users"].select("sourcedId", "identifier", "email")
    members = tables["enrollments"].join(users, left_on="userSourcedId", right_on="sourcedId").group_by(
        "classSourcedId").agg(
        teachers=pl.col("email").filter(pl.col("role") == "teacher").sort(),
        students=pl.col("identifier").filter(pl.col("role") == "student").sort(),
    )  # fmt: skip
    expected = members.sort("classSourcedId").rows()
    assert groups.select("class_sourced_id", "teachers", "students").sort("class_sourced_id").rows() == expected
    subjects = tables["classes"].select(
        "sourcedId",
        subject=pl.when(pl.col("subjectCodes").str.starts_with("02")).then(pl.lit("Math"))
        .when(pl.col("subjectCodes").str.starts_with("01")).then(pl.lit("ELA")).otherwise(pl.lit("All")),
    )  # fmt: skip
    assert groups.select("class_sourced_id", "subject_code").sort("class_sourced_id").rows() == subjects.sort(
        "sourcedId").rows()  # fmt: skip
    files = group_files(groups, 150)
    assert len(files) > 1 and all(cers_problems(f) == [] for f in files)


def test_groups_are_the_same_from_lazy_and_eager_frames(district, frames):
    lazy, _ = storage.scan_frames(district[1])
    assert build_groups(lazy, DEFAULT, ALL)[0].equals(build_groups(frames, DEFAULT, ALL)[0])


# --- day 2 ------------------------------------------------------------------------------------------------


def _day_two(district, tmp_path: Path, spec: Churn, mapping: CersMapping = DEFAULT, form: str = "bulk"):
    tables, folder1 = district
    day2 = churn(tables, "1.1", spec)
    write_zip(day2.bulk if form == "bulk" else day2.delta, tmp_path / "day2.zip", "1.1", form)
    folder2 = snapshot(tmp_path / "day2.zip", tmp_path / "day2", base=folder1)
    old, _ = build_groups(read(folder1), mapping, ALL)
    new, found = build_groups(read(folder2), mapping, ALL)
    assert found == []
    return tables, day2, old, new


def _classes_of(enrollments: pl.DataFrame, users: set[str]) -> set[str]:
    return set(enrollments.filter(pl.col("userSourcedId").is_in(list(users)))["classSourcedId"])


@pytest.mark.parametrize("form", ["bulk", "delta"])
@pytest.mark.parametrize(
    "spec",
    [Churn(withdrawn=3, arrivals=0, new_emails=0, period_changes=0),
     Churn(withdrawn=0, arrivals=0, new_emails=1, period_changes=0),
     Churn(withdrawn=0, arrivals=2, new_emails=0, period_changes=0),
     Churn(withdrawn=4, arrivals=3, new_emails=2, period_changes=3)],
    ids=["withdrawals", "new-email", "arrivals", "mixed"],
)  # fmt: skip
def test_day_two_changes_exactly_the_groups_of_the_changed_people(district, tmp_path, spec, form):
    tables, day2, old, new = _day_two(district, tmp_path, spec, form=form)
    before, after = set(tables["users"]["sourcedId"]), set(day2.bulk["users"]["sourcedId"])
    emails = tables["users"].join(day2.bulk["users"], on="sourcedId", suffix="_2").filter(
        pl.col("email") != pl.col("email_2"))  # fmt: skip
    expected = (
        _classes_of(tables["enrollments"], before - after)
        | _classes_of(day2.bulk["enrollments"], after - before)
        | _classes_of(tables["enrollments"], set(emails["sourcedId"]))
    )
    assert expected
    sent, counts = changed_groups(old, new)
    assert set(sent["class_sourced_id"]) == expected  # period moves do not touch {classCode} names
    assert counts == {"groups": CLASSES, "sent": len(expected), "added": 0, "changed": len(expected), "emptied": 0,
                      "unchanged": CLASSES - len(expected)}  # fmt: skip
    for row in emails.iter_rows(named=True):
        mine = sent.filter(pl.col("teachers").list.contains(row["email_2"]))
        assert mine.height == 6 and not sent["teachers"].list.contains(row["email"]).any()


def test_a_renamed_group_is_emptied_under_its_old_name_and_added_under_the_new(district, tmp_path):
    spec = Churn(withdrawn=0, arrivals=0, new_emails=0, period_changes=2)
    _, _, old, new = _day_two(district, tmp_path, spec, CersMapping(group_name="{title}"))
    sent, counts = changed_groups(old, new)
    assert counts["added"] == counts["emptied"] == 2 and counts["changed"] == 0 and counts["sent"] == 4
    emptied = sent.filter(pl.col("teachers").list.len() == 0)
    assert emptied.height == 2 and not emptied["group_name"].str.contains("_Period_7").any()
    assert emptied["subject_code"].to_list() == ["", ""] and emptied["students"].list.len().to_list() == [0, 0]
    added = sent.filter(pl.col("teachers").list.len() > 0)
    assert added["group_name"].str.contains("_Period_7").all()
    assert set(added["class_sourced_id"]) == set(emptied["class_sourced_id"])


def test_a_removed_class_empties_its_group_and_nothing_else(frames):
    old, _ = build_groups(frames, DEFAULT, ALL)
    gone = "cls-0002-t003-p4"
    removed = {**frames, "classes": frames["classes"].filter(pl.col("sourcedId") != gone),
               "enrollments": frames["enrollments"].filter(pl.col("classSourcedId") != gone)}  # fmt: skip
    new, _ = build_groups(removed, DEFAULT, ALL)
    sent, counts = changed_groups(old, new)
    before = group_of(old, gone)
    assert sent.to_dicts() == [{**before, "subject_code": "", "teachers": [], "students": []}]
    assert counts == {"groups": CLASSES - 1, "sent": 1, "added": 0, "changed": 0, "emptied": 1,
                      "unchanged": CLASSES - 1}  # fmt: skip
    key_only = {"group_name": before["group_name"], "school_natural_id": before["school_natural_id"],
                "school_year": "2027", "subject_code": "", "student_ssid": "", "group_user_login": ""}
    assert parse(group_files(sent, 100)) == [[key_only]]


def test_without_an_old_snapshot_every_group_is_sent_and_the_same_groups_send_nothing(frames):
    groups, _ = build_groups(frames, DEFAULT, ALL)
    sent, counts = changed_groups(None, groups)
    assert sent.equals(groups) and counts["added"] == counts["sent"] == CLASSES
    stored = groups.sample(fraction=1.0, shuffle=True, seed=3).with_columns(pl.col("school_year").cast(pl.Int64))
    sent, counts = changed_groups(stored, groups)
    assert sent.height == 0 and counts["unchanged"] == CLASSES


def test_a_change_of_case_only_replaces_the_group_instead_of_emptying_it():
    old = pl.DataFrame({"school_natural_id": ["1"], "group_name": ["Math1"], "school_year": [2027],
                        "subject_code": ["Math"], "teachers": [["t"]], "students": [["s"]],
                        "class_sourced_id": ["c"]})  # fmt: skip
    sent, counts = changed_groups(old, old.with_columns(group_name=pl.lit("MATH1")))
    assert sent["group_name"].to_list() == ["MATH1"] and counts["changed"] == 1 and counts["emptied"] == 0


# --- findings ---------------------------------------------------------------------------------------------


def test_a_school_without_its_id_is_skipped_with_one_finding(frames):
    orgs = edit(frames["orgs"], pl.col("sourcedId") == "sch-0002", identifier=None)
    groups, found = build_groups({**frames, "orgs": orgs}, DEFAULT, ALL)
    assert groups.height == CLASSES * 2 // 3 and "01612590130002" not in groups["school_natural_id"]
    assert len(found) == 1
    # the fields of every finding; no row number (the school is a row of the snapshot), its sourcedId instead
    assert found[0] | {"message": ""} == {
        "code": "cers.school_without_id", "severity": "warning", "message": "", "file": "orgs.csv", "row": None,
        "column": "identifier", "value": None, "sourcedId": "sch-0002"}  # fmt: skip
    assert "36 classes" in found[0]["message"]


def test_the_school_id_can_be_another_org_column_and_keeps_its_leading_zeros(frames):
    groups, _ = build_groups(frames, CersMapping(school_id="sourcedId"), ALL)
    assert groups["school_natural_id"].unique().sort().to_list() == ["sch-0001", "sch-0002", "sch-0003"]
    assert build_groups(frames, DEFAULT, ALL)[0]["school_natural_id"].str.starts_with("0").all()


def test_students_without_an_ssid_are_left_out_with_one_finding_per_school(frames):
    missing = ["stu-0001-0001", "stu-0001-0002", "stu-0003-0005"]
    users = edit(frames["users"], pl.col("sourcedId").is_in(missing), identifier="  ")
    groups, found = build_groups({**frames, "users": users}, DEFAULT, ALL)
    assert codes(found) == ["cers.student_without_id"] * 2
    assert [(f["sourcedId"], f["file"], f["column"]) for f in found] == [
        ("stu-0001-0001", "users.csv", "identifier"), ("stu-0003-0005", "users.csv", "identifier")]
    assert "2 enrolled students" in found[0]["message"]
    assert groups["students"].list.len().sum() == 3 * 120 * 5 - 3 * 5
    assert not groups["students"].list.contains("").any()


def test_a_teacher_without_a_login_is_left_out_and_the_groups_stay(frames):
    users = edit(frames["users"], pl.col("sourcedId") == "tch-0001-002", email=None)
    groups, found = build_groups({**frames, "users": users}, DEFAULT, ALL)
    assert codes(found) == ["cers.teacher_without_login"] and found[0]["sourcedId"] == "tch-0001-002"
    assert groups.height == CLASSES
    assert groups.filter(pl.col("teachers").list.len() == 0)["class_sourced_id"].str.slice(0, 13).unique().to_list() \
        == ["cls-0001-t002"]  # fmt: skip


def test_colliding_names_get_distinct_deterministic_hash_suffixes(frames):
    a, b, other_school = "cls-0001-t001-p1", "cls-0001-t002-p1", "cls-0002-t001-p1"
    classes = edit(frames["classes"], pl.col("sourcedId").is_in([a, other_school]), classCode="Algebra 1")
    classes = edit(classes, pl.col("sourcedId") == b, classCode="ALGEBRA 1")
    groups, found = build_groups({**frames, "classes": classes}, DEFAULT, ALL)
    assert codes(found) == ["cers.group_name_collision"] and found[0]["sourcedId"] == a
    name_a, name_b = group_of(groups, a)["group_name"], group_of(groups, b)["group_name"]
    assert name_a == f"Algebra_1_{stable_hex(pl.Series([a]))[0]}" and name_b.startswith("ALGEBRA_1_")
    assert group_of(groups, other_school)["group_name"] == "Algebra_1"  # another school: no collision
    again, _ = build_groups({**frames, "classes": classes.sample(fraction=1.0, shuffle=True, seed=1)}, DEFAULT, ALL)
    assert again.equals(groups)


def test_the_hash_is_pinned_so_names_survive_polars_upgrades():
    assert stable_hex(pl.Series(["cls-0001-t001-p1", "", "é"])).to_list() == ["47b74c", "000000", "de5a8d"]


@pytest.fixture
def crowded(frames) -> Frames:
    """Every student of the district (360) also enrolled in cls-0001-t001-p1."""
    students = frames["users"].filter(pl.col("sourcedId").str.starts_with("stu-"))["sourcedId"]
    template = frames["enrollments"].head(1).drop("sourcedId", "userSourcedId", "role", "classSourcedId")
    extra = template.join(pl.DataFrame({"userSourcedId": students}), how="cross").with_columns(
        sourcedId="enr-x-" + pl.col("userSourcedId"), classSourcedId=pl.lit("cls-0001-t001-p1"), role=pl.lit("student")
    ).select(frames["enrollments"].columns)
    enrollments = pl.concat([frames["enrollments"].filter(
        ~((pl.col("classSourcedId") == "cls-0001-t001-p1") & (pl.col("role") == "student"))), extra])  # fmt: skip
    return {**frames, "enrollments": enrollments}


def test_an_oversize_group_is_skipped_with_a_finding(crowded):
    groups, found = build_groups(crowded, DEFAULT, ALL)
    assert "cls-0001-t001-p1" not in groups["class_sourced_id"] and groups.height == CLASSES - 1
    assert codes(found) == ["cers.group_too_large"]
    assert (found[0]["sourcedId"], found[0]["value"], found[0]["file"]) == ("cls-0001-t001-p1", "360", "classes.csv")


def test_an_oversize_group_can_be_split_into_balanced_parts(crowded):
    groups, found = build_groups(crowded, CersMapping(oversize="split"), ALL)
    assert codes(found) == ["cers.group_too_large"] and "split" in found[0]["message"]
    parts = groups.filter(pl.col("class_sourced_id") == "cls-0001-t001-p1").sort("group_name")
    assert parts["group_name"].to_list() == ["MATH-001-1_1", "MATH-001-1_2"]
    assert parts["students"].list.len().to_list() == [180, 180]
    assert sorted(parts["students"].explode().to_list()) == sorted(crowded["users"].filter(
        pl.col("sourcedId").str.starts_with("stu-"))["identifier"].to_list())  # fmt: skip
    teachers = parts["teachers"].to_list()
    assert teachers == [teachers[0]] * 2 and len(teachers[0]) == 1
    assert all(cers_problems(f) == [] for f in group_files(groups, 1000))


def test_a_class_whose_terms_give_no_school_year_is_skipped_with_a_finding(frames):
    classes = edit(frames["classes"], pl.col("sourcedId").str.starts_with("cls-0003-t001"),
                   termSourcedIds=pl.lit(["no-such-term"], dtype=pl.List(pl.String)))  # fmt: skip
    groups, found = build_groups({**frames, "classes": classes}, DEFAULT, ALL)
    assert groups.height == CLASSES - 6 and codes(found) == ["cers.class_without_school_year"]
    assert (found[0]["file"], found[0]["column"]) == ("classes.csv", "termSourcedIds")
    assert "6 classes" in found[0]["message"]


def test_the_latest_school_year_of_a_class_wins_and_inactive_rows_do_not_count(frames):
    sessions = pl.concat([frames["academicSessions"], frames["academicSessions"].head(1).with_columns(
        sourcedId=pl.lit("ay-2028"), schoolYear=pl.lit(2028, pl.Int16))])  # fmt: skip
    classes = edit(frames["classes"], pl.col("sourcedId") == "cls-0001-t001-p1",
                   termSourcedIds=pl.lit(["sem-2027-1", "ay-2028"], dtype=pl.List(pl.String)))  # fmt: skip
    classes = edit(classes, pl.col("sourcedId") == "cls-0001-t001-p2", status="tobedeleted")
    groups, _ = build_groups({**frames, "academicSessions": sessions, "classes": classes}, DEFAULT, ALL)
    assert group_of(groups, "cls-0001-t001-p1")["school_year"] == 2028
    assert "cls-0001-t001-p2" not in groups["class_sourced_id"]


# The codes of the findings tests above: a school without a CDS code, a class without a school year, a student
# without an SSID, a teacher without a login, a group over 200 students, two classes with one group name.
CERS_CODES = ("cers.school_without_id", "cers.class_without_school_year", "cers.student_without_id",
              "cers.teacher_without_login", "cers.group_too_large", "cers.group_name_collision")  # fmt: skip


def test_rosterd_codes_explains_every_cers_code():
    listed = subprocess.run([str(Path(sys.executable).parent / "rosterd"), "codes"], capture_output=True, text=True,
                            timeout=120, check=True).stdout.splitlines()  # fmt: skip
    explained = {line.split()[0]: line.split(maxsplit=1)[1] for line in listed}
    assert [code for code in CERS_CODES if not explained.get(code)] == []


# --- mapping ----------------------------------------------------------------------------------------------


def test_student_ids_from_user_ids_metadata_or_another_column(frames):
    by_identifier, _ = build_groups(frames, DEFAULT, ALL)
    by_user_ids, _ = build_groups(frames, CersMapping(student_id="userIds:CA-SSID"), ALL)
    assert by_user_ids.equals(by_identifier)
    users = frames["users"].with_columns(pl.format("M{}", "identifier").alias("metadata.ssid"))
    by_metadata, found = build_groups({**frames, "users": users}, CersMapping(student_id="metadata.ssid"), ALL)
    assert found == [] and by_metadata["students"].explode().str.starts_with("M").all()
    by_username, _ = build_groups(frames, CersMapping(student_id="username", teacher_login="username"), ALL)
    assert not by_username["teachers"].explode().str.contains("@").any()


def test_only_primary_teachers_when_asked(frames):
    enrollments = frames["enrollments"]
    assistant = enrollments.filter(pl.col("classSourcedId") == "cls-0001-t001-p1", pl.col("role") == "teacher")
    assistant = assistant.with_columns(sourcedId=pl.lit("enr-aide"), userSourcedId=pl.lit("tch-0001-002"),
                                       primary=pl.lit(False))  # fmt: skip
    both = {**frames, "enrollments": pl.concat([frames["enrollments"], assistant])}
    every = group_of(build_groups(both, DEFAULT, ALL)[0], "cls-0001-t001-p1")
    primary = group_of(build_groups(both, CersMapping(teachers="primary"), ALL)[0], "cls-0001-t001-p1")
    assert len(every["teachers"]) == 2 and len(primary["teachers"]) == 1


def test_a_class_with_teachers_but_no_students_is_a_group_and_one_with_nobody_is_not(frames):
    empty, nobody = "cls-0001-t001-p1", "cls-0001-t001-p2"
    enrollments = frames["enrollments"].filter(
        ~((pl.col("classSourcedId") == empty) & (pl.col("role") == "student")), pl.col("classSourcedId") != nobody)
    groups, _ = build_groups({**frames, "enrollments": enrollments}, DEFAULT, ALL)
    assert group_of(groups, empty)["students"] == [] and nobody not in groups["class_sourced_id"]


def test_name_templates_join_lists_fold_accents_and_fall_back_to_the_sourced_id(frames):
    classes = edit(frames["classes"], pl.col("sourcedId") == "cls-0001-t001-p1", title="Español Avanzado, Sección A",
                   periods=pl.lit(["1", "3"], dtype=pl.List(pl.String)))  # fmt: skip
    classes = edit(classes, pl.col("sourcedId") == "cls-0001-t001-p2", title=None, periods=None)
    classes = edit(classes, pl.col("sourcedId") == "cls-0001-t001-p3", title="日本語", periods=None)
    groups, _ = build_groups({**frames, "classes": classes}, CersMapping(group_name="{title}_{periods}"), ALL)
    assert group_of(groups, "cls-0001-t001-p1")["group_name"] == "Espanol_Avanzado_Seccion_A_1-3"
    assert group_of(groups, "cls-0001-t001-p2")["group_name"] == "cls-0001-t001-p2"
    assert group_of(groups, "cls-0001-t001-p3")["group_name"] == "cls-0001-t001-p3"  # "_" alone is no name
    assert groups["group_name"].str.contains(r"^[A-Za-z0-9_-]{1,100}$").all()


def test_subjects_by_title_then_code_then_course_and_the_default_when_ambiguous(frames):
    as_list = lambda *v: pl.lit(list(v), dtype=pl.List(pl.String))  # noqa: E731
    classes = frames["classes"]
    classes = edit(classes, pl.col("sourcedId") == "cls-0001-t001-p1", subjects=as_list("english language arts"),
                   subjectCodes=as_list("02052"))  # a title beats a code  # fmt: skip
    classes = edit(classes, pl.col("sourcedId") == "cls-0001-t001-p2", subjects=as_list("Mathematics",
                   "English Language Arts"))  # two subjects  # fmt: skip
    classes = edit(classes, pl.col("sourcedId") == "cls-0001-t001-p3", subjects=None, subjectCodes=None)  # course's
    classes = edit(classes, pl.col("sourcedId") == "cls-0001-t001-p4", subjects=as_list("Statistics"),
                   subjectCodes=as_list("99001"))  # nothing of the class maps: the course's  # fmt: skip
    groups, _ = build_groups({**frames, "classes": classes}, CersMapping(default_subject="ALL"), ALL)
    subject = {c: group_of(groups, f"cls-0001-t001-p{c}")["subject_code"] for c in range(1, 5)}
    assert subject == {1: "ELA", 2: "ALL", 3: "Math", 4: "Math"}
    assert group_of(groups, "cls-0001-t006-p1")["subject_code"] == "ALL"  # Studio Art: nothing maps anywhere


# --- filters ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "expected"),
    [(CersFilters(class_types=["homeroom"]), {"cls-0001-t001-p1"}),
     (CersFilters(grades=["08"]), {"cls-0001-t001-p1"}),
     (CersFilters(include_courses=["MATH"], schools=["sch-0001"]), {f"cls-0001-t001-p{p}" for p in range(1, 7)}),
     (CersFilters(include_courses=["crs-0002-ela"]), {f"cls-0002-t001-p{p}" for p in range(1, 7)}),
     (CersFilters(include_subjects=["ela"], schools=["01612590130002"]), {f"cls-0002-t001-p{p}" for p in range(1, 7)}),
     (CersFilters(include_subjects=["01001"], schools=["sch-0001"]), {f"cls-0001-t002-p{p}" for p in range(1, 7)}),
     (CersFilters(include_subjects=["Mathematics"], exclude_courses=["MATH"]), set())],
    ids=["class-type", "grades", "course-code", "course-id", "cers-subject", "sced-code", "exclude-course"],
)  # fmt: skip
def test_filters_choose_the_classes(frames, filters, expected):
    classes = edit(frames["classes"], pl.col("sourcedId") == "cls-0001-t001-p1", classType="homeroom",
                   grades=pl.lit(["08"], dtype=pl.List(pl.String)))  # fmt: skip
    groups, _ = build_groups({**frames, "classes": classes}, DEFAULT, filters)
    assert set(groups["class_sourced_id"]) == expected


def test_excluding_a_subject_and_filtering_before_findings(frames):
    orgs = edit(frames["orgs"], pl.col("sourcedId") == "sch-0002", identifier=None)
    filters = CersFilters(schools=["sch-0001", "sch-0003"], exclude_subjects=["All", "ela"])
    groups, found = build_groups({**frames, "orgs": orgs}, DEFAULT, filters)
    assert found == []  # the school without an id was filtered out first
    assert set(groups["subject_code"]) == {"Math"} and groups.height == 6  # only school 1 teaches Algebra I


# --- names (properties) -----------------------------------------------------------------------------------

NAMEISH = st.one_of(
    st.sampled_from(["Math", "math", "MATH", "Mäth", "M ath", "M\u00a0ath", "", "  ", "日本", "-", "x" * 150,
                     "x" * 99 + "y", "x" * 99 + "Y", "Math_1", "Math_abcdef"]),
    st.text(max_size=130),
)  # fmt: skip
CLASS_ROWS = st.lists(
    st.tuples(NAMEISH, st.sampled_from(["A", "B"]), st.sampled_from([2026, 2027]), st.integers(0, 3)),
    max_size=40,
)


def named(rows: list[tuple[str, str, int, int]], ids: list[str]) -> pl.DataFrame:
    records = [
        {"raw": raw, "class_sourced_id": sid, "school_natural_id": school, "school_year": year, "part": part}
        for (raw, school, year, parts), sid in zip(rows, ids, strict=True)
        for part in ([""] if parts == 0 else [f"_{k}" for k in range(1, parts + 1)])
    ]
    schema = {"raw": pl.String, "class_sourced_id": pl.String, "school_natural_id": pl.String,
              "school_year": pl.Int32, "part": pl.String}
    frame = pl.DataFrame(records, schema=schema)
    frame = frame.with_columns(base=base_name(pl.col("raw"), pl.col("class_sourced_id")))
    return unique_names(frame)[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=CLASS_ROWS, id_text=st.sampled_from(["cls-{}", "{}", "日本{}", "{} é", "no ascii"]))
def test_names_follow_the_cers_rule_are_deterministic_and_distinct(rows, id_text):
    if id_text == "no ascii":  # sourcedIds that clean to nothing: the names fall back to class_<hash>
        ids = ["日" * (i + 1) for i in range(len(rows))]
    else:
        ids = [id_text.format(i) for i in range(len(rows))]
    names = named(rows, ids)
    assert names["group_name"].str.contains(r"^[A-Za-z0-9_-]{1,100}$").all()
    lowered = names.select("school_natural_id", "school_year", pl.col("group_name").str.to_lowercase())
    assert lowered.is_unique().all()
    order = list(range(len(rows)))
    random.Random(len(rows)).shuffle(order)
    again = named([rows[i] for i in order], [ids[i] for i in order])
    key = ["class_sourced_id", "part"]
    assert again.select(*key, "group_name").sort(key).equals(names.select(*key, "group_name").sort(key))


@given(st.text(max_size=200))
def test_cleaning_keeps_only_what_cers_allows(text):
    cleaned = pl.select(base_name(pl.lit(text, pl.String), pl.lit("id"))).item()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cleaned)


# --- files (properties) -----------------------------------------------------------------------------------

SCHOOL_IDS = ["01612590130001", "01612590130002", "09999990000001", "1"]


@st.composite
def group_frames(draw) -> pl.DataFrame:
    rows = []
    for school in draw(st.lists(st.sampled_from(SCHOOL_IDS), unique=True, max_size=4)):
        names = draw(st.lists(st.sampled_from(["A", "b", "C-1", "d_2", "Zed", "x" * 100]), unique=True, max_size=5))
        for name in names:
            rows.append({
                "school_natural_id": school, "group_name": name, "school_year": draw(st.sampled_from([2026, 2027])),
                "subject_code": draw(st.sampled_from(["Math", "ELA", "All", ""])),
                "teachers": draw(st.lists(st.sampled_from(["t1@x.org", "t2@x.org", "o'neil, t@x.org"]), unique=True)),
                "students": draw(st.lists(st.from_regex(r"[1-9]\d{9}", fullmatch=True), unique=True, max_size=15)),
                "class_sourced_id": f"cls-{school}-{name}",
            })  # fmt: skip
    return pl.DataFrame(rows, schema={"school_natural_id": pl.String, "group_name": pl.String, "school_year": pl.Int32,
                                      "subject_code": pl.String, "teachers": pl.List(pl.String),
                                      "students": pl.List(pl.String), "class_sourced_id": pl.String})  # fmt: skip


@settings(max_examples=60, deadline=None)  # 150 took 17 s of the suite; 60 still cross the cap often
@given(groups=group_frames(), max_rows=st.integers(20, 70), seed=st.integers(0, 9))
def test_files_keep_schools_and_groups_contiguous_under_the_row_cap(groups, max_rows, seed):
    files = group_files(groups, max_rows)
    if groups.height == 0:
        assert files == []
        return
    assert files == group_files(groups.sample(fraction=1.0, shuffle=True, seed=seed), max_rows)  # same bytes
    parsed = parse(files)
    assert all(f.startswith(",".join(HEADER).encode() + b"\n") for f in files)
    assert all(0 < len(rows) <= max_rows for rows in parsed)
    assert all(cers_problems(f) == [] for f in files)
    everything = [row for rows in parsed for row in rows]
    schools = [row["school_natural_id"] for row in everything]
    runs = [s for i, s in enumerate(schools) if i == 0 or schools[i - 1] != s]
    assert len(runs) == len(set(runs)) and runs == sorted(runs)  # each school in one contiguous run, in order
    file_of: dict[tuple, set[int]] = {}
    rebuilt: dict[tuple, dict] = {}
    for number, rows in enumerate(parsed):
        for i, row in enumerate(rows):
            key = (row["school_natural_id"], row["group_name"], int(row["school_year"]))
            file_of.setdefault(key, set()).add(number)
            first = key not in rebuilt
            group = rebuilt.setdefault(key, {"subject_code": row["subject_code"], "teachers": [], "students": []})
            assert first or not row["subject_code"]  # the subject only on a group's first row
            assert first == (not row["student_ssid"] and not row["group_user_login"])
            assert first or (rows[i - 1]["school_natural_id"], rows[i - 1]["group_name"]) == key[:2]  # contiguous
            if row["group_user_login"]:
                group["teachers"].append(row["group_user_login"])
            if row["student_ssid"]:
                group["students"].append(row["student_ssid"])
    assert all(len(f) == 1 for f in file_of.values())  # no group split across files
    expected = {
        (r["school_natural_id"], r["group_name"], r["school_year"]):
        {"subject_code": r["subject_code"], "teachers": sorted(r["teachers"]), "students": sorted(r["students"])}
        for r in groups.to_dicts()
    }  # fmt: skip
    assert rebuilt == expected
    rows_of_school = {s: sum(1 + len(g["teachers"]) + len(g["students"]) for k, g in expected.items() if k[0] == s)
                      for s in set(schools)}  # fmt: skip
    for school, total in rows_of_school.items():
        if total <= max_rows:  # a school that fits is kept whole
            assert len({n for k, f in file_of.items() if k[0] == school for n in f}) == 1


def test_files_are_quoted_only_where_needed_and_a_too_large_group_is_refused():
    groups = pl.DataFrame({"school_natural_id": ["0123"], "group_name": ["G"], "school_year": [2027],
                           "subject_code": ["Math"], "teachers": [["o'neil, t@x.org", "a@x.org"]],
                           "students": [["2", "1"]], "class_sourced_id": ["c"]})  # fmt: skip
    (data,) = group_files(groups, 10)
    assert data == (b"group_name,school_natural_id,school_year,subject_code,student_ssid,group_user_login\n"
                    b"G,0123,2027,Math,,\nG,0123,2027,,,a@x.org\nG,0123,2027,,,\"o'neil, t@x.org\"\n"
                    b"G,0123,2027,,1,\nG,0123,2027,,2,\n")  # fmt: skip
    with pytest.raises(ValueError, match="more than 4 rows"):
        group_files(groups, 4)


def test_a_big_school_is_cut_between_groups_and_small_schools_stay_whole(frames):
    groups, _ = build_groups(frames, DEFAULT, ALL)
    per_school = groups.group_by("school_natural_id").agg(
        rows=(1 + pl.col("teachers").list.len() + pl.col("students").list.len()).sum())
    biggest = per_school["rows"].max()
    files = group_files(groups, biggest)  # every school fits: none is cut
    schools_in = [set(r["school_natural_id"] for r in rows) for rows in parse(files)]
    assert sum(len(s) for s in schools_in) == 3
    files = group_files(groups, biggest // 2)  # now every school must be cut, between its groups
    assert all(len(rows) <= biggest // 2 for rows in parse(files)) and len(files) >= 6
    assert all(cers_problems(f) == [] for f in files)
