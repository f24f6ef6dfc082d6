"""Scoped views (daemon/targets/scope.py) of generated districts and of the sample packages, in 1.1 and 1.2.

The generated district is given what the generator leaves out, so every rule has something to act on: a state
above the district, a second district whose school owns a course a first-district class uses, a district
administrator, parents (agents of students), a teacher at two schools, a student without e-mail and one with
an upper-case domain, classes without subjects of their own (period 1) and one whose own subject differs from
its course's, a metadata column, 1.2 user profiles, and gradebook files (categories, lineItems). The package
passes rosterd's strict validator and becomes typed frames the way an upload does.

Who a vendor gets (the scope rule's points one by one) is checked on a small school written by hand, whose
expected users, enrollments and counts are written out in each test.

Every view is checked for reference integrity twice: by `assert_integrity` (joins over the schema's
reference columns) and by exporting it as a bulk package that the strict validator must accept.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.snapshots.merge import merge_package
from daemon.oneroster import schema
from daemon.oneroster.findings import Mode
from daemon.generator.generate import DistrictSpec, generate, write_zip
from daemon.oneroster.validate import ValidateOptions, validate_package
from daemon.snapshots.storage import scan_frames, write_frames
from daemon.targets.scope import COUNTS, LICENCE_COLUMN, ROSTERING, scoped_view
from daemon.targets.settings import Scope

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SPEC = {"schools": 3, "students_per_school": 15, "teachers_per_school": 8, "enrollments_per_student": 4}
TODAY = date(2026, 10, 1)  # inside both semesters' school year, every class running or about to
STRICT = ValidateOptions(mode=Mode.STRICT)
STUDENT_DOMAIN, STAFF_DOMAIN, FAMILY_DOMAIN = "students.sample-usd.example", "sample-usd.example", "family.example"
CROSS_CLASS = "cls-0001-t002-p3"  # an English class of school 1 that uses the second district's art course
GRADING = "gp-2027-1"  # its only term: a grading period of the fall semester (whose course has no school year)
OWN_SUBJECT_CLASS = "cls-0001-t001-p2"  # a math class whose own subject is computer science
NO_EMAIL, UPPER_DOMAIN = "stu-0002-0003", "stu-0003-0002"
GUEST = "tch-0002-001"  # a school-2 teacher who co-teaches a school-1 class (enr-guest)
ODD = "enr-odd"  # an enrollment in a school-1 class that names school 2 as its school


# --- the district ---------------------------------------------------------------------------------------------


def _rows(entity: str, version: str, **columns: list[str]) -> pl.DataFrame:
    """String rows for `entity` with the given columns, every other column blank."""
    n = len(next(iter(columns.values())))
    names = schema.VERSIONS[version].tables[entity].names
    return pl.DataFrame({name: columns.get(name, [""] * n) for name in names})


def _edit(frame: pl.DataFrame, where: pl.Expr, **values: str | pl.Expr) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(where).then(v if isinstance(v, pl.Expr) else pl.lit(v)).otherwise(pl.col(k)).alias(k)
        for k, v in values.items()
    )


def augmented_tables(version: str) -> dict[str, pl.DataFrame]:
    t = generate(DistrictSpec(**SPEC, version=version))
    v11 = version == "1.1"
    sid = pl.col("sourcedId")
    t["orgs"] = pl.concat([
        _edit(t["orgs"], sid == "dst-0001", parentSourcedId="st-0001"),
        _rows("orgs", version, sourcedId=["st-0001", "dst-0002", "sch-0900"], name=["State", "Other USD", "Far High"],
              type=["state", "district", "school"], identifier=["CA", "0299999", "02999990139000"],
              parentSourcedId=["", "st-0001", "dst-0002"]),
    ])  # fmt: skip
    t["courses"] = pl.concat([
        t["courses"],
        _rows("courses", version, sourcedId=["crs-0900-art"], title=["Art"],
              courseCode=["ART9"], orgSourcedId=["sch-0900"], subjects=["Fine and Performing Arts"],
              subjectCodes=["05154"]),
    ])  # fmt: skip
    t["classes"] = _edit(
        _edit(t["classes"], pl.col("periods") == "1", subjects="", subjectCodes=""),
        sid == OWN_SUBJECT_CLASS, subjects="Computer and Information Sciences", subjectCodes="10019",
    )
    t["classes"] = _edit(t["classes"], sid == CROSS_CLASS, courseSourcedId="crs-0900-art", termSourcedIds=GRADING)
    t["academicSessions"] = pl.concat([
        t["academicSessions"],
        _rows("academicSessions", version, sourcedId=[GRADING], title=["Fall 2026 Q1-Q2"], type=["gradingPeriod"],
              startDate=["2026-08-15"], endDate=["2026-12-19"], parentSourcedId=["sem-2027-1"], schoolYear=["2027"]),
    ])  # fmt: skip
    t["classes"] = t["classes"].with_columns(pl.format("section {}", pl.col("periods")).alias("metadata.section"))

    students = t["users"].filter(sid.str.contains(r"^stu-\d+-000[12]$"))
    school = students.select(pl.format("sch-{}", sid.str.slice(4, 4))).to_series()
    parent_ids = students["sourcedId"].str.replace("^stu-", "par-")
    people = {"sourcedId": [*parent_ids, "adm-0001"], "enabledUser": ["true"] * (len(parent_ids) + 1),
              "username": [*parent_ids, "admin"], "givenName": ["Pat"] * (len(parent_ids) + 1),
              "familyName": ["Parent"] * len(parent_ids) + ["Admin"],
              "email": [f"{p}@{FAMILY_DOMAIN}" for p in parent_ids] + [f"admin@{STAFF_DOMAIN}"]}  # fmt: skip
    orgs_of = [*school, "dst-0001"]
    if v11:
        people |= {"orgSourcedIds": orgs_of, "role": ["parent"] * len(parent_ids) + ["administrator"]}
    else:
        people |= {"primaryOrgSourcedId": orgs_of}
    users = pl.concat([t["users"], _rows("users", version, **people)])
    users = _edit(users, sid.is_in(students["sourcedId"].implode()), agentSourcedIds=sid.str.replace("^stu-", "par-"))
    users = _edit(users, sid == NO_EMAIL, email="")
    users = _edit(users, sid == UPPER_DOMAIN, email=pl.col("email").str.to_uppercase())
    if v11:
        users = _edit(users, sid == "tch-0001-001", orgSourcedIds="sch-0001,sch-0002")
    t["users"] = users
    if not v11:
        teachers = users.filter(sid.str.starts_with("tch-0001-"))["sourcedId"]
        t["userProfiles"] = _rows("userProfiles", version, sourcedId=teachers.str.replace("^tch-", "prf-"),
                                  userSourcedId=teachers, profileType=["lms"] * len(teachers),
                                  vendorId=["acme"] * len(teachers), credentialType=["password"] * len(teachers),
                                  username=teachers)  # fmt: skip
        roles = _edit(t["roles"], pl.col("userSourcedId").str.starts_with("tch-0001-"),
                      userProfileSourcedId=pl.col("userSourcedId").str.replace("^tch-", "prf-"))  # fmt: skip
        # tch-0001-001 also teaches at school 2; tch-0001-002 is also a parent
        extra = _rows("roles", version,
                      sourcedId=[*(f"rol-{p}" for p in people["sourcedId"]), "rol-tch-0001-001-b",
                                 "rol-tch-0001-002-b"],
                      userSourcedId=[*people["sourcedId"], "tch-0001-001", "tch-0001-002"],
                      roleType=["primary"] * len(orgs_of) + ["secondary"] * 2,
                      role=["parent"] * len(parent_ids) + ["districtAdministrator", "teacher", "parent"],
                      orgSourcedId=[*orgs_of, "sch-0002", "sch-0001"])  # fmt: skip
        t["roles"] = pl.concat([roles, extra])
    t["enrollments"] = pl.concat([
        t["enrollments"],
        _rows("enrollments", version, sourcedId=["enr-guest", ODD], classSourcedId=["cls-0001-t003-p1"] * 2,
              schoolSourcedId=["sch-0001", "sch-0002"], userSourcedId=[GUEST, "stu-0001-0001"],
              role=["teacher", "student"], primary=["false", "false"]),
    ])  # fmt: skip
    t["categories"] = _rows("categories", version, sourcedId=["cat-1"], title=["Homework"])
    t["lineItems"] = _rows("lineItems", version, sourcedId=["li-1", "li-2"], title=["Quiz 1", "Quiz 2"],
                           classSourcedId=["cls-0001-t001-p1", "cls-0002-t001-p1"], categorySourcedId=["cat-1"] * 2)
    return t


def typed_snapshot(tables: dict[str, pl.DataFrame], version: str, folder: Path) -> dict[str, pl.DataFrame]:
    """The frames an upload of `tables` would store, after the strict validator accepted it cleanly."""
    path = folder / f"district-{version}.zip"
    write_zip(tables, path, version)
    result = validate_package(path, STRICT)
    assert result.accepted and not result.findings.items, result.findings.items[:5]
    merged = merge_package(None, result.roster)
    return {e: f.collect() if isinstance(f, pl.LazyFrame) else f for e, f in merged.items()}


@pytest.fixture(scope="module", params=["1.1", "1.2"])
def district(request, tmp_path_factory) -> tuple[str, dict[str, pl.DataFrame]]:
    version = request.param
    return version, typed_snapshot(augmented_tables(version), version, tmp_path_factory.mktemp(f"scope-{version}"))


@pytest.fixture(scope="module", params=["valid-1.1-bulk.zip", "valid-1.2-bulk.zip"])
def sample(request) -> tuple[str, dict[str, pl.DataFrame]]:
    result = validate_package(SAMPLES / request.param, STRICT)
    assert result.accepted
    return result.roster.version, merge_package(None, result.roster)


# --- checks -------------------------------------------------------------------------------------------------


def ids(frame: pl.DataFrame, column: str = "sourcedId") -> set[str]:
    values = frame[column]
    return set((values.explode() if values.dtype == pl.List(pl.String) else values).drop_nulls().to_list())


def assert_integrity(view: dict[str, pl.DataFrame], version: str) -> None:
    """Every reference of the view resolves to a row of the view (with the right type where the schema says),
    list items included; required values are present; sourcedIds are unique and sorted."""
    tables = schema.VERSIONS[version].tables
    for entity, frame in view.items():
        table = tables[entity]
        assert frame["sourcedId"].is_unique().all() and frame["sourcedId"].is_sorted(), entity
        for col in table.columns:
            if col.required:
                assert frame[col.name].null_count() == 0, f"{entity}.{col.name} blank"
                if frame.schema[col.name] == pl.List(pl.String):
                    assert (frame[col.name].list.len() > 0).all(), f"{entity}.{col.name} empty"
            if col.ref is None:
                continue
            values = frame.select(pl.col(col.name).alias("ref"))
            if values.schema["ref"] == pl.List(pl.String):
                values = values.explode("ref")
            values = values.drop_nulls()
            target = view.get(col.ref.entity)
            assert target is not None or values.height == 0, f"{entity}.{col.name} -> missing {col.ref.entity}"
            if target is None:
                continue
            targets = target.select(ref="sourcedId", type=pl.col("type") if "type" in target.columns else pl.lit(""))
            dangling = values.join(targets, on="ref", how="anti")
            assert dangling.height == 0, f"{entity}.{col.name}: {dangling['ref'].head(3).to_list()}"
            if col.ref.target_types:
                wrong = values.join(targets, on="ref").filter(~pl.col("type").is_in(list(col.ref.target_types)))
                assert wrong.height == 0, f"{entity}.{col.name} points at a {wrong['type'][0]}"
    if "roles" in view and "userProfiles" in view:  # a role's profile belongs to the role's user
        owners = view["userProfiles"].select(userProfileSourcedId="sourcedId", owner="userSourcedId")
        mismatched = view["roles"].join(owners, on="userProfileSourcedId").filter(
            pl.col("owner") != pl.col("userSourcedId"))
        assert mismatched.height == 0


def assert_subset(view: dict[str, pl.DataFrame], frames: dict[str, pl.DataFrame]) -> None:
    """Same entities (the rostering ones) and columns; every row is an input row, apart from nulled optional
    references, trimmed lists and the licence column."""
    assert set(view) == {e for e in frames if e in ROSTERING}
    for entity, frame in view.items():
        source = frames[entity]
        extra = [c for c in frame.columns if c not in source.columns]
        assert frame.columns[: len(source.columns)] == source.columns and extra in ([], [LICENCE_COLUMN])
        assert frame.drop(extra).schema == source.schema
        assert ids(frame) <= ids(source)
        loose = {"parentSourcedId", "primaryOrgSourcedId", "userProfileSourcedId", "orgSourcedIds", "agentSourcedIds"}
        fixed = [c for c in source.columns if c not in loose and c != "sourcedId"]
        pairs = frame.join(source, on="sourcedId", suffix="~old")
        assert pairs.height == frame.height
        changed = pairs.filter(pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}~old")) for c in fixed))
        assert changed.height == 0, f"{entity}: {changed['sourcedId'].head(3).to_list()} changed"
        for column in loose & set(source.columns):
            matched = frame.select("sourcedId", new=column).join(source.select("sourcedId", old=column), on="sourcedId")
            if source.schema[column] == pl.List(pl.String):
                subset = pl.col("new").list.set_difference(pl.col("old")).list.len().fill_null(0) == 0
            else:
                subset = pl.col("new").is_null() | (pl.col("new") == pl.col("old"))
            assert matched.filter(~subset).height == 0, f"{entity}.{column} changed"


def assert_counts_partition(view: dict[str, pl.DataFrame], frames: dict[str, pl.DataFrame], counts: dict) -> None:
    """Each input class, enrollment and user is in the view or in exactly one count."""
    for entity in ("classes", "enrollments", "users"):
        left_out = sum(n for name, n in counts.items() if name.startswith(f"{entity}_"))
        assert view[entity].height + left_out == frames[entity].height, entity
    assert set(counts) == set(COUNTS) and all(n >= 0 for n in counts.values())


def export_package(view: dict[str, pl.DataFrame], version: str, path: Path) -> None:
    """The view as a bulk OneRoster zip: typed columns written back as CSV text; empty entities left out."""

    def text(name: str, dtype: pl.DataType) -> pl.Expr:
        col = pl.col(name)
        if dtype == pl.List(pl.String):
            return col.list.join(",")
        if dtype == pl.Boolean:
            return pl.when(col).then(pl.lit("true")).when(~col).then(pl.lit("false"))
        if dtype == pl.Date:
            return col.dt.strftime("%Y-%m-%d")
        return col.cast(pl.String)

    tables = {e: f.select(text(n, d).alias(n) for n, d in f.schema.items()) for e, f in view.items() if f.height}
    write_zip(tables, path, version)


def assert_strictly_valid(view: dict[str, pl.DataFrame], version: str, folder: Path) -> None:
    path = folder / "view.zip"
    export_package(view, version, path)
    result = validate_package(path, STRICT)
    errors = [f for f in result.findings.items if f.severity == "error"]
    assert result.accepted and not errors, errors[:5]


def view_of(frames, today: date = TODAY, **scope) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    view, counts = scoped_view(frames, Scope(**scope), today)
    assert_subset(view, frames)
    assert_integrity(view, version_of(frames))
    assert_counts_partition(view, frames, counts)
    return view, counts


def version_of(frames) -> str:
    return "1.1" if "orgSourcedIds" in frames["users"].columns else "1.2"


def of(frame: pl.DataFrame, expr: pl.Expr, column: str = "sourcedId") -> set[str]:
    return ids(frame.filter(expr), column)


# --- the empty scope ------------------------------------------------------------------------------------------


def test_the_district_has_every_case(district):
    version, frames = district
    assert {"categories", "lineItems"} <= set(frames)
    assert frames["classes"].filter(pl.col("subjects").is_null()).height > 0
    assert frames["users"].filter(pl.col("email").is_null())["sourcedId"].to_list() == [NO_EMAIL]
    assert "metadata.section" in frames["classes"].columns


def assert_identity(frames: dict[str, pl.DataFrame]) -> None:
    view, counts = scoped_view(frames, Scope(), TODAY)
    assert list(view) == [e for e in ROSTERING if e in frames]
    for entity, frame in view.items():
        assert frame.equals(frames[entity].sort("sourcedId")), entity
    assert set(counts.values()) == {0}


def test_the_empty_scope_is_the_roster_without_other_entities(district):
    version, frames = district
    assert_identity(frames)
    assert not {"categories", "lineItems"} & set(scoped_view(frames, Scope(), TODAY)[0])


def test_the_empty_scope_of_a_sample_is_the_sample(sample):
    assert_identity(sample[1])


def test_lazy_frames_give_the_same_view(district, tmp_path):
    version, frames = district
    write_frames(tmp_path / "snap", frames)
    lazy, _ = scan_frames(tmp_path / "snap")
    scope = Scope(orgs=["sch-0002"], roles=["student"], licences={"ELA": "x"})
    eager_view, eager_counts = scoped_view(frames, scope, TODAY)
    lazy_view, lazy_counts = scoped_view(lazy, scope, TODAY)
    assert lazy_counts == eager_counts
    assert all(lazy_view[e].equals(eager_view[e]) for e in eager_view)


# --- orgs -----------------------------------------------------------------------------------------------------


PARENTS = {f"par-000{school}-000{n}" for school in (1, 2, 3) for n in (1, 2)}  # see augmented_tables
ADMIN_ROLE = {"1.1": "administrator", "1.2": "districtAdministrator"}  # adm-0001's role, at dst-0001


def test_a_school_by_sourced_id_or_identifier(district, tmp_path):
    version, frames = district
    identifier = frames["orgs"].filter(pl.col("sourcedId") == "sch-0001")["identifier"].item()
    view, counts = view_of(frames, orgs=["sch-0001"])
    again, _ = view_of(frames, orgs=[identifier])
    assert all(again[e].equals(view[e]) for e in view)

    classes = frames["classes"]
    assert ids(view["classes"]) == of(classes, pl.col("schoolSourcedId") == "sch-0001")
    assert counts["classes_out_of_scope"] == classes.height - view["classes"].height
    # the school, its ancestors, and the second district's school whose course a kept class uses (no parent)
    assert ids(view["orgs"]) == {"sch-0001", "dst-0001", "st-0001", "sch-0900"}
    assert view["orgs"].filter(pl.col("sourcedId") == "sch-0900")["parentSourcedId"].item() is None
    assert "crs-0900-art" in ids(view["courses"])
    enrolled = of(frames["enrollments"], pl.col("classSourcedId").is_in(list(ids(view["classes"]))), "userSourcedId")
    guest = {GUEST} if version == "1.1" else set()  # see test_a_guest_teacher_from_another_school
    # only the people of its classes: no parents or administrators, as the scope names no other role
    assert ids(view["users"]) == enrolled - guest
    assert "tch-0001-001" in ids(view["users"]) and not ids(view["users"]) & {"adm-0001", *PARENTS}
    assert counts["users_role_not_listed"] == len(PARENTS) + 1
    # the students and teachers of schools 2 and 3 (15 and 8 each), but for the guest teacher of school 1
    assert counts["users_not_in_kept_classes"] == 2 * (15 + 8) - 1
    assert counts["users_without_org"] == len(guest)
    if version == "1.1":
        teacher = view["users"].filter(pl.col("sourcedId") == "tch-0001-001")
        assert teacher["orgSourcedIds"].to_list() == [["sch-0001"]]  # sch-0002 is not in the view
    else:
        assert "rol-tch-0001-001-b" not in ids(view["roles"])
        assert "rol-tch-0001-002-b" not in ids(view["roles"])  # a teacher's role as a parent is not let in
        assert set(view["roles"]["role"]) == {"student", "teacher"}
        assert ids(view["userProfiles"]) == of(frames["userProfiles"], pl.lit(True))
    assert counts["orgs_out_of_scope"] == 3 and counts["scope_orgs_unmatched"] == 0
    assert ODD not in ids(view["enrollments"]) and counts["enrollments_of_orgs_left_out"] == 1  # school 2
    assert_strictly_valid(view, version, tmp_path)


def test_a_guest_teacher_from_another_school(district):
    version, frames = district
    view, counts = view_of(frames, orgs=["sch-0001"])
    if version == "1.1":  # none of the teacher's orgs is in the view: the teacher and the enrollment go
        assert GUEST not in ids(view["users"]) and "enr-guest" not in ids(view["enrollments"])
        assert counts["users_without_org"] == 1 and counts["enrollments_of_users_left_out"] == 1
    else:  # 1.2 users have no required org: the teacher stays, without the role or primary org at school 2
        guest = view["users"].filter(pl.col("sourcedId") == GUEST)
        assert guest["primaryOrgSourcedId"].to_list() == [None] and "enr-guest" in ids(view["enrollments"])
        assert GUEST not in ids(view["roles"], "userSourcedId")
        assert counts["users_without_org"] == 0


@pytest.mark.parametrize("by", ["sourcedId", "identifier"])
def test_a_district_brings_all_its_schools(district, by, tmp_path):
    version, frames = district
    name = frames["orgs"].filter(pl.col("sourcedId") == "dst-0001")[by].item()
    view, counts = view_of(frames, orgs=[name, "no-such-org"])
    schools = {"sch-0001", "sch-0002", "sch-0003"}
    assert ids(view["classes"]) == ids(frames["classes"])
    assert ids(view["orgs"]) == {"st-0001", "dst-0001", "sch-0900", *schools}
    assert ids(view["enrollments"]) == ids(frames["enrollments"])
    # every student and teacher has a class; parents and the administrator come only when roles names them
    assert ids(view["users"]) == ids(frames["users"]) - PARENTS - {"adm-0001"}
    assert counts["users_role_not_listed"] == len(PARENTS) + 1 and counts["scope_orgs_unmatched"] == 1
    assert_strictly_valid(view, version, tmp_path)
    named, counts = view_of(frames, orgs=[name], roles=["student", "teacher", "parent", ADMIN_ROLE[version]])
    assert ids(named["users"]) == ids(frames["users"])  # the administrator is a member of the district
    assert counts["users_role_not_listed"] == counts["users_not_in_scope_orgs"] == 0


# --- roles and e-mail domains ---------------------------------------------------------------------------------


def test_roles_narrow_users_and_enrollments(district, tmp_path):
    version, frames = district
    view, counts = view_of(frames, roles=["teacher"])
    assert ids(view["users"]) == of(frames["users"], pl.col("sourcedId").str.starts_with("tch-"))
    assert set(view["enrollments"]["role"]) == {"teacher"}
    enrollments = frames["enrollments"]
    assert view["enrollments"].height == enrollments.filter(pl.col("role") == "teacher").height
    assert counts["enrollments_role_not_listed"] == enrollments.filter(pl.col("role") != "teacher").height
    assert counts["users_role_not_listed"] == frames["users"].height - view["users"].height
    assert "demographics" not in view or view["demographics"].height == 0
    if version == "1.2":  # only the listed roles: not tch-0001-002's role as a parent
        assert set(view["roles"]["role"]) == {"teacher"} and "rol-tch-0001-002-b" not in ids(view["roles"])
    assert_strictly_valid(view, version, tmp_path)

    students, _ = view_of(frames, roles=["student"])
    assert students["users"]["agentSourcedIds"].null_count() == students["users"].height  # parents are out
    families, _ = view_of(frames, roles=["student", "parent"])
    assert ids(families["users"], "agentSourcedIds") == of(frames["users"], pl.col("sourcedId").str.starts_with("par-"))


@pytest.mark.parametrize("domain", [STUDENT_DOMAIN, "@Students.Sample-USD.example"])
def test_an_email_domain_allowlist(district, domain, tmp_path):
    version, frames = district
    view, counts = view_of(frames, email_domains=[domain])
    users = frames["users"]
    outside = users.filter(~pl.col("sourcedId").str.starts_with("stu-") | (pl.col("sourcedId") == NO_EMAIL))
    assert counts["users_outside_domains"] == outside.height
    assert ids(view["users"]) == ids(users) - ids(outside)
    assert UPPER_DOMAIN in ids(view["users"])
    gone = frames["enrollments"].filter(pl.col("userSourcedId").is_in(outside["sourcedId"].implode()))
    assert counts["enrollments_of_users_left_out"] == gone.height > 0
    assert not ids(view["enrollments"]) & ids(gone)
    assert_strictly_valid(view, version, tmp_path)


# --- the people a vendor gets: a small school written by hand ------------------------------------------------
#
# School A has a Mathematics class and an Art class, school B a Mathematics class; each expected set below is
# read off these tables and the rule in daemon/targets/scope.py's docstring, not computed.

ADMIN = {"1.1": "administrator", "1.2": "siteAdministrator"}  # the same staff role in each version's vocabulary
PEOPLE = (  # sourcedId, role (ADMIN: the version's administrator role), org, e-mail, agents
    ("t-math", "teacher", "sch-a", "t-math@district.org", ""),
    ("t-art", "teacher", "sch-a", "T-Art@District.ORG", ""),
    ("t-idle", "teacher", "sch-a", "t-idle@district.org", ""),  # teaches no class
    ("crd-a", "ADMIN", "sch-a", "crd-a@district.org", ""),  # a coordinator who co-teaches Mathematics
    ("s-math", "student", "sch-a", "s-math@students.district.org", "g-math"),
    ("s-art", "student", "sch-a", "s-art@students.district.org", ""),
    ("s-both", "student", "sch-a", "", ""),  # no e-mail
    ("adm-a", "ADMIN", "sch-a", "adm-a@district.org", ""),
    ("adm-d", "ADMIN", "dst", "adm-d@district.org", ""),  # at the district office
    ("g-math", "guardian", "sch-a", "g-math@family.example", ""),
    ("p-art", "proctor", "sch-a", "proctor-desk", ""),  # an e-mail without @; enrolled in Art as a proctor
    ("t-b", "teacher", "sch-b", "t-b@district.org", ""),
    ("s-b", "student", "sch-b", "s-b@students.district.org", ""),
)
CLASS_SCHOOL = {"cls-math": "sch-a", "cls-art": "sch-a", "cls-bmath": "sch-b"}
ENROLLMENTS = (  # sourcedId, class, user, role
    ("e-tmath", "cls-math", "t-math", "teacher"), ("e-crd", "cls-math", "crd-a", "teacher"),
    ("e-smath", "cls-math", "s-math", "student"), ("e-both-m", "cls-math", "s-both", "student"),
    ("e-tart", "cls-art", "t-art", "teacher"), ("e-sart", "cls-art", "s-art", "student"),
    ("e-both-a", "cls-art", "s-both", "student"), ("e-part", "cls-art", "p-art", "proctor"),
    ("e-tb", "cls-bmath", "t-b", "teacher"), ("e-sb", "cls-bmath", "s-b", "student"),
)  # fmt: skip
EVERYONE = {person[0] for person in PEOPLE}
ALL_ENROLLMENTS = {row[0] for row in ENROLLMENTS}


def small_school_tables(version: str) -> dict[str, pl.DataFrame]:
    def column(index: int) -> list[str]:
        return [row[index] for row in PEOPLE]

    roles = [ADMIN[version] if role == "ADMIN" else role for role in column(1)]
    n = len(PEOPLE)
    people = {"sourcedId": column(0), "enabledUser": ["true"] * n, "username": column(0), "givenName": column(0),
              "familyName": ["Person"] * n, "email": column(3), "agentSourcedIds": column(4)}  # fmt: skip
    if version == "1.1":
        people |= {"orgSourcedIds": column(2), "role": roles}
    enrollment_ids, classes, users, roles_of = zip(*ENROLLMENTS, strict=True)
    t = {
        "orgs": _rows("orgs", version, sourcedId=["dst", "sch-a", "sch-b"], name=["District", "School A", "School B"],
                      type=["district", "school", "school"], parentSourcedId=["", "dst", "dst"]),
        "academicSessions": _rows("academicSessions", version, sourcedId=["ay-2027"], title=["2026-27"],
                                  type=["schoolYear"], startDate=["2026-08-15"], endDate=["2027-06-10"],
                                  schoolYear=["2027"]),
        "courses": _rows("courses", version, sourcedId=["crs-math", "crs-art", "crs-bmath"],
                         title=["Algebra", "Studio Art", "Geometry"], orgSourcedId=["sch-a", "sch-a", "sch-b"],
                         subjects=["Mathematics", "Fine and Performing Arts", "Mathematics"],
                         subjectCodes=["02052", "05154", "02072"]),
        "classes": _rows("classes", version, sourcedId=list(CLASS_SCHOOL), title=["Algebra 1", "Art 1", "Geometry 1"],
                         courseSourcedId=["crs-math", "crs-art", "crs-bmath"], classType=["scheduled"] * 3,
                         schoolSourcedId=list(CLASS_SCHOOL.values()), termSourcedIds=["ay-2027"] * 3),
        "users": _rows("users", version, **people),
        "enrollments": _rows("enrollments", version, sourcedId=list(enrollment_ids),
                             classSourcedId=list(classes), schoolSourcedId=[CLASS_SCHOOL[c] for c in classes],
                             userSourcedId=list(users), role=list(roles_of)),
    }  # fmt: skip
    if version == "1.2":  # each person's role at their org; t-math is also a guardian (of no one here)
        t["roles"] = _rows("roles", version, sourcedId=[f"r-{p}" for p in column(0)] + ["r-t-math-g"],
                           userSourcedId=[*column(0), "t-math"], roleType=["primary"] * n + ["secondary"],
                           role=[*roles, "guardian"], orgSourcedId=[*column(2), "sch-a"])  # fmt: skip
    return t


@pytest.fixture(scope="module", params=["1.1", "1.2"])
def small_school(request, tmp_path_factory) -> tuple[str, dict[str, pl.DataFrame]]:
    version = request.param
    return version, typed_snapshot(small_school_tables(version), version, tmp_path_factory.mktemp(f"small-{version}"))


def left_out(**counts: int) -> dict[str, int]:
    """The full counts dictionary: the given counts, every other one 0."""
    assert set(counts) <= set(COUNTS)
    return dict.fromkeys(COUNTS, 0) | counts


def test_the_empty_scope_keeps_the_small_school_whole(small_school):
    assert_identity(small_school[1])


def test_a_subject_brings_the_people_of_its_classes_only(small_school, tmp_path):
    version, frames = small_school
    view, counts = view_of(frames, subjects=["Mathematics"])
    assert ids(view["classes"]) == {"cls-math", "cls-bmath"}
    # rule 4a: the coordinator comes as the teacher of a Mathematics class, whatever her own role
    assert ids(view["users"]) == {"t-math", "crd-a", "s-math", "s-both", "t-b", "s-b"}
    assert ids(view["enrollments"]) == {"e-tmath", "e-crd", "e-smath", "e-both-m", "e-tb", "e-sb"}
    assert view["users"].filter(pl.col("sourcedId") == "s-math")["agentSourcedIds"].to_list() == [None]
    assert counts == left_out(
        classes_out_of_scope=1, enrollments_of_classes_left_out=4, courses_out_of_scope=1,
        users_not_in_kept_classes=3,  # t-art, t-idle, s-art
        users_role_not_listed=4,  # adm-a, adm-d, g-math, p-art (a proctor is not let in unless listed)
    )  # fmt: skip
    if version == "1.2":  # t-math's role as a guardian is not sent, nor the coordinator's staff role
        assert ids(view["roles"]) == {"r-t-math", "r-s-math", "r-s-both", "r-t-b", "r-s-b"}
    assert_strictly_valid(view, version, tmp_path)


def test_a_school_and_a_subject_the_issue_13_case(small_school):
    """A Mathematics vendor scoped to school A gets school A's Mathematics people, not all of school A."""
    version, frames = small_school
    view, counts = view_of(frames, orgs=["sch-a"], subjects=["Mathematics"])
    assert ids(view["classes"]) == {"cls-math"} and ids(view["courses"]) == {"crs-math"}
    assert ids(view["orgs"]) == {"sch-a", "dst"}
    assert ids(view["users"]) == {"t-math", "crd-a", "s-math", "s-both"}
    assert counts == left_out(
        classes_out_of_scope=2, enrollments_of_classes_left_out=6, orgs_out_of_scope=1, courses_out_of_scope=2,
        users_not_in_kept_classes=5,  # t-art, t-idle, s-art, t-b, s-b
        users_role_not_listed=4,  # adm-a, adm-d, g-math, p-art
    )  # fmt: skip


