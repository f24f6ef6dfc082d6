"""References between files (reference.* codes) and the cascade of dropped rows; spec section 8."""

from __future__ import annotations

import polars as pl
import pytest

from daemon.oneroster.findings import Severity

from .conftest import (
    V11,
    V12,
    add_rows,
    codes,
    delta_package,
    deviation,
    edit_table,
    error,
    found,
    frame_ids,
    manifest_text,
    only,
    replace,
    set_cell,
    without,
)

ENR = "enrollments.csv"
CLASSES = "classes.csv"


def places(result, code: str) -> list[tuple]:
    return [(f.severity, f.file, f.row, f.column, f.value) for f in found(result, code)]


# --- missing targets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "row", "column", "value", "code", "reported"),
    [
        (ENR, 3, "userSourcedId", "u9", "reference.missing_target_record", "u9"),
        (ENR, 3, "classSourcedId", "k9", "reference.missing_target_record", "k9"),
        (CLASSES, 2, "termSourcedIds", "t1,t9", "reference.missing_target_record", "t9"),  # every item must resolve
        ("demographics.csv", 3, "sourcedId", "u9", "reference.missing_target_record", "u9"),  # extends a user
        ("users.csv", 3, "orgSourcedIds", "s1,s9", "reference.missing_target_record", "s9"),
        (CLASSES, 2, "schoolSourcedId", "d1", "reference.target_type_mismatch", "d1"),  # a district, not a school
        (ENR, 3, "schoolSourcedId", "d1", "reference.target_type_mismatch", "d1"),
    ],
)
def test_a_bad_required_reference_is_an_error_that_drops_the_row(run, file, row, column, value, code, reported):
    result = error(run, set_cell(V11, file, row, column, value), code, file=file, row=row, column=column,
                   value=reported)  # fmt: skip
    assert result.files[file].dropped >= 1


@pytest.mark.parametrize(
    ("file", "row", "column", "value", "code"),
    [
        ("academicSessions.csv", 3, "parentSourcedId", "y9", "reference.missing_target_record"),
        ("courses.csv", 2, "schoolYearSourcedId", "t1", "reference.target_type_mismatch"),  # a term
    ],
)
def test_a_bad_optional_reference_is_cleared_in_lenient_mode_and_an_error_in_strict_mode(
    run, file, row, column, value, code
):
    lenient, strict = deviation(run, set_cell(V11, file, row, column, value), code, file=file, row=row,
                                column=column, value=value)  # fmt: skip
    assert lenient.roster.frames[file[:-4]].filter(pl.col("_row") == row)[column].to_list() == [None]
    assert strict.files[file].dropped == 1


def test_a_dangling_item_of_an_optional_list_is_forgotten_and_the_others_kept(run):
    result = run(set_cell(V11, "users.csv", 3, "agentSourcedIds", "u1,u9"))
    only(result, "reference.missing_target_record", severity=Severity.WARNING, file="users.csv", row=3,
         column="agentSourcedIds", value="u9")  # fmt: skip
    assert result.roster.frames["users"]["agentSourcedIds"][1].to_list() == ["u1"]


def test_a_reference_into_a_file_absent_from_a_bulk_package_rejects_it(run):
    result = error(run, without(V12, "userProfiles.csv"), "reference.missing_target_file", file="roles.csv", row=2,
                   column="userProfileSourcedId", value="userProfiles.csv")  # fmt: skip
    assert result.verdict == "rejected"


def test_a_missing_required_file_is_also_a_missing_target(run):
    result = run(without(V11, "users.csv"))
    assert (Severity.ERROR, ENR, 2, "userSourcedId", "users.csv") in places(result, "reference.missing_target_file")
    assert "package.required_file_missing" in codes(result)


# --- extension org types ---------------------------------------------------------------------------------


def test_an_extension_org_type_serves_as_a_school_in_1_2(run):
    result = run(set_cell(V12, "orgs.csv", 3, "type", "ext:campus"), strict=True)
    assert result.findings.items == []
    assert result.verdict == "accepted"


def test_an_extension_org_type_is_invalid_in_1_1_and_its_dependants_fall(run):
    result = run(set_cell(V11, "orgs.csv", 3, "type", "ext:campus"), max_dropped_share=1.0)
    only(result, "row.invalid_enum", file="orgs.csv", row=3, column="type", value="ext:campus")
    assert [(f.row, f.column) for f in found(result, "reference.target_dropped") if f.file == CLASSES] == [
        (2, "schoolSourcedId"),
        (3, "schoolSourcedId"),
    ]


# --- the cascade -------------------------------------------------------------------------------------------


def test_enrollments_of_a_dropped_class_are_dropped_too(run):
    result = run(set_cell(V11, CLASSES, 2, "classType", "lecture"), max_dropped_share=1.0)
    assert places(result, "reference.target_dropped") == [
        (Severity.ERROR, ENR, row, "classSourcedId", "k1") for row in (2, 3, 4)
    ]
    assert frame_ids(result, "classes") == ["k2"]
    assert frame_ids(result, "enrollments") == ["e4", "e5"]


