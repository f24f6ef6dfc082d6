"""Shared helpers for the validator's tests: a minimal valid package per version and ways to break it.

Each test takes a valid package (`V11`, `V12`: file name -> CSV text), changes one cell, line or header,
zips it in tmp_path and validates it. Rows are numbered as a person sees them: the header is row 1.
"""

from __future__ import annotations

import csv
import functools
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.oneroster.findings import Finding, Mode, Severity
from daemon.oneroster.schema import MANIFEST_VERSIONS
from daemon.oneroster.validate import ValidateOptions, ValidationResult, validate_package

Files = dict[str, str | bytes]
Rows = list[list[str]]

_COMMON = {
    "orgs.csv": """\
sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId
d1,,,Lakeside District,district,NCES-1,
s1,,,Lakeside High,school,NCES-2,d1
""",
    "academicSessions.csv": """\
sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear
y1,,,2025-2026,schoolYear,2025-08-01,2026-07-01,,2026
t1,,,Fall 2025,term,2025-08-01,2026-01-01,y1,2026
""",
    "courses.csv": """\
sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,orgSourcedId,subjects,subjectCodes
c1,,,y1,Algebra I,ALG1,"09,10",d1,"Mathematics,Science Technology and Society","02052,03208"
""",
    "classes.csv": """\
sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,\
termSourcedIds,subjects,subjectCodes,periods
k1,,,Algebra I - P1,09,c1,ALG1-1,scheduled,Room 101,s1,t1,Mathematics,02052,"1,3"
k2,,,Homeroom 9A,09,c1,HR9A,homeroom,Room 102,s1,t1,,,
""",
    "enrollments.csv": """\
sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate
e1,,,k1,s1,u1,teacher,true,2025-08-01,2026-01-01
e2,,,k1,s1,u2,student,false,,
e3,,,k1,s1,u3,student,,,
e4,,,k2,s1,u4,student,,,
e5,,,k2,s1,u1,teacher,false,,
""",
    "demographics.csv": """\
sourcedId,status,dateLastModified,birthDate,sex,americanIndianOrAlaskaNative,asian,blackOrAfricanAmerican,\
nativeHawaiianOrOtherPacificIslander,white,demographicRaceTwoOrMoreRaces,hispanicOrLatinoEthnicity,\
countryOfBirthCode,stateOfBirthAbbreviation,cityOfBirth,publicSchoolResidenceStatus
u2,,,2010-05-01,female,false,false,false,false,true,false,true,US,CA,Fresno,
u3,,,2010-09-12,male,,,,,,,,,,,
u4,,,2009-12-30,female,false,true,false,false,false,false,false,,,,
""",
}

V11: Files = {
    **_COMMON,
    "users.csv": """\
sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,\
middleName,identifier,email,sms,phone,agentSourcedIds,grades,password
u1,,,true,s1,teacher,tlee,{LDAP:tlee},Tara,Lee,,T001,tlee@example.org,,,,,
u2,,,true,s1,student,ann,"{LDAP:ann},{SIS:1002}",Ann,Diaz,Marie,S002,,,,,09,Pw-ann-77
u3,,,true,"s1,d1",student,bo,{LDAP:bo},Bo,Chen,,S003,,,,,09,
u4,,,false,s1,student,cy,,Cy,Okafor,,S004,,,,,10,
""",
}

V12: Files = {
    **_COMMON,
    "users.csv": """\
sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,middleName,identifier,\
email,sms,phone,agentSourcedIds,grades,password,userMasterIdentifier,preferredGivenName,preferredMiddleName,\
preferredFamilyName,primaryOrgSourcedId,pronouns
u1,,,true,tlee,{LDAP:tlee},Tara,Lee,,T001,tlee@example.org,,,,,,M-1,,,,s1,she/her
u2,,,true,ann,"{LDAP:ann},{SIS:1002}",Ann,Diaz,Marie,S002,,,,,09,Pw-ann-77,M-2,Annie,,,s1,
u3,,,true,bo,{LDAP:bo},Bo,Chen,,S003,,,,,09,,M-3,,,,s1,
u4,,,false,cy,,Cy,Okafor,,S004,,,,,10,,M-4,,,,s1,
""",
    "roles.csv": """\
sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,userProfileSourcedId
r1,,,u1,primary,teacher,2025-08-01,2026-07-01,s1,p1
r2,,,u1,secondary,teacher,,,d1,
r3,,,u2,primary,student,,,s1,p2
r4,,,u3,primary,student,,,s1,
r5,,,u4,primary,student,,,s1,
""",
    "userProfiles.csv": """\
sourcedId,status,dateLastModified,userSourcedId,profileType,vendorId,applicationId,description,credentialType,\
username,password
p1,,,u1,lms,acme,,Teacher LMS account,password,tlee,Pr0f-tlee
p2,,,u2,lms,acme,,Student LMS account,password,ann,
""",
}