def test_a_school_brings_its_classes_people_and_no_one_else(small_school):
    version, frames = small_school
    view, counts = view_of(frames, orgs=["sch-a"])
    assert ids(view["users"]) == {"t-math", "t-art", "crd-a", "s-math", "s-art", "s-both"}
    assert ids(view["enrollments"]) == ALL_ENROLLMENTS - {"e-part", "e-tb", "e-sb"}
    assert counts == left_out(
        classes_out_of_scope=1, enrollments_of_classes_left_out=2, orgs_out_of_scope=1, courses_out_of_scope=1,
        enrollments_role_not_listed=1,  # e-part: a proctor's enrollment in a kept class
        users_not_in_kept_classes=3,  # t-idle, t-b, s-b
        users_role_not_listed=4,  # adm-a, adm-d, g-math, p-art
    )  # fmt: skip


def test_other_roles_come_when_named_as_members_of_the_selected_orgs(small_school, tmp_path):
    version, frames = small_school
    roles = ["student", "teacher", ADMIN[version], "guardian"]
    view, counts = view_of(frames, orgs=["sch-a"], roles=roles)
    # rule 4b: the school's administrator and guardian, not the district office's administrator; still no idle
    # teacher (students and teachers come only through classes)
    assert ids(view["users"]) == {"t-math", "t-art", "crd-a", "s-math", "s-art", "s-both", "adm-a", "g-math"}
    assert view["users"].filter(pl.col("sourcedId") == "s-math")["agentSourcedIds"].to_list() == [["g-math"]]
    assert counts == left_out(
        classes_out_of_scope=1, enrollments_of_classes_left_out=2, orgs_out_of_scope=1, courses_out_of_scope=1,
        enrollments_role_not_listed=1, users_not_in_scope_orgs=1,  # adm-d
        users_not_in_kept_classes=3, users_role_not_listed=1,  # t-idle, t-b, s-b; p-art
    )  # fmt: skip
    if version == "1.2":  # every role row of theirs at school A with a listed role: t-math's as a guardian too
        assert ids(view["roles"]) == {f"r-{p}" for p in ids(view["users"])} | {"r-t-math-g"}
    assert_strictly_valid(view, version, tmp_path)

    everywhere, counts = view_of(frames, subjects=["Mathematics"], roles=roles[:3])  # orgs empty: every org
    assert ids(everywhere["users"]) == {"t-math", "crd-a", "s-math", "s-both", "t-b", "s-b", "adm-a", "adm-d"}
    assert counts["users_not_in_kept_classes"] == 3 and counts["users_role_not_listed"] == 2  # g-math, p-art


