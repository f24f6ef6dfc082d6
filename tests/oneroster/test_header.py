"""Header rows (header.* codes): names, order, case, extension columns; spec section 3.

A header rule looks at one file, so most tests break users.csv alone in a delta package (`U11`, `U12`)."""

from __future__ import annotations

import pytest

from daemon.oneroster.findings import Severity, clip

from .conftest import (
    V11,
    V12,
    alone,
    codes,
    deviation,
    drop_column,
    error,
    found,
    insert_column,
    manifest_text,
    only,
    parse,
    replace,
    swap_columns,
)

USERS = "users.csv"
USERS_11 = V11[USERS].split("\n", 1)[0].split(",")
USERS_12 = V12[USERS].split("\n", 1)[0].split(",")
U11, U12 = alone("1.1", USERS), alone("1.2", USERS)  # header rules look at one file: try them on it alone


def test_a_utf8_byte_order_mark_is_ignored_even_in_strict_mode(run):
    files = {name: b"\xef\xbb\xbf" + text.encode() for name, text in V11.items()}
    result = run(files, strict=True, manifest=b"\xef\xbb\xbf" + manifest_text(V11).encode())
    assert result.verdict == "accepted"
    assert result.findings.items == []
    assert result.roster.frames["users"]["sourcedId"][0] == "u1"


def test_a_missing_column_rejects_the_upload(run):
    result = error(run, drop_column(U11, USERS, "middleName"), "header.missing_column", file=USERS, row=1,
                   column="middleName")  # fmt: skip
    assert result.verdict == "rejected"


def test_a_missing_column_is_reported_once_not_per_row(run):
    result = run(drop_column(U11, USERS, "givenName"))  # a required column
    assert result.findings.counts["header.missing_column"] == 1
    assert "row.missing_required_value" not in codes(result)


def test_columns_out_of_order_reject_the_upload(run):
    files = swap_columns(U11, USERS, "givenName", "familyName")
    header = files[USERS].split("\n", 1)[0]
    result = error(run, files, "header.column_order", file=USERS, row=1, value=clip(header))
    assert result.verdict == "rejected"


@pytest.mark.parametrize(("file", "name", "spelled"), [(USERS, "givenName", "givenname"), ("orgs.csv", "sourcedId",
                                                                                         "sourcedID")])  # fmt: skip
def test_a_header_in_the_wrong_case_is_read_in_lenient_mode_and_rejected_in_strict_mode(run, file, name, spelled):
    files = replace(alone("1.1", file), file, name, spelled)
    lenient, strict = deviation(run, files, "header.column_case", file=file, row=1, column=spelled, value=spelled)
    written = parse(V11[file])
    expected = [r[written[0].index(name)] for r in written[1:]]
    assert lenient.roster.frames[file[:-4]][name].to_list() == expected
    assert strict.verdict == "rejected"


def test_an_extra_column_not_named_metadata_is_a_deviation_in_1_2(run):
    files = insert_column(U12, USERS, len(USERS_12), "vendorFlag", "x")
    _, strict = deviation(run, files, "header.unknown_column", file=USERS, row=1, column="vendorFlag")
    assert strict.verdict == "rejected"


def test_an_extra_trailing_column_is_accepted_with_a_warning_in_1_1(run):
    # 1.1 asks only that extension columns follow the defined ones; the metadata.* name is 1.2.1's rule.
    result = run(insert_column(U11, USERS, len(USERS_11), "vendorFlag", "x"))
    only(result, "header.unknown_column", severity=Severity.WARNING, file=USERS, row=1, column="vendorFlag")
    assert result.verdict == "accepted"


def test_a_trailing_metadata_column_is_kept(run):
    files = insert_column(U11, USERS, len(USERS_11), "metadata.house", "Red")
    result = run(files, strict=True)
    assert result.findings.items == []
    assert result.roster.frames["users"]["metadata.house"].to_list() == ["Red"] * 4