PACKAGES = {"1.1": V11, "1.2": V12}


# --- editing a package ------------------------------------------------------------------------------------


def parse(text: str) -> Rows:
    return list(csv.reader(io.StringIO(text, newline="")))


def unparse(rows: Rows) -> str:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def edit_table(files: Files, file: str, change: Callable[[Rows], Rows]) -> Files:
    """A copy of `files` whose `file` is parsed, changed by `change` and written back as CSV."""
    return {**files, file: unparse(change(parse(files[file])))}


def set_cell(files: Files, file: str, row: int, column: str, value: str) -> Files:
    """Replace one cell; `row` counts the header as row 1. The csv module quotes the value as needed."""

    def change(rows: Rows) -> Rows:
        rows[row - 1][rows[0].index(column)] = value
        return rows

    return edit_table(files, file, change)


def drop_column(files: Files, file: str, column: str) -> Files:
    def change(rows: Rows) -> Rows:
        at = rows[0].index(column)
        return [r[:at] + r[at + 1 :] for r in rows]

    return edit_table(files, file, change)


def insert_column(files: Files, file: str, at: int, name: str, value: str = "") -> Files:
    """Insert a column before cell position `at` (len(header) appends), `value` in every data row."""
    return edit_table(files, file, lambda rows: [r[:at] + [name if i == 0 else value] + r[at:] for i, r in
                                                   enumerate(rows)])  # fmt: skip


def swap_columns(files: Files, file: str, a: str, b: str) -> Files:
    def change(rows: Rows) -> Rows:
        i, j = rows[0].index(a), rows[0].index(b)
        for r in rows:
            r[i], r[j] = r[j], r[i]
        return rows

    return edit_table(files, file, change)


def add_rows(files: Files, file: str, *rows: list[str]) -> Files:
    return edit_table(files, file, lambda existing: existing + [list(r) for r in rows])


def replace(files: Files, file: str, old: str | bytes, new: str | bytes) -> Files:
    """Replace text that occurs exactly once in `file`, byte for byte (for what the csv module cannot write)."""
    data = files[file]
    if isinstance(old, bytes) and isinstance(data, str):
        data = data.encode()
    assert data.count(old) == 1, f"{old!r} occurs {data.count(old)} times in {file}"
    return {**files, file: data.replace(old, new)}


def without(files: Files, *names: str) -> Files:
    return {name: data for name, data in files.items() if name not in names}


# --- manifests, zips and validation ---------------------------------------------------------------------


def version_of(files: Files) -> str:
    users = files.get("users.csv", "")
    users = users if isinstance(users, str) else users.decode("utf-8", "replace")
    if "roles.csv" in files or "userProfiles.csv" in files or "primaryOrgSourcedId" in users:
        return "1.2"
    return "1.1"


def manifest_text(files: Files, version: str | None = None, modes: dict[str, str] | None = None) -> str:
    """A manifest with a file.* row for every file of the version: bulk when the package holds it, else absent;
    `modes` (entity -> value) overrides single rows."""
    version = version or version_of(files)
    modes = modes or {}
    rows = [["propertyName", "value"], ["manifest.version", "1.0"], ["oneroster.version", version]]
    for table in MANIFEST_VERSIONS.get(version, MANIFEST_VERSIONS["1.2"]).tables.values():
        default = "bulk" if table.file in files else "absent"
        rows.append([f"file.{table.entity}", modes.get(table.entity, default)])
    rows.append(["source.systemName", "rosterd tests"])
    return unparse(rows)


