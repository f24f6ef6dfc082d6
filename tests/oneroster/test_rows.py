"""Row values (row.* codes) and the typed roster they become; spec sections 3, 4.4, 5-7.

Most rules look at one cell of one file, so they are tables: a cell of the valid package, a value written into
it, and what the validator must say. The file is tried alone in a delta package (`edit`), which is valid and
fast; bulk-only rules and the typed roster use the whole bulk package. In enrollments.csv row 2 is e1 (a
teacher with dates), row 3 e2 (a student); in users.csv row 5 is u4.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from daemon.oneroster.findings import Severity, clip

from .conftest import (
    V11,
    alone,
    codes,
    deviation,
    edit,
    error,
    found,
    frame_ids,
    set_cell,
)

ENR = "enrollments.csv"
CLASSES = "classes.csv"
USERS = "users.csv"
ROLES = "roles.csv"
SESSIONS = "academicSessions.csv"
DEMO = "demographics.csv"
CELL = ("version", "file", "row", "column", "value")


def frame(result, entity: str) -> pl.DataFrame:
    assert result.roster is not None, result.findings.items
    return result.roster.frames[entity]


def value_at(result, file: str, row: int, column: str):
    """The typed value the roster holds for a cell (lists as Python lists)."""
    found_rows = frame(result, file[:-4]).filter(pl.col("_row") == row)
    assert found_rows.height == 1, f"row {row} of {file} is not in the roster"
    value = found_rows[column][0]
    return value.to_list() if isinstance(value, pl.Series) else value


def cases(*rows: tuple) -> list:
    """pytest params named by what is written where."""
    return [pytest.param(*r, id=f"{r[0]}-{r[1][:-4]}.{r[3]}={r[4][:24]!r}") for r in rows]


# --- errors: the row is dropped in both modes --------------------------------------------------------------

ERRORS = cases(
    ("1.1", ENR, 2, "sourcedId", "e 1", "row.invalid_sourced_id"),  # whitespace: not even usable as a key
    ("1.1", ENR, 2, "sourcedId", "e" * 256, "row.invalid_sourced_id"),
    ("1.1", ENR, 2, "sourcedId", "e1\t", "row.invalid_sourced_id"),
    ("1.1", USERS, 3, "givenName", "", "row.missing_required_value"),
    ("1.1", USERS, 2, "enabledUser", "", "row.missing_required_value"),
    ("1.1", ENR, 2, "beginDate", "2026-02-30", "row.invalid_date"),
    ("1.1", ENR, 2, "beginDate", "8/27/2018", "row.invalid_date"),
    ("1.1", ENR, 2, "beginDate", "20250801", "row.invalid_date"),
    ("1.1", ENR, 2, "beginDate", " 2025-08-01", "row.invalid_date"),
    ("1.1", SESSIONS, 3, "schoolYear", "26", "row.invalid_year"),
    ("1.1", SESSIONS, 3, "schoolYear", "2025-26", "row.invalid_year"),
    ("1.1", ENR, 2, "primary", "yes", "row.invalid_boolean"),
    ("1.1", ENR, 2, "primary", "1", "row.invalid_boolean"),
    ("1.1", CLASSES, 2, "classType", "lecture", "row.invalid_enum"),
    ("1.1", CLASSES, 2, "classType", "ext:lab", "row.invalid_enum"),  # 1.1 has no extensions
    ("1.1", USERS, 2, "role", "counselor", "row.invalid_enum"),  # a 1.2 role
    ("1.1", DEMO, 3, "sex", "unspecified", "row.invalid_enum"),  # a 1.2 value
    ("1.1", ENR, 3, "role", " student", "row.invalid_enum"),
    ("1.2", ROLES, 2, "roleType", "ext:main", "row.invalid_enum"),  # roleType takes no extensions
    ("1.2", ROLES, 2, "role", "administrator", "row.invalid_enum"),  # gone in 1.2
    ("1.2", CLASSES, 2, "classType", "ext:", "row.invalid_enum"),
    ("1.1", ENR, 3, "status", "deleted", "row.invalid_enum"),
    ("1.2", ENR, 3, "status", "ext:gone", "row.invalid_enum"),  # status takes no extensions
    ("1.1", USERS, 5, "userIds", "LDAP:cy", "row.invalid_user_ids"),
    ("1.1", USERS, 5, "userIds", "{LDAP}", "row.invalid_user_ids"),
    ("1.1", USERS, 5, "userIds", "{LDAP:cy},SIS:1004", "row.invalid_user_ids"),
    ("1.1", "courses.csv", 2, "subjectCodes", "02052", "row.list_length_mismatch"),  # subjects has two items
    ("1.1", ENR, 3, "status", "", "row.field_required_in_delta"),
    ("1.1", ENR, 3, "dateLastModified", "", "row.field_required_in_delta"),
    ("1.1", ENR, 3, "dateLastModified", "yesterday", "row.invalid_datetime"),
    ("1.1", ENR, 3, "dateLastModified", "2026-02-30T10:00:00.000Z", "row.invalid_datetime"),
    ("1.1", ENR, 3, "dateLastModified", "2026-01-15T25:00:00Z", "row.invalid_datetime"),
)


@pytest.mark.parametrize((*CELL, "code"), ERRORS)
def test_a_bad_value_is_an_error_that_drops_its_row(run, version, file, row, column, value, code):
    result = error(run, edit(version, file, row, column, value), code, file=file, row=row, column=column,
                   value=clip(value) or None)  # fmt: skip
    assert result.files[file].dropped == 1


# --- deviations: lenient mode keeps the row with a warning and a normalised value ----------------------------

DEVIATIONS = cases(
    ("1.1", ENR, 2, "sourcedId", "e#1", "row.invalid_sourced_id", "e#1"),
    ("1.1", ENR, 2, "primary", "TRUE", "row.invalid_boolean", True),
    ("1.1", ENR, 2, "primary", "True", "row.invalid_boolean", True),
    ("1.1", CLASSES, 2, "classType", "Scheduled", "row.invalid_enum", "scheduled"),
    ("1.1", CLASSES, 2, "periods", "1,,3", "row.invalid_list", ["1", "3"]),
    ("1.1", CLASSES, 2, "periods", "1, 3", "row.invalid_list", ["1", "3"]),
    ("1.1", CLASSES, 2, "periods", "1,3,", "row.invalid_list", ["1", "3"]),
    ("1.1", USERS, 5, "grades", "9", "row.invalid_grade", ["09"]),  # Excel ate the leading zero
    ("1.1", USERS, 5, "grades", "14", "row.invalid_grade", ["14"]),  # not CEDS: a warning, as [LEGER] does
    ("1.1", USERS, 5, "grades", "kg", "row.invalid_grade", ["kg"]),
    ("1.1", ENR, 2, "endDate", "2025-07-01", "row.date_order", date(2025, 7, 1)),
    ("1.1", SESSIONS, 3, "endDate", "2025-07-01", "row.date_order", date(2025, 7, 1)),
    ("1.1", ENR, 3, "primary", "true", "row.primary_not_teacher", True),
    ("1.1", ENR, 3, "status", "inactive", "row.invalid_enum", "tobedeleted"),  # OneRoster 1.0's word
    ("1.1", ENR, 3, "status", "toBeDeleted", "row.invalid_enum", "tobedeleted"),
    ("1.1", ENR, 3, "dateLastModified", "2026-01-15T10:00:00Z", "row.invalid_datetime",
     datetime(2026, 1, 15, 10, tzinfo=UTC)),
    ("1.1", ENR, 3, "dateLastModified", "2026-01-15T10:00:00.5Z", "row.invalid_datetime",
     datetime(2026, 1, 15, 10, 0, 0, 500000, tzinfo=UTC)),
    ("1.1", ENR, 3, "dateLastModified", "2026-01-15T12:00:00+02:00", "row.invalid_datetime",
     datetime(2026, 1, 15, 10, tzinfo=UTC)),
    ("1.1", ENR, 3, "dateLastModified", "2026-01-15 10:00:00", "row.invalid_datetime",
     datetime(2026, 1, 15, 10, tzinfo=UTC)),
    ("1.1", ENR, 3, "dateLastModified", "2026-01-15", "row.invalid_datetime", datetime(2026, 1, 15, tzinfo=UTC)),
)  # fmt: skip


@pytest.mark.parametrize((*CELL, "code", "normalised"), DEVIATIONS)
def test_a_deviation_is_normalised_in_lenient_mode_and_an_error_in_strict_mode(
    run, version, file, row, column, value, code, normalised
):
    lenient, strict = deviation(run, edit(version, file, row, column, value), code, file=file, row=row,
                                column=column, value=value)  # fmt: skip
    assert value_at(lenient, file, row, column) == normalised
    assert strict.files[file].dropped == 1


# --- accepted values ---------------------------------------------------------------------------------------

ACCEPTED = cases(
    ("1.1", ENR, 2, "sourcedId", ("e.-_/@" * 43)[:255], ("e.-_/@" * 43)[:255]),  # 255 allowed characters
    ("1.1", DEMO, 2, "birthDate", "2012-02-29", date(2012, 2, 29)),
    ("1.1", USERS, 5, "userIds", "{LDAP:cy}", ["{LDAP:cy}"]),
    ("1.1", USERS, 5, "userIds", "{LDAP:cy},{SIS:1004}", ["{LDAP:cy}", "{SIS:1004}"]),
    ("1.1", "courses.csv", 2, "subjects", "Mathematics,Science Technology and Society",
     ["Mathematics", "Science Technology and Society"]),  # spaces inside an item are fine
    ("1.2", CLASSES, 2, "classType", "ext:lab", "ext:lab"),
    ("1.2", ROLES, 2, "role", "ext:coach", "ext:coach"),
    ("1.2", ENR, 3, "role", "ext:observer", "ext:observer"),
    ("1.2", "orgs.csv", 2, "type", "ext:region", "ext:region"),
    ("1.2", DEMO, 3, "sex", "unspecified", "unspecified"),
    ("1.2", USERS, 5, "grades", "14", ["14"]),  # grades are free strings in 1.2
    ("1.2", USERS, 5, "grades", "9", ["9"]),
    ("1.2", USERS, 5, "grades", "P1", ["P1"]),
    ("1.1", ENR, 3, "dateLastModified", "2026-01-15T10:00:00.000Z", datetime(2026, 1, 15, 10, tzinfo=UTC)),
)  # fmt: skip


@pytest.mark.parametrize((*CELL, "typed"), ACCEPTED)
def test_a_valid_value_passes_strict_mode_and_is_typed(run, version, file, row, column, value, typed):
    result = run(edit(version, file, row, column, value), strict=True)
    assert result.findings.items == []
    assert value_at(result, file, row, column) == typed


# --- rules over whole files --------------------------------------------------------------------------------


def test_a_duplicate_sourced_id_drops_every_copy(run):
    result = run(edit("1.1", ENR, 4, "sourcedId", "e2"), max_dropped_share=1.0)  # e3 becomes a second e2
    dupes = found(result, "row.duplicate_sourced_id")
    assert [(f.severity, f.file, f.row, f.column) for f in dupes] == [
        (Severity.ERROR, ENR, 3, "sourcedId"),
        (Severity.ERROR, ENR, 4, "sourcedId"),
    ]
    assert all("e2" in f.value and "3" in f.value for f in dupes)  # names the id and the first row
    assert frame_ids(result, "enrollments") == ["e1", "e4", "e5"]


def test_the_same_sourced_id_in_two_files_is_fine(run):
    result = run(set_cell(V11, ENR, 2, "sourcedId", "k1"), strict=True)  # k1 is also a class
    assert result.findings.items == []


def test_two_primary_roles_of_one_user_at_one_org_drop_both(run):
    files = set_cell(edit("1.2", ROLES, 3, "roleType", "primary"), ROLES, 3, "orgSourcedId", "s1")
    result = run(files, max_dropped_share=1.0)
    assert [(f.severity, f.row, f.column) for f in found(result, "row.multiple_primary_roles")] == [
        (Severity.ERROR, 2, "roleType"),
        (Severity.ERROR, 3, "roleType"),
    ]
    assert frame_ids(result, "roles") == ["r3", "r4", "r5"]


def test_primary_roles_at_two_orgs_are_fine(run):
    result = run(edit("1.2", ROLES, 3, "roleType", "primary"), strict=True)  # u1: primary at s1 and at d1
    assert result.findings.items == []


def test_a_user_master_identifier_used_twice_is_a_deviation(run):
    files = edit("1.2", USERS, 3, "userMasterIdentifier", "M-1")
    for result, severity in ((run(files), Severity.WARNING), (run(files, strict=True), Severity.ERROR)):
        assert [(f.severity, f.row, f.column) for f in found(result, "row.duplicate_identifier")] == [
            (severity, 2, "userMasterIdentifier"),
            (severity, 3, "userMasterIdentifier"),
        ]


# --- bulk files and the typed roster -----------------------------------------------------------------------


@pytest.mark.parametrize(("column", "value"), [("status", "active"), ("dateLastModified", "2026-01-15T10:00:00.000Z")])
def test_a_lifecycle_value_on_a_bulk_row_is_ignored_in_lenient_mode_and_an_error_in_strict_mode(run, column, value):
    files = set_cell(V11, "orgs.csv", 2, column, value)
    lenient, strict = deviation(run, files, "row.field_forbidden_in_bulk", file="orgs.csv", row=2, column=column,
                                value=value)  # fmt: skip
    assert value_at(lenient, "orgs.csv", 2, column) is None
    assert strict.verdict == "rejected"
    # The message says what happened in each mode: ignored in lenient mode, an error (nothing ignored) in strict.
    rule = f"{column} must be blank in a bulk file"
    assert found(lenient, "row.field_forbidden_in_bulk")[0].message == f"{rule} (ignored)"
    assert found(strict, "row.field_forbidden_in_bulk")[0].message == rule


def test_a_delta_file_is_typed(run):
    enrollments = frame(run(alone("1.1", ENR), strict=True), "enrollments")
    assert enrollments["status"].to_list() == ["active"] * 5
    assert enrollments.schema["dateLastModified"] == pl.Datetime("ms", "UTC")


def test_accepted_rows_are_typed_and_normalised(run):
    result = run(set_cell(V11, USERS, 2, "enabledUser", "TRUE"))
    assert codes(result) == {"row.invalid_boolean"}
    sessions, users, classes = (frame(result, e) for e in ("academicSessions", "users", "classes"))
    assert sessions.schema["startDate"] == pl.Date
    assert sessions["startDate"][0] == date(2025, 8, 1)
    assert sessions["schoolYear"].to_list() == [2026, 2026]
    assert users.schema["enabledUser"] == pl.Boolean
    assert users["enabledUser"].to_list() == [True, True, True, False]
    assert users.schema["orgSourcedIds"] == pl.List(pl.String)
    assert users["orgSourcedIds"].to_list() == [["s1"], ["s1"], ["s1", "d1"], ["s1"]]
    assert users["userIds"][1].to_list() == ["{LDAP:ann}", "{SIS:1002}"]
    assert users["grades"][1].to_list() == ["09"]
    assert classes.schema["termSourcedIds"] == pl.List(pl.String)
    assert classes["periods"].to_list() == [["1", "3"], None]
    assert frame(result, "enrollments")["primary"].to_list() == [True, False, None, None, False]
    assert frame(result, "enrollments")["_row"].to_list() == [2, 3, 4, 5, 6]
    assert frame(result, "orgs").schema["dateLastModified"] == pl.Datetime("ms", "UTC")
