"""The committed samples give the verdicts and codes samples/README.md promises, in both modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.oneroster.findings import Mode
from daemon.oneroster.validate import ValidateOptions, validate_package

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

# sample: (lenient verdict, strict verdict, codes that must be reported in lenient mode)
EXPECTED = {
    "valid-1.1-bulk.zip": ("accepted", "accepted", set()),
    "valid-1.2-bulk.zip": ("accepted", "accepted", set()),
    "valid-1.1-delta.zip": ("accepted", "accepted", set()),
    "lenient-excel-export.zip": ("accepted", "rejected", {
        "zip.top_level_folder", "header.column_case", "row.invalid_boolean", "row.field_forbidden_in_bulk"}),
    "broken-oneroster-1.0.zip": ("rejected", "rejected", {"package.oneroster_1_0"}),
    "broken-missing-manifest.zip": ("rejected", "rejected", {"package.missing_manifest"}),
    "broken-manifest-file-missing.zip": ("rejected", "rejected", {"manifest.file_missing"}),
    "broken-reference-missing-class.zip": ("accepted", "accepted", {"reference.missing_target_record"}),
    "broken-school-not-a-school.zip": ("rejected", "rejected", {
        "reference.target_type_mismatch", "reference.target_dropped", "file.too_many_dropped_rows"}),
    "broken-invalid-enum.zip": ("rejected", "rejected", {"row.invalid_enum", "reference.target_dropped"}),
    "broken-duplicate-sourcedid.zip": ("rejected", "rejected", {"row.duplicate_sourced_id", "reference.target_dropped"}),
    "broken-row-width.zip": ("rejected", "rejected", {"row.width_mismatch", "reference.target_dropped"}),
    "broken-invalid-utf8.zip": ("rejected", "rejected", {"csv.invalid_utf8", "reference.target_dropped"}),
    "broken-line-break-in-field.zip": ("rejected", "rejected", {"csv.line_break_in_quoted_field"}),
    "broken-us-dates.zip": ("rejected", "rejected", {"row.invalid_date", "file.too_many_dropped_rows"}),
    "broken-zip-slip.zip": ("rejected", "rejected", {"zip.unsafe_name"}),
    "broken-zip-bomb.zip": ("rejected", "rejected", {"zip.ratio_exceeded"}),
    "broken-not-a-zip.zip": ("rejected", "rejected", {"zip.not_a_zip"}),
    "broken-truncated.zip": ("rejected", "rejected", {"zip.truncated"}),
    "broken-delta-missing-status.zip": ("rejected", "rejected", {"row.field_required_in_delta"}),
}  # fmt: skip


def test_every_sample_is_covered() -> None:
    assert sorted(p.name for p in SAMPLES.glob("*.zip")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_verdicts(name: str) -> None:
    lenient_verdict, strict_verdict, codes = EXPECTED[name]
    lenient = validate_package(SAMPLES / name)
    assert lenient.verdict == lenient_verdict
    assert codes <= set(lenient.findings.counts), lenient.findings.counts
    if not codes:
        assert lenient.findings.counts == {}
    assert validate_package(SAMPLES / name, ValidateOptions(mode=Mode.STRICT)).verdict == strict_verdict


def test_a_higher_dropped_share_accepts_a_package_with_one_bad_row() -> None:
    result = validate_package(SAMPLES / "broken-row-width.zip", ValidateOptions(max_dropped_share=0.05))
    assert result.verdict == "accepted"
    users = result.roster.frames["users"]
    assert result.files["users.csv"].dropped == 1
    assert users.height == result.files["users.csv"].rows - 1
