"""Values of the resources and gradebook files (spec sections 5.8, 6.4, 7 and 8).

rosterd does not ingest these files, but a district that sends them should learn when they are broken, so
their values are checked as the 1.2 tables give them: dates, date-times, decimal numbers, the score status and
resource-role vocabularies, true/false flags, score scale values {lhs:rhs}, CASE ids urn:uuid:<uuid>, a line
item's range (resultValueMin <= resultValueMax) and its category, which must exist.

Each test writes one value into the valid package (the rostering files of conftest plus every resources and
gradebook file of the version) and names what the validator must say about it.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime

import polars as pl
import pytest

from daemon.oneroster.export import package_bytes
from daemon.oneroster.findings import Severity

from .conftest import V11, V12, deviation, error, found, only, set_cell, validate

UUID = "urn:uuid:5d2c3f7e-9a1b-4c8d-8e2f-1a2b3c4d5e6f"

RESOURCES = {
    "resources.csv": """\
sourcedId,status,dateLastModified,vendorResourceId,title,roles,importance,vendorId,applicationId
res1,,,V-1,Algebra e-book,"student,teacher",primary,acme,app-1
""",
    "classResources.csv": """\
sourcedId,status,dateLastModified,title,classSourcedId,resourceSourcedId
cr1,,,Algebra e-book for P1,k1,res1
""",
    "courseResources.csv": """\
sourcedId,status,dateLastModified,title,courseSourcedId,resourceSourcedId
cor1,,,Algebra e-book,c1,res1
""",
}

GRADEBOOK_11 = {
    "categories.csv": """\
sourcedId,status,dateLastModified,title
cat1,,,Homework
cat2,,,Tests
""",
    "lineItems.csv": """\
sourcedId,status,dateLastModified,title,description,assignDate,dueDate,classSourcedId,categorySourcedId,\
gradingPeriodSourcedId,resultValueMin,resultValueMax
li1,,,Quiz 1,Fractions,2025-09-01,2025-09-08,k1,cat1,t1,0,10
li2,,,Midterm,,2025-10-01,2025-10-15,k1,cat2,t1,0,100.5
""",
    "results.csv": """\
sourcedId,status,dateLastModified,lineItemSourcedId,studentSourcedId,scoreStatus,score,scoreDate,comment
rs1,,,li1,u2,fully graded,9,2025-09-09,
rs2,,,li2,u3,submitted,88.5,2025-10-16,"Late, but complete"
""",
}

GRADEBOOK_12 = {
    "categories.csv": """\
sourcedId,status,dateLastModified,title,weight
cat1,,,Homework,0.3
cat2,,,Tests,0.7
""",
    "lineItems.csv": """\
sourcedId,status,dateLastModified,title,description,assignDate,dueDate,classSourcedId,categorySourcedId,\
academicSessionSourcedId,resultValueMin,resultValueMax,schoolSourcedId
li1,,,Quiz 1,Fractions,2025-09-01,2025-09-08,k1,cat1,t1,0,10,s1
li2,,,Midterm,,2025-10-01T08:00:00.000Z,2025-10-15T15:30:00.000Z,k1,cat2,t1,0,100.5,s1
""",
    "results.csv": """\
sourcedId,status,dateLastModified,lineItemSourcedId,studentSourcedId,scoreStatus,score,scoreDate,comment,\
textScore,classSourcedId,inProgress,incomplete,late,missing
rs1,,,li1,u2,fully graded,9,2025-09-09,,,k1,false,false,false,false
rs2,,,li2,u3,submitted,,2025-10-16,"Late, but complete",B+,k1,,,true,
""",
    "scoreScales.csv": """\
sourcedId,status,dateLastModified,title,type,orgSourcedId,courseSourcedId,classSourcedId,scoreScaleValue
ss1,,,Letter grades,letter,s1,c1,k1,"{A:90},{B:80},{C:70}"
""",
    "lineItemLearningObjectiveIds.csv": f"""\