def test_roles_alone_cover_the_whole_district(small_school):
    """Rule 3: nothing narrows classes, so every holder of a listed role comes, with or without a class."""
    version, frames = small_school
    view, counts = view_of(frames, roles=[ADMIN[version]])
    assert ids(view["users"]) == {"crd-a", "adm-a", "adm-d"}
    assert ids(view["classes"]) == set(CLASS_SCHOOL) and view["enrollments"].height == 0
    assert counts == left_out(enrollments_role_not_listed=len(ENROLLMENTS), users_role_not_listed=len(PEOPLE) - 3)
    teachers, _ = view_of(frames, roles=["teacher"])
    assert ids(teachers["users"]) == {"t-math", "t-art", "t-idle", "t-b"}  # the idle teacher too


def test_the_date_window_does_not_choose_people(small_school):
    """A window alone narrows no classes by what they are: every class has ended, every person stays."""
    version, frames = small_school
    view, counts = view_of(frames, today=date(2027, 7, 1), class_end_days=0)
    assert view["classes"].height == 0 and ids(view["users"]) == EVERYONE
    assert ids(view["courses"]) == {"crs-math", "crs-art", "crs-bmath"}  # rule 6: every org's courses
    assert counts == left_out(classes_ended=3, enrollments_of_classes_left_out=len(ENROLLMENTS))


