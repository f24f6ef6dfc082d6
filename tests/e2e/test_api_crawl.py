"""The OneRoster REST API as a vendor's software sees it: day 1 of a district uploaded over SFTP, then every
one of the 41 operations of 1.1 crawled with a published client nobody here wrote
(strongmind-oneroster-client, generated from the 1EdTech 1.1 OpenAPI document; it refuses a record that lacks
a field the document requires or holds a value outside its enumerations), and what it read compared with the
CSV files uploaded; then day 2, and the `dateLastModified` delta compared with the change between the days.

Every expected value is read off the uploaded tables with the 1.1 spec's meaning of each endpoint (the
students of a class: the users with a student enrollment in it; the terms: sessions of type term; ...).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import oneroster_client
import polars as pl
import pytest
import requests

from daemon.generator.churn import Churn, churn
from daemon.generator.generate import DistrictSpec, generate, write_zip

from .conftest import ROSTERD, RunningDaemon, Tenant

SPEC = DistrictSpec(schools=2, students_per_school=12, teachers_per_school=2, enrollments_per_student=3)
TARGET = "crawler"
API_TARGET = "\n".join([
    "[[tenants.targets]]", 'type = "api"', f'name = "{TARGET}"', 'versions = ["1.1", "1.2"]',
    "rate_limit = { requests_per_second = 10000, burst = 10000 }",  # a crawl is hundreds of requests at once
])  # fmt: skip
PAGE = 7  # small, so that every collection takes several pages
DEADLINE = 45.0

class Ledger:
    """Every difference the crawl finds, so that one run reports them all (the test fails listing them)."""

    def __init__(self) -> None:
        self.unexpected: list[str] = []

    def same(self, context: str, served: object, expected: object) -> None:
        if served != expected:
            self.unexpected.append(f"{context}: served {served!r}, the CSV says {expected!r}")

    def same_ids(self, context: str, served: set[str], expected: set[str]) -> None:
        self.same(context, sorted(served), sorted(expected))

    def finish(self) -> None:
        assert not self.unexpected, f"{len(self.unexpected)} mismatches:\n" + "\n".join(self.unexpected[:60])


# -- the district as uploaded ----------------------------------------------------------------------------


def day_one(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The generated district (a school year and two semesters) with a session of type term and a grading
    period in it, and the first teacher's classes at each school taught in that term, so that /terms,
    /gradingPeriods and their relationships have something to serve; and the district office without an
    identifier (optional in orgs.csv, and often blank)."""
    sessions = tables["academicSessions"]
    extra = pl.DataFrame({
        "sourcedId": ["trm-2027-q1", "gp-2027-q1a"], "title": ["Quarter 1", "Quarter 1, first half"],
        "type": ["term", "gradingPeriod"], "startDate": ["2026-08-15", "2026-08-15"],
        "endDate": ["2026-10-16", "2026-09-15"], "parentSourcedId": ["ay-2027", "trm-2027-q1"],
        "schoolYear": ["2027", "2027"],
    })  # fmt: skip
    extra = extra.select(pl.col(c) if c in extra.columns else pl.lit("").alias(c) for c in sessions.columns)
    first_teacher = pl.col("sourcedId").str.contains(r"-t001-p\d+$")
    terms = pl.when(first_teacher).then(pl.lit("trm-2027-q1")).otherwise(pl.col("termSourcedIds"))
    identifier = pl.when(pl.col("type") == "district").then(pl.lit("")).otherwise(pl.col("identifier"))
    return {**tables, "academicSessions": pl.concat([sessions, extra]),
            "classes": tables["classes"].with_columns(terms.alias("termSourcedIds")),
            "orgs": tables["orgs"].with_columns(identifier.alias("identifier"))}  # fmt: skip


def ids(frame: pl.DataFrame, condition: pl.Expr | None = None) -> set[str]:
    return set((frame if condition is None else frame.filter(condition))["sourcedId"])


