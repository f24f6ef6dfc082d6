"""The text layer: encoding and CSV syntax (csv.* codes and row.width_mismatch), spec section 3.

demographics.csv is the file broken here, alone in a delta package (`DEMO_ALONE`): the text layer looks at one
file at a time. Whole-package checks (line ends, byte order marks) use the bulk package.
"""

from __future__ import annotations

import csv

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.oneroster.findings import Severity, clip
from daemon.oneroster.text import split_cells
from daemon.oneroster.zipread import ZipLimits

from .conftest import STAMP, V11, alone, deviation, error, frame_ids, only, replace, set_cell, without

DEMO = "demographics.csv"
DEMO_ALONE = alone("1.1", DEMO)
HEADER = V11[DEMO].split("\n", 1)[0] + "\n"


def kept_rows(result) -> list[int]:
    assert result.roster is not None, result.findings.items
    return result.roster.frames["demographics"]["_row"].to_list()


# --- row-level text problems: the row is dropped, the rest of the file is read -----------------------------


@pytest.mark.parametrize(
    ("code", "old", "new"),
    [
        ("csv.invalid_utf8", b"Fresno", b"Fr\xe9sno"),  # Latin-1 e-acute
        ("csv.invalid_utf8", b"Fresno", b"Fr\xc3sno"),  # a UTF-8 sequence cut short
        ("csv.bare_carriage_return", "Fresno", "Fres\rno"),
        ("csv.unescaped_quote", "Fresno", 'Fres"no'),  # a lone quote in an unquoted field
        ("csv.unescaped_quote", "Fresno", 'Fresno "CA"'),  # quotes inside an unquoted field
        ("csv.unescaped_quote", "Fresno", '"Fresno"CA'),  # text after the closing quote
        ("row.width_mismatch", "Fresno,\n", "Fresno,,\n"),  # a cell too many
        ("row.width_mismatch", "Fresno", "Fresno, CA"),  # an unquoted comma
        ("row.width_mismatch", ",US,CA,Fresno,\n", ",US,CA,Fresno\n"),  # a cell too few
    ],
)
def test_a_broken_line_is_an_error_that_drops_its_row(run, code, old, new):
    result = run(replace(DEMO_ALONE, DEMO, old, new), max_dropped_share=1.0)
    only(result, code, severity=Severity.ERROR, file=DEMO, row=2, column=None)
    assert result.verdict == "accepted"
    assert frame_ids(result, "demographics") == ["u3", "u4"]
    assert kept_rows(result) == [3, 4]
    assert result.files[DEMO].dropped == 1


def test_the_finding_shows_the_broken_line(run):
    result = run(replace(DEMO_ALONE, DEMO, "Fresno", 'Fres"no'))
    line = f'u2,active,{STAMP},2010-05-01,female,false,false,false,false,true,false,true,US,CA,Fres"no,'
    assert only(result, "csv.unescaped_quote").value == clip(line)


def test_a_line_break_in_a_quoted_field_is_reported_on_the_row_it_starts(run):
    files = set_cell(DEMO_ALONE, DEMO, 2, "cityOfBirth", "Fres\nno")  # the csv module quotes it: "Fres\nno"
    files = set_cell(files, DEMO, 4, "sex", "Female")  # u4, now on line 5: a later finding keeps its line number
    for result in (run(files), run(files, strict=True)):
        only(result, "csv.line_break_in_quoted_field", severity=Severity.ERROR, file=DEMO, row=2)
        only(result, "row.invalid_enum", file=DEMO, row=5, column="sex", value="Female")
    relaxed = run(files, max_dropped_share=1.0)
    assert frame_ids(relaxed, "demographics") == ["u3", "u4"]
    assert kept_rows(relaxed) == [4, 5]
    assert relaxed.roster.frames["demographics"]["sex"].to_list() == ["male", "female"]


def test_an_unclosed_quote_runs_to_the_end_of_the_file(run):
    result = run(replace(DEMO_ALONE, DEMO, ",Fresno,", ',"Fresno,'))
    only(result, "csv.line_break_in_quoted_field", severity=Severity.ERROR, file=DEMO, row=2)
    assert result.files[DEMO].dropped == 3
    assert result.verdict == "rejected"