@pytest.mark.parametrize(("domains", "kept"), [
    (["district.org"], EVERYONE - {"s-math", "s-art", "s-b", "s-both", "g-math", "p-art"}),  # not a subdomain
    (["students.district.org"], {"s-math", "s-art", "s-b"}),  # nor the parent domain of a listed one
    (["district.org", "@Students.District.ORG"], EVERYONE - {"s-both", "g-math", "p-art"}),
])  # fmt: skip
def test_email_domains_match_exactly_and_blank_is_outside(small_school, domains, kept):
    version, frames = small_school
    view, counts = view_of(frames, email_domains=domains)
    assert ids(view["users"]) == kept  # t-art's upper-case domain matches; s-both (blank) and p-art (no @) never
    assert counts["users_outside_domains"] == len(EVERYONE - kept)
    assert ids(view["enrollments"]) == {e for e, _, user, _ in ENROLLMENTS if user in kept}
    assert counts["enrollments_of_users_left_out"] == len(ENROLLMENTS) - view["enrollments"].height


# --- courses and subjects -------------------------------------------------------------------------------------


def test_courses_by_sourced_id_and_by_code(district, tmp_path):
    version, frames = district
    classes, courses = frames["classes"], frames["courses"]
    art, _ = view_of(frames, courses=["crs-0900-art"])
    assert ids(art["classes"]) == {CROSS_CLASS}
    assert ids(art["academicSessions"]) == {GRADING, "sem-2027-1", "ay-2027"}  # the term and its parents
    view, counts = view_of(frames, courses=["crs-0001-math", "NOPE"])
    assert ids(view["classes"]) == of(classes, pl.col("courseSourcedId") == "crs-0001-math")
    assert ids(view["courses"]) == {"crs-0001-math"}
    assert counts["scope_courses_unmatched"] == 1
    enrolled = of(frames["enrollments"], pl.col("classSourcedId").is_in(list(ids(view["classes"]))), "userSourcedId")
    assert ids(view["users"]) == enrolled  # no parents, no administrator: they have no class here

    by_code, _ = view_of(frames, courses=["MATH"])
    math = of(courses, pl.col("courseCode") == "MATH")
    assert len(math) > 1 and ids(by_code["courses"]) == math
    assert ids(by_code["classes"]) == of(classes, pl.col("courseSourcedId").is_in(list(math)))
    assert_strictly_valid(by_code, version, tmp_path)


