"""The OneRoster 1.2 REST API as a vendor's software sees it: the day-1 district of test_api_crawl uploaded
over SFTP, then crawled with a published 1.2 client nobody here wrote (timeback-oneroster, typed: pydantic
models that refuse a record lacking a required field), through its own methods: every collection page by
page, records by id, and every rostering relationship it offers. What it read is compared, sourcedId by
sourcedId, with the CSV files uploaded (the expectations of test_api_crawl, by the spec's meaning of each
endpoint).

The client needs Python >= 3.12: the test runs in .venv313 (make test-py313) and is skipped elsewhere.

Where the client departs from the 1.2 binding it is gone around, not followed: it unwraps /terms,
/gradingPeriods, /schools/{id}/terms and /terms/{id}/gradingPeriods under the keys `terms` and
`gradingPeriods` (and a single term, grading period under `term`, `gradingPeriod`), where the binding
(and rosterd) wrap academicSessions as `academicSessions` and `academicSession`. Those are read with the
client's own Paginator and transport under the binding's keys, and its AcademicSession model.
It also offers /classes/{id}/enrollments and /users/{id}/demographics, which are not among the binding's
rostering operations: rosterd answers them 404, and the test says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import polars as pl
import pytest

from .conftest import Tenant
from .test_api_crawl import District, Ledger, add_client, day_one_published, ids, listed

timeback = pytest.importorskip("timeback_oneroster", reason="timeback-oneroster needs Python >= 3.12: .venv313")
from timeback_oneroster.lib.pagination import Paginator  # noqa: E402  (only where the client is installed)

PAGE = 7  # small, so that every collection takes several pages
CRAWL_DEADLINE = 60.0  # a client loop that never ends (a page it cannot unwrap) fails instead of hanging

Fetch = Callable[[], Awaitable[list]]


def sourced(records: list) -> set[str]:
    found = [r.sourced_id for r in records]
    assert len(found) == len(set(found)), f"a page repeated a record: {sorted(found)}"
    return set(found)


@dataclasses.dataclass
class Crawl:
    """What the client is asked, with what the CSVs say each answer must hold."""

    client: object
    district: District
    checks: list[tuple[str, Fetch, set[str]]] = dataclasses.field(default_factory=list)

    def expect(self, context: str, fetch: Fetch, expected: set[str]) -> None:
        self.checks.append((context, fetch, expected))

    def sessions(self, path: str) -> Fetch:
        """An academicSessions list under the binding's key, through the client's own Paginator."""
        transport = self.client.get_transport()
        return lambda: Paginator(transport, f"{transport.paths.rostering}/{path}", unwrap_key="academicSessions",
                                 limit=PAGE, transform=timeback.AcademicSession.model_validate).to_list()  # fmt: skip

    async def run(self, ledger: Ledger) -> None:
        async def one(context: str, fetch: Fetch, expected: set[str]) -> None:
            try:
                ledger.same_ids(context, sourced(await fetch()), expected)
            except (timeback.TimebackError, ValueError, KeyError) as refusal:  # pydantic's errors are ValueErrors
                ledger.unexpected.append(f"{context}: the client refused: {type(refusal).__name__}: {refusal}")

        await asyncio.wait_for(asyncio.gather(*(one(*check) for check in self.checks)), CRAWL_DEADLINE)


def collections(crawl: Crawl) -> None:
    """The 12 collections, PAGE records at a time, with list_all."""
    c, expected = crawl.client, crawl.district.collections()
    for name, resource in (("orgs", c.orgs), ("schools", c.schools), ("academicSessions", c.academic_sessions),
                           ("courses", c.courses), ("classes", c.classes), ("users", c.users),
                           ("students", c.students), ("teachers", c.teachers), ("enrollments", c.enrollments),
                           ("demographics", c.demographics)):  # fmt: skip
        crawl.expect(f"{name}.list_all", lambda r=resource: r.list_all(limit=PAGE), expected[name])
    for name in ("terms", "gradingPeriods"):
        crawl.expect(f"{name} (Paginator)", crawl.sessions(name), expected[name])


def single_records(crawl: Crawl) -> None:
    """Every record of every collection by its id, with the client's get (a term through the transport)."""
    c, expected = crawl.client, crawl.district.collections()

    async def got(resource: object, sourced_id: str) -> list:
        return [await resource.get(sourced_id)]

    async def term(sourced_id: str) -> list:
        transport = c.get_transport()
        found = await transport.get(f"{transport.paths.rostering}/terms/{sourced_id}")
        return [timeback.AcademicSession.model_validate(found["academicSession"])]

    async def grading_period(sourced_id: str) -> list:
        return [await c.grading_periods(sourced_id).get()]  # the scoped get unwraps `academicSession`

    for name, fetch in (("orgs", lambda i: got(c.orgs, i)), ("schools", lambda i: got(c.schools, i)),
                        ("academicSessions", lambda i: got(c.academic_sessions, i)), ("terms", term),
                        ("gradingPeriods", grading_period), ("courses", lambda i: got(c.courses, i)),
                        ("classes", lambda i: got(c.classes, i)), ("users", lambda i: got(c.users, i)),
                        ("students", lambda i: got(c.students, i)), ("teachers", lambda i: got(c.teachers, i)),
                        ("enrollments", lambda i: got(c.enrollments, i)),
                        ("demographics", lambda i: got(c.demographics, i))):  # fmt: skip
        for sourced_id in sorted(expected[name]):
            crawl.expect(f"{name}.get({sourced_id!r})", lambda f=fetch, i=sourced_id: f(i), {sourced_id})


