"""The OneRoster REST API against one running daemon: two tenants (north, south) with different districts, each
with a vendor scoped to one school's classes of one subject (their students and teachers) and a whole-district
vendor; north also has a rate-limited target and a 1.1-only one, south a target whose scope selects no class.

What each vendor should see is written out here from the generated tables and the scope rule in README
("Licence targets ... Who is sent") for the two scopes used, never by rosterd's scope code. Expected answers
(status, minor code, headers) come from /work/shared/reference/oneroster_rest.md and the rules in the
docstring of daemon/targets/api/query.py.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

import polars as pl
import pytest

from daemon.generator.generate import DistrictSpec, generate, write_zip
from daemon.store import Store
from daemon.passwords import hash_secret
from daemon.targets.api.auth import check_bearer

from .conftest import ROSTERD, RunningDaemon, Tenant, require_openssh
from .test_sftp_push import delivery

V11, V12 = "/ims/oneroster/v1p1", "/ims/oneroster/rostering/v1p2"
SCOPE = "https://purl.imsglobal.org/spec/or/{}/scope/"
SPECS = {
    "north": DistrictSpec(schools=2, students_per_school=6, teachers_per_school=2, enrollments_per_student=2),
    "south": DistrictSpec(schools=2, students_per_school=5, teachers_per_school=2, enrollments_per_student=2, seed=7),
}
PREFIX = {"north": "", "south": "s-"}  # south's sourcedIds all start with s-: no id is in both tenants
SCOPED = {"north": ("sch-0001", "Mathematics"), "south": ("s-sch-0002", "Life and Physical Sciences")}
FAST = "rate_limit = { requests_per_second = 10000.0, burst = 10000 }"
LEAKS = re.compile(r"(?i:traceback|polars|sqlite|\.parquet|\.py\b)|/work/|/tmp/|/state/|SELECT |INSERT | FROM |WHERE ")
ID_COLUMN = re.compile(r"^sourcedId$|SourcedIds?$")


# -- the districts, and what each vendor should see ------------------------------------------------------------


def district(tenant: str) -> dict[str, pl.DataFrame]:
    """The generated district with a term (its first semester made one) and a grading period of it that the
    school's first maths class runs in, so /terms and /gradingPeriods have records; ids prefixed per tenant."""
    tables = generate(SPECS[tenant])
    sessions = tables["academicSessions"].with_columns(
        type=pl.when(pl.col("sourcedId") == "sem-2027-1").then(pl.lit("term")).otherwise(pl.col("type")))
    period = sessions.filter(pl.col("sourcedId") == "sem-2027-1").with_columns(
        sourcedId=pl.lit("gp-2027-1"), title=pl.lit("Fall quarter 1"), type=pl.lit("gradingPeriod"),
        endDate=pl.lit("2026-10-20"), parentSourcedId=pl.lit("sem-2027-1"))  # fmt: skip
    first = tables["classes"].filter(pl.col("subjects") == "Mathematics")["sourcedId"][0]
    in_period = pl.when(pl.col("sourcedId") == first).then(pl.lit("sem-2027-1,gp-2027-1"))
    classes = tables["classes"].with_columns(termSourcedIds=in_period.otherwise("termSourcedIds"))
    tables = {**tables, "academicSessions": pl.concat([sessions, period]), "classes": classes}
    prefix = PREFIX[tenant]
    return {entity: frame.with_columns(pl.col(c).str.replace_all(r"(^|,)([^,])", f"${{1}}{prefix}${{2}}")
                                       for c in frame.columns if ID_COLUMN.search(c))
            for entity, frame in tables.items()}  # fmt: skip


def ids(frame: pl.DataFrame) -> set[str]:
    return set(frame["sourcedId"])


def listed(column: str, value: str) -> pl.Expr:
    """A comma list column of the CSV holds `value`."""
    return pl.col(column).fill_null("").str.split(",").list.contains(value)


def with_parents(sessions: pl.DataFrame, wanted: set[str]) -> pl.DataFrame:
    """The sessions `wanted` names, with their parents up to the root (README: so references hold)."""
    while True:
        parents = set(sessions.filter(pl.col("sourcedId").is_in(wanted))["parentSourcedId"]) - {"", None}
        if parents <= wanted:
            return sessions.filter(pl.col("sourcedId").is_in(wanted))
        wanted = wanted | parents