def test_rows_dropped_by_the_text_layer_take_their_dependants_with_them(run):
    files = replace(V11, "users.csv", b"Okafor", b"Ok\xe4for")  # u4, row 5, is not UTF-8
    result = run(files, max_dropped_share=1.0)
    only(result, "csv.invalid_utf8", file="users.csv", row=5)
    assert sorted(places(result, "reference.target_dropped")) == [
        (Severity.ERROR, "demographics.csv", 4, "sourcedId", "u4"),
        (Severity.ERROR, ENR, 5, "userSourcedId", "u4"),
    ]
    assert "u4" not in frame_ids(result, "demographics")


def test_duplicated_users_take_their_enrollments_with_them(run):
    result = run(set_cell(V11, "users.csv", 4, "sourcedId", "u2"), max_dropped_share=1.0)  # u3 becomes u2
    assert {(f.file, f.row) for f in found(result, "reference.target_dropped")} == {(ENR, 3), ("demographics.csv", 2)}
    assert {(f.file, f.row, f.value) for f in found(result, "reference.missing_target_record")} == {
        (ENR, 4, "u3"),  # u3 is gone
        ("demographics.csv", 3, "u3"),
    }
    assert frame_ids(result, "enrollments") == ["e1", "e4", "e5"]


def test_a_dropped_school_drops_the_classes_that_sit_in_it(run):
    result = run(set_cell(V11, "orgs.csv", 3, "name", ""), max_dropped_share=1.0)
    assert [(f.file, f.row) for f in found(result, "reference.target_dropped") if f.file == CLASSES] == [
        (CLASSES, 2),
        (CLASSES, 3),
    ]
    assert frame_ids(result, "classes") == []
    assert frame_ids(result, "enrollments") == []


# --- parents that lead round in a circle ----------------------------------------------------------------------


def test_orgs_whose_parents_form_a_cycle_are_dropped_with_everything_in_them(run):
    files = set_cell(V11, "orgs.csv", 2, "parentSourcedId", "s1")  # d1 -> s1 -> d1
    result = run(files, max_dropped_share=1.0)
    assert places(result, "reference.parent_cycle") == [
        (Severity.ERROR, "orgs.csv", 2, "parentSourcedId", "s1"),
        (Severity.ERROR, "orgs.csv", 3, "parentSourcedId", "d1"),
    ]
    assert frame_ids(result, "orgs") == []
    assert frame_ids(result, "classes") == []  # their school fell with the cycle
    assert (Severity.ERROR, CLASSES, 2, "schoolSourcedId", "s1") in places(result, "reference.target_dropped")
    assert run(files).verdict == "rejected"


def test_a_session_that_is_its_own_parent_takes_the_sessions_below_it_along(run):
    files = set_cell(V11, "academicSessions.csv", 2, "parentSourcedId", "y1")  # y1 -> y1, and t1 -> y1
    result = run(files, max_dropped_share=1.0)
    assert places(result, "reference.parent_cycle") == [
        (Severity.ERROR, "academicSessions.csv", 2, "parentSourcedId", "y1"),
        (Severity.ERROR, "academicSessions.csv", 3, "parentSourcedId", "y1"),
    ]
    assert frame_ids(result, "academicSessions") == []


def test_a_deep_hierarchy_without_a_cycle_is_accepted(run):
    levels = [[f"g{n}", "", "", f"Level {n}", "gradingPeriod", "2025-08-01", "2026-01-01", f"g{n - 1}" if n > 1
               else "t1", "2026"] for n in range(1, 40)]  # fmt: skip
    result = run(add_rows(V11, "academicSessions.csv", *levels), strict=True)
    assert result.verdict == "accepted" and "reference.parent_cycle" not in codes(result), result.findings.items


def test_a_cycle_in_a_delta_file_is_found_but_a_row_leaving_it_breaks_it(run):
    cycle = delta_package(set_cell(V11, "orgs.csv", 2, "parentSourcedId", "s1"), "orgs.csv")
    only_cycle = run(cycle, max_dropped_share=1.0)
    assert [f.row for f in found(only_cycle, "reference.parent_cycle")] == [2, 3]
    leaving = set_cell(cycle, "orgs.csv", 2, "status", "tobedeleted")
    assert "reference.parent_cycle" not in codes(run(leaving))


# --- user profiles -----------------------------------------------------------------------------------------


def test_a_role_pointing_at_another_users_profile_is_an_error(run):
    files = set_cell(V12, "roles.csv", 4, "userProfileSourcedId", "p1")  # r3 is u2's role; p1 is u1's profile
    error(run, files, "reference.profile_user_mismatch", file="roles.csv", row=4, column="userProfileSourcedId",
          value="p1")  # fmt: skip


# --- delta ------------------------------------------------------------------------------------------------


