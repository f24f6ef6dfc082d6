"""The admin console's preview (daemon/console/preview.py): what a licence target or CERS would get from a
snapshot, and what a CERS delivery sent.

The roster is tests/cers/small_district.py (day 1, and day 2 for a delivery's changes), stored through the
worker's real job. Who a scope keeps and why the others are left out is worked out by hand below from the
scope rule (README, "Licence targets"; daemon/targets/scope.py's docstring); the CERS groups are the ones
small_district.py writes out by hand. The day 1 roster, for reference:

    orgs      dst-1 (district) above sch-oak, sch-river and sch-new
    courses   crs-alg ALG1, crs-eng ENG9, crs-study STUDY (sch-oak); crs-art ART, crs-geo GEO (sch-river);
              crs-bio BIO (sch-new)
    classes   cls-oak-alg   teachers t-lee, t-diaz  students s-1, s-2, s-3
              cls-oak-eng   teacher t-diaz          students s-1, s-4
              cls-oak-study teacher t-lee           students s-2, s-4
              cls-river-art teacher t-kim           students s-5, s-6
              cls-river-geo teacher t-kim           student s-5
              cls-new-bio   teacher t-new           student s-7
    e-mails   teachers <name>@oak.example, @river.example, @new.example; students s<n>@students.example
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections import defaultdict
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from daemon.console import preview
from daemon.snapshots.job import UploadJob, run_job
from daemon.targets.cers.settings import CersTarget
from daemon.targets.cers.target import build_files
from daemon.targets.settings import Scope
from tests.cers import small_district as sd

SAMPLE_12 = Path(__file__).resolve().parents[2] / "samples" / "valid-1.2-bulk.zip"
TODAY = date(2026, 10, 1)  # inside the fall semester every class runs in
DRY_RUN = CersTarget(type="cers", dry_run=True)
CLASSES = ["cls-new-bio", "cls-oak-alg", "cls-oak-eng", "cls-oak-study", "cls-river-art", "cls-river-geo"]
USERS = ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6", "s-7", "t-diaz", "t-kim", "t-lee", "t-new"]


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> tuple[Path, Path]:
    """The snapshot folders of day 1 and of day 2 (diffed against day 1), as the worker's job stores them."""
    folder = tmp_path_factory.mktemp("preview")
    day1, day2 = sd.day1(), sd.day2(sd.day1())
    made = []
    for name, tables, base in (("day1", day1, None), ("day2", day2, folder / "day1")):
        sd.write_package(tables, folder / f"{name}.zip")
        outcome = run_job(UploadJob(folder / f"{name}.zip", folder / name, base))
        assert outcome.validation["verdict"] == "accepted", outcome.validation["findings"][:3]
        made.append(folder / name)
    return made[0], made[1]


def column(frame: pl.DataFrame, name: str = "sourcedId") -> list:
    return frame[name].to_list()


def left(shown: preview.LicencePreview, entity: str) -> dict[str, str]:
    rows = shown.left_rows.filter(pl.col("entity") == entity)
    return dict(zip(rows["sourcedId"], rows["reason"], strict=True))


# -- licence targets ------------------------------------------------------------------------------------------


