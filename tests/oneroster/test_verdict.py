"""The verdict: valid packages, the dropped-row share, one pass over every file, secrets, robustness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.oneroster.codes import CODES
from daemon.oneroster.findings import Severity

from .conftest import (
    PACKAGES,
    V11,
    V12,
    add_rows,
    drop_column,
    edit_table,
    frame_ids,
    make_zip,
    only,
    replace,
    set_cell,
    validate,
)

ENR = "enrollments.csv"


# --- valid packages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_the_valid_packages_are_accepted_without_findings(run, version, strict):
    files = PACKAGES[version]
    result = run(files, strict=strict)
    assert result.findings.items == []
    assert (result.verdict, result.version) == ("accepted", version)
    assert {name: (s.mode, s.dropped) for name, s in result.files.items()} == {name: ("bulk", 0) for name in files}
    assert {e: f.height for e, f in result.roster.frames.items()} == {
        name[:-4]: text.count("\n") - 1 for name, text in files.items()
    }


VALIDATOR_TESTS = ("test_text.py", "test_header.py", "test_rows.py", "test_manifest.py", "test_references.py",
                   "test_other_references.py", "test_gradebook.py", "test_verdict.py")  # fmt: skip


def test_every_code_but_the_zip_ones_is_triggered_by_some_test():
    """Validator codes by the validator's tests; the codes found against a snapshot by the diff tests; a CERS
    target's codes by the CERS group tests."""
    text = "".join((Path(__file__).parent / name).read_text() for name in VALIDATOR_TESTS)
    text += (Path(__file__).parents[1] / "test_diff.py").read_text()
    text += (Path(__file__).parents[1] / "cers" / "test_groups.py").read_text()
    untested = [code for code in CODES if not code.startswith("zip.") and f'"{code}"' not in text]
    assert untested == []


# --- the share of dropped rows -----------------------------------------------------------------------------


def with_enrollments(count: int, bad: int) -> dict:
    """The 1.1 package with `count` student enrollments, the first `bad` of them with an unknown role."""
    rows = [[f"e{i:03}", "", "", "k1", "s1", "u2", "pupil" if i <= bad else "student", "", "", ""]
            for i in range(1, count + 1)]  # fmt: skip
    return add_rows(edit_table(V11, ENR, lambda r: r[:1]), ENR, *rows)


def test_one_bad_row_of_200_is_dropped_and_the_rest_accepted(run):
    result = run(with_enrollments(200, 1))
    only(result, "row.invalid_enum", severity=Severity.ERROR, file=ENR, row=2, column="role", value="pupil")
    assert result.verdict == "accepted"
    assert (result.files[ENR].rows, result.files[ENR].dropped) == (200, 1)
    ids = frame_ids(result, "enrollments")
    assert len(ids) == 199
    assert "e001" not in ids


def test_exactly_one_percent_dropped_is_still_accepted(run):
    result = run(with_enrollments(200, 2))
    assert result.verdict == "accepted"
    assert len(frame_ids(result, "enrollments")) == 198


def test_more_than_one_percent_dropped_rejects_the_upload(run):
    result = run(with_enrollments(200, 3))
    finding = only(result, "file.too_many_dropped_rows", severity=Severity.ERROR, file=ENR, row=None, value="3/200")
    assert finding.message == "3 of 200 enrollments rows (1.5%) were dropped; at most 1.0% may be dropped"
    assert result.verdict == "rejected"
    assert result.roster is None


def test_the_dropped_share_is_configurable(run):
    files = with_enrollments(200, 3)
    assert run(files, max_dropped_share=0.02).verdict == "accepted"
    strict_share = run(with_enrollments(200, 1), max_dropped_share=0.0)
    only(strict_share, "file.too_many_dropped_rows", file=ENR, value="1/200")
    assert strict_share.verdict == "rejected"


def test_a_strict_mode_deviation_drops_its_row_like_any_error(run):
    files = set_cell(with_enrollments(200, 0), ENR, 2, "primary", "TRUE")
    result = run(files, strict=True)
    only(result, "row.invalid_boolean", severity=Severity.ERROR, file=ENR, row=2)
    assert result.verdict == "accepted"
    assert "e001" not in frame_ids(result, "enrollments")


# --- one pass ---------------------------------------------------------------------------------------------


def test_one_pass_reports_problems_in_every_file(run):
    files = drop_column(V11, "classes.csv", "location")
    files = set_cell(files, "users.csv", 3, "role", "pupil")
    files = set_cell(files, ENR, 4, "beginDate", "8/27/2018")
    result = run(files)
    assert result.verdict == "rejected"
    only(result, "header.missing_column", file="classes.csv", row=1, column="location")
    only(result, "row.invalid_enum", file="users.csv", row=3, column="role", value="pupil")
    only(result, "row.invalid_date", file=ENR, row=4, column="beginDate", value="8/27/2018")


# --- secrets ----------------------------------------------------------------------------------------------

SECRET = "Hunter2-cy"
SECRET_USERS = set_cell(V11, "users.csv", 5, "password", SECRET)  # u4's row is short: a report would show all of it


@pytest.mark.parametrize(
    "files",
    [
        pytest.param(replace(SECRET_USERS, "users.csv", SECRET + "\n", SECRET + ",extra\n"), id="width"),
        pytest.param(replace(SECRET_USERS, "users.csv", SECRET, 'Hun"ter2-cy'), id="quote"),
        pytest.param(replace(SECRET_USERS, "users.csv", b"Okafor", b"Ok\xe4for"), id="utf8"),
        pytest.param(replace(SECRET_USERS, "users.csv", "Okafor", "Oka\rfor"), id="cr"),
        pytest.param(set_cell(SECRET_USERS, "users.csv", 5, "givenName", ""), id="required"),
        pytest.param(replace(set_cell(V12, "userProfiles.csv", 3, "password", SECRET), "userProfiles.csv",
                             SECRET + "\n", SECRET + ",\n"), id="profile-width"),  # fmt: skip
    ],
)
def test_passwords_never_appear_in_findings(run, files):
    result = run(files, max_dropped_share=1.0)
    assert result.findings.items, "the edit should have produced a finding"
    assert SECRET[:6] not in json.dumps(result.to_dict(), ensure_ascii=False)
    assert not [f for f in result.findings.items if "Hun" in (f.value or "") + f.message]


# --- robustness -------------------------------------------------------------------------------------------

FREE_TEXT_CELLS = [
    ("users.csv", 3, "middleName"),
    ("classes.csv", 2, "location"),
    ("demographics.csv", 4, "cityOfBirth"),
    ("orgs.csv", 2, "identifier"),
]
PRINTABLE = st.text(st.characters(codec="utf-8", categories=("L", "M", "N", "P", "S", "Zs")).filter(str.isprintable),
                    max_size=30)  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(FREE_TEXT_CELLS), text=PRINTABLE, strict=st.booleans())
def test_any_printable_text_in_an_optional_string_cell_leaves_a_valid_package_valid(tmp_path, where, text, strict):
    file, row, column = where
    result = validate(make_zip(tmp_path, set_cell(V11, file, row, column, text)), strict)
    assert result.verdict == "accepted"
    assert result.findings.items == []
    assert result.roster.frames[file[:-4]][column][row - 2] == (text or None)