def test_subjects_by_title_or_code_with_the_course_as_fallback(district):
    version, frames = district
    classes = frames["classes"]
    math_courses = of(frames["courses"], pl.col("subjectCodes").list.contains("02052"))
    expected = of(classes, pl.col("courseSourcedId").is_in(list(math_courses))) - {OWN_SUBJECT_CLASS}
    assert of(classes, pl.col("subjects").is_null()) & expected  # some come by their course's subject
    for subjects in (["mathematics"], ["02052"], ["MATHEMATICS"]):
        view, _ = view_of(frames, subjects=subjects)
        assert ids(view["classes"]) == expected, subjects
    cs, _ = view_of(frames, subjects=["10019"])  # the class's own subject, and the CS courses' classes
    assert OWN_SUBJECT_CLASS in ids(cs["classes"])
    assert "crs-0001-math" in ids(cs["courses"])  # its course comes with it
    none, _ = view_of(frames, subjects=["02052 "])  # codes compare exactly
    assert none["classes"].height == 0


# --- licences -------------------------------------------------------------------------------------------------


def licence_of(view: dict[str, pl.DataFrame]) -> dict[str, str | None]:
    return dict(view["classes"].select("sourcedId", LICENCE_COLUMN).iter_rows())


def test_licences_by_course_code_and_subject_with_precedence(district, tmp_path):
    version, frames = district
    classes = frames["classes"]
    licences = {"world languages": "span-pool", "MATH": "math-pool", "crs-0001-math": "school-1-math",
                "05154": "art-pool", "10019": "cs-pool"}  # fmt: skip
    view, _ = view_of(frames, licences=licences)
    got = licence_of(view)
    for sourced_id, course in classes.select("sourcedId", "courseSourcedId").iter_rows():
        if course == "crs-0001-math":
            assert got[sourced_id] == "school-1-math"  # the course id beats its code and the class's subject
        elif course.endswith("-math"):
            assert got[sourced_id] == "math-pool"
        elif course.endswith("-span"):
            assert got[sourced_id] == "span-pool"  # a subject title, compared case-insensitively
        elif course.endswith("art") or course.endswith("-cs"):
            assert got[sourced_id] == ("art-pool" if "art" in course else "cs-pool")  # codes, class or course
        else:
            assert got[sourced_id] is None
    assert view["classes"].columns[-1] == LICENCE_COLUMN and view["classes"].schema[LICENCE_COLUMN] == pl.String
    carried = view["enrollments"].join(view["classes"].select(classSourcedId="sourcedId", expected=LICENCE_COLUMN),
                                       on="classSourcedId")  # fmt: skip
    assert carried.height == view["enrollments"].height
    assert carried.filter(pl.col(LICENCE_COLUMN).ne_missing(pl.col("expected"))).height == 0
    assert_strictly_valid(view, version, tmp_path)

    without_id, _ = view_of(frames, licences={k: v for k, v in licences.items() if k != "crs-0001-math"})
    assert licence_of(without_id)[OWN_SUBJECT_CLASS] == "math-pool"  # then the course code
    only_subjects = {"Mathematics": "m", "10019": "cs"}
    assert licence_of(view_of(frames, licences=only_subjects)[0])[OWN_SUBJECT_CLASS] == "m"
    reversed_order = dict(reversed(only_subjects.items()))  # between subjects, the first key listed wins
    assert licence_of(view_of(frames, licences=reversed_order)[0])[OWN_SUBJECT_CLASS] == "cs"
    plain, _ = view_of(frames)
    assert LICENCE_COLUMN not in plain["classes"].columns and LICENCE_COLUMN not in plain["enrollments"].columns