def test_two_courses_of_one_school_with_licences(days) -> None:
    """orgs = [sch-oak], courses = [ALG1, ENG9]: the two classes of those courses at Oak (rule 1), their students
    and teachers only (4a), Oak and the district above it (6), each class's licence from its courseCode (7)."""
    scope = Scope(orgs=["sch-oak"], courses=["ALG1", "ENG9"], licences={"ALG1": "math-pool", "ENG9": "ela-pool"})
    shown = preview.licence_preview(days[0], scope, TODAY)

    classes = shown.classes.select("sourcedId", "school", "course", "licence", "students", "teachers").rows()
    assert classes == [("cls-oak-alg", "Oak Valley High", "Algebra I", "math-pool", 3, 2),
                       ("cls-oak-eng", "Oak Valley High", "English 9", "ela-pool", 2, 1)]  # fmt: skip
    assert shown.licensed
    assert shown.schools.select("sourcedId", "classes", "students", "teachers").rows() == [
        ("dst-1", 0, 0, 0), ("sch-oak", 2, 4, 2)]  # fmt: skip
    assert column(shown.users) == ["s-1", "s-2", "s-3", "s-4", "t-diaz", "t-lee"]
    assert shown.users.filter(pl.col("sourcedId") == "s-1")["classes"].item() == 2
    assert shown.rows == {"orgs": 2, "academicSessions": 2, "courses": 2, "classes": 2, "users": 6, "enrollments": 8}

    algebra = shown.roster.filter(pl.col("classSourcedId") == "cls-oak-alg")
    assert algebra.select("userSourcedId", "role").rows() == [
        ("t-diaz", "teacher"), ("t-lee", "teacher"), ("s-1", "student"), ("s-2", "student"), ("s-3", "student")]

    assert left(shown, "classes") == dict.fromkeys(["cls-oak-study", "cls-river-art", "cls-river-geo", "cls-new-bio"],
                                                   "classes_out_of_scope")  # fmt: skip
    # t-kim, t-new and s-5..s-7 are students or teachers of classes left out only
    assert left(shown, "users") == dict.fromkeys(["s-5", "s-6", "s-7", "t-kim", "t-new"], "users_not_in_kept_classes")
    assert left(shown, "orgs") == {"sch-new": "orgs_out_of_scope", "sch-river": "orgs_out_of_scope"}
    assert set(left(shown, "courses")) == {"crs-study", "crs-art", "crs-geo", "crs-bio"}
    enrollments = left(shown, "enrollments")
    assert len(enrollments) == 10 and set(enrollments.values()) == {"enrollments_of_classes_left_out"}
    assert "enr-cls-oak-study-t-lee" in enrollments
    assert shown.left_out == {"classes_out_of_scope": 4, "users_not_in_kept_classes": 5, "orgs_out_of_scope": 2,
                              "courses_out_of_scope": 4, "enrollments_of_classes_left_out": 10}  # fmt: skip
    labels = shown.left_rows.filter(pl.col("sourcedId").is_in(["sch-river", "cls-river-geo", "t-kim"]))
    assert sorted(column(labels, "label")) == ["Class cls-river-geo", "Given T-Kim", "Riverside High"]


def test_email_domains_alone_keep_every_class_and_the_users_of_the_domain(days) -> None:
    """email_domains = [oak.example] narrows no class (rule 3): every class, org and course; only the two
    teachers at oak.example (5); the other users' enrollments go with them."""
    shown = preview.licence_preview(days[0], Scope(email_domains=["oak.example"]), TODAY)
    assert column(shown.classes) == CLASSES
    assert column(shown.users) == ["t-diaz", "t-lee"]
    assert left(shown, "users") == dict.fromkeys(set(USERS) - {"t-diaz", "t-lee"}, "users_outside_domains")
    # t-lee teaches algebra and study hall, t-diaz algebra and English: 4 of the 18 enrollments stay
    assert shown.rows["enrollments"] == 4
    assert shown.left_out == {"users_outside_domains": 9, "enrollments_of_users_left_out": 14}
    assert shown.classes.filter(pl.col("sourcedId") == "cls-oak-alg").select("students", "teachers").row(0) == (0, 2)
    assert not shown.licensed and shown.classes["licence"].null_count() == shown.classes.height


def test_the_empty_scope_gives_the_whole_roster(days) -> None:
    shown = preview.licence_preview(days[0], Scope(), TODAY)
    assert column(shown.classes) == CLASSES and column(shown.users) == USERS
    assert shown.left_rows.height == 0 and shown.left_out == {}
    assert shown.classes.select("sourcedId", "students", "teachers").rows() == [
        ("cls-new-bio", 1, 1), ("cls-oak-alg", 3, 2), ("cls-oak-eng", 2, 1), ("cls-oak-study", 2, 1),
        ("cls-river-art", 2, 1), ("cls-river-geo", 1, 1)]  # fmt: skip
    assert shown.users.filter(pl.col("sourcedId") == "t-kim").select("role", "orgs").row(0) == ("teacher", "sch-river")