sourcedId,status,dateLastModified,lineItemSourcedId,source,learningObjectiveId
lo1,,,li1,case,{UUID}
lo2,,,li2,unknown,MATH.FRACTIONS.1
""",
    "lineItemScoreScales.csv": """\
sourcedId,status,dateLastModified,title,lineItemSourcedId,scoreScaleSourcedId
lss1,,,Quiz scale,li1,ss1
""",
    "resultLearningObjectiveIds.csv": f"""\
sourcedId,status,dateLastModified,resultSourcedId,source,learningObjectiveId,score,textScore
rlo1,,,rs1,case,{UUID},8.5,B
""",
    "resultScoreScales.csv": """\
sourcedId,status,dateLastModified,title,resultSourcedId,scoreScaleSourcedId
rss1,,,,rs1,ss1
""",
    "userResources.csv": """\
sourcedId,status,dateLastModified,userSourcedId,orgSourcedId,classSourcedId,resourceSourcedId
ur1,,,u2,s1,k1,res1
""",
}

PACKAGES = {"1.1": {**V11, **RESOURCES, **GRADEBOOK_11}, "1.2": {**V12, **RESOURCES, **GRADEBOOK_12}}
LINE_ITEMS, RESULTS, OBJECTIVES = "lineItems.csv", "results.csv", "lineItemLearningObjectiveIds.csv"


def edited(version: str, file: str, row: int, column: str, value: str) -> dict:
    return set_cell(PACKAGES[version], file, row, column, value)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_the_valid_files_give_no_findings_even_in_strict_mode(run, version):
    result = run(PACKAGES[version], strict=True)
    assert result.findings.items == []
    assert result.verdict == "accepted"


def test_the_values_are_typed(run):
    frames = run(PACKAGES["1.2"]).roster.frames
    assert frames["categories"]["weight"].to_list() == [0.3, 0.7]
    assert frames["lineItems"]["assignDate"].to_list() == [
        datetime(2025, 9, 1, tzinfo=UTC),  # a date is read as midnight UTC
        datetime(2025, 10, 1, 8, tzinfo=UTC),
    ]
    assert frames["lineItems"]["resultValueMax"].to_list() == [10.0, 100.5]
    assert frames["results"]["score"].to_list() == [9.0, None]
    assert frames["results"]["late"].to_list() == [False, True]
    assert frames["results"].schema["scoreDate"] == pl.Date
    assert frames["resources"]["roles"].to_list() == [["student", "teacher"]]
    assert frames["scoreScales"]["scoreScaleValue"].to_list() == [["{A:90}", "{B:80}", "{C:70}"]]


@pytest.mark.parametrize(
    ("version", "file", "row", "column", "value", "code"),
    [
        ("1.2", "categories.csv", 2, "weight", "heavy", "row.invalid_float"),
        ("1.2", LINE_ITEMS, 2, "resultValueMin", "0,5", "row.invalid_float"),  # a decimal comma
        ("1.1", RESULTS, 2, "score", "9/10", "row.invalid_float"),
        ("1.2", "resultLearningObjectiveIds.csv", 2, "score", "high", "row.invalid_float"),
        ("1.2", LINE_ITEMS, 2, "assignDate", "9/1/2025", "row.invalid_datetime"),
        ("1.2", LINE_ITEMS, 2, "dueDate", "2025-09-08T10:00:00Z", "row.invalid_datetime"),  # no milliseconds
        ("1.1", LINE_ITEMS, 2, "dueDate", "2025-02-30", "row.invalid_datetime"),  # no such day
        ("1.2", RESULTS, 2, "scoreDate", "2025-09-09T10:00:00.000Z", "row.invalid_date"),  # a date, not a time
        ("1.1", RESULTS, 2, "scoreStatus", "graded", "row.invalid_enum"),
        ("1.2", RESULTS, 3, "late", "yes", "row.invalid_boolean"),
        ("1.2", "scoreScales.csv", 2, "scoreScaleValue", "A:90", "row.invalid_score_scale_value"),
        ("1.2", "scoreScales.csv", 2, "scoreScaleValue", "{A:90},{B}", "row.invalid_score_scale_value"),
        ("1.2", OBJECTIVES, 2, "learningObjectiveId", "CCSS.MATH.5.NF.1", "row.invalid_case_id"),
        ("1.2", OBJECTIVES, 2, "learningObjectiveId", "urn:uuid:5d2c3f7e", "row.invalid_case_id"),
        ("1.2", "resultLearningObjectiveIds.csv", 2, "learningObjectiveId", "5d2c3f7e-9a1b-4c8d-8e2f-1a2b3c4d5e6f",
         "row.invalid_case_id"),  # a bare UUID, not a URN
        ("1.2", OBJECTIVES, 3, "source", "standards", "row.invalid_enum"),
        ("1.2", "resources.csv", 2, "roles", "student,wizard", "row.invalid_enum"),
        ("1.1", "resources.csv", 2, "roles", "ext:coach", "row.invalid_enum"),  # 1.1 has no ext: tokens
        ("1.2", "resources.csv", 2, "importance", "high", "row.invalid_enum"),
        ("1.2", LINE_ITEMS, 2, "categorySourcedId", "", "row.missing_required_value"),
    ],
)  # fmt: skip
def test_a_broken_value_is_an_error_that_drops_its_row(run, version, file, row, column, value, code):
    result = error(run, edited(version, file, row, column, value), code, file=file, row=row, column=column,
                   value=value or None)  # fmt: skip
    assert result.files[file].dropped >= 1


@pytest.mark.parametrize(
    ("file", "row", "column", "value", "code"),
    [
        (RESULTS, 2, "scoreStatus", "Fully Graded", "row.invalid_enum"),
        (RESULTS, 2, "inProgress", "FALSE", "row.invalid_boolean"),
        ("resources.csv", 2, "roles", "Student,teacher", "row.invalid_enum"),
        (OBJECTIVES, 2, "source", "CASE", "row.invalid_enum"),
    ],
)
def test_a_letter_case_variant_is_a_deviation(run, file, row, column, value, code):
    deviation(run, edited("1.2", file, row, column, value), code, file=file, row=row, column=column, value=value)


def test_a_role_list_in_the_wrong_case_is_read_as_the_defined_tokens(run):
    lenient, _ = deviation(run, edited("1.2", "resources.csv", 2, "roles", "Student,TEACHER"), "row.invalid_enum",
                           file="resources.csv", row=2)  # fmt: skip
    assert lenient.roster.frames["resources"]["roles"].to_list() == [["student", "teacher"]]


@pytest.mark.parametrize(
    ("file", "row", "column", "value"),
    [
        ("resources.csv", 2, "roles", "ext:coach"),  # 1.2 vocabularies take ext: tokens
        (RESULTS, 2, "scoreStatus", "ext:excused"),
        (OBJECTIVES, 2, "learningObjectiveId", UUID.upper().replace("URN:UUID", "urn:uuid")),  # hex in either case
        (OBJECTIVES, 3, "learningObjectiveId", "any text at all"),  # source unknown: any id
        (RESULTS, 2, "score", "-1.25e2"),
        (LINE_ITEMS, 2, "resultValueMax", "0"),  # min = max
        (LINE_ITEMS, 2, "dueDate", "2025-09-08T23:59:59.999Z"),
    ],
)
def test_an_unusual_but_valid_value_passes_in_strict_mode(run, file, row, column, value):
    result = run(edited("1.2", file, row, column, value), strict=True)
    assert result.findings.items == []


def test_a_line_item_whose_minimum_is_above_its_maximum_is_an_error(run):
    files = set_cell(edited("1.2", LINE_ITEMS, 2, "resultValueMin", "10"), LINE_ITEMS, 2, "resultValueMax", "5")
    error(run, files, "row.invalid_score_range", file=LINE_ITEMS, row=2, column="resultValueMin", value="10.0 > 5.0")


def test_the_case_rule_follows_a_source_read_in_lenient_mode(run):
    result = run(edited("1.2", OBJECTIVES, 3, "source", "Case"))  # lo2's id is not a CASE id
    only(result, "row.invalid_enum", severity=Severity.WARNING, file=OBJECTIVES, row=3, column="source")
    only(result, "row.invalid_case_id", severity=Severity.ERROR, file=OBJECTIVES, row=3, value="MATH.FRACTIONS.1")


# --- references ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_a_line_items_category_is_a_required_reference(run, version):
    result = run(edited(version, LINE_ITEMS, 2, "categorySourcedId", "cat9"), max_dropped_share=1.0)
    only(result, "reference.missing_target_record", severity=Severity.ERROR, file=LINE_ITEMS, row=2,
         column="categorySourcedId", value="cat9")  # fmt: skip
    assert [f.row for f in found(result, "reference.target_dropped") if f.file == RESULTS] == [2]  # rs1 is li1's


def test_a_line_items_class_is_still_an_optional_reference(run):
    # The other references of these files are optional ones (rosterd does not ingest them): cleared in lenient mode.
    files = edited("1.2", LINE_ITEMS, 2, "classSourcedId", "k9")
    lenient, _ = deviation(run, files, "reference.missing_target_record", file=LINE_ITEMS, row=2,
                           column="classSourcedId", value="k9")  # fmt: skip
    assert lenient.roster.frames["lineItems"]["classSourcedId"].to_list() == [None, "k1"]


def test_a_result_of_a_dropped_line_item_keeps_its_row_in_lenient_mode(run):
    result = run(edited("1.2", LINE_ITEMS, 2, "resultValueMin", "low"), max_dropped_share=1.0)
    only(result, "row.invalid_float", file=LINE_ITEMS, row=2)
    cleared = [f for f in found(result, "reference.target_dropped") if f.file == RESULTS]
    assert [(f.severity, f.row, f.value) for f in cleared] == [(Severity.WARNING, 2, "li1")]
    assert cleared[0].message.endswith("the reference was cleared and this row kept")
    assert "rs1" in result.roster.frames["results"]["sourcedId"].to_list()


# --- written back out (export.py) ----------------------------------------------------------------------------


def written(data: bytes, file: str) -> pl.DataFrame:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return pl.read_csv(zf.read(file), infer_schema=False)


def test_the_typed_values_are_written_back_as_oneroster_text(run, tmp_path):
    data = package_bytes(run(PACKAGES["1.2"]).roster.frames, "1.2")
    (tmp_path / "back.zip").write_bytes(data)
    assert validate(tmp_path / "back.zip", strict=True).findings.items == []
    line_items = written(data, LINE_ITEMS)
    assert line_items["assignDate"].to_list() == ["2025-09-01T00:00:00.000Z", "2025-10-01T08:00:00.000Z"]
    assert line_items["resultValueMax"].to_list() == ["10.0", "100.5"]
    assert written(data, "categories.csv")["weight"].to_list() == ["0.3", "0.7"]
    assert written(data, "scoreScales.csv")["scoreScaleValue"].to_list() == ["{A:90},{B:80},{C:70}"]
    assert written(data, "resources.csv")["roles"].to_list() == ["student,teacher"]


def test_a_resource_role_that_1_1_lacks_is_left_out_of_the_list(run, tmp_path):
    frames = run(edited("1.2", "resources.csv", 2, "roles", "student,ext:coach"), strict=True).roster.frames
    data = package_bytes(frames, "1.1")
    (tmp_path / "as11.zip").write_bytes(data)
    assert validate(tmp_path / "as11.zip", strict=True).findings.items == []
    assert written(data, "resources.csv")["roles"].to_list() == ["student"]