def view(tables: dict[str, pl.DataFrame], scoped: tuple[str, str] | None) -> dict[str, pl.DataFrame]:
    """README's rule written out. `scoped` (school, subject): orgs = [school], subjects = [subject], roles =
    ["student", "teacher"] (the school's classes of the subject; their student and teacher enrollments; the
    people of those only; courses those classes use and the school's courses of the subject; the school, its
    district and the courses' orgs;
    the sessions the classes and courses name, with parents, and the sessions below the classes' terms; the
    people's demographics). None: the empty scope, the roster unchanged."""
    classes, courses, enrollments = tables["classes"], tables["courses"], tables["enrollments"]
    school = scoped[0] if scoped else None
    if scoped is not None:
        maths = pl.col("subjects").str.to_lowercase().str.split(",").list.contains(scoped[1].lower())
        classes = classes.filter((pl.col("schoolSourcedId") == school) & maths)
        enrollments = enrollments.filter(pl.col("classSourcedId").is_in(list(classes["sourcedId"]))
                                         & pl.col("role").is_in(["student", "teacher"]))  # fmt: skip
        courses = courses.filter(pl.col("sourcedId").is_in(list(classes["courseSourcedId"]))
                                 | ((pl.col("orgSourcedId") == school) & maths))  # fmt: skip
    people = set(enrollments["userSourcedId"]) if school is not None else ids(tables["users"])
    users = tables["users"].filter(pl.col("sourcedId").is_in(people))
    orgs = tables["orgs"]
    if school is not None:
        district_id = orgs.filter(pl.col("type") == "district")["sourcedId"][0]
        orgs = orgs.filter(pl.col("sourcedId").is_in([school, district_id, *courses["orgSourcedId"]]))
    terms = {t for listed in classes["termSourcedIds"] for t in listed.split(",")}
    sessions = tables["academicSessions"]
    if school is not None:  # named ones with their parents, and the grading periods below the classes' terms
        below = set(sessions.filter(pl.col("parentSourcedId").is_in(list(terms)))["sourcedId"])
        sessions = with_parents(sessions, terms | set(courses["schoolYearSourcedId"]) | below)
    return {
        "orgs": orgs, "academicSessions": sessions, "courses": courses,
        "classes": classes, "enrollments": enrollments, "users": users,
        "demographics": tables["demographics"].filter(pl.col("sourcedId").is_in(people)),
    }  # fmt: skip


COLLECTIONS = {  # path -> (stored entity, what makes a record one of these, wrapper)
    "academicSessions": ("academicSessions", None, "academicSessions"),
    "classes": ("classes", None, "classes"),
    "courses": ("courses", None, "courses"),
    "demographics": ("demographics", None, "demographics"),
    "enrollments": ("enrollments", None, "enrollments"),
    "gradingPeriods": ("academicSessions", pl.col("type") == "gradingPeriod", "academicSessions"),
    "orgs": ("orgs", None, "orgs"),
    "schools": ("orgs", pl.col("type") == "school", "orgs"),
    "students": ("users", pl.col("role") == "student", "users"),
    "teachers": ("users", pl.col("role") == "teacher", "users"),
    "terms": ("academicSessions", pl.col("type") == "term", "academicSessions"),
    "users": ("users", None, "users"),
}
SINGULAR = {"academicSessions": "academicSession", "classes": "class", "courses": "course",
            "demographics": "demographics", "enrollments": "enrollment", "orgs": "org", "users": "user"}  # fmt: skip


def of(v: dict[str, pl.DataFrame], collection: str) -> pl.DataFrame:
    entity, where, _ = COLLECTIONS[collection]
    return v[entity] if where is None else v[entity].filter(where)


def enrolled(v: dict[str, pl.DataFrame], **match: str) -> pl.DataFrame:
    found = v["enrollments"]
    for column, value in match.items():
        found = found.filter(pl.col(column) == value)
    return found