STAMP = "2026-01-15T10:00:00.000Z"


def delta_package(package: Files, *names: str) -> Files:
    """Only the named files of `package`, as delta files (every row active, stamped), with their manifest."""
    stamp = lambda rows: [rows[0]] + [[r[0], "active", STAMP, *r[3:]] for r in rows[1:]]  # noqa: E731
    files = {name: edit_table(package, name, stamp)[name] for name in names}
    modes = {name[:-4]: "delta" for name in names}
    return {**files, "manifest.csv": manifest_text(files, version_of(package), modes)}


@functools.cache
def alone(version: str, file: str) -> Files:
    """One file of the valid package of `version` as a one-file delta package: valid, and five times faster to
    validate than the whole package, for rules that look at one file only. Do not change it in place."""
    return delta_package(PACKAGES[version], file)


def edit(version: str, file: str, row: int, column: str, value: str) -> Files:
    """`alone(version, file)` with one cell replaced."""
    return set_cell(alone(version, file), file, row, column, value)


def make_zip(
    tmp_path: Path,
    files: Files,
    manifest: bool | str | bytes = True,
    *,
    version: str | None = None,
) -> Path:
    """Zip `files` at the archive root with a generated manifest (True), none (False) or the given text.
    A manifest.csv among `files` (see `delta_package`) is used as it is."""
    path = tmp_path / f"upload-{len(list(tmp_path.glob('upload-*.zip')))}.zip"
    entries = dict(files)
    if "manifest.csv" not in files and manifest is not False:
        entries["manifest.csv"] = manifest_text(files, version) if manifest is True else manifest
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data if isinstance(data, bytes) else data.encode())
    return path


def validate(path: Path, strict: bool = False, **options) -> ValidationResult:
    return validate_package(path, ValidateOptions(mode=Mode.STRICT if strict else Mode.LENIENT, **options))


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., ValidationResult]:
    """run(files, strict=False, manifest=True, version=None, **ValidateOptions fields): zip in tmp_path, validate."""

    def _run(files: Files, strict: bool = False, manifest: bool | str | bytes = True, *, version: str | None = None,
             **options) -> ValidationResult:  # fmt: skip
        return validate(make_zip(tmp_path, files, manifest, version=version), strict, **options)

    return _run


# --- reading results --------------------------------------------------------------------------------------


def found(result: ValidationResult, code: str) -> list[Finding]:
    return [f for f in result.findings.items if f.code == code]


def codes(result: ValidationResult) -> set[str]:
    return set(result.findings.counts)


def only(result: ValidationResult, code: str, **expected) -> Finding:
    """The one finding with `code`; every keyword (severity, file, row, column, value) must match it."""
    hits = found(result, code)
    assert len(hits) == 1, f"expected one {code}, got {hits}; all: {result.findings.items}"
    actual = {key: getattr(hits[0], key) for key in expected}
    assert actual == expected, hits[0]
    return hits[0]


def deviation(
    run: Callable[..., ValidationResult], files: Files, code: str, **expected
) -> tuple[ValidationResult, ValidationResult]:
    """A deviation lenient mode tolerates: a warning (and an accepted upload) in lenient mode, an error in
    strict mode, with the same place and value. Returns both results for further checks."""
    lenient, strict = run(files), run(files, strict=True)
    only(lenient, code, severity=Severity.WARNING, **expected)
    assert lenient.verdict == "accepted", lenient.findings.items
    only(strict, code, severity=Severity.ERROR, **expected)
    return lenient, strict


def error(run: Callable[..., ValidationResult], files: Files, code: str, **expected) -> ValidationResult:
    """An error even in lenient mode (so in strict mode too), at the expected place. Returns the result."""
    result = run(files)
    only(result, code, severity=Severity.ERROR, **expected)
    return result


def frame_ids(result: ValidationResult, entity: str) -> list[str]:
    assert result.roster is not None, result.findings.items
    return result.roster.frames[entity]["sourcedId"].to_list()