# --- the class date window -------------------------------------------------------------------------------------


def term_classes(frames, terms: list[str]) -> set[str]:
    return of(frames["classes"], pl.col("termSourcedIds").list.join(",") == ",".join(terms))


def test_a_class_enters_the_view_as_its_start_approaches(district):
    version, frames = district
    spring = term_classes(frames, ["sem-2027-2"])  # starts 2027-01-05
    assert spring
    before, counts = view_of(frames, today=date(2026, 12, 5), class_start_days=30)  # 31 days ahead
    assert not spring & ids(before["classes"]) and counts["classes_not_started"] == len(spring)
    assert not ids(before["enrollments"]) & of(frames["enrollments"], pl.col("classSourcedId").is_in(list(spring)))
    after, counts = view_of(frames, today=date(2026, 12, 6), class_start_days=30)  # 30 days ahead
    assert ids(after["classes"]) - ids(before["classes"]) == spring and counts["classes_not_started"] == 0


def test_a_class_leaves_the_view_after_it_ended(district):
    version, frames = district
    fall = term_classes(frames, ["sem-2027-1"]) | term_classes(frames, [GRADING])  # end 2026-12-19
    assert fall
    kept, counts = view_of(frames, today=date(2027, 1, 2), class_end_days=14)
    assert fall <= ids(kept["classes"]) and counts["classes_ended"] == 0
    gone, counts = view_of(frames, today=date(2027, 1, 3), class_end_days=14)
    assert ids(kept["classes"]) - ids(gone["classes"]) == fall and counts["classes_ended"] == len(fall)
    removed = of(frames["enrollments"], pl.col("classSourcedId").is_in(list(fall)))
    assert counts["enrollments_of_classes_left_out"] == len(removed)
    # both bounds at once: in June only the classes running through spring are there
    june, counts = view_of(frames, today=date(2027, 6, 1), class_start_days=0, class_end_days=0)
    assert ids(june["classes"]) == ids(frames["classes"]) - fall


