"""Snapshot rows as OneRoster REST JSON (daemon/targets/api/shapes.py), for 1.1 and 1.2, from 1.1 and 1.2 uploads.

A small district is written below as a 1.1 and as a 1.2 package (the same people; 1.2 with roles.csv and
userProfiles.csv), made into real snapshots by the worker's job, and read back. Every expected record is
written out by hand from shared/reference/oneroster_rest.md (references {href, sourcedId, type}, lists as
arrays, metadata an object, "true"/"false" strings, YYYY-MM-DD dates, date-times with milliseconds and Z)
and from the version rules in daemon/oneroster/export.py's docstring; every field is compared.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from daemon.snapshots import storage
from daemon.snapshots.job import UploadJob, run_job
from daemon.targets.api import shapes

from .packages import package

BASE = "https://roster.example/ims/oneroster/v1p1"

COMMON = {
    "orgs.csv": """\
sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId,metadata.region
dist-1,,,North District,district,NCES-0001,,north
sch-1,,,Hill School,school,,dist-1,
""",
    "academicSessions.csv": """\
sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear
sy-2027,,,2026-2027,schoolYear,2026-08-20,2027-06-15,,2027
t-fall,,,Fall 2026,term,2026-08-20,2027-01-10,sy-2027,2027
""",
    "courses.csv": """\
sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,orgSourcedId,subjects,subjectCodes
c-math,,,sy-2027,Algebra I,ALG1,"09,10",dist-1,Mathematics,02052
""",
    "classes.csv": """\
sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,\
termSourcedIds,subjects,subjectCodes,periods
cl-1,,,"Algebra I, period 1",09,c-math,ALG1-1,scheduled,Room 4,sch-1,t-fall,Mathematics,02052,"1,3"
""",
    "enrollments.csv": """\
sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate
e-1,,,cl-1,sch-1,u-t1,teacher,true,2026-08-20,2027-01-10
e-2,,,cl-1,sch-1,u-s1,student,,,
""",
    "demographics.csv": """\
sourcedId,status,dateLastModified,birthDate,sex,americanIndianOrAlaskaNative,asian,blackOrAfricanAmerican,\
nativeHawaiianOrOtherPacificIslander,white,demographicRaceTwoOrMoreRaces,hispanicOrLatinoEthnicity,\
countryOfBirthCode,stateOfBirthAbbreviation,cityOfBirth,publicSchoolResidenceStatus
u-s1,,,2011-03-04,female,false,true,false,false,false,false,true,US,WA,Seattle,
""",
}
USERS_11 = """\
sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,middleName,\
identifier,email,sms,phone,agentSourcedIds,grades,password
u-a1,,,true,dist-1,administrator,dana,,Dana,Ruiz,,,dana@north.example,,,,,
u-g1,,,true,sch-1,guardian,gil,,Gil,Park,,,,,555-0101,,,
u-s1,,,false,"sch-1,dist-1",student,bo,"{LDAP:bo},{SIS:S-42}",Bo,Park,Jin,S042,,,,u-g1,09,hunter2
u-t1,,,true,sch-1,teacher,ann,{LDAP:ann},Ann,Lee,,T001,ann@north.example,,,,,
"""
USERS_12 = """\
sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,middleName,identifier,email,\
sms,phone,agentSourcedIds,grades,password,userMasterIdentifier,preferredGivenName,preferredMiddleName,\
preferredFamilyName,primaryOrgSourcedId,pronouns
u-a1,,,true,dana,,Dana,Ruiz,,,dana@north.example,,,,,,,,,,dist-1,
u-g1,,,true,gil,,Gil,Park,,,,,555-0101,,,,,,,,,
u-s1,,,false,bo,"{LDAP:bo},{SIS:S-42}",Bo,Park,Jin,S042,,,,u-g1,09,hunter2,M-42,Bobby,,Parker,sch-1,he/him
u-t1,,,true,ann,{LDAP:ann},Ann,Lee,,T001,ann@north.example,,,,,,,,,,sch-1,
"""
ROLES_12 = """\
sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,userProfileSourcedId
r-a1,,,u-a1,primary,principal,,,dist-1,
r-g1,,,u-g1,primary,guardian,,,sch-1,
r-s2,,,u-s1,secondary,student,,,dist-1,
r-s1,,,u-s1,primary,student,2026-08-20,2027-06-15,sch-1,p-s1
r-t1,,,u-t1,primary,teacher,,,sch-1,
"""
PROFILES_12 = """\
sourcedId,status,dateLastModified,userSourcedId,profileType,vendorId,applicationId,description,credentialType,\
username,password
p-s1,,,u-s1,reading,acme,reader,Acme Reader,password,bo.reads,sekrit
"""


def _package(version: str) -> bytes:
    files = dict(COMMON)
    if version == "1.1":
        files["users.csv"] = USERS_11
    else:
        files.update({"users.csv": USERS_12, "roles.csv": ROLES_12, "userProfiles.csv": PROFILES_12})
    return package(version, files)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real snapshot folder per uploaded version, made the way the daemon makes one."""
    root = tmp_path_factory.mktemp("shapes")
    out = {}
    for version in ("1.1", "1.2"):
        package = root / f"v{version}.zip"
        package.write_bytes(_package(version))
        folder = root / f"snapshot-{version}"
        outcome = run_job(UploadJob(package, folder))
        assert outcome.snapshot is not None, outcome.validation["counts_by_code"]
        out[version] = folder
    return out


