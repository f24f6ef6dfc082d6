"""A district small enough to work out its CERS student groups by hand, over three days of changes.

The expected groups below are written from README's CERS rules and the CERS import contract
(/work/shared/reference/cers_groups.md), never computed by rosterd's own mapping, so a test comparing with
them checks the mapping and not only the transport:

* one group per class; its name is the classCode cleaned for CERS (spaces become "_", anything but letters,
  digits, "_" and "-" is dropped), or the class sourcedId when the classCode is empty;
* its school is the `identifier` of the class's school (kept as text, leading zeros and all); a class of a
  school without one is skipped;
* its year is the schoolYear of the class's terms;
* its subject comes from the class's own SCED subjects or codes, else its course's: Mathematics or 02xxx is
  Math, English Language Arts or 01xxx is ELA, anything else All;
* its teachers are the teachers' e-mails, its students the students' `identifier` (the SSID).

In CERS (the fake keeps it so) a group named by a file is replaced whole, "All" is stored as no subject, and a
group sent with its key fields only is emptied but stays.

Day 1: the roster below. Day 2: one teacher's e-mail changes, one student leaves, one class is dropped.
Day 3: a student joins a class.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

from tests.fakes.cers import Group

OAK = "01612590130001"  # a CDS code with a leading zero
RIVER = "19647331930000"
YEAR = 2027
HEADER = ["group_name", "school_natural_id", "school_year", "subject_code", "student_ssid", "group_user_login"]

Tables = dict[str, list[dict[str, str]]]
# A tenant's TOML line for this district: day 2 deletes 3 of its 18 enrollments, over the default 10% hold.
HOLDS = "holds = { enrollments_deleted_share = 0.5 }"

COLUMNS = {
    "orgs": "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId",
    "academicSessions": "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear",
    "courses": "sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,orgSourcedId,subjects,"
    "subjectCodes",
    "classes": "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,"
    "schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods",
    "users": "sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,"
    "middleName,identifier,email,sms,phone,agentSourcedIds,grades,password",
    "enrollments": "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,"
    "beginDate,endDate",
}
ABSENT = ("categories", "classResources", "courseResources", "demographics", "lineItems", "resources", "results")


def _org(sourced_id: str, name: str, kind: str, identifier: str, parent: str = "") -> dict[str, str]:
    return {"sourcedId": sourced_id, "name": name, "type": kind, "identifier": identifier, "parentSourcedId": parent}


def _course(sourced_id: str, title: str, code: str, school: str, subjects: str, codes: str) -> dict[str, str]:
    return {"sourcedId": sourced_id, "schoolYearSourcedId": "ay-2027", "title": title, "courseCode": code,
            "grades": "09", "orgSourcedId": school, "subjects": subjects, "subjectCodes": codes}  # fmt: skip


def _class(sourced_id: str, code: str, course: str, school: str, subjects: str = "", codes: str = "") -> dict[str, str]:
    return {"sourcedId": sourced_id, "title": f"Class {sourced_id}", "grades": "09", "courseSourcedId": course,
            "classCode": code, "classType": "scheduled", "schoolSourcedId": school, "termSourcedIds": "sem-2027-1",
            "subjects": subjects, "subjectCodes": codes, "periods": "1"}  # fmt: skip


def _user(sourced_id: str, role: str, school: str, email: str, identifier: str) -> dict[str, str]:
    return {"sourcedId": sourced_id, "enabledUser": "true", "orgSourcedIds": school, "role": role,
            "username": sourced_id, "givenName": "Given", "familyName": sourced_id.title(), "identifier": identifier,
            "email": email, "grades": "09" if role == "student" else ""}  # fmt: skip


def _enrol(klass: str, school: str, user: str, role: str) -> dict[str, str]:
    return {"sourcedId": f"enr-{klass}-{user}", "classSourcedId": klass, "schoolSourcedId": school,
            "userSourcedId": user, "role": role, "primary": "true" if role == "teacher" else "false"}  # fmt: skip


def day1() -> Tables:
    members = {  # class -> (school, teachers, students)
        "cls-oak-alg": ("sch-oak", ["t-lee", "t-diaz"], ["s-1", "s-2", "s-3"]),
        "cls-oak-eng": ("sch-oak", ["t-diaz"], ["s-1", "s-4"]),
        "cls-oak-study": ("sch-oak", ["t-lee"], ["s-2", "s-4"]),
        "cls-river-art": ("sch-river", ["t-kim"], ["s-5", "s-6"]),
        "cls-river-geo": ("sch-river", ["t-kim"], ["s-5"]),
        "cls-new-bio": ("sch-new", ["t-new"], ["s-7"]),
    }
    return {
        "orgs": [
            _org("dst-1", "Sample Unified", "district", "01612590000000"),
            _org("sch-oak", "Oak Valley High", "school", OAK, "dst-1"),
            _org("sch-river", "Riverside High", "school", RIVER, "dst-1"),
            _org("sch-new", "New Campus", "school", "", "dst-1"),  # no CDS code: its classes are skipped
        ],
        "academicSessions": [
            {"sourcedId": "ay-2027", "title": "2026-2027", "type": "schoolYear", "startDate": "2026-08-15",
             "endDate": "2027-06-12", "schoolYear": "2027"},
            {"sourcedId": "sem-2027-1", "title": "Fall 2026", "type": "semester", "startDate": "2026-08-15",
             "endDate": "2026-12-19", "parentSourcedId": "ay-2027", "schoolYear": "2027"},
        ],  # fmt: skip
        "courses": [
            _course("crs-alg", "Algebra I", "ALG1", "sch-oak", "Mathematics", "02052"),
            _course("crs-eng", "English 9", "ENG9", "sch-oak", "", ""),
            _course("crs-study", "Study Hall", "STUDY", "sch-oak", "", ""),
            _course("crs-art", "Studio Art", "ART", "sch-river", "Fine and Performing Arts", "05154"),
            _course("crs-geo", "Geometry", "GEO", "sch-river", "", ""),
            _course("crs-bio", "Biology", "BIO", "sch-new", "Life and Physical Sciences", "03051"),
        ],
        "classes": [
            _class("cls-oak-alg", "ALG 1 P1", "crs-alg", "sch-oak"),  # subject from its course
            _class("cls-oak-eng", "Eng. 9 (Honors)", "crs-eng", "sch-oak", codes="01001"),  # its own code
            _class("cls-oak-study", "", "crs-study", "sch-oak"),  # no classCode, no subject
            _class("cls-river-art", "Art & Design", "crs-art", "sch-river"),
            _class("cls-river-geo", "GEO-2", "crs-geo", "sch-river", subjects="Mathematics"),  # its own title
            _class("cls-new-bio", "BIO-1", "crs-bio", "sch-new"),
        ],
        "users": [
            _user("t-lee", "teacher", "sch-oak", "lee@oak.example", "E100"),
            _user("t-diaz", "teacher", "sch-oak", "diaz@oak.example", "E101"),
            _user("t-kim", "teacher", "sch-river", "kim@river.example", "E200"),
            _user("t-new", "teacher", "sch-new", "new@new.example", "E300"),
            _user("s-1", "student", "sch-oak", "s1@students.example", "0700000001"),
            _user("s-2", "student", "sch-oak", "s2@students.example", "1000000002"),
            _user("s-3", "student", "sch-oak", "s3@students.example", "1000000003"),
            _user("s-4", "student", "sch-oak", "s4@students.example", "1000000004"),
            _user("s-5", "student", "sch-river", "s5@students.example", "2000000005"),
            _user("s-6", "student", "sch-river", "s6@students.example", "2000000006"),
            _user("s-7", "student", "sch-new", "s7@students.example", "3000000007"),
        ],
        "enrollments": [
            _enrol(klass, school, user, role)
            for klass, (school, teachers, students) in members.items()
            for role, users in (("teacher", teachers), ("student", students))
            for user in users
        ],
    }


def day2(tables: Tables) -> Tables:
    """Diaz's e-mail changes, s-6 leaves the district, and the geometry class is dropped."""
    users = [{**u, "email": "diaz@newmail.example"} if u["sourcedId"] == "t-diaz" else u for u in tables["users"]]
    return {
        **tables,
        "users": [u for u in users if u["sourcedId"] != "s-6"],
        "classes": [c for c in tables["classes"] if c["sourcedId"] != "cls-river-geo"],
        "enrollments": [e for e in tables["enrollments"]
                        if e["userSourcedId"] != "s-6" and e["classSourcedId"] != "cls-river-geo"],  # fmt: skip
    }