# --- any scope ------------------------------------------------------------------------------------------------


SCOPES = [
    {"orgs": ["sch-0003"], "roles": ["teacher", "student"], "email_domains": [STAFF_DOMAIN, STUDENT_DOMAIN]},
    {"orgs": ["st-0001"], "subjects": ["Life and Physical Sciences"], "licences": {"SCI": "bio"}},
    {"orgs": ["sch-0900"]},
    {"courses": ["crs-0900-art"], "roles": ["student"]},
    {"roles": ["parent"]},
    {"orgs": ["sch-0002"], "class_start_days": 0, "class_end_days": 0},
]


@pytest.mark.parametrize("scope", SCOPES)
def test_views_are_valid_packages(district, scope, tmp_path):
    version, frames = district
    view, _ = view_of(frames, today=date(2027, 2, 1), **scope)
    if all(view[entity].height for entity in schema.VERSIONS[version].ingestion):  # else no package to send
        assert_strictly_valid(view, version, tmp_path)


@pytest.mark.parametrize("scope", SCOPES[:2])
def test_views_of_the_samples(sample, scope, tmp_path):
    version, frames = sample
    view, _ = view_of(frames, **{k: v for k, v in scope.items() if k != "orgs"}, orgs=["sch-0001"])
    assert view["classes"].height and view["users"].height
    assert_strictly_valid(view, version, tmp_path)


