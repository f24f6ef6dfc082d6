"""References of the resources and gradebook files, and the 1.2 primary-org rule (digest section 8)."""

from __future__ import annotations

from daemon.oneroster.findings import Severity

from .conftest import V11, V12, codes, delta_package, found, frame_ids, only, set_cell

RESOURCES_11 = {
    "resources.csv": """\
sourcedId,status,dateLastModified,vendorResourceId,title,roles,importance,vendorId,applicationId
res1,,,V-1,Algebra e-book,student,primary,acme,
""",
    "classResources.csv": """\
sourcedId,status,dateLastModified,title,classSourcedId,resourceSourcedId
cr1,,,Algebra e-book for P1,k1,res1
""",
}
GRADEBOOK_12 = {
    "categories.csv": """\
sourcedId,status,dateLastModified,title,weight
cat1,,,Homework,0.3
""",
    "lineItems.csv": """\
sourcedId,status,dateLastModified,title,description,assignDate,dueDate,classSourcedId,categorySourcedId,\
academicSessionSourcedId,resultValueMin,resultValueMax,schoolSourcedId
li1,,,Quiz 1,,2025-09-01,2025-09-08,k1,cat1,t1,0,10,s1
""",
    "results.csv": """\
sourcedId,status,dateLastModified,lineItemSourcedId,studentSourcedId,scoreStatus,score,scoreDate,comment,\
textScore,classSourcedId,inProgress,incomplete,late,missing
rs1,,,li1,u2,fully graded,9,2025-09-09,,,k1,false,false,false,false
""",
}


def test_valid_resources_and_gradebook_files_give_no_findings(run) -> None:
    assert codes(run({**V11, **RESOURCES_11})) == set()
    result = run({**V12, **GRADEBOOK_12})
    assert codes(result) == set()
    assert frame_ids(result, "results") == ["rs1"]


def test_a_class_resource_pointing_at_a_missing_resource(run) -> None:
    files = set_cell({**V11, **RESOURCES_11}, "classResources.csv", 2, "resourceSourcedId", "res9")
    result = run(files)
    only(result, "reference.missing_target_record", severity=Severity.WARNING, file="classResources.csv", row=2,
         column="resourceSourcedId", value="res9")  # fmt: skip
    assert result.verdict == "accepted"
    strict = run(files, strict=True)
    only(strict, "reference.missing_target_record", severity=Severity.ERROR, file="classResources.csv", row=2)


def test_a_line_item_must_not_belong_to_a_whole_school_year(run) -> None:
    files = set_cell({**V12, **GRADEBOOK_12}, "lineItems.csv", 2, "academicSessionSourcedId", "y1")
    only(run(files), "reference.target_type_mismatch", file="lineItems.csv", row=2,
         column="academicSessionSourcedId", value="y1")  # fmt: skip


def test_a_result_of_a_line_item_dropped_in_strict_mode_is_dropped_too(run) -> None:
    files = set_cell({**V12, **GRADEBOOK_12}, "lineItems.csv", 2, "classSourcedId", "k9")
    result = run(files, strict=True, max_dropped_share=1.0)
    only(result, "reference.missing_target_record", file="lineItems.csv", row=2, column="classSourcedId")
    only(result, "reference.target_dropped", file="results.csv", row=2, column="lineItemSourcedId", value="li1")


def test_a_primary_org_without_a_role_there_is_a_warning(run) -> None:
    files = set_cell(V12, "users.csv", 5, "primaryOrgSourcedId", "d1")  # u4 has a role at s1 only
    result = run(files)
    only(result, "reference.primary_org_without_role", severity=Severity.WARNING, file="users.csv", row=5,
         column="primaryOrgSourcedId", value="d1")  # fmt: skip
    assert result.verdict == "accepted"
    assert "reference.primary_org_without_role" not in codes(run(V12))


def test_a_user_dropped_for_its_own_error_is_not_told_its_primary_org_lacks_a_role(run):
    # u4 (users row 5) has a bad enabledUser; its role r5 (roles row 6) falls with it by the cascade.
    result = run(set_cell(V12, "users.csv", 5, "enabledUser", "maybe"), max_dropped_share=1.0)
    only(result, "row.invalid_boolean", file="users.csv", row=5, column="enabledUser")
    assert ("roles.csv", 6, "u4") in {(f.file, f.row, f.value) for f in found(result, "reference.target_dropped")}
    assert "reference.primary_org_without_role" not in codes(result)


def test_a_role_dropped_for_its_own_error_still_counts_for_the_primary_org(run):
    # r5 (u4's only role, at s1) has an unknown role; u4 stays, and the role's own finding says what is wrong.
    result = run(set_cell(V12, "roles.csv", 6, "role", "wizard"), max_dropped_share=1.0)
    only(result, "row.invalid_enum", file="roles.csv", row=6, column="role", value="wizard")
    assert "reference.primary_org_without_role" not in codes(result)
    assert "u4" in frame_ids(result, "users")


# --- the form of a reference is checked in the reference stage -----------------------------------------------


def test_a_malformed_reference_is_reported_with_its_missing_target(run) -> None:
    result = run(set_cell(V11, "enrollments.csv", 3, "userSourcedId", "u 2"), max_dropped_share=1.0)
    only(result, "row.invalid_sourced_id", severity=Severity.ERROR, file="enrollments.csv", row=3,
         column="userSourcedId", value="u 2")  # fmt: skip
    only(result, "reference.missing_target_record", file="enrollments.csv", row=3, value="u 2")


def test_a_nonconformant_but_usable_reference_to_a_matching_row_is_accepted_in_lenient_mode(run) -> None:
    files = set_cell(set_cell(V11, "users.csv", 3, "sourcedId", "u#2"), "enrollments.csv", 3, "userSourcedId", "u#2")
    files = set_cell(files, "demographics.csv", 2, "sourcedId", "u#2")
    result = run(files)
    # Reported where the id is a row's own sourcedId (users, demographics), not again on each reference to it.
    reported = {(f.file, f.row, f.severity) for f in result.findings.items if f.code == "row.invalid_sourced_id"}
    assert reported == {("users.csv", 3, Severity.WARNING), ("demographics.csv", 2, Severity.WARNING)}
    assert result.verdict == "accepted"
    assert "u#2" in frame_ids(result, "users")


def test_references_into_a_delta_file_are_still_checked_for_form(run) -> None:
    files = delta_package(set_cell(V11, "enrollments.csv", 3, "classSourcedId", "k/1 x"), "enrollments.csv")
    result = run(files, max_dropped_share=1.0)
    only(result, "row.invalid_sourced_id", severity=Severity.ERROR, file="enrollments.csv", row=3,
         column="classSourcedId", value="k/1 x")  # fmt: skip
    assert "reference.missing_target_record" not in codes(result)  # resolved later against the snapshot


def test_a_malformed_item_of_a_reference_list(run) -> None:
    result = run(set_cell(V11, "classes.csv", 2, "termSourcedIds", "t1,t 2"), max_dropped_share=1.0)
    only(result, "row.invalid_sourced_id", file="classes.csv", row=2, column="termSourcedIds", value="t1,t 2")