def listed(column: str) -> pl.Expr:
    """A CSV list column (comma-separated ids or values) as a list."""
    return pl.col(column).str.split(",").list.eval(pl.element().filter(pl.element() != ""))


@dataclasses.dataclass(frozen=True)
class District:
    """The uploaded CSV tables and what each endpoint must answer, by the spec's meaning of it."""

    tables: dict[str, pl.DataFrame]

    def frame(self, entity: str) -> pl.DataFrame:
        return self.tables[entity]

    def collections(self) -> dict[str, set[str]]:
        orgs, sessions, users = self.frame("orgs"), self.frame("academicSessions"), self.frame("users")
        return {
            "orgs": ids(orgs), "schools": ids(orgs, pl.col("type") == "school"),
            "academicSessions": ids(sessions), "terms": ids(sessions, pl.col("type") == "term"),
            "gradingPeriods": ids(sessions, pl.col("type") == "gradingPeriod"),
            "courses": ids(self.frame("courses")), "classes": ids(self.frame("classes")),
            "users": ids(users), "students": ids(users, pl.col("role") == "student"),
            "teachers": ids(users, pl.col("role") == "teacher"),
            "enrollments": ids(self.frame("enrollments")), "demographics": ids(self.frame("demographics")),
        }  # fmt: skip

    def enrolled(self, role: str | None = None, *, in_class: str | None = None, user: str | None = None) -> pl.DataFrame:
        found = self.frame("enrollments")
        for column, value in (("role", role), ("classSourcedId", in_class), ("userSourcedId", user)):
            if value is not None:
                found = found.filter(pl.col(column) == value)
        return found

    def people_of_class(self, class_id: str, role: str) -> set[str]:
        return set(self.enrolled(role, in_class=class_id)["userSourcedId"])

    def classes_of_user(self, user: str, role: str | None = None) -> set[str]:
        return set(self.enrolled(role, user=user)["classSourcedId"])

    def users_at(self, school: str, role: str) -> set[str]:
        users = self.frame("users").filter(pl.col("role") == role)
        return ids(users, listed("orgSourcedIds").list.contains(school))

    def classes_at(self, school: str) -> set[str]:
        return ids(self.frame("classes"), pl.col("schoolSourcedId") == school)

    def terms_at(self, school: str) -> set[str]:
        """Sessions of type term that the school's classes are taught in."""
        used = self.frame("classes").filter(pl.col("schoolSourcedId") == school).select(listed("termSourcedIds"))
        return self.collections()["terms"] & set(used.to_series().explode().drop_nulls())

    def fields(self) -> dict[str, dict[str, dict[str, object]]]:
        """Per collection, per sourcedId, the fields the crawl compares, as the JSON binding must carry them."""
        t = self.tables

        def rows(entity: str, make: Callable[[dict], dict[str, object]]) -> dict[str, dict[str, object]]:
            return {row["sourcedId"]: make(row) for row in t[entity].iter_rows(named=True)}

        split = lambda value: [v for v in value.split(",") if v]  # noqa: E731
        return {
            "orgs": rows("orgs", lambda r: {"name": r["name"], "type": r["type"], "identifier": r["identifier"] or None,
                                            "parent": r["parentSourcedId"] or None}),
            "academicSessions": rows("academicSessions", lambda r: {
                "title": r["title"], "type": r["type"], "startDate": r["startDate"], "endDate": r["endDate"],
                "parent": r["parentSourcedId"] or None}),
            "courses": rows("courses", lambda r: {"title": r["title"], "courseCode": r["courseCode"],
                                                  "org": r["orgSourcedId"], "schoolYear": r["schoolYearSourcedId"]}),
            "classes": rows("classes", lambda r: {
                "title": r["title"], "classCode": r["classCode"], "classType": r["classType"],
                "school": r["schoolSourcedId"], "course": r["courseSourcedId"],
                "terms": sorted(split(r["termSourcedIds"]))}),
            "users": rows("users", lambda r: {
                "username": r["username"], "givenName": r["givenName"], "familyName": r["familyName"],
                "email": r["email"], "role": r["role"], "identifier": r["identifier"], "enabledUser": r["enabledUser"],
                "orgs": sorted(split(r["orgSourcedIds"])), "grades": split(r["grades"]),
                "userIds": sorted(re.findall(r"\{([^:}]+):([^}]*)\}", r["userIds"]))}),  # {type:identifier},...
            "enrollments": rows("enrollments", lambda r: {"user": r["userSourcedId"], "class": r["classSourcedId"],
                                                          "school": r["schoolSourcedId"], "role": r["role"],
                                                          "primary": r["primary"]}),
            "demographics": rows("demographics", lambda r: {"birthDate": r["birthDate"], "sex": r["sex"]}),
        }  # fmt: skip