def test_references_into_delta_files_and_absent_files_are_not_checked(run):
    only_u1 = lambda rows: rows[:2]  # noqa: E731
    delta = delta_package(edit_table(V11, "users.csv", only_u1), "users.csv", ENR)
    result = run(delta, strict=True)
    assert result.verdict == "accepted", result.findings.items
    assert result.findings.items == []  # enrollments point at u2-u4 and at classes the package does not hold

    mixed = {ENR: V11[ENR], "users.csv": delta["users.csv"]}
    mixed["manifest.csv"] = manifest_text(mixed, "1.1", {"users": "delta"})
    result = run(mixed, strict=True)
    assert result.verdict == "accepted", result.findings.items
    assert not [f for f in result.findings.items if f.code.startswith("reference.")]


# --- only the root cause is reported on a row ------------------------------------------------------------------


def test_a_row_dropped_for_its_own_error_is_not_also_blamed_for_its_dropped_target(run):
    # e2 (enrollments row 3) has an unknown role and points at u2 (users row 3), dropped for its enabledUser.
    files = set_cell(set_cell(V11, ENR, 3, "role", "pupil"), "users.csv", 3, "enabledUser", "maybe")
    result = run(files, max_dropped_share=1.0)
    only(result, "row.invalid_enum", file=ENR, row=3, column="role", value="pupil")
    # u2's demographics row (row 2) has no error of its own: the cascade is reported there, not on e2.
    assert {(f.file, f.row) for f in found(result, "reference.target_dropped")} == {("demographics.csv", 2)}
    assert "e2" not in frame_ids(result, "enrollments")


def test_a_row_pointing_at_no_row_is_not_also_blamed_for_a_dropped_target(run):
    # e2 points at no class (k9, checked first) and at u2, which is dropped for its own error.
    files = set_cell(set_cell(V11, ENR, 3, "classSourcedId", "k9"), "users.csv", 3, "enabledUser", "maybe")
    result = run(files, max_dropped_share=1.0)
    only(result, "reference.missing_target_record", file=ENR, row=3, column="classSourcedId", value="k9")
    assert not [f for f in found(result, "reference.target_dropped") if f.file == ENR]


def test_a_school_the_text_layer_dropped_is_a_dropped_target_not_a_wrong_type(run):
    files = replace(V11, "orgs.csv", b"Lakeside High", b"Lakeside H\xe4gh")  # s1 (row 3) is not UTF-8
    result = run(files, max_dropped_share=1.0)
    only(result, "csv.invalid_utf8", file="orgs.csv", row=3)
    assert "reference.target_type_mismatch" not in codes(result)  # s1's type cannot be known
    assert (Severity.ERROR, CLASSES, 2, "schoolSourcedId", "s1") in places(result, "reference.target_dropped")


def test_a_wrong_type_is_reported_even_when_the_target_was_dropped_for_another_error(run):
    # k1 (classes row 2) names the district as its school; the district is dropped for its blank name.
    files = set_cell(set_cell(V11, CLASSES, 2, "schoolSourcedId", "d1"), "orgs.csv", 2, "name", "")
    result = run(files, max_dropped_share=1.0)
    only(result, "reference.target_type_mismatch", file=CLASSES, row=2, column="schoolSourcedId", value="d1")
    # k2 falls with the course (whose org is d1); k1 is already dropped for its own error.
    assert [f.row for f in found(result, "reference.target_dropped") if f.file == CLASSES] == [3]


def test_a_dropped_target_of_an_optional_reference_is_cleared_in_lenient_mode_and_says_so(run):
    files = set_cell(V11, "academicSessions.csv", 2, "schoolYear", "26")  # y1 is dropped; it is t1's parent
    lenient, strict = run(files, max_dropped_share=1.0), run(files, strict=True, max_dropped_share=1.0)
    at_t1 = lambda result: [f for f in found(result, "reference.target_dropped") if f.row == 3 and  # noqa: E731
                            f.file == "academicSessions.csv"]  # fmt: skip
    (kept,), (dropped,) = at_t1(lenient), at_t1(strict)
    assert (kept.severity, kept.column, kept.value) == (Severity.WARNING, "parentSourcedId", "y1")
    assert kept.message == ("parentSourcedId points at a row of academicSessions.csv that was dropped; the reference "
                            "was cleared and this row kept")  # fmt: skip
    assert lenient.roster.frames["academicSessions"]["parentSourcedId"].to_list() == [None]
    assert (dropped.severity, dropped.column, dropped.value) == (Severity.ERROR, "parentSourcedId", "y1")
    assert dropped.message == ("parentSourcedId points at a row of academicSessions.csv that was dropped, so this "
                               "row is dropped too")  # fmt: skip


def test_an_unresolved_optional_reference_says_it_was_cleared_only_in_lenient_mode(run):
    files = set_cell(V11, "academicSessions.csv", 3, "parentSourcedId", "y9")
    lenient, strict = deviation(run, files, "reference.missing_target_record", file="academicSessions.csv", row=3)
    assert found(lenient, "reference.missing_target_record")[0].message == (
        "parentSourcedId points at no row of academicSessions.csv; the reference was cleared")
    assert found(strict, "reference.missing_target_record")[0].message == (
        "parentSourcedId points at no row of academicSessions.csv")
