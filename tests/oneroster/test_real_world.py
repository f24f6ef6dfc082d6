"""Real, imperfect public OneRoster sets (tests/data/external): what a careful reader expects of each.

The expectations come from reading the files against the spec (shared/reference/oneroster_csv.md §11):
each set's known deviations must be reported with the right code, place and severity, and nothing crashes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from daemon.oneroster.findings import Finding, Mode, Severity
from daemon.oneroster.validate import ValidateOptions, ValidationResult, validate_package

EXTERNAL = Path(__file__).resolve().parents[1] / "data" / "external"


def zip_folder(folder: Path, dest: Path) -> Path:
    path = dest / f"{folder.name}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.glob("*.csv")):
            zf.write(file, file.name)
    return path


def check(tmp_path: Path, folder: str, **options) -> ValidationResult:
    return validate_package(zip_folder(EXTERNAL / folder, tmp_path), ValidateOptions(**options))


def of(result: ValidationResult, code: str) -> list[Finding]:
    return [f for f in result.findings.items if f.code == code]


def test_lms_toolkit_11_two_teachers_with_an_extra_cell(tmp_path: Path) -> None:
    result = check(tmp_path, "LMS-Toolkit/OneRoster 1.1 Sample Data")
    assert result.version == "1.1"
    # Excel's rewrite of manifest.version 1.0 -> 1 is tolerated with a warning.
    (version,) = of(result, "manifest.invalid_manifest_version")
    assert (version.severity, version.value) == (Severity.WARNING, "1")
    # Two users rows have 19 cells against 18 headers; their enrollments go with them.
    assert [(f.file, f.row) for f in of(result, "row.width_mismatch")] == [("users.csv", 10), ("users.csv", 11)]
    dropped = of(result, "reference.target_dropped")
    assert {f.value for f in dropped} == {"207270", "207268"} and len(dropped) == 4
    # metadata.* columns at the end of orgs.csv are allowed; files without a final newline are fine.
    assert not of(result, "header.unknown_column") and not of(result, "header.metadata_position")
    assert result.verdict == "rejected"  # 2 of 10 users dropped is over 1%
    relaxed = check(tmp_path, "LMS-Toolkit/OneRoster 1.1 Sample Data", max_dropped_share=0.25)
    assert relaxed.verdict == "accepted"
    assert relaxed.roster.frames["users"].height == 8
    assert relaxed.roster.frames["enrollments"].height == 20


def test_lms_toolkit_10_is_recognised_as_oneroster_10(tmp_path: Path) -> None:
    result = check(tmp_path, "LMS-Toolkit/OneRoster 1.0 Sample Data")
    assert result.verdict == "rejected" and result.version == "1.0"
    findings = of(result, "package.oneroster_1_0")
    assert {f.file for f in findings} >= {"classes.csv", "users.csv"}
    classes = next(f for f in findings if f.file == "classes.csv")
    assert "termSourcedIds" in classes.message  # names the 1.1 header expected
    assert set(result.findings.counts) == {"package.oneroster_1_0"}  # no flood of header findings


def test_moodle_full_data_set(tmp_path: Path) -> None:
    result = check(tmp_path, "moodle-enrol_oneroster/Test_full_data_set")
    assert result.verdict == "rejected"
    # Bulk rows with status and dateLastModified filled in: ignored with a warning in lenient mode.
    assert {f.severity for f in of(result, "row.field_forbidden_in_bulk")} == {Severity.WARNING}
    assert {f.value for f in of(result, "row.invalid_boolean")} == {"TRUE"}
    assert [f.value for f in of(result, "row.invalid_enum")] == ["Scheduled"]
    # courses.csv is absent, yet classes point at courses.
    assert of(result, "package.required_file_missing")[0].file == "courses.csv"
    assert of(result, "reference.missing_target_file")[0].column == "courseSourcedId"
    # The classes' schoolSourcedId is an org of type department, not a school.
    assert {f.file for f in of(result, "reference.target_type_mismatch")} == {"classes.csv", "enrollments.csv"}
    # Sessions whose parent is missing: an optional reference, a warning.
    parents = of(result, "reference.missing_target_record")
    assert parents and {f.severity for f in parents if f.column == "parentSourcedId"} == {Severity.WARNING}


def test_moodle_12_delta_is_accepted_with_one_warning(tmp_path: Path) -> None:
    result = check(tmp_path, "moodle-enrol_oneroster/oneroster_test_data")
    assert result.verdict == "accepted" and result.version == "1.2"
    assert set(result.roster.modes.values()) == {"delta"}
    assert set(result.roster.modes) >= {"roles", "userProfiles", "users", "enrollments"}
    (flag,) = of(result, "row.invalid_boolean")
    assert (flag.file, flag.row, flag.column, flag.value) == ("users.csv", 2, "enabledUser", "TRUE")
    assert result.roster.frames["users"]["enabledUser"].to_list() == [True]
    strict = check(tmp_path, "moodle-enrol_oneroster/oneroster_test_data", mode=Mode.STRICT)
    assert strict.verdict == "rejected"


def test_moodle_12_full_dataset_is_very_broken(tmp_path: Path) -> None:
    result = check(tmp_path, "moodle-enrol_oneroster/v1p2_full_dataset")
    assert result.verdict == "rejected"
    (case,) = of(result, "zip.file_name_case")
    assert (case.file, case.value) == ("userProfiles.csv", "userprofiles.csv")
    assert of(result, "header.empty_column_name")
    assert {f.value for f in of(result, "manifest.invalid_file_mode")} == {""}
    assert "prefferedGivenName" in {f.value for f in of(result, "header.unknown_column")}


def test_oat_sample_mixes_10_and_11_headers(tmp_path: Path) -> None:
    result = check(tmp_path, "oneroster-import/OneRosterv1p1BaseCSV")
    assert result.verdict == "rejected"
    missing = {(f.file, f.column) for f in of(result, "header.missing_column")}
    assert ("classes.csv", "grades") in missing and ("users.csv", "userIds") in missing
    unknown = {f.value for f in of(result, "header.unknown_column")}
    assert {"grade", "userId"} <= unknown
    assert of(result, "csv.no_data_rows")


def test_oneroster_ts_templates_are_header_only(tmp_path: Path) -> None:
    result = check(tmp_path, "oneroster-ts/oneroster-example-csv")
    # A fully quoted manifest is fine; the header-only files are warnings; demographics is declared absent.
    assert not of(result, "manifest.invalid_header")
    assert len(of(result, "csv.no_data_rows")) == 7
    assert [f.file for f in of(result, "manifest.file_unexpected")] == ["demographics.csv"]
    assert result.verdict == "rejected"


def test_onerostersync_sample_without_manifest(tmp_path: Path) -> None:
    result = check(tmp_path, "OneRoster.Net/CSVSample")
    assert result.verdict == "rejected"
    assert of(result, "package.missing_manifest")
    assert of(result, "header.empty_column_name")
    dates = of(result, "row.invalid_date")
    assert dates and all("/" in f.value for f in dates)  # US-style dates such as 8/27/2018


@pytest.mark.parametrize("folder", sorted(str(p.parent.relative_to(EXTERNAL)) for p in EXTERNAL.rglob("*.csv")
                                         if p.name == "orgs.csv"))  # fmt: skip
def test_every_set_validates_in_both_modes_without_crashing(tmp_path: Path, folder: str) -> None:
    for mode in Mode:
        result = check(tmp_path, folder, mode=mode)
        assert result.verdict in ("accepted", "rejected")
        assert all(f.code and f.message for f in result.findings.items)