def test_the_day_counts(days) -> None:
    """Every class runs in the fall semester (to 2026-12-19): with class_end_days = 10, on 2027-01-05 every
    class ended more than 10 days ago."""
    shown = preview.licence_preview(days[0], Scope(class_end_days=10), date(2027, 1, 5))
    assert shown.classes.height == 0
    assert left(shown, "classes") == dict.fromkeys(CLASSES, "classes_ended")
    assert preview.licence_preview(days[0], Scope(class_end_days=10), TODAY).classes.height == 6


def test_a_12_users_roles_are_its_roles_rows(tmp_path: Path) -> None:
    """OneRoster 1.2 users carry no role: the preview shows the roles rows of each (roles.csv, read here)."""
    outcome = run_job(UploadJob(SAMPLE_12, tmp_path / "snapshot", None))
    assert outcome.validation["verdict"] == "accepted"
    with zipfile.ZipFile(SAMPLE_12) as package:
        rows = list(csv.DictReader(io.TextIOWrapper(package.open("roles.csv"), encoding="utf-8-sig")))
    roles, orgs = defaultdict(set), defaultdict(set)
    for row in rows:
        roles[row["userSourcedId"]].add(row["role"])
        orgs[row["userSourcedId"]].add(row["orgSourcedId"])
    shown = preview.licence_preview(tmp_path / "snapshot", Scope(), TODAY)
    assert {r["sourcedId"]: (r["role"], r["orgs"]) for r in shown.users.to_dicts()} == {
        user: (", ".join(sorted(roles[user])), ", ".join(sorted(orgs[user]))) for user in roles}


def test_pages_and_search() -> None:
    frame = pl.DataFrame({"sourcedId": [f"c-{n:03d}" for n in range(250)],
                          "title": ["Algebra" if n % 2 else "Art" for n in range(250)]})  # fmt: skip
    first = preview.page_of(frame, "", ("sourcedId", "title"), 1)
    assert (first.total, first.pages, len(first.rows), first.rows[0]["sourcedId"]) == (250, 3, 100, "c-000")
    last = preview.page_of(frame, "", ("sourcedId", "title"), 99)  # past the end: the last page
    assert (last.page, len(last.rows), last.rows[-1]["sourcedId"]) == (3, 50, "c-249")
    found = preview.page_of(frame, "ALGEB", ("sourcedId", "title"), 1)
    assert found.total == 125 and found.rows[0]["sourcedId"] == "c-001"
    assert preview.page_of(frame, "c-24", ("sourcedId",), 1).total == 10
    assert preview.page_of(frame, "c-1", ("sourcedId",), 1, "title", "Art").total == 50  # c-100..c-198, even


# -- CERS -----------------------------------------------------------------------------------------------------


def shown_group(row: dict) -> tuple:
    return (row["school_natural_id"], row["group_name"], row["subject_code"], row["teachers"], row["students"])


def expected(group: tuple) -> tuple:
    school, name, subject, teachers, students = group
    return (school, name, subject, len(teachers), len(students))


def test_cers_groups_of_the_snapshot(days) -> None:
    shown = preview.cers_preview(days[0], DRY_RUN)
    rows = shown.groups.sort("school_natural_id", "group_name").to_dicts()
    assert [shown_group(r) for r in rows] == sorted(expected(g) for g in sd.DAY1_GROUPS)
    assert {r["group_name"]: r["school"] for r in rows} == {
        "ALG_1_P1": "Oak Valley High", "Eng_9_Honors": "Oak Valley High", "cls-oak-study": "Oak Valley High",
        "Art__Design": "Riverside High", "GEO-2": "Riverside High"}  # fmt: skip
    algebra = next(r for r in rows if r["group_name"] == "ALG_1_P1")
    assert algebra["teacher_list"] == sd.ALG[3] and algebra["student_list"] == sd.ALG[4]
    # New Campus has no CDS code: its biology class is no group
    assert [f["code"] for f in shown.findings] == ["cers.school_without_id"]