def served_fields(collection: str, record: dict) -> dict[str, object]:
    """The compared fields of a record as served (references reduced to their sourcedIds)."""
    ref = lambda value: value["sourcedId"] if value else None  # noqa: E731
    refs = lambda values: sorted(v["sourcedId"] for v in values or [])  # noqa: E731
    truth = lambda value: str(value).lower() if value is not None else None  # noqa: E731  the client makes bools
    r = record
    return {
        "orgs": lambda: {"name": r.get("name"), "type": r.get("type"), "identifier": r.get("identifier") or None,
                         "parent": ref(r.get("parent"))},
        "academicSessions": lambda: {"title": r.get("title"), "type": r.get("type"), "startDate": r.get("startDate"),
                                     "endDate": r.get("endDate"), "parent": ref(r.get("parent"))},
        "courses": lambda: {"title": r.get("title"), "courseCode": r.get("courseCode"), "org": ref(r.get("org")),
                            "schoolYear": ref(r.get("schoolYear"))},
        "classes": lambda: {"title": r.get("title"), "classCode": r.get("classCode"), "classType": r.get("classType"),
                            "school": ref(r.get("school")), "course": ref(r.get("course")), "terms": refs(r.get("terms"))},
        "users": lambda: {k: r.get(k) for k in ("username", "givenName", "familyName", "email", "role", "identifier")}
        | {"enabledUser": truth(r.get("enabledUser")), "orgs": refs(r.get("orgs")), "grades": r.get("grades", []),
           "userIds": sorted((i["type"], i["identifier"]) for i in r.get("userIds", []))},
        "enrollments": lambda: {"user": ref(r.get("user")), "class": ref(r.get("class")),
                                "school": ref(r.get("school")), "role": r.get("role"), "primary": truth(r.get("primary"))},
        "demographics": lambda: {"birthDate": r.get("birthDate"), "sex": r.get("sex")},
    }[collection]()  # fmt: skip


# -- the client --------------------------------------------------------------------------------------------

# collection -> (the client's API class, its list method, its single-record method, JSON wrappers, the
# collection whose fields a record is compared with)
COLLECTIONS = {
    "academicSessions": ("AcademicSessionsManagementApi", "get_academic_sessions", "get_academic_session",
                         "academicSessions", "academicSession", "academicSessions"),
    "classes": ("ClassesManagementApi", "get_classes", "get_class", "classes", "class", "classes"),
    "courses": ("CoursesManagementApi", "get_courses", "get_course", "courses", "course", "courses"),
    "demographics": ("DemographicsManagementApi", "get_demographics", "get_demographic", "demographics",
                     "demographics", "demographics"),  # 1.1 wraps one record as `demographics` too
    "enrollments": ("EnrollmentsManagementApi", "get_enrollments", "get_enrollment", "enrollments", "enrollment",
                    "enrollments"),
    "gradingPeriods": ("GradingPeriodsManagementApi", "get_grading_periods", "get_grading_period",
                       "academicSessions", "academicSession", "academicSessions"),
    "orgs": ("OrgsManagementApi", "get_orgs", "get_org", "orgs", "org", "orgs"),
    "schools": ("SchoolsManagementApi", "get_schools", "get_school", "orgs", "org", "orgs"),
    "students": ("StudentsManagementApi", "get_students", "get_student", "users", "user", "users"),
    "teachers": ("TeachersManagementApi", "get_teachers", "get_teacher", "users", "user", "users"),
    "terms": ("TermsManagementApi", "get_terms", "get_term", "academicSessions", "academicSession",
              "academicSessions"),
    "users": ("UsersManagementApi", "get_users", "get_user", "users", "user", "users"),
}  # fmt: skip


