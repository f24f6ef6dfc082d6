"""manifest.csv (manifest.* codes) and the package as a whole (package.* codes); spec sections 2 and 4."""

from __future__ import annotations

import pytest

import hashlib

from daemon.oneroster.findings import Severity

from .conftest import (
    V11,
    V12,
    alone,
    codes,
    delta_package,
    deviation,
    error,
    found,
    manifest_text,
    only,
    parse,
    replace,
    set_cell,
    unparse,
    without,
)

MANIFEST = "manifest.csv"
DEMO = "demographics.csv"
# Manifest rules do not depend on the data: most tests edit the manifest of a one-file delta package.
BASE = alone("1.1", DEMO)
TEXT = BASE[MANIFEST]
ROWS = parse(TEXT)


def row_of(name: str) -> int:
    """The manifest row (header = 1) that holds property `name`."""
    return next(i for i, r in enumerate(ROWS, start=1) if r[0] == name)


def edited(name: str, value: str | None) -> str:
    """The base manifest with property `name` set to `value` (None removes the row)."""
    rows = [r if r[0] != name else [name, value] for r in ROWS if r[0] != name or value is not None]
    return unparse(rows)


def with_manifest(text: str, files=BASE) -> dict:
    return {**files, MANIFEST: text}


def test_the_generated_manifest_declares_every_1_1_file():
    assert len([r for r in ROWS if r[0].startswith("file.")]) == 13
    assert ROWS[:3] == [["propertyName", "value"], ["manifest.version", "1.0"], ["oneroster.version", "1.1"]]


# --- shape ------------------------------------------------------------------------------------------------


def test_a_wrong_manifest_header_rejects_the_upload(run):
    text = TEXT.replace("propertyName,value", "property,value", 1)
    result = error(run, with_manifest(text), "manifest.invalid_header", file=MANIFEST, row=1, value="property,value")
    assert result.verdict == "rejected"


def test_a_manifest_header_in_the_wrong_case_is_a_deviation(run):
    text = TEXT.replace("propertyName,value", "PropertyName,Value", 1)
    deviation(run, with_manifest(text), "manifest.invalid_header", file=MANIFEST, row=1, value="PropertyName,Value")


def test_a_manifest_row_with_three_cells_rejects_the_upload(run):
    result = error(run, with_manifest(TEXT + "source.systemCode,SIS,extra\n"), "manifest.row_width_mismatch",
                   file=MANIFEST, row=len(ROWS) + 1, value="source.systemCode,SIS,extra")  # fmt: skip
    assert result.verdict == "rejected"


def test_a_property_given_twice_rejects_the_upload(run):
    result = error(run, with_manifest(TEXT + "file.orgs,bulk\n"), "manifest.duplicate_property", file=MANIFEST,
                   row=len(ROWS) + 1, value="file.orgs")  # fmt: skip
    assert result.verdict == "rejected"


@pytest.mark.parametrize("extra", ["vendor.flag,1", "file.roles,absent"])  # roles is a 1.2 file
def test_an_unknown_property_is_a_deviation(run, extra):
    deviation(run, with_manifest(TEXT + extra + "\n"), "manifest.unknown_property", file=MANIFEST,
              row=len(ROWS) + 1, value=extra.split(",")[0])  # fmt: skip


def test_a_missing_file_row_for_an_absent_file_is_a_deviation(run):
    deviation(run, with_manifest(edited("file.categories", None)), "manifest.missing_property", file=MANIFEST)


@pytest.mark.parametrize("name", ["manifest.version", "oneroster.version"])
def test_a_missing_version_row_rejects_the_upload(run, name):
    result = error(run, with_manifest(edited(name, None)), "manifest.missing_property", file=MANIFEST)
    assert result.verdict == "rejected"


# --- values -----------------------------------------------------------------------------------------------