def test_a_quoted_field_with_commas_and_doubled_quotes_is_fine(run):
    files = set_cell(DEMO_ALONE, DEMO, 2, "cityOfBirth", 'Fresno, "The Raisin Capital"')
    assert '"Fresno, ""The Raisin Capital"""' in files[DEMO]
    result = run(files, strict=True)
    assert result.findings.items == []
    assert result.roster.frames["demographics"]["cityOfBirth"][0] == 'Fresno, "The Raisin Capital"'


def test_a_quoted_empty_field_is_blank(run):
    """Exports that quote every field write a blank cell as "": the same as an empty one, in strict mode too."""
    files = replace(DEMO_ALONE, DEMO, ",US,CA,Fresno,", ',"US","CA","Fresno",""')
    files = replace(files, DEMO, "u3,active", 'u3,"active"')
    result = run(replace(files, DEMO, "2010-09-12,male,,,", '2010-09-12,"male","","",'), strict=True)
    assert result.findings.items == []
    frame = result.roster.frames["demographics"]
    assert frame["publicSchoolResidenceStatus"].null_count() == 3
    assert frame.filter(pl.col("sourcedId") == "u3")["americanIndianOrAlaskaNative"].to_list() == [None]


# --- line endings and blank lines --------------------------------------------------------------------------


def test_crlf_line_ends_and_a_missing_final_newline_are_fine(run):
    files = {name: text.replace("\n", "\r\n") for name, text in V11.items()}
    files[DEMO] = files[DEMO].rstrip("\r\n")
    result = run(files, strict=True)
    assert result.verdict == "accepted", result.findings.items
    assert result.findings.items == []
    assert kept_rows(result) == [2, 3, 4]


def test_blank_lines_at_the_end_of_a_file_are_fine(run):
    result = run({**DEMO_ALONE, DEMO: DEMO_ALONE[DEMO] + "\n\n"}, strict=True)
    assert result.findings.items == []
    assert result.files[DEMO].rows == 3


def test_a_blank_line_between_rows_is_a_warning_in_lenient_mode_and_an_error_in_strict_mode(run):
    files = replace(DEMO_ALONE, DEMO, "\nu3,", "\n\nu3,")
    lenient, _ = deviation(run, files, "csv.blank_line", file=DEMO, row=3)
    assert frame_ids(lenient, "demographics") == ["u2", "u3", "u4"]
    assert kept_rows(lenient) == [2, 4, 5]
    assert lenient.files[DEMO].dropped == 0


# --- file-level text problems: the upload is rejected ------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "data"),
    [
        ("csv.empty_file", b""),
        ("csv.empty_file", b"\r\n\r\n"),
        ("csv.utf16", DEMO_ALONE[DEMO].encode("utf-16")),  # with a byte order mark
        ("csv.utf16", DEMO_ALONE[DEMO].encode("utf-16-le")),  # without one
        ("csv.utf16", DEMO_ALONE[DEMO].encode("utf-16-be")),
        ("csv.nul_byte", DEMO_ALONE[DEMO].replace("Fresno", "Fres\0no").encode()),
    ],
)
def test_an_unreadable_file_rejects_the_upload(run, code, data):
    result = error(run, {**DEMO_ALONE, DEMO: data}, code, file=DEMO, row=None)
    assert result.verdict == "rejected"
    assert DEMO not in result.files  # nothing of the file was read


@pytest.mark.parametrize(
    ("code", "old", "new"),
    [
        ("csv.invalid_utf8", b"birthDate", b"birthD\xe4te"),
        ("csv.bare_carriage_return", "birthDate", "birth\rDate"),
        ("csv.unescaped_quote", "birthDate", 'birth"Date'),
    ],
)
def test_a_broken_header_line_rejects_the_upload(run, code, old, new):
    result = error(run, replace(DEMO_ALONE, DEMO, old, new), code, file=DEMO, row=1)
    assert result.verdict == "rejected"