def relationships(crawl: Crawl) -> None:
    """Every rostering relationship the client offers, for every parent."""
    c, d = crawl.client, crawl.district
    expected, expect = d.collections(), crawl.expect
    for school in sorted(expected["schools"]):
        at = c.schools(school)
        expect(f"schools({school!r}).classes", lambda s=at: s.classes(limit=PAGE), d.classes_at(school))
        expect(f"schools({school!r}).students", lambda s=at: s.students(limit=PAGE), d.users_at(school, "student"))
        expect(f"schools({school!r}).teachers", lambda s=at: s.teachers(limit=PAGE), d.users_at(school, "teacher"))
        expect(f"schools({school!r}).courses", lambda s=at: s.courses(limit=PAGE),
               ids(d.frame("courses"), pl.col("orgSourcedId") == school))  # fmt: skip
        expect(f"schools({school!r}).enrollments", lambda s=at: s.enrollments(limit=PAGE),
               ids(d.frame("enrollments"), pl.col("schoolSourcedId") == school))  # fmt: skip
        expect(f"schools({school!r}).terms (Paginator)", crawl.sessions(f"schools/{school}/terms"), d.terms_at(school))
        for class_id in sorted(d.classes_at(school)):
            pair = at.class_(class_id)
            context = f"schools({school!r}).class_({class_id!r})"
            in_class = ids(d.enrolled(in_class=class_id))
            expect(f"{context}.enrollments", lambda p=pair: p.enrollments(limit=PAGE), in_class)
            expect(f"{context}.students", lambda p=pair: p.students(limit=PAGE), d.people_of_class(class_id, "student"))
            expect(f"{context}.teachers", lambda p=pair: p.teachers(limit=PAGE), d.people_of_class(class_id, "teacher"))
    for class_id in sorted(expected["classes"]):
        of = c.classes(class_id)
        for role, fetch in (("student", of.students), ("teacher", of.teachers)):
            expect(f"classes({class_id!r}).{role}s", lambda f=fetch: f(limit=PAGE), d.people_of_class(class_id, role))
    sessions = d.frame("academicSessions")
    for term in sorted(expected["terms"]):
        taught = ids(d.frame("classes"), listed("termSourcedIds").list.contains(term))
        assert taught, term  # the district as uploaded teaches classes in each term
        expect(f"terms({term!r}).classes", lambda t=c.terms(term): t.classes(limit=PAGE), taught)
        expect(f"terms({term!r}).gradingPeriods (Paginator)", crawl.sessions(f"terms/{term}/gradingPeriods"),
               ids(sessions, (pl.col("type") == "gradingPeriod") & (pl.col("parentSourcedId") == term)))  # fmt: skip
    for course in sorted(expected["courses"]):
        expect(f"courses({course!r}).classes", lambda k=c.courses(course): k.classes(limit=PAGE),
               ids(d.frame("classes"), pl.col("courseSourcedId") == course))  # fmt: skip
    for user in sorted(expected["users"]):
        expect(f"users({user!r}).classes", lambda u=c.users(user): u.classes(limit=PAGE), d.classes_of_user(user))
    for role, resource in (("student", c.students), ("teacher", c.teachers)):
        for user in sorted(expected[f"{role}s"]):
            expect(f"{role}s({user!r}).classes", lambda u=resource(user): u.classes(limit=PAGE),
                   d.classes_of_user(user, role))  # fmt: skip


async def crawled(base_url: str, client_id: str, secret: str, district: District) -> Ledger:
    ledger = Ledger()
    async with timeback.OneRosterClient(base_url=base_url, auth_url=base_url + "/oauth2/token",
                                        client_id=client_id, client_secret=secret) as client:  # fmt: skip
        crawl = Crawl(client, district)
        collections(crawl)
        single_records(crawl)
        relationships(crawl)
        await crawl.run(ledger)
        # a student is not a teacher, nor the district a school
        for resource, other_kind in ((client.teachers, "stu-0001-0001"), (client.schools, "dst-0001")):
            with pytest.raises(timeback.NotFoundError):
                await resource.get(other_kind)
        # the client's extensions beyond the binding's 41 operations are not served
        for extension in (client.classes("cls-0001-t001-p1").enrollments, client.users("stu-0001-0001").demographics):
            with pytest.raises(timeback.NotFoundError):
                await extension()
    return ledger


def test_a_published_1p2_client_crawls_every_collection_record_and_relationship(
    rosterd, tenants: dict[str, Tenant]
) -> None:
    daemon, base_url, day1 = day_one_published(rosterd, tenants)
    asyncio.run(crawled(base_url, *add_client(daemon), District(day1))).finish()