def day3(tables: Tables) -> Tables:
    """s-4 joins algebra."""
    return {**tables, "enrollments": [*tables["enrollments"], _enrol("cls-oak-alg", "sch-oak", "s-4", "student")]}


def write_package(tables: Tables, path: Path) -> Path:
    """A OneRoster 1.1 bulk zip of `tables`."""
    manifest = [("manifest.version", "1.0"), ("oneroster.version", "1.1")]
    manifest += [(f"file.{name}", "bulk") for name in COLUMNS] + [(f"file.{name}", "absent") for name in ABSENT]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("manifest.csv", _csv(["propertyName", "value"], [dict(zip(("propertyName", "value"), row))
                                                                           for row in manifest]))  # fmt: skip
        for name, header in COLUMNS.items():
            package.writestr(f"{name}.csv", _csv(header.split(","), tables[name]))
    return path


def _csv(header: list[str], rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, header, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# --- the expected groups, by hand ---------------------------------------------------------------------------
# (school, name, subject as the file carries it, teachers sorted, students sorted)

ALG = (OAK, "ALG_1_P1", "Math", ["diaz@oak.example", "lee@oak.example"], ["0700000001", "1000000002", "1000000003"])
ENG = (OAK, "Eng_9_Honors", "ELA", ["diaz@oak.example"], ["0700000001", "1000000004"])
STUDY = (OAK, "cls-oak-study", "All", ["lee@oak.example"], ["1000000002", "1000000004"])
ART = (RIVER, "Art__Design", "All", ["kim@river.example"], ["2000000005", "2000000006"])
GEO = (RIVER, "GEO-2", "Math", ["kim@river.example"], ["2000000005"])
DAY1_GROUPS = [ALG, ENG, STUDY, ART, GEO]

ALG_2 = (OAK, "ALG_1_P1", "Math", ["diaz@newmail.example", "lee@oak.example"], ["0700000001", "1000000002",
                                                                              "1000000003"])  # fmt: skip
ENG_2 = (OAK, "Eng_9_Honors", "ELA", ["diaz@newmail.example"], ["0700000001", "1000000004"])
ART_2 = (RIVER, "Art__Design", "All", ["kim@river.example"], ["2000000005"])
GEO_EMPTIED = (RIVER, "GEO-2", "", [], [])  # sent with its key fields only
DAY2_GROUPS = [ALG_2, ENG_2, STUDY, ART_2]  # the roster's groups on day 2
DAY2_SENT = [ALG_2, ENG_2, ART_2, GEO_EMPTIED]  # what changed since day 1 (STUDY did not)

ALG_3 = (OAK, "ALG_1_P1", "Math", ["diaz@newmail.example", "lee@oak.example"], ["0700000001", "1000000002",
                                                                              "1000000003", "1000000004"])  # fmt: skip
DAY3_SENT = [ALG_3]


def cers_after(*files: list[tuple]) -> dict[tuple[str, str, int], Group]:
    """What CERS holds after the given files' groups, in order: each group named is replaced whole, with "All"
    or no subject stored as None; the key is (school, lower-cased name, year), as CERS matches groups."""
    held = {}
    for groups in files:
        for school, name, subject, teachers, students in groups:
            held[(school, name.lower(), YEAR)] = Group(name, None if subject in ("", "All") else subject,
                                                       set(teachers), set(students))  # fmt: skip
    return held


DAY1_CERS = cers_after(DAY1_GROUPS)
DAY2_CERS = cers_after(DAY1_GROUPS, DAY2_SENT)
DAY3_CERS = cers_after(DAY1_GROUPS, DAY2_SENT, DAY3_SENT)


def rows_of(group: tuple) -> list[list[str]]:
    """One group's rows in a file: a first row with its subject, a row per teacher, a row per student."""
    school, name, subject, teachers, students = group
    key = [name, school, str(YEAR)]
    return ([key + [subject, "", ""]] + [key + ["", "", login] for login in teachers]
            + [key + ["", ssid, ""] for ssid in students])  # fmt: skip


def blocks(rows: list[list[str]] | tuple[tuple[str, ...], ...]) -> dict[tuple[str, str], list[list[str]]]:
    """A file's data rows as (school, name) -> that group's rows, checking that each group's rows and each
    school's groups are contiguous (a group or school seen again after another is an error)."""
    found: dict[tuple[str, str], list[list[str]]] = {}
    schools: list[str] = []
    previous = None
    for row in rows:
        key = (row[1], row[0])
        if key != previous:
            assert key not in found, f"the rows of {key} are not together"
            if not schools or schools[-1] != row[1]:
                assert row[1] not in schools, f"the groups of school {row[1]} are not together"
                schools.append(row[1])
            found[key], previous = [], key
        found[key].append(list(row))
    return found


def expected_blocks(groups: list[tuple]) -> dict[tuple[str, str], list[list[str]]]:
    return {(group[0], group[1]): rows_of(group) for group in groups}