class Crawler:
    """The strict 1.1 client with a bearer token; what it finds goes to the ledger."""

    def __init__(self, base_url: str, token: str, ledger: Ledger) -> None:
        config = oneroster_client.Configuration()
        config.host = base_url + "/ims/oneroster/v1p1"
        config.access_token = token
        self.client = oneroster_client.ApiClient(config)
        self.ledger = ledger

    def call(self, api: str, method: str, *args: str, **query: object) -> tuple[dict, dict]:
        """One call of the client's own method: the record or page it parsed, as JSON, and the headers. A
        refusal is noted, and the call made again for its raw JSON so that the crawl can go on."""
        operation = getattr(getattr(oneroster_client, api)(self.client), f"{method}_with_http_info")
        try:
            parsed, _status, headers = operation(*args, **query)
        except ValueError as refusal:
            self.ledger.unexpected.append(f"the client refused {method}{args}: {refusal}")
            raw, _status, headers = operation(*args, _preload_content=False, **query)
            return raw.json(), headers
        return self.client.sanitize_for_serialization(parsed), headers

    def pages(self, api: str, method: str, wrapper: str, *args: str, **query: object) -> list[dict]:
        """Every record of a collection, PAGE at a time with limit and offset, up to X-Total-Count."""
        found: list[dict] = []
        offset, total = 0, None
        while total is None or offset < total:
            page, headers = self.call(api, method, *args, limit=PAGE, offset=offset, **query)
            total = int(headers["X-Total-Count"])
            records = page.get(wrapper, [])
            assert records or offset >= total, (method, args, offset, total)
            found += records
            offset += PAGE
        assert len(found) == total, (method, args, len(found), total)
        sourced = [r["sourcedId"] for r in found]
        assert len(sourced) == len(set(sourced)), f"{method}{args}: a page repeated a record"
        return found

    def check_ids(self, expected: set[str], api: str, method: str, wrapper: str, *args: str) -> None:
        served = {r["sourcedId"] for r in self.pages(api, method, wrapper, *args)}
        self.ledger.same_ids(f"{method}{args}", served, expected)


# -- the daemon, a client of the API and plain HTTP --------------------------------------------------------


def send(daemon: RunningDaemon, tables: dict[str, pl.DataFrame], name: str) -> None:
    write_zip(tables, daemon.client_dir / name, SPEC.version)
    sent = daemon.sftp_batch("north", [f"put {name} inbox/{name}"])
    assert sent.returncode == 0, sent.stderr


def accepted(daemon: RunningDaemon, name: str) -> dict:
    receipt = daemon.wait_for_receipt("north", name)
    assert receipt["state"] == "accepted", receipt
    return receipt


def published(daemon: RunningDaemon, receipt: dict) -> None:
    """Wait for the api target's delivery of the upload (its publication) to be made."""
    path = daemon.results("north") / f"{receipt['file']}.{receipt['upload_id']}.json"
    deadline = time.monotonic() + DEADLINE
    state = None
    while time.monotonic() < deadline:
        found = [d for d in json.loads(path.read_text()).get("deliveries", []) if d["target"] == TARGET]
        state = found[0]["state"] if found else None
        if state == "delivered":
            return
        assert state != "dead", found
        time.sleep(0.2)
    raise AssertionError(f"the api publication of {receipt['file']} was not made (last: {state})\n{daemon.diagnosis()}")