def _scopes(frames) -> st.SearchStrategy[Scope]:
    orgs = sorted(ids(frames["orgs"]) | ids(frames["orgs"], "identifier"))
    courses = sorted(ids(frames["courses"]) | ids(frames["courses"], "courseCode"))
    subjects = sorted(ids(frames["courses"], "subjects") | ids(frames["courses"], "subjectCodes"))
    roles = ["student", "teacher", "parent", "administrator", "districtAdministrator", "aide"]
    domains = [STUDENT_DOMAIN, STAFF_DOMAIN, FAMILY_DOMAIN, "elsewhere.example"]
    subset = lambda values: st.lists(st.sampled_from(values), max_size=3, unique=True)  # noqa: E731
    return st.builds(
        Scope, orgs=subset(orgs), roles=subset(roles), email_domains=subset(domains), courses=subset(courses),
        subjects=subset(subjects), licences=st.dictionaries(st.sampled_from(courses + subjects), st.sampled_from("ab"),
                                                            max_size=3),
        class_start_days=st.none() | st.integers(0, 200), class_end_days=st.none() | st.integers(0, 200),
    )  # fmt: skip


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_random_scopes_give_consistent_subsets(version, tmp_path_factory):
    frames = typed_snapshot(augmented_tables(version), version, tmp_path_factory.mktemp(f"random-{version}"))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scope=_scopes(frames), today=st.dates(date(2026, 6, 1), date(2027, 9, 1)))
    def check(scope: Scope, today: date) -> None:
        view, counts = scoped_view(frames, scope, today)
        assert_subset(view, frames)
        assert_integrity(view, version)
        assert_counts_partition(view, frames, counts)

    check()


def test_sessions_the_empty_scope_keeps_all_and_a_chosen_class_brings_its_terms_grading_periods(district):
    version, frames = district
    assert ids(view_of(frames)[0]["academicSessions"]) == ids(frames["academicSessions"])  # the roster unchanged
    view, _ = view_of(frames, courses=["crs-0001-math"])
    terms = set(view["classes"]["termSourcedIds"].explode().to_list())
    assert "sem-2027-1" in terms and GRADING not in terms  # the fall term is used; its grading period is not
    # the classes' terms, the school year above them, and the fall term's grading period below it
    assert ids(view["academicSessions"]) == terms | {"ay-2027", GRADING}