@pytest.fixture(scope="module")
def snapshots(folders: dict[str, Path]) -> dict[str, dict[str, pl.DataFrame]]:
    return {version: storage.read_frames(folder) for version, folder in folders.items()}


def ref(collection: str, sid: str, kind: str) -> dict:
    return {"href": f"{BASE}/{collection}/{sid}", "sourcedId": sid, "type": kind}


def org(sid: str) -> dict:
    return ref("orgs", sid, "org")


def shaped(frames: dict[str, pl.DataFrame], entity: str, served: str, **options) -> dict[str, dict]:
    found = shapes.records(entity, frames[entity], served, BASE, related=frames, **options)
    return {record["sourcedId"]: record for record in found}


UPLOADS_AND_SERVED = [(u, s) for u in ("1.1", "1.2") for s in ("1.1", "1.2")]

# --- the entities that read the same in both versions -------------------------------------------------------

ORGS = {
    "dist-1": {"sourcedId": "dist-1", "status": "active", "metadata": {"region": "north"}, "name": "North District",
               "type": "district", "identifier": "NCES-0001", "children": [org("sch-1")]},
    "sch-1": {"sourcedId": "sch-1", "status": "active", "name": "Hill School", "type": "school",
              "identifier": "", "parent": org("dist-1")},  # blank in the CSV; the OpenAPI requires the field
}  # fmt: skip
SESSIONS = {
    "sy-2027": {"sourcedId": "sy-2027", "status": "active", "title": "2026-2027", "type": "schoolYear",
                "startDate": "2026-08-20", "endDate": "2027-06-15", "schoolYear": "2027",
                "children": [ref("academicSessions", "t-fall", "academicSession")]},
    "t-fall": {"sourcedId": "t-fall", "status": "active", "title": "Fall 2026", "type": "term",
               "startDate": "2026-08-20", "endDate": "2027-01-10", "schoolYear": "2027",
               "parent": ref("academicSessions", "sy-2027", "academicSession")},
}  # fmt: skip
COURSES = {
    "c-math": {"sourcedId": "c-math", "status": "active", "title": "Algebra I", "courseCode": "ALG1",
               "schoolYear": ref("academicSessions", "sy-2027", "academicSession"), "grades": ["09", "10"],
               "org": org("dist-1"), "subjects": ["Mathematics"], "subjectCodes": ["02052"]},
}  # fmt: skip
CLASSES = {
    "cl-1": {"sourcedId": "cl-1", "status": "active", "title": "Algebra I, period 1", "grades": ["09"],
             "course": ref("courses", "c-math", "course"), "classCode": "ALG1-1", "classType": "scheduled",
             "location": "Room 4", "school": org("sch-1"),
             "terms": [ref("academicSessions", "t-fall", "academicSession")], "subjects": ["Mathematics"],
             "subjectCodes": ["02052"], "periods": ["1", "3"]},
}  # fmt: skip
ENROLLMENTS = {
    "e-1": {"sourcedId": "e-1", "status": "active", "class": ref("classes", "cl-1", "class"), "school": org("sch-1"),
            "user": ref("users", "u-t1", "user"), "role": "teacher", "primary": "true", "beginDate": "2026-08-20",
            "endDate": "2027-01-10"},
    "e-2": {"sourcedId": "e-2", "status": "active", "class": ref("classes", "cl-1", "class"), "school": org("sch-1"),
            "user": ref("users", "u-s1", "user"), "role": "student"},
}  # fmt: skip
DEMOGRAPHICS = {
    "u-s1": {"sourcedId": "u-s1", "status": "active", "birthDate": "2011-03-04", "sex": "female",
             "americanIndianOrAlaskaNative": "false", "asian": "true", "blackOrAfricanAmerican": "false",
             "nativeHawaiianOrOtherPacificIslander": "false", "white": "false",
             "demographicRaceTwoOrMoreRaces": "false", "hispanicOrLatinoEthnicity": "true",
             "countryOfBirthCode": "US", "stateOfBirthAbbreviation": "WA", "cityOfBirth": "Seattle"},
}  # fmt: skip
SAME_IN_BOTH = {"orgs": ORGS, "academicSessions": SESSIONS, "courses": COURSES, "classes": CLASSES,
                "enrollments": ENROLLMENTS, "demographics": DEMOGRAPHICS}  # fmt: skip