def test_manifest_version_1_as_excel_writes_it_is_a_deviation(run):
    deviation(run, with_manifest(edited("manifest.version", "1")), "manifest.invalid_manifest_version",
              file=MANIFEST, row=2, value="1")  # fmt: skip


def test_another_manifest_version_rejects_the_upload(run):
    result = error(run, with_manifest(edited("manifest.version", "2.0")), "manifest.invalid_manifest_version",
                   file=MANIFEST, row=2, value="2.0")  # fmt: skip
    assert result.verdict == "rejected"


@pytest.mark.parametrize("version", ["1.0", "1.3", "v1.1", "1.2.2"])
def test_an_unsupported_oneroster_version_rejects_the_upload(run, version):
    result = error(run, with_manifest(edited("oneroster.version", version)), "manifest.unsupported_version",
                   file=MANIFEST, row=3, value=version)  # fmt: skip
    assert result.verdict == "rejected"


def test_a_1_2_1_manifest_reads_as_1_2(run):
    result = run(V12, strict=True, version="1.2.1")
    assert result.verdict == "accepted", result.findings.items
    assert result.findings.items == []
    assert result.version == "1.2"


def test_a_file_mode_in_the_wrong_case_is_a_deviation(run):
    lenient, _ = deviation(run, with_manifest(edited("file.demographics", "Delta")), "manifest.invalid_file_mode",
                           file=MANIFEST, row=row_of("file.demographics"), value="Delta")  # fmt: skip
    assert lenient.roster.modes["demographics"] == "delta"


def test_an_unknown_file_mode_rejects_the_upload(run):
    result = error(run, with_manifest(edited("file.demographics", "full")), "manifest.invalid_file_mode",
                   file=MANIFEST, row=row_of("file.demographics"), value="full")  # fmt: skip
    assert result.verdict == "rejected"


# --- the manifest against the zip ----------------------------------------------------------------------------


def test_a_declared_file_missing_from_the_zip_rejects_the_upload(run):
    result = error(run, with_manifest(TEXT, without(BASE, DEMO)), "manifest.file_missing", file=DEMO)
    assert result.verdict == "rejected"


def test_a_file_declared_absent_but_present_rejects_the_upload(run):
    result = error(run, with_manifest(edited("file.demographics", "absent")), "manifest.file_unexpected", file=DEMO)
    assert result.verdict == "rejected"


def test_a_file_the_manifest_does_not_mention_is_read_as_bulk_with_a_deviation(run):
    bulk = [r for r in parse(manifest_text(V11)) if r[0] != "file.demographics"]  # the file is read as bulk
    files = with_manifest(unparse(bulk), V11)
    lenient, strict = deviation(run, files, "manifest.file_not_declared", file=DEMO)
    assert lenient.roster.modes["demographics"] == "bulk"
    assert lenient.roster.frames["demographics"].height == 3
    message = {mode: found(result, "manifest.file_not_declared")[0].message for mode, result in
               (("lenient", lenient), ("strict", strict))}  # fmt: skip
    # In strict mode the deviation is an error and nothing is read, so the message does not say "read as bulk".
    assert message == {"lenient": f"manifest.csv does not mention {DEMO} (read as bulk)",
                       "strict": f"manifest.csv does not mention {DEMO}"}  # fmt: skip


@pytest.mark.parametrize("strict", [False, True])
def test_a_file_of_the_other_version_is_an_error_in_both_modes(run, strict):
    files = {**V11, "roles.csv": V12["roles.csv"]}  # roles.csv is new in 1.2
    result = run(files, strict=strict, manifest=manifest_text(V11, "1.1"))
    finding = only(result, "zip.unknown_file", severity=Severity.ERROR, file="roles.csv")
    assert "1.2" in finding.message
    assert result.verdict == "rejected"


# --- the package ------------------------------------------------------------------------------------------