@pytest.mark.parametrize("strict", [False, True])
def test_a_metadata_column_among_the_defined_ones_is_an_error_in_both_modes(run, strict):
    # The defined columns keep fixed places (readers may go by position); only 1.0 allowed metadata.* among them.
    result = run(insert_column(U11, USERS, 3, "metadata.house", "Red"), strict=strict)
    only(result, "header.metadata_position", severity=Severity.ERROR, file=USERS, row=1, column="metadata.house")
    assert "header.unknown_column" not in codes(result)
    assert result.verdict == "rejected"


@pytest.mark.parametrize("strict", [False, True])
def test_an_undefined_column_among_the_defined_ones_is_an_error_in_both_modes(run, strict):
    result = run(insert_column(U12, USERS, 5, "vendorFlag", "x"), strict=strict)
    finding = only(result, "header.unknown_column", severity=Severity.ERROR, file=USERS, row=1, column="vendorFlag")
    assert "among the defined columns" in finding.message
    assert result.verdict == "rejected"


def test_a_trailing_unknown_column_says_it_was_kept_only_in_lenient_mode(run):
    files = insert_column(U12, USERS, len(USERS_12), "vendorFlag", "x")
    lenient, strict = run(files), run(files, strict=True)
    assert found(lenient, "header.unknown_column")[0].message.endswith("(kept as an extension)")
    assert "kept" not in found(strict, "header.unknown_column")[0].message
    assert lenient.roster.frames["users"]["vendorFlag"].to_list() == ["x"] * 4


def test_a_duplicate_column_rejects_the_upload(run):
    files = insert_column(U11, USERS, len(USERS_11), "email")
    result = error(run, files, "header.duplicate_column", file=USERS, row=1, column="email")
    assert result.verdict == "rejected"


def test_an_empty_column_name_rejects_the_upload(run):
    files = insert_column(U11, USERS, len(USERS_11), "")  # the Excel trailing comma
    result = error(run, files, "header.empty_column_name", file=USERS, row=1)
    assert result.verdict == "rejected"


def legacy_users() -> dict:
    return insert_column(U12, USERS, USERS_12.index("userMasterIdentifier") + 1, "resourceSourcedIds", "res1")


def test_the_legacy_resource_column_of_1_2_users_is_ignored_with_a_warning(run):
    result = run(legacy_users())
    only_warning = found(result, "header.legacy_column")
    assert [(f.severity, f.file, f.row, f.column) for f in only_warning] == [
        (Severity.WARNING, USERS, 1, "resourceSourcedIds")
    ]
    assert result.verdict == "accepted"
    users = result.roster.frames["users"]
    assert "resourceSourcedIds" not in users.columns
    assert users["userMasterIdentifier"].to_list() == ["M-1", "M-2", "M-3", "M-4"]


def test_the_legacy_resource_column_is_an_error_in_strict_mode_for_1_2_1(run):
    result = run(legacy_users(), strict=True, version="1.2.1")
    assert [f.severity for f in found(result, "header.legacy_column")] == [Severity.ERROR]
    assert "ignored" not in found(result, "header.legacy_column")[0].message  # an error: nothing is read
    assert result.verdict == "rejected"


def test_a_header_that_matches_too_little_is_unusable_and_its_rows_are_not_checked(run):
    garbled = "id,label,kind,parent\nd1,District,district,\ns1,School,school,d1\n"
    files = {**alone("1.1", "orgs.csv"), "orgs.csv": garbled}
    result = error(run, files, "header.unusable", file="orgs.csv", row=1)
    assert result.verdict == "rejected"
    assert result.findings.counts["header.missing_column"] == 7
    assert not [f for f in result.findings.items if f.file == "orgs.csv" and f.code.startswith("row.")]


def test_a_semicolon_separated_file_is_named_as_such(run):
    text = V11["orgs.csv"].replace(",", ";")
    result = run(dict(V11, **{"orgs.csv": text}))
    finding = only(result, "header.unusable", file="orgs.csv")
    assert "semicolon-separated" in finding.message
    assert result.verdict == "rejected"