@pytest.mark.parametrize(("uploaded", "served"), UPLOADS_AND_SERVED)
@pytest.mark.parametrize("entity", list(SAME_IN_BOTH))
def test_records_that_read_the_same_in_both_versions(snapshots, entity: str, uploaded: str, served: str) -> None:
    assert shaped(snapshots[uploaded], entity, served) == SAME_IN_BOTH[entity]


# --- users -------------------------------------------------------------------------------------------------

# What both versions say alike about each user.
PEOPLE = {
    "u-a1": {"sourcedId": "u-a1", "status": "active", "enabledUser": "true", "username": "dana", "givenName": "Dana",
             "familyName": "Ruiz", "email": "dana@north.example"},
    "u-g1": {"sourcedId": "u-g1", "status": "active", "enabledUser": "true", "username": "gil", "givenName": "Gil",
             "familyName": "Park", "phone": "555-0101"},
    "u-s1": {"sourcedId": "u-s1", "status": "active", "enabledUser": "false", "username": "bo", "givenName": "Bo",
             "familyName": "Park", "middleName": "Jin", "identifier": "S042",
             "userIds": [{"type": "LDAP", "identifier": "bo"}, {"type": "SIS", "identifier": "S-42"}],
             "agents": [ref("users", "u-g1", "user")], "grades": ["09"]},
    "u-t1": {"sourcedId": "u-t1", "status": "active", "enabledUser": "true", "username": "ann", "givenName": "Ann",
             "familyName": "Lee", "identifier": "T001", "email": "ann@north.example",
             "userIds": [{"type": "LDAP", "identifier": "ann"}]},
}  # fmt: skip


def people(**extra: dict) -> dict[str, dict]:
    return {sid: {**person, **extra[sid]} for sid, person in PEOPLE.items()}


def role(role_type: str, name: str, at: str, **more: str) -> dict:
    return {"roleType": role_type, "role": name, "org": org(at), **more}