def add_client(daemon: RunningDaemon) -> tuple[str, str]:
    made = subprocess.run([str(ROSTERD), "api-client", "add", "north", TARGET, "--config", str(daemon.config)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert made.returncode == 0, made.stderr
    found = dict(re.findall(r"^(client_id|client_secret): (\S+)$", made.stdout, re.M))
    return found["client_id"], found["client_secret"]


def day_one_published(
    rosterd: Callable[..., RunningDaemon], tenants: dict[str, Tenant]
) -> tuple[RunningDaemon, str, dict[str, pl.DataFrame]]:
    """A daemon serving the API, with day 1 uploaded and published: the daemon, the API's URL, day 1's tables."""
    daemon = rosterd(dataclasses.replace(tenants["north"], extra=API_TARGET), extra_config="[api]\nport = 0\n")
    base_url = f"http://127.0.0.1:{daemon.wait_for_event('api.started')['port']}"
    day1 = day_one(generate(SPEC))
    send(daemon, day1, "day1.zip")
    published(daemon, accepted(daemon, "day1.zip"))
    return daemon, base_url, day1


def fetch_token(base_url: str, client_id: str, secret: str) -> str:
    """OAuth 2.0 client credentials as SDS sends them: HTTP Basic and grant_type in the form."""
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    request = urllib.request.Request(base_url + "/oauth2/token", data=b"grant_type=client_credentials",
                                     headers={"Authorization": f"Basic {basic}",
                                              "Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as answer:
        granted = json.load(answer)
    assert granted["token_type"].lower() == "bearer" and granted["expires_in"] > 0, granted
    return granted["access_token"]


def get_json(base_url: str, token: str, path: str, **query: object) -> tuple[dict, dict]:
    """One 1.1 GET over plain HTTP: the JSON body and the headers."""
    url = f"{base_url}/ims/oneroster/v1p1/{path}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer), dict(answer.headers)


def raw_pages(base_url: str, token: str, collection: str, **query: str) -> list[dict]:
    """A whole 1.1 collection over plain HTTP (limit and offset, up to X-Total-Count)."""
    found: list[dict] = []
    offset, total = 0, None
    while total is None or offset < total:
        page, headers = get_json(base_url, token, collection, **query, limit=PAGE, offset=offset)
        total = int(headers["X-Total-Count"])
        found += page[collection]
        offset += PAGE
    assert len(found) == total
    return found


def last_seen_active(base_url: str, token: str, user: str) -> str:
    """Poll /users/{user}, a user day 2 removes, until it is served as tobedeleted: the moment just before
    the last request that still found it active (day 1 was served until after that moment)."""
    deadline, last = time.monotonic() + DEADLINE, None
    while time.monotonic() < deadline:
        asked = iso_z(datetime.now(UTC))
        if get_json(base_url, token, f"users/{user}")[0]["user"]["status"] == "tobedeleted":
            assert last is not None, "day 2 was served before the first poll"
            return last
        last = asked
        time.sleep(0.01)
    raise AssertionError(f"{user} was not served as tobedeleted within {DEADLINE}s")


# -- the crawl ---------------------------------------------------------------------------------------------


def crawl_collections(crawler: Crawler, district: District) -> None:
    """All 12 collections, page by page; each equals the CSV's records of its kind, field by field."""
    expected_ids, expected_fields = district.collections(), district.fields()
    for collection, (api, listing, _one, wrapper, _single, compared) in COLLECTIONS.items():
        records = crawler.pages(api, listing, wrapper)
        crawler.ledger.same_ids(listing, {r["sourcedId"] for r in records}, expected_ids[collection])
        for record in records:
            context = f"{listing}: {record['sourcedId']}"
            crawler.ledger.same(context + " status", record["status"], "active")
            crawler.ledger.same(context, served_fields(compared, record), expected_fields[compared][record["sourcedId"]])


def crawl_single_records(crawler: Crawler, district: District) -> None:
    """Each record by its id: every user, and up to five of every other collection (the first ones and the
    last); and a student is not found under /teachers, nor a district under /schools."""
    expected_fields = district.fields()
    for collection, (api, _listing, one, _wrapper, single, compared) in COLLECTIONS.items():
        chosen = sorted(district.collections()[collection])
        for sourced_id in chosen if collection in ("users", "students", "teachers") else sorted({*chosen[:3], *chosen[-2:]}):
            try:
                record = crawler.call(api, one, sourced_id)[0][single]
            except requests.HTTPError as error:  # how this client reports an error status
                crawler.ledger.same_ids(f"{one}({sourced_id!r}): {error.response.status_code}", set(), {sourced_id})
                continue
            crawler.ledger.same(f"{one}({sourced_id!r})", served_fields(compared, record),
                                expected_fields[compared][sourced_id])  # fmt: skip
    for api, one, other_kind in (("TeachersManagementApi", "get_teacher", "stu-0001-0001"),
                                 ("SchoolsManagementApi", "get_school", "dst-0001")):  # fmt: skip
        with pytest.raises(requests.HTTPError) as missing:
            crawler.call(api, one, other_kind)
        assert missing.value.response.status_code == 404


def crawl_relationships(crawler: Crawler, district: District) -> None:
    """The 17 relationship endpoints for every parent, each equal to what the CSVs relate."""
    c, check = district.collections(), crawler.check_ids
    for school in sorted(c["schools"]):
        at_school = district.classes_at(school)
        check(at_school, "ClassesManagementApi", "get_classes_for_school", "classes", school)
        check(ids(district.frame("courses"), pl.col("orgSourcedId") == school),
              "CoursesManagementApi", "get_courses_for_school", "courses", school)  # fmt: skip
        check(ids(district.frame("enrollments"), pl.col("schoolSourcedId") == school),
              "EnrollmentsManagementApi", "get_enrollments_for_school", "enrollments", school)  # fmt: skip
        check(district.users_at(school, "student"), "StudentsManagementApi", "get_students_for_school", "users", school)
        check(district.users_at(school, "teacher"), "TeachersManagementApi", "get_teachers_for_school", "users", school)
        check(district.terms_at(school), "TermsManagementApi", "get_terms_for_school", "academicSessions", school)
        for class_id in sorted(at_school):
            check(ids(district.enrolled(in_class=class_id)), "EnrollmentsManagementApi",
                  "get_enrollments_for_class_in_school", "enrollments", school, class_id)  # fmt: skip
            check(district.people_of_class(class_id, "student"), "StudentsManagementApi",
                  "get_students_for_class_in_school", "users", school, class_id)  # fmt: skip
            check(district.people_of_class(class_id, "teacher"), "TeachersManagementApi",
                  "get_teachers_for_class_in_school", "users", school, class_id)  # fmt: skip
    sessions = district.frame("academicSessions")
    for term in sorted(c["terms"]):
        taught = ids(district.frame("classes"), listed("termSourcedIds").list.contains(term))
        assert taught, term  # the district as uploaded teaches classes in each term
        check(taught, "ClassesManagementApi", "get_classes_for_term", "classes", term)
        check(ids(sessions, (pl.col("type") == "gradingPeriod") & (pl.col("parentSourcedId") == term)),
              "GradingPeriodsManagementApi", "get_grading_periods_for_term", "academicSessions", term)  # fmt: skip
    for course in sorted(c["courses"]):
        check(ids(district.frame("classes"), pl.col("courseSourcedId") == course),
              "ClassesManagementApi", "get_classes_for_course", "classes", course)  # fmt: skip
    for student in sorted(c["students"]):
        check(district.classes_of_user(student, "student"), "ClassesManagementApi", "get_classes_for_student",
              "classes", student)  # fmt: skip
    for teacher in sorted(c["teachers"]):
        check(district.classes_of_user(teacher, "teacher"), "ClassesManagementApi", "get_classes_for_teacher",
              "classes", teacher)  # fmt: skip
    for user in sorted(c["users"]):
        check(district.classes_of_user(user), "ClassesManagementApi", "get_classes_for_user", "classes", user)
    for class_id in sorted(c["classes"]):
        check(district.people_of_class(class_id, "student"), "StudentsManagementApi", "get_students_for_class",
              "users", class_id)  # fmt: skip
        check(district.people_of_class(class_id, "teacher"), "TeachersManagementApi", "get_teachers_for_class",
              "users", class_id)  # fmt: skip


# -- day 2 -------------------------------------------------------------------------------------------------


def change(before: pl.DataFrame, after: pl.DataFrame) -> tuple[set[str], set[str]]:
    """(added or updated, deleted) sourcedIds between two CSV days of one file, by comparing whole rows."""
    old = {row["sourcedId"]: row for row in before.iter_rows(named=True)}
    new = {row["sourcedId"]: row for row in after.iter_rows(named=True)}
    return {i for i, row in new.items() if old.get(i) != row}, set(old) - set(new)


def iso_z(moment: datetime) -> str:
    """The form dateLastModified is served in (milliseconds, Z), so that the two compare as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def past_its_second(moment: datetime) -> None:
    """Wait (a second at most) until the clock has left `moment`'s whole second."""
    boundary = moment.replace(microsecond=0) + timedelta(seconds=1)
    while datetime.now(UTC) < boundary:
        time.sleep(0.01)


# -- the test ----------------------------------------------------------------------------------------------


def test_a_published_client_crawls_every_endpoint_and_pulls_the_day_two_delta(
    rosterd, tenants: dict[str, Tenant]
) -> None:
    daemon, base_url, day1 = day_one_published(rosterd, tenants)
    token = fetch_token(base_url, *add_client(daemon))

    ledger = Ledger()
    crawler, district = Crawler(base_url, token, ledger), District(day1)
    crawl_collections(crawler, district)
    crawl_single_records(crawler, district)
    crawl_relationships(crawler, district)

    # day 2: the delta since T (after day 1's publication, before day 2's upload) is the change between the
    # days, deletions included. T's second ends before day 2 is sent, so that this check does not depend on
    # the sub-second precision of dateLastModified; the next one does.
    day2 = churn(day1, SPEC.version, Churn(withdrawn=2, arrivals=2, new_emails=1, period_changes=2)).bulk
    leaving = min(set(day1["users"]["sourcedId"]) - set(day2["users"]["sourcedId"]))
    moment = datetime.now(UTC)
    since = iso_z(moment)
    past_its_second(moment)
    send(daemon, day2, "day2.zip")
    still_day_one = last_seen_active(base_url, token, leaving)
    published(daemon, accepted(daemon, "day2.zip"))
    for collection in ("users", "enrollments", "classes"):
        changed, deleted = change(day1[collection], day2[collection])
        assert changed and (deleted or collection == "classes"), collection  # the churn touched each of them
        delta = raw_pages(base_url, token, collection, filter=f"dateLastModified>'{since}'")
        by_status = {status: sorted(r["sourcedId"] for r in delta if r["status"] == status)
                     for status in ("active", "tobedeleted")}  # fmt: skip
        ledger.same(f"{collection} since {since}", by_status, {"active": sorted(changed), "tobedeleted": sorted(deleted)})
        ledger.same(f"{collection} since {since}: records", len(delta), len(changed) + len(deleted))
        # and no change is dated before a moment at which the API still served day 1
        early = sorted((r["dateLastModified"], r["sourcedId"]) for r in delta if r["dateLastModified"] <= still_day_one)
        if early:
            found = f"{collection} {early[0][1]} dated {early[0][0]}, day 1 still served at {still_day_one}"
            ledger.unexpected.append(f"a change dated before it was served: {found}")
    ledger.finish()