def relationships(v: dict[str, pl.DataFrame]) -> Iterator[tuple[str, str, set[str]]]:
    """(path after the version prefix, child collection, expected sourcedIds) for each of the 17 relationship
    operations, over a few parents of each kind that the vendor sees."""
    users = v["users"]

    def classes_of(user: str) -> set[str]:
        return set(enrolled(v, userSourcedId=user)["classSourcedId"])

    def people(klass: str, role: str) -> set[str]:
        return set(enrolled(v, classSourcedId=klass, role=role)["userSourcedId"]) & ids(of(v, f"{role}s"))

    for school in sorted(ids(of(v, "schools"))):
        classes = v["classes"].filter(pl.col("schoolSourcedId") == school)
        yield f"/schools/{school}/classes", "classes", ids(classes)
        yield f"/schools/{school}/courses", "courses", ids(v["courses"].filter(pl.col("orgSourcedId") == school))
        yield f"/schools/{school}/enrollments", "enrollments", ids(enrolled(v, schoolSourcedId=school))
        for role in ("student", "teacher"):
            found = of(v, f"{role}s").filter(listed("orgSourcedIds", school))
            yield f"/schools/{school}/{role}s", f"{role}s", ids(found)
        named = {t for terms in classes["termSourcedIds"] for t in terms.split(",")}
        yield f"/schools/{school}/terms", "terms", ids(of(v, "terms")) & named
        for klass in sorted(ids(classes))[:3]:
            in_class = ids(enrolled(v, classSourcedId=klass))
            yield f"/schools/{school}/classes/{klass}/enrollments", "enrollments", in_class
            for role in ("student", "teacher"):
                yield f"/schools/{school}/classes/{klass}/{role}s", f"{role}s", people(klass, role)
    for term in sorted(ids(of(v, "terms"))):
        yield f"/terms/{term}/classes", "classes", ids(v["classes"].filter(listed("termSourcedIds", term)))
        periods = of(v, "gradingPeriods").filter(pl.col("parentSourcedId") == term)
        yield f"/terms/{term}/gradingPeriods", "gradingPeriods", ids(periods)
    for course in sorted(ids(v["courses"]))[:3]:
        yield f"/courses/{course}/classes", "classes", ids(v["classes"].filter(pl.col("courseSourcedId") == course))
    for kind in ("students", "teachers", "users"):
        for user in sorted(ids(of(v, kind)))[:3]:
            yield f"/{kind}/{user}/classes", "classes", classes_of(user)
    for klass in sorted(ids(v["classes"]))[:4]:
        for role in ("student", "teacher"):
            yield f"/classes/{klass}/{role}s", f"{role}s", people(klass, role)
    assert len(users), "a vendor with no people tells nothing"


# -- HTTP -------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> dict:
        return json.loads(self.text)

    @property
    def minor(self) -> str | None:
        try:
            return self.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None