# A 1.1 upload served as 1.1: the CSV's role and orgSourcedIds as they are.
USERS_11_AS_11 = people(
    **{"u-a1": {"role": "administrator", "orgs": [org("dist-1")]},
       "u-g1": {"role": "guardian", "orgs": [org("sch-1")]},
       "u-s1": {"role": "student", "orgs": [org("sch-1"), org("dist-1")]},
       "u-t1": {"role": "teacher", "orgs": [org("sch-1")]}}
)  # fmt: skip
# A 1.2 upload served as 1.1: orgs are the primary org, then the orgs of the roles (primary role first);
# role is that of the first role 1.1 can say (principal -> administrator).
USERS_12_AS_11 = people(
    **{"u-a1": {"role": "administrator", "orgs": [org("dist-1")]},
       "u-g1": {"role": "guardian", "orgs": [org("sch-1")]},
       "u-s1": {"role": "student", "orgs": [org("sch-1"), org("dist-1")]},
       "u-t1": {"role": "teacher", "orgs": [org("sch-1")]}}
)  # fmt: skip
# A 1.1 upload served as 1.2: one role per org, the first primary; an administrator at a district is a
# districtAdministrator; primaryOrg is the first org.
USERS_11_AS_12 = people(
    **{"u-a1": {"roles": [role("primary", "districtAdministrator", "dist-1")], "primaryOrg": org("dist-1")},
       "u-g1": {"roles": [role("primary", "guardian", "sch-1")], "primaryOrg": org("sch-1")},
       "u-s1": {"roles": [role("primary", "student", "sch-1"), role("secondary", "student", "dist-1")],
                "primaryOrg": org("sch-1")},
       "u-t1": {"roles": [role("primary", "teacher", "sch-1")], "primaryOrg": org("sch-1")}}
)  # fmt: skip
# A 1.2 upload served as 1.2: roles.csv (primary first), userProfiles.csv without its password, the
# preferred names under the JSON's names.
USERS_12_AS_12 = people(
    **{"u-a1": {"roles": [role("primary", "principal", "dist-1")], "primaryOrg": org("dist-1")},
       "u-g1": {"roles": [role("primary", "guardian", "sch-1")]},
       "u-s1": {"roles": [role("primary", "student", "sch-1", userProfile="p-s1", beginDate="2026-08-20",
                               endDate="2027-06-15"),
                          role("secondary", "student", "dist-1")],
                "primaryOrg": org("sch-1"), "userMasterIdentifier": "M-42", "preferredFirstName": "Bobby",
                "preferredLastName": "Parker", "pronouns": "he/him",
                "userProfiles": [{"profileId": "p-s1", "profileType": "reading", "vendorId": "acme",
                                  "applicationId": "reader", "description": "Acme Reader",
                                  "credentials": [{"type": "password", "username": "bo.reads"}]}]},
       "u-t1": {"roles": [role("primary", "teacher", "sch-1")], "primaryOrg": org("sch-1")}}
)  # fmt: skip
USERS = {("1.1", "1.1"): USERS_11_AS_11, ("1.2", "1.1"): USERS_12_AS_11, ("1.1", "1.2"): USERS_11_AS_12,
         ("1.2", "1.2"): USERS_12_AS_12}  # fmt: skip


@pytest.mark.parametrize(("uploaded", "served"), UPLOADS_AND_SERVED)
def test_users(snapshots, uploaded: str, served: str) -> None:
    assert shaped(snapshots[uploaded], "users", served) == USERS[(uploaded, served)]


@pytest.mark.parametrize(("uploaded", "served"), UPLOADS_AND_SERVED)
def test_passwords_are_never_served(snapshots, uploaded: str, served: str) -> None:
    frames = snapshots[uploaded]
    texts = shapes.record_texts("users", frames["users"], served, BASE, related=frames)
    assert texts.len() == 4
    assert not texts.str.contains('hunter2|sekrit|"password":').any()  # "password" is only a credential type


def test_related_frames_may_be_lazy(folders) -> None:
    """A stored snapshot scanned, not read: the page's roles and profiles are read from the Parquet files."""
    lazy, _ = storage.scan_frames(folders["1.2"])
    page = lazy["users"].collect()
    found = {r["sourcedId"]: r for r in shapes.records("users", page, "1.2", BASE, related=lazy)}
    assert found == USERS_12_AS_12
    found = {r["sourcedId"]: r for r in shapes.records("orgs", lazy["orgs"].collect(), "1.1", BASE, related=lazy)}
    assert found == ORGS


def test_a_page_shows_children_from_the_whole_entity(snapshots) -> None:
    frames = snapshots["1.1"]
    page = frames["orgs"].filter(pl.col("sourcedId") == "dist-1")
    assert shapes.records("orgs", page, "1.2", BASE, related=frames) == [ORGS["dist-1"]]