HUGE_CELL = "x" * 200_000  # over the csv module's 128 KiB field limit; a 1 KB upload once zipped


def test_a_header_cell_over_128_kib_is_a_header_problem_not_a_crash(run):
    files = replace(DEMO_ALONE, DEMO, "cityOfBirth", HUGE_CELL)
    result = error(run, files, "header.missing_column", file=DEMO, row=1, column="cityOfBirth")
    assert ("header.unknown_column", DEMO, 1) in [(f.code, f.file, f.row) for f in result.findings.items]
    assert result.verdict == "rejected"


def test_a_file_of_one_huge_line_without_a_line_break_is_read_as_its_header(run):
    result = error(run, {**DEMO_ALONE, DEMO: HUGE_CELL}, "header.unusable", file=DEMO, row=1)
    assert result.verdict == "rejected"


def test_a_huge_first_line_in_a_package_without_a_manifest(run):
    files = {**without(V11, DEMO), DEMO: "birthdate," + HUGE_CELL + "\n"}  # a 1.0 header, for the 1.0 check
    result = run(files, manifest=False)
    assert ("package.oneroster_1_0", DEMO, 1) in [(f.code, f.file, f.row) for f in result.findings.items]
    assert result.verdict == "rejected"


LONG = "y" * (1 << 20)  # one row of 1 MiB and more: over the limit of a line
ANY_RATIO = ZipLimits(max_ratio=1e9)  # so much of one letter compresses past the zip bomb limit


def test_a_row_longer_than_1_mib_rejects_its_file_with_the_row(run):
    result = run(replace(DEMO_ALONE, DEMO, "Fresno", LONG), limits=ANY_RATIO)
    only(result, "csv.line_too_long", severity=Severity.ERROR, file=DEMO, row=2, column=None)
    assert result.verdict == "rejected" and DEMO not in result.files


def test_a_header_longer_than_1_mib_is_row_1_and_a_row_of_exactly_1_mib_passes(run):
    header = HEADER.rstrip("\n") + ",metadata.x" + "x" * (1 << 20)
    result = run({**DEMO_ALONE, DEMO: header + "\n"}, limits=ANY_RATIO)
    only(result, "csv.line_too_long", severity=Severity.ERROR, file=DEMO, row=1)
    first_row = DEMO_ALONE[DEMO].split("\n")[1]
    exactly = first_row.replace("Fresno", "F" * ((1 << 20) - len(first_row) + len("Fresno")))
    assert len(exactly) == 1 << 20
    result = run(replace(DEMO_ALONE, DEMO, first_row, exactly), limits=ANY_RATIO)
    assert "csv.line_too_long" not in result.findings.counts and result.verdict == "accepted"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet='ab,"\u00e9', max_size=16))
def test_header_cells_are_split_as_the_csv_module_splits_them(line):
    try:
        expected = next(csv.reader([line]), [])
    except csv.Error:  # an unclosed quote at the end: the csv module gives up, split_cells reads to the end
        return
    assert split_cells(line) == expected


def test_a_header_only_file_is_a_warning_in_lenient_mode_and_an_error_in_strict_mode(run):
    lenient, strict = deviation(run, {**DEMO_ALONE, DEMO: HEADER}, "csv.no_data_rows", file=DEMO, row=None)
    assert lenient.roster.frames["demographics"].height == 0
    assert strict.verdict == "rejected"


def test_trailing_blank_lines_are_not_rows_in_either_mode(run):
    files = dict(V11, **{"orgs.csv": V11["orgs.csv"] + "\n\r\n\n"})
    for strict in (False, True):
        result = run(files, strict=strict)
        assert result.files["orgs.csv"].rows == 2 and result.files["orgs.csv"].dropped == 0
        assert result.findings.items == []


def test_a_quote_never_closed_at_the_end_of_a_file(run):
    files = dict(V11, **{"orgs.csv": V11["orgs.csv"] + 'o9,,,"Unfinished,school,,d1\n'})
    result = run(files, max_dropped_share=1.0)
    finding = only(result, "csv.line_break_in_quoted_field", file="orgs.csv", row=4)
    assert "never closed" in finding.message