def test_the_groups_a_delivery_sent_and_how_each_changed(days) -> None:
    """Day 2 against day 1: Diaz's e-mail changes algebra and English, s-6 leaving changes art, geometry is
    emptied, study hall did not change (small_district.DAY2_SENT)."""
    sent = preview.sent_groups(days[1], days[0], True, DRY_RUN, [])
    assert sent.source == "snapshots"
    kinds = {r["group_name"]: r["kind"] for r in sent.groups.to_dicts()}
    assert kinds == {"ALG_1_P1": "changed", "Eng_9_Honors": "changed", "Art__Design": "changed", "GEO-2": "emptied"}
    assert sorted(shown_group(r) for r in sent.groups.to_dicts()) == sorted(expected(g) for g in sd.DAY2_SENT)
    assert sent.counts == {"groups": 4, "added": 0, "changed": 3, "emptied": 1, "unchanged": 1}
    geometry = sent.groups.filter(pl.col("group_name") == "GEO-2").row(0, named=True)
    assert geometry["school"] == "Riverside High"  # the class is gone: its school comes from day 1

    first = preview.sent_groups(days[0], None, False, DRY_RUN, [])  # a first delivery: every group added
    assert set(first.groups["kind"]) == {"added"} and first.groups.height == len(sd.DAY1_GROUPS)


def test_without_the_snapshots_a_dry_runs_files_tell_what_was_sent(days, tmp_path: Path) -> None:
    built = build_files(str(days[1]), str(days[0]), DRY_RUN.model_dump(mode="json"))
    files = []
    for number, data in enumerate(built["files"], 1):
        (tmp_path / f"f-{number}.csv").write_bytes(data)
        files.append(tmp_path / f"f-{number}.csv")
    sent = preview.sent_groups(days[1], None, True, DRY_RUN, files)  # the base snapshot was pruned
    assert sent.source == "files" and sent.notes
    assert sorted(shown_group(r) for r in sent.groups.to_dicts()) == sorted(expected(g) for g in sd.DAY2_SENT)
    assert {r["group_name"]: r["kind"] for r in sent.groups.to_dicts()} == {
        "ALG_1_P1": "sent", "Eng_9_Honors": "sent", "Art__Design": "sent", "GEO-2": "emptied"}
    nothing = preview.sent_groups(None, None, True, DRY_RUN, [])
    assert nothing.source is None and nothing.groups.height == 0


def test_only_a_file_right_in_results_cers_is_served(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "cers").mkdir(parents=True)
    (results / "cers" / "rosterd-north-u1-1.csv").write_text("group_name\n")
    (results / "secret.csv").write_text("not a dry-run file\n")
    (results / "cers" / "sub").mkdir()
    (results / "cers" / "sub" / "x.csv").write_text("deeper\n")
    os.symlink(results / "secret.csv", results / "cers" / "link.csv")
    assert preview.dry_run_file(results, "rosterd-north-u1-1.csv") == (results / "cers" / "rosterd-north-u1-1.csv").resolve()
    for name in ("../secret.csv", "..", "sub/x.csv", "link.csv", "missing.csv", "rosterd-north-u1-1.txt", "",
                 "/etc/passwd", "..%2Fsecret.csv"):  # fmt: skip
        assert preview.dry_run_file(results, name) is None, name
    assert preview.dry_run_files(results, ["rosterd-north-u1-1.csv", "gone.csv"]) == [
        (results / "cers" / "rosterd-north-u1-1.csv").resolve()]


# -- the cache ---------------------------------------------------------------------------------------------


def test_the_cache_computes_each_key_once_and_keeps_a_few() -> None:
    cache = preview.Cache(size=2)
    made: list[str] = []

    def compute(key: str):
        return lambda: made.append(key) or f"value of {key}"

    assert cache.get("a", compute("a")) == "value of a"
    assert cache.get("a", compute("a")) == "value of a"
    cache.get("b", compute("b"))
    cache.get("a", compute("a"))  # a is now the most recently used
    cache.get("c", compute("c"))  # b goes
    cache.get("a", compute("a"))
    cache.get("b", compute("b"))
    assert made == ["a", "b", "c", "b"]

    def failing():
        raise ValueError("no snapshot")

    with pytest.raises(ValueError):
        cache.get("d", failing)
    assert cache.get("d", compute("d")) == "value of d"  # a failure is not kept