@dataclasses.dataclass
class Api:
    port: int

    def call(self, method: str, path: str, headers: dict[str, str] | None = None, body: str | None = None) -> Answer:
        """One request with the path sent as given (no client-side normalisation of `..` or `%2F`)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            got = conn.getresponse()
            return Answer(got.status, {k.lower(): v for k, v in got.getheaders()}, got.read().decode("utf-8"))
        finally:
            conn.close()

    def get(self, path: str, token: str | None = None, **headers: str) -> Answer:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.call("GET", path, headers)

    def get_all(self, paths: list[str], token: str) -> list[Answer]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda p: self.get(p, token), paths))

    def token_answer(self, client_id: str, secret: str, scope: str | None = None, basic: bool = True) -> Answer:
        form = {"grant_type": "client_credentials"}
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if basic:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        else:
            form |= {"client_id": client_id, "client_secret": secret}
        if scope is not None:
            form["scope"] = scope
        return self.call("POST", "/oauth2/token", headers, urlencode(form))

    def token(self, client: tuple[str, str], scope: str | None = None) -> str:
        got = self.token_answer(*client, scope=scope)
        assert got.status == 200, got
        return got.json()["access_token"]


def refused(got: Answer, status: int, minor: str) -> None:
    """A refusal as the contract has it: the status, the status payload with its minor code, no internals."""
    assert got.status == status, got
    body = got.json()
    assert body["imsx_codeMajor"] == "failure" and body["imsx_severity"] == "error", body
    assert got.minor == minor, got
    assert not LEAKS.search(got.text), got


def found_ids(got: Answer, wrapper: str) -> list[str]:
    assert got.status == 200, got
    return [record["sourcedId"] for record in got.json()[wrapper]]


def every_sourced_id(value: object) -> Iterator[str]:
    """Every sourcedId anywhere in a body: the records' own and their references'."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "sourcedId" and isinstance(inner, str):
                yield inner
            else:
                yield from every_sourced_id(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from every_sourced_id(inner)


# -- the daemon -------------------------------------------------------------------------------------------------


def api_target(name: str, scope: str = "{}", *extra: str) -> str:
    return "\n".join(["[[tenants.targets]]", 'type = "api"', f'name = "{name}"', f"scope = {scope}", *extra])


def subject_scope(school: str, subject: str) -> str:
    return f'{{ orgs = ["{school}"], subjects = ["{subject}"], roles = ["student", "teacher"] }}'


@dataclasses.dataclass
class World:
    daemon: RunningDaemon
    api: Api
    tables: dict[str, dict[str, pl.DataFrame]]  # tenant -> the uploaded district
    clients: dict[tuple[str, str], tuple[str, str]]  # (tenant, target) -> (client id, secret)

    def add_client(self, tenant: str, target: str) -> tuple[str, str]:
        """A client made as an operator makes one: `rosterd api-client add` (about 3 s of CPU each)."""
        made = rosterd_cli(self.daemon, "api-client", "add", tenant, target)
        found = dict(re.findall(r"^(client_id|client_secret): (\S+)$", made, re.MULTILINE))
        return found["client_id"], found["client_secret"]

    def store_client(self, tenant: str, target: str) -> tuple[str, str]:
        """A client put straight into the daemon's store, as the command does, without its start-up time."""
        client_id, secret = f"{tenant}-{target}-{secrets.token_hex(8)}", secrets.token_urlsafe(32)
        store = Store(self.daemon.state / "rosterd.db")
        try:
            store.add_api_client(client_id, tenant, target, hash_secret(secret))
        finally:
            store.close()
        return client_id, secret

    def vendor_view(self, tenant: str, target: str) -> dict[str, pl.DataFrame]:
        return view(self.tables[tenant], SCOPED[tenant] if target == "scoped" else None)


def rosterd_cli(daemon: RunningDaemon, *args: str) -> str:
    done = subprocess.run([str(ROSTERD), *args, "--config", str(daemon.config)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# One daemon for the whole module: its tests go to one xdist worker (`make test` runs --dist loadgroup),
# instead of each worker starting its own two-tenant daemon.
pytestmark = pytest.mark.xdist_group("api_isolation")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, host_keys: Path, tenants: dict[str, Tenant]) -> Iterator[World]:
    require_openssh()
    targets = {
        "north": [api_target("scoped", subject_scope(*SCOPED["north"]), FAST), api_target("all", "{}", FAST),
                  api_target("limited", "{}", "rate_limit = { requests_per_second = 1.0, burst = 3 }"),
                  api_target("old", "{}", 'versions = ["1.1"]', "token_seconds = 60", FAST)],
        "south": [api_target("scoped", subject_scope(*SCOPED["south"]), FAST),
                  api_target("nobody", subject_scope("s-sch-0002", "Mathematics")), api_target("all", "{}", FAST)],
    }  # fmt: skip
    chosen = [dataclasses.replace(tenants[t], extra="\n".join(targets[t])) for t in ("north", "south")]
    daemon = RunningDaemon(tmp_path_factory.mktemp("api"), chosen, host_keys, "[api]\nport = 0\n")
    try:
        daemon.start()
        api = Api(daemon.wait_for_event("api.started")["port"])
        tables = {tenant: district(tenant) for tenant in ("north", "south")}
        for tenant, district_tables in tables.items():
            write_zip(district_tables, daemon.client_dir / f"{tenant}.zip", "1.1")
            sent = daemon.sftp_batch(tenant, [f"put {tenant}.zip inbox/{tenant}.zip"])
            assert sent.returncode == 0, sent.stderr
        world = World(daemon, api, tables, {})
        names = [(t, re.search(r'name = "(\w+)"', target).group(1)) for t in targets for target in targets[t]]
        made = [world.store_client(*pair) for pair in names]  # test_a_revoked_client... uses the command
        world.clients.update(zip(names, made, strict=True))
        for tenant in ("north", "south"):
            receipt = daemon.wait_for_receipt(tenant, f"{tenant}.zip")
            assert receipt["state"] == "accepted", receipt
            for name in (name for t, name in names if t == tenant):
                assert delivery(daemon, tenant, receipt, name)["state"] == "delivered", name
        yield world
    finally:
        daemon.close()


# -- 1. isolation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant,target", [(t, v) for t in ("north", "south") for v in ("scoped", "all")])
def test_a_vendor_sees_exactly_its_scope_through_every_operation(world: World, tenant: str, target: str) -> None:
    api = world.api
    token = api.token(world.clients[(tenant, target)])
    mine = world.vendor_view(tenant, target)
    other = "south" if tenant == "north" else "north"
    seen_anywhere = set().union(*(ids(frame) for frame in mine.values()))
    everything = {t: view(world.tables[t], None) for t in ("north", "south")}
    checked = 0
    for prefix in (V11, V12):
        # the 12 collections: exactly the in-scope records
        paths = [f"{prefix}/{c}?limit=5000" for c in COLLECTIONS]
        for collection, got in zip(COLLECTIONS, api.get_all(paths, token), strict=True):
            assert sorted(found_ids(got, COLLECTIONS[collection][2])) == sorted(ids(of(mine, collection))), \
                (prefix, collection)  # fmt: skip
            assert got.headers["x-total-count"] == str(of(mine, collection).height)
            assert set(every_sourced_id(got.json())) <= seen_anywhere, (prefix, collection)
            checked += 1
        # the 12 single records: each in-scope record by id; out-of-scope and the other tenant's ids are 404
        cases = []
        for collection in COLLECTIONS:
            inside = sorted(ids(of(mine, collection)))
            outside = sorted(ids(of(everything[tenant], collection)) - set(inside))[:4]
            foreign = sorted(ids(of(everything[other], collection)))[:3]
            cases += [(collection, i, True) for i in inside[:3]]
            cases += [(collection, i, False) for i in outside + foreign]
        # a record the vendor sees, asked for as what it is not: a teacher as a student, the district as a school
        cases += [("students", min(ids(of(mine, "teachers"))), False),
                  ("teachers", min(ids(of(mine, "students"))), False),
                  ("schools", min(ids(of(mine, "orgs")) - ids(of(mine, "schools"))), False)]
        answers = api.get_all([f"{prefix}/{c}/{quote(i)}" for c, i, _ in cases], token)
        for (collection, sourced_id, visible), got in zip(cases, answers, strict=True):
            if visible:
                entity = COLLECTIONS[collection][0]
                assert got.status == 200, (prefix, collection, sourced_id, got)
                assert got.json()[SINGULAR[entity]]["sourcedId"] == sourced_id
                assert set(every_sourced_id(got.json())) <= seen_anywhere, (prefix, collection, sourced_id)
            else:
                refused(got, 404, "unknownobject")
        checked += len(COLLECTIONS)
        # the 17 relationships: exactly the in-scope children of an in-scope parent
        expected = list(relationships(mine))
        answers = api.get_all([f"{prefix}{p}?limit=5000" for p, _, _ in expected], token)
        for (path, child, wanted), got in zip(expected, answers, strict=True):
            listed_ids = found_ids(got, COLLECTIONS[child][2])
            assert set(listed_ids) == wanted and len(listed_ids) == len(wanted), (prefix, path, listed_ids)
            assert set(every_sourced_id(got.json())) <= seen_anywhere, (prefix, path)
        checked += len({_shape(p) for p, _, _ in expected})
        # relationships whose parent is out of scope or the other tenant's: 404
        parents = _foreign_parents(mine, everything[tenant], everything[other])
        for path, got in zip(parents, api.get_all([prefix + p for p in parents], token), strict=True):
            refused(got, 404, "unknownobject")
        # filters never reach outside
        for collection, sourced_id in _foreign_ids(mine, everything[tenant], everything[other]):
            got = api.get(f"{prefix}/{collection}?" + urlencode({"filter": f"sourcedId='{sourced_id}'"}), token)
            assert found_ids(got, COLLECTIONS[collection][2]) == [] and got.headers["x-total-count"] == "0", got
    assert checked == 2 * 41, checked  # every operation of both versions was tried


def _shape(path: str) -> str:
    """/schools/sch-0001/classes/cls-1/students -> /schools/{id}/classes/{id}/students"""
    parts = path.strip("/").split("/")
    return "/" + "/".join(p if i % 2 == 0 else "{id}" for i, p in enumerate(parts))


def _foreign_ids(mine, own_all, other_all) -> list[tuple[str, str]]:
    """(collection, id) of records the vendor must not see: its tenant's out of scope and the other tenant's."""
    found = []
    for collection in ("users", "classes", "orgs", "enrollments"):
        outside = sorted(ids(of(own_all, collection)) - ids(of(mine, collection)))[:1]
        found += [(collection, i) for i in [*outside, sorted(ids(of(other_all, collection)))[0]]]
    return found


def _foreign_parents(mine, own_all, other_all) -> list[str]:
    """A relationship path of each of the 17 shapes with a parent the vendor does not see."""
    def hidden(collection: str) -> list[str]:
        outside = sorted(ids(of(own_all, collection)) - ids(of(mine, collection)))
        return outside[:1] + sorted(ids(of(other_all, collection)))[:1]

    paths = []
    for school in hidden("schools"):
        paths += [f"/schools/{school}/{c}" for c in ("classes", "courses", "enrollments", "students", "teachers",
                                                     "terms")]  # fmt: skip
    visible_school = sorted(ids(of(mine, "schools")))[0]
    for klass in hidden("classes"):
        paths += [f"/schools/{visible_school}/classes/{klass}/{c}" for c in ("enrollments", "students", "teachers")]
        paths += [f"/classes/{klass}/students", f"/classes/{klass}/teachers"]
    for term in hidden("terms"):
        paths += [f"/terms/{term}/classes", f"/terms/{term}/gradingPeriods"]
    paths += [f"/courses/{c}/classes" for c in hidden("courses")]
    for kind in ("students", "teachers", "users"):
        paths += [f"/{kind}/{u}/classes" for u in hidden(kind)]
    return paths


def test_a_scope_that_selects_no_class_is_published_empty(world: World) -> None:
    """south's `nobody` names a school with no Mathematics class: the vendor sees the school and its district
    (README rule 6) and no class, user or enrollment; it is published all the same (it once crashed)."""
    token = world.api.token(world.clients[("south", "nobody")])
    for prefix in (V11, V12):
        assert found_ids(world.api.get(f"{prefix}/classes", token), "classes") == []
        assert found_ids(world.api.get(f"{prefix}/users", token), "users") == []
        assert sorted(found_ids(world.api.get(f"{prefix}/orgs", token), "orgs")) == ["s-dst-0001", "s-sch-0002"]


# -- 2. tokens --------------------------------------------------------------------------------------------------


def test_requests_without_a_good_bearer_token_get_401(world: World) -> None:
    api, client = world.api, world.clients[("north", "all")]
    token = api.token(client)
    path = f"{V11}/users"
    assert api.get(path, token).status == 200
    changed = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    basic = "Basic " + base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()
    for prefix in (V11, V12):
        for authorization in (None, "Bearer forged-token-0123456789abcdef", f"Bearer {changed}", basic, token,
                              "Bearer ", f"Bearer {token} {token}"):  # fmt: skip
            headers = {} if authorization is None else {"Authorization": authorization}
            got = api.get(f"{prefix}/users", **headers)
            refused(got, 401, "unauthorisedrequest")
            assert got.headers.get("www-authenticate", "").lower().startswith("bearer"), (headers, got)
            assert "users" not in got.json()
    wrong = api.token_answer(client[0], client[1] + "x")
    assert wrong.status == 401 and wrong.json()["error"] == "invalid_client", wrong
    assert "www-authenticate" in wrong.headers  # HTTP Basic was used (RFC 6749 section 5.2)
    by_form = api.token_answer(client[0], "not-the-secret", basic=False)
    assert by_form.status == 401 and by_form.json()["error"] == "invalid_client", by_form
    unknown = api.token_answer("no-such-client", client[1])
    assert unknown.status == 401 and unknown.json()["error"] == "invalid_client", unknown


def test_a_token_stops_at_its_expiry(world: World) -> None:
    """north's `old` target gives 60-second tokens. Waiting is not needed: the daemon's own store is asked, with
    the function the server asks it through, at a moment just before and just after the expiry."""
    before = datetime.now(UTC)
    got = world.api.token_answer(*world.clients[("north", "old")])
    after = datetime.now(UTC)
    assert got.status == 200 and got.json()["expires_in"] == 60, got
    token = got.json()["access_token"]
    assert world.api.get(f"{V11}/users", token).status == 200
    store = Store(world.daemon.state / "rosterd.db")
    try:
        header = f"Bearer {token}"
        assert check_bearer(store, header, before + timedelta(seconds=59)) is not None  # it expires at issue + 60
        assert check_bearer(store, header, after + timedelta(seconds=61)) is None
    finally:
        store.close()


def test_a_revoked_client_is_refused_at_once(world: World) -> None:
    api = world.api
    client = world.add_client("south", "all")  # the operator's commands, both ways
    token = api.token(client)
    assert api.get(f"{V12}/users", token).status == 200
    rosterd_cli(world.daemon, "api-client", "revoke", client[0])
    for prefix in (V11, V12):
        got = api.get(f"{prefix}/users", token)
        refused(got, 401, "unauthorisedrequest")
        assert "www-authenticate" in got.headers
    again = api.token_answer(*client)
    assert again.status == 401 and again.json()["error"] == "invalid_client", again
    assert api.get(f"{V12}/users", api.token(world.clients[("south", "all")])).status == 200  # the others go on


# -- 3. scopes --------------------------------------------------------------------------------------------------


def test_a_token_covers_only_the_scopes_it_was_granted(world: World) -> None:
    api, client = world.api, world.clients[("north", "all")]
    school, klass, user = "sch-0001", "cls-0001-t001-p1", "stu-0001-0001"
    core = api.token(client, SCOPE.format("v1p2") + "roster-core.readonly")
    for path in (f"/schools/{school}/classes", f"/classes/{klass}/students", f"/users/{user}/classes",
                 f"/schools/{school}/classes/{klass}/teachers", "/demographics", f"/demographics/{user}"):  # fmt: skip
        refused(api.get(V12 + path, core), 403, "forbidden")
    for path in ("/users", "/classes", "/schools", f"/users/{user}", "/enrollments"):
        assert api.get(V12 + path, core).status == 200, path
    refused(api.get(V11 + "/users", core), 403, "forbidden")  # a v1p2 scope is not a v1p1 one
    v11 = api.token(client, " ".join(SCOPE.format("v1p1") + n for n in ("roster-core.readonly", "roster.readonly",
                                                                         "roster-demographics.readonly")))  # fmt: skip
    assert api.get(V11 + f"/classes/{klass}/students", v11).status == 200
    assert api.get(V11 + "/demographics", v11).status == 200
    for path in ("/users", f"/classes/{klass}/students", "/demographics"):
        refused(api.get(V12 + path, v11), 403, "forbidden")
    demographics = api.token(client, SCOPE.format("v1p2") + "roster-demographics.readonly")
    assert api.get(V12 + "/demographics", demographics).status == 200
    refused(api.get(V12 + "/users", demographics), 403, "forbidden")


def test_a_target_serving_1_1_only_grants_no_1_2_scope(world: World) -> None:
    api, client = world.api, world.clients[("north", "old")]
    asked = api.token_answer(*client, scope=SCOPE.format("v1p2") + "roster.readonly")
    assert asked.status == 400 and asked.json()["error"] == "invalid_scope", asked
    everything = api.token_answer(*client)
    assert everything.status == 200 and "v1p2" not in everything.json()["scope"], everything
    got = api.get(V12 + "/users", everything.json()["access_token"])
    assert got.status in (403, 404) and got.minor in ("forbidden", "unknownobject"), got
    assert "users" not in got.json()


# -- 4. bad queries ---------------------------------------------------------------------------------------------

BAD_QUERIES = [  # (query string, minor code): query.py's rules
    ("limit=0", "invaliddata"), ("limit=-1", "invaliddata"), ("limit=abc", "invaliddata"), ("limit=", "invaliddata"),
    ("limit=1.5", "invaliddata"), ("limit=1&limit=2", "invaliddata"), ("limit=%EF%BC%91", "invaliddata"),
    ("limit=+5", "invaliddata"), ("offset=-1", "invaliddata"), ("offset=x", "invaliddata"),
    ("offset=1&offset=2", "invaliddata"), ("offset=", "invaliddata"), ("offset=" + "9" * 40, "invaliddata"),
    ("sort=nosuchfield", "invalid_sort_field"), ("sort=", "invalid_sort_field"),
    ("sort=givenName&sort=familyName", "invalid_sort_field"), ("orderBy=up", "invalid_sort_field"),
    ("orderBy=ASC", "invalid_sort_field"), ("sort=givenName&orderBy=", "invalid_sort_field"),
    ("filter=givenName%3DMaria", "invalid_filter_field"), ("filter=givenName%5E'Maria'", "invalid_filter_field"),
    ("filter=givenName%3D%3D'Maria'", "invalid_filter_field"), ("filter=nosuchfield%3D'x'", "invalid_filter_field"),
    ("filter=givenName%3D'a'%20AND%20familyName%3D'b'%20AND%20email%3D'c'", "invalid_filter_field"),
    ("filter=givenName%3D'a'%20AND%20familyName%3D'b'%20OR%20email%3D'c'", "invalid_filter_field"),
    ("filter=givenName%3D'a'%20and%20familyName%3D'b'", "invalid_filter_field"),
    ("filter=givenName%3D'a'%20AND", "invalid_filter_field"), ("filter=givenName%3D'Maria", "invalid_filter_field"),
    ("filter=givenName%3D'a'x", "invalid_filter_field"), ("filter=givenName%3E''", "invalid_filter_field"),
    ("filter=dateLastModified%3E'not-a-date'", "invalid_filter_field"),
    ("filter=dateLastModified%3E'2026-13-45'", "invalid_filter_field"), ("filter=", "invalid_filter_field"),
    ("filter=givenName%3D'a'&filter=givenName%3D'b'", "invalid_filter_field"),
    ("fields=nosuchfield", "invalid_selection_field"), ("fields=sourcedId,,givenName", "invalid_selection_field"),
    ("fields=", "invalid_selection_field"), ("fields=sourcedId&fields=givenName", "invalid_selection_field"),
]
BAD_RECORD_QUERIES = [  # a single record takes `fields` only
    ("limit=5", "invaliddata"), ("offset=1", "invaliddata"), ("sort=givenName", "invaliddata"),
    ("filter=givenName%3D'a'", "invaliddata"), ("fields=nosuchfield", "invalid_selection_field"),
]


def test_every_malformed_query_gets_400_with_its_minor_code(world: World) -> None:
    api = world.api
    token = api.token(world.clients[("north", "all")])
    for prefix in (V11, V12):
        paths = [f"{prefix}/users?{q}" for q, _ in BAD_QUERIES]
        paths += [f"{prefix}/classes/cls-0001-t001-p1/students?{q}" for q, _ in BAD_QUERIES]
        minors = [m for _, m in BAD_QUERIES] * 2
        paths += [f"{prefix}/users/stu-0001-0001?{q}" for q, _ in BAD_RECORD_QUERIES]
        minors += [m for _, m in BAD_RECORD_QUERIES]
        for path, minor, got in zip(paths, minors, api.get_all(paths, token), strict=True):
            assert got.status == 400 and got.minor == minor, (path, minor, got)
            refused(got, 400, minor)
        good = [f"{prefix}/users?filter=" + quote("givenName='Maria' OR familyName='O''Brien'"),
                f"{prefix}/users?filter=" + quote("dateLastModified>'2020-01-01T00:00:00Z'"),
                f"{prefix}/users?sort=familyName&orderBy=desc&fields=sourcedId,familyName&offset=3&limit=2",
                f"{prefix}/users?limit=007&cachebuster=1"]
        for path, got in zip(good, api.get_all(good, token), strict=True):
            assert got.status == 200, (path, got)


def test_a_huge_limit_is_clamped_and_odd_paths_find_nothing(world: World) -> None:
    api = world.api
    token = api.token(world.clients[("north", "all")])
    users = world.tables["north"]["users"].height
    for limit in ("99999999", "5001", "9" * 40):
        got = api.get(f"{V11}/users?limit={limit}", token)
        assert got.status == 200 and got.headers["x-total-count"] == str(users), got
        assert len(got.json()["users"]) == users  # all of them: fewer than 5000
        links = dict((rel, url) for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', got.headers["link"]))
        assert "limit=5000" in links["first"] and "limit=5000" in links["last"] and "next" not in links, got.headers
    odd = [f"{V11}/users/../../etc/passwd", f"{V11}/users/..%2F..%2Fetc%2Fpasswd", f"{V11}/users%2F..%2F..%2Fetc",
           f"{V11}/users/%2e%2e/%2e%2e/etc/passwd", f"{V12}/users/stu-0001-0001%2Fclasses", f"{V11}/users//classes",
           f"{V11}/../../../etc/passwd", "/etc/passwd", f"{V11}/users/%00", f"{V11}/users/%ZZ", f"{V11}/nosuch",
           f"{V11}/users/stu-0001-0001/classes/extra/more", f"{V11}/classes/cls-0001-t001-p1/enrollments"]  # fmt: skip
    for path, got in zip(odd, api.get_all(odd, token), strict=True):
        assert got.status in (400, 404), (path, got)
        assert got.minor in ("unknownobject", "invaliddata"), (path, got)
        assert "root:" not in got.text and not LEAKS.search(got.text), (path, got)
    assert not world.daemon.events("api.failed"), world.daemon.events("api.failed")
    assert all(e["status"] != 500 for e in world.daemon.events("api.request"))
    posted = api.call("POST", f"{V11}/users", {"Authorization": f"Bearer {token}"})
    assert posted.status == 405 and posted.minor == "invaliddata" and not LEAKS.search(posted.text), posted


# -- 5. rate limits ---------------------------------------------------------------------------------------------


def test_a_client_over_its_rate_gets_429_and_others_go_on(world: World) -> None:
    api = world.api
    limited = api.token(world.clients[("north", "limited")])
    other = api.token(world.clients[("south", "all")])
    answers = [api.get(f"{V11}/orgs", limited) for _ in range(4)]  # burst 3, one a second after
    assert [a.status for a in answers[:3]] == [200, 200, 200], answers
    refused(answers[3], 429, "server_busy")
    assert re.fullmatch(r"[0-9]+", answers[3].headers.get("retry-after", "")), answers[3].headers
    assert int(answers[3].headers["retry-after"]) >= 1
    assert api.get(f"{V11}/orgs", other).status == 200  # another target's client is not held back


# -- 6. log lines -----------------------------------------------------------------------------------------------


def test_each_request_is_logged_without_the_token_or_the_secret(world: World) -> None:
    api = world.api
    client = world.store_client("south", "scoped")  # its own, so its log lines are this test's only
    token = api.token(client)
    assert api.get(f"{V12}/users?limit=3", token).status == 200
    assert api.get(f"{V12}/users/nobody-here", token).status == 404
    assert api.get(f"{V12}/users", "bad" + token).status == 401
    logged = world.daemon.wait_for_event("api.request", path=f"{V12}/users/nobody-here")
    lines = [e for e in world.daemon.events("api.request") if e.get("client") == client[0]]
    assert {e["path"] for e in lines} >= {f"{V12}/users", f"{V12}/users/nobody-here"}, lines
    for event in lines:
        assert {"client", "tenant", "target", "path", "status", "rows", "elapsed_ms"} <= event.keys(), event
        assert (event["tenant"], event["target"]) == ("south", "scoped")
    page = next(e for e in lines if e["path"] == f"{V12}/users")
    assert page["status"] == 200 and page["rows"] == min(3, world.vendor_view("south", "scoped")["users"].height)
    assert logged["status"] == 404
    text = world.daemon.output()
    for secret in (token, client[1], *(secret for _, secret in world.clients.values())):
        assert secret not in text