def test_a_package_without_a_manifest_is_rejected_but_its_files_are_still_checked(run):
    result = run(set_cell(V11, "enrollments.csv", 3, "role", "pupil"), manifest=False)
    only(result, "package.missing_manifest", severity=Severity.ERROR, file=None, row=None)
    only(result, "row.invalid_enum", file="enrollments.csv", row=3, column="role", value="pupil")
    assert result.verdict == "rejected"


@pytest.mark.parametrize(
    ("file", "old", "new", "found"),
    [
        ("classes.csv", "grades,courseSourcedId", "grade,courseSourcedId", "grade,termSourcedId"),
        ("users.csv", "userIds", "userId", "userId,agents"),
    ],
)
def test_a_1_0_package_is_recognised_and_told_which_1_1_headers_to_export(run, file, old, new, found):
    files = replace(V11, file, old, new)
    if file == "classes.csv":
        files = replace(files, file, "termSourcedIds", "termSourcedId")
    else:
        files = replace(files, file, "agentSourcedIds", "agents")
    result = run(files, manifest=False)
    hit = only(result, "package.oneroster_1_0", severity=Severity.ERROR, file=file, row=1, value=found)
    assert V11[file].split("\n", 1)[0] in hit.message  # the 1.1 header to export instead
    assert "package.missing_manifest" not in codes(result)
    assert (result.verdict, result.version) == ("rejected", "1.0")


@pytest.mark.parametrize(("package", "missing"), [(V11, "enrollments.csv"), (V11, "orgs.csv"), (V12, "roles.csv")])
def test_a_bulk_package_without_a_file_ingestion_needs_is_rejected(run, package, missing):
    result = run(without(package, missing))
    only(result, "package.required_file_missing", severity=Severity.ERROR, file=missing)
    assert result.verdict == "rejected"


def test_a_delta_package_needs_only_the_files_that_changed(run):
    result = run(delta_package(V11, "enrollments.csv"), strict=True)
    assert "package.required_file_missing" not in codes(result)
    assert result.verdict == "accepted", result.findings.items


@pytest.mark.parametrize("strict", [False, True])
def test_a_manifest_only_package_means_no_changes_and_is_accepted(run, strict):
    result = run({}, strict=strict)
    only(result, "package.no_changes", severity=Severity.WARNING, file=None)
    assert result.verdict == "accepted"
    assert result.roster.frames == {}


def test_an_empty_zip_is_a_missing_manifest_not_no_changes(run):
    result = run({}, manifest=False)
    assert codes(result) == {"package.missing_manifest"}
    assert result.verdict == "rejected"


def test_a_manifest_naming_a_file_the_zip_lacks_is_not_no_changes(run):
    result = run({}, manifest=manifest_text({}, "1.1", {"users": "bulk"}))
    only(result, "manifest.file_missing", severity=Severity.ERROR, file="users.csv")
    assert "package.no_changes" not in codes(result)
    assert result.verdict == "rejected"


def test_a_manifest_only_package_with_an_error_is_not_no_changes(run):
    manifest = manifest_text({}, "1.1").replace("manifest.version,1.0", "manifest.version,1")  # Excel's rewrite
    assert codes(run({}, manifest=manifest)) == {"manifest.invalid_manifest_version", "package.no_changes"}
    strict = run({}, strict=True, manifest=manifest)  # strict: an error, so the package is not valid
    assert codes(strict) == {"manifest.invalid_manifest_version"}
    assert strict.verdict == "rejected"


def test_an_implausibly_large_manifest_is_not_read(run):
    # Distinct values, so the zip's compression ratio stays low and the size check is what fires.
    filler = "".join(f"source.note{i},{hashlib.sha256(str(i).encode()).hexdigest()}\n" for i in range(20000))
    big = "propertyName,value\nmanifest.version,1.0\noneroster.version,1.1\n" + filler
    result = run(V11, manifest=big)
    only(result, "manifest.too_large", file="manifest.csv", severity=Severity.ERROR)
    assert result.verdict == "rejected"