def test_a_12_user_without_a_role_11_can_say_takes_their_enrollments_role(snapshots) -> None:
    frames = dict(snapshots["1.2"])
    frames["roles"] = frames["roles"].with_columns(
        role=pl.when(pl.col("userSourcedId") == "u-t1").then(pl.lit("ext:coach")).otherwise("role"))
    found = shaped(frames, "users", "1.1")
    assert found["u-t1"] == USERS_12_AS_11["u-t1"]  # teacher: from enrollment e-1
    without_enrollments = {k: v for k, v in frames.items() if k != "enrollments"}
    found = shaped(without_enrollments, "users", "1.1")
    assert found["u-t1"] == {k: v for k, v in USERS_12_AS_11["u-t1"].items() if k != "role"}


# --- lifecycle, selection, hrefs ---------------------------------------------------------------------------


def test_status_and_date_last_modified(snapshots) -> None:
    """A bulk snapshot has neither: status is active and dateLastModified the caller's stamp; a row's own
    values (as a delta brings them) win."""
    frames = snapshots["1.1"]
    stamp = datetime(2026, 12, 1, 2, 0, 0, 500, tzinfo=UTC)
    page = frames["enrollments"].with_columns(
        status=pl.when(pl.col("sourcedId") == "e-2").then(pl.lit("tobedeleted")).otherwise("status"),
        dateLastModified=pl.when(pl.col("sourcedId") == "e-2")
        .then(pl.lit(datetime(2026, 11, 30, 23, 59, 58, 123000, tzinfo=UTC)).cast(pl.Datetime("ms", "UTC")))
        .otherwise("dateLastModified"),
    )  # fmt: skip
    found = {r["sourcedId"]: r for r in shapes.records("enrollments", page, "1.2", BASE, modified_at=stamp)}
    assert found == {
        "e-1": {**ENROLLMENTS["e-1"], "dateLastModified": "2026-12-01T02:00:00.000Z"},
        "e-2": {**ENROLLMENTS["e-2"], "status": "tobedeleted", "dateLastModified": "2026-11-30T23:59:58.123Z"},
    }


def test_fields_selects_top_level_fields(snapshots) -> None:
    frames = snapshots["1.2"]
    found = shapes.records("users", frames["users"], "1.2", BASE, related=frames, fields=["sourcedId", "givenName",
                                                                                              "roles"])  # fmt: skip
    assert found[0] == {"sourcedId": "u-a1", "givenName": "Dana", "roles": [role("primary", "principal", "dist-1")]}
    assert found[1] == {"sourcedId": "u-g1", "givenName": "Gil", "roles": [role("primary", "guardian", "sch-1")]}


def test_records_keep_the_page_order(snapshots) -> None:
    frames = snapshots["1.2"]
    page = frames["users"].sort("sourcedId", descending=True)
    found = shapes.records("users", page, "1.1", BASE, related=frames)
    assert [r["sourcedId"] for r in found] == ["u-t1", "u-s1", "u-g1", "u-a1"]


def test_href_escapes_characters_a_path_cannot_hold() -> None:
    page = pl.DataFrame(
        {"sourcedId": ["e/9"], "classSourcedId": ["cl/2@x"], "schoolSourcedId": ["s 1"], "userSourcedId": ["u%1"],
         "role": ["student"]}
    )  # fmt: skip
    base = "https://roster.example/ims/oneroster/rostering/v1p2/"
    [record] = shapes.records("enrollments", page, "1.2", base)
    assert record == {
        "sourcedId": "e/9", "status": "active",
        "class": {"href": f"{base}classes/cl%2F2@x", "sourcedId": "cl/2@x", "type": "class"},
        "school": {"href": f"{base}orgs/s%201", "sourcedId": "s 1", "type": "org"},
        "user": {"href": f"{base}users/u%251", "sourcedId": "u%1", "type": "user"},
        "role": "student",
    }  # fmt: skip


def test_unknown_collection_or_version() -> None:
    page = pl.DataFrame({"sourcedId": ["x"]})
    with pytest.raises(ValueError, match="rostering collection"):
        shapes.records("lineItems", page, "1.2", BASE)
    with pytest.raises(ValueError, match="version"):
        shapes.records("orgs", page, "1.0", BASE)
