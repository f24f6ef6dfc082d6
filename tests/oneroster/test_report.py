"""The text report of `rosterd validate`: groups by code and severity, causes before their consequences.

Each test builds the findings by hand, so the expected counts and order come from the test, not from
the validator.
"""

from __future__ import annotations

import re

from daemon.oneroster.findings import Findings, Mode, Severity
from daemon.oneroster.report import render_text
from daemon.oneroster.validate import ValidationResult

E, W = Severity.ERROR, Severity.WARNING


def report(findings: Findings) -> str:
    return render_text(ValidationResult("rejected", "1.1", Mode.LENIENT, findings), "district.zip")


def headings(text: str) -> list[tuple[str, str, int]]:
    """(severity, code, count) of each group, top to bottom."""
    return [(m[1], m[2], int(m[3])) for m in re.finditer(r"^  (ERROR|WARNING|\?)\s+(\S+) \((\d+)\):", text, re.M)]


def summary(text: str) -> tuple[int, int]:
    m = re.search(r"; (\d+) error\(s\), (\d+) warning\(s\)$", text, re.M)
    assert m, text
    return int(m[1]), int(m[2])


def test_a_code_found_at_two_severities_is_two_groups_and_the_summary_adds_them_up() -> None:
    findings = Findings()
    findings.add("row.invalid_date", E, "startDate must be YYYY-MM-DD", file="academicSessions.csv", row=2)
    for row in range(2, 5):  # a required reference to the dropped session: the rows go too
        findings.add("reference.target_dropped", E, "dropped", file="classes.csv", row=row, column="termSourcedIds")
    for row in (3, 4):  # an optional one: lenient mode clears the reference and keeps the row
        findings.add("reference.target_dropped", W, "dropped", file="courses.csv", row=row, column="schoolYearSourcedId")

    text = report(findings)

    assert headings(text) == [
        ("ERROR", "row.invalid_date", 1),
        ("ERROR", "reference.target_dropped", 3),
        ("WARNING", "reference.target_dropped", 2),
    ]
    assert summary(text) == (4, 2)
    warnings_group = text.split("WARNING reference.target_dropped")[1]
    assert "courses.csv:3 schoolYearSourcedId" in warnings_group and "classes.csv" not in warnings_group


def test_root_causes_come_before_their_consequences_and_summaries() -> None:
    findings = Findings()  # added in the opposite of the order a reader should fix them in
    findings.add("file.too_many_dropped_rows", E, "too many", file="enrollments.csv", value="2/5")
    findings.add("reference.target_dropped", E, "dropped", file="enrollments.csv", row=2, column="classSourcedId")
    findings.add("reference.missing_target_record", E, "no such class", file="enrollments.csv", row=3,
                 column="classSourcedId")  # fmt: skip
    findings.add("row.invalid_boolean", W, "TRUE", file="enrollments.csv", row=4, column="primary")
    findings.add("row.invalid_enum", E, "Scheduled", file="classes.csv", row=2, column="classType")
    findings.add("header.column_case", W, "case", file="users.csv", column="givenname")
    findings.add("package.required_file_missing", E, "no orgs.csv")
    findings.add("manifest.file_missing", E, "orgs.csv declared", file="manifest.csv")
    findings.add("zip.top_level_folder", W, "one folder")

    assert [(severity, code) for severity, code, _ in headings(report(findings))] == [
        ("WARNING", "zip.top_level_folder"),
        ("ERROR", "manifest.file_missing"),
        ("ERROR", "package.required_file_missing"),
        ("WARNING", "header.column_case"),
        ("ERROR", "row.invalid_enum"),  # errors before warnings within the family
        ("WARNING", "row.invalid_boolean"),
        ("ERROR", "reference.missing_target_record"),
        ("ERROR", "reference.target_dropped"),  # a consequence: after every cause
        ("ERROR", "file.too_many_dropped_rows"),
    ]


def test_examples_are_capped_and_the_rest_is_counted() -> None:
    findings = Findings()
    for row in range(2, 10):
        findings.add("row.invalid_enum", E, "not a role", file="users.csv", row=row, column="role", value="pupil")

    text = report(findings)

    assert text.count("users.csv:") == 5
    assert "… and 3 more" in text


def test_findings_beyond_the_kept_examples_still_count_under_their_severity() -> None:
    findings = Findings(keep=2)  # keeps 2 examples per code and file; counts stay complete
    for row in range(2, 8):
        findings.add("row.invalid_enum", E, "not a role", file="users.csv", row=row, column="role")
    findings.add("row.invalid_boolean", W, "TRUE", file="enrollments.csv", row=2, column="primary")

    text = report(findings)

    assert headings(text) == [("ERROR", "row.invalid_enum", 6), ("WARNING", "row.invalid_boolean", 1)]
    assert summary(text) == (6, 1)
    assert "… and 4 more" in text


def test_one_code_cut_short_at_both_severities_is_split_by_the_totals() -> None:
    findings = Findings(keep=1)
    for row in range(2, 5):
        findings.add("reference.target_dropped", W, "optional", file="users.csv", row=row, column="agentSourcedIds")
    for row in range(2, 4):
        findings.add("reference.target_dropped", E, "required", file="users.csv", row=row, column="orgSourcedIds")

    assert headings(report(findings)) == [
        ("ERROR", "reference.target_dropped", 2),
        ("WARNING", "reference.target_dropped", 3),
    ]
    assert summary(report(findings)) == (2, 3)


def test_every_group_is_counted_exactly_when_several_codes_are_cut_short_at_both_severities() -> None:
    findings = Findings(keep=1)  # one example kept per code and file; each code has 2 errors and 2 warnings
    for code in ("reference.target_dropped", "reference.missing_target_record"):
        for row in (2, 3):
            findings.add(code, W, "optional", file="users.csv", row=row, column="agentSourcedIds")
            findings.add(code, E, "required", file="enrollments.csv", row=row, column="userSourcedId")

    text = report(findings)

    assert headings(text) == [
        ("ERROR", "reference.missing_target_record", 2),
        ("WARNING", "reference.missing_target_record", 2),
        ("ERROR", "reference.target_dropped", 2),
        ("WARNING", "reference.target_dropped", 2),
    ]
    assert summary(text) == (4, 4)
