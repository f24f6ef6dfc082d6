"""The admin console's security at the HTTP level, against the real daemon: who sees and does what (a district
account of north probing south, a viewer, district accounts deciding holds), CSRF, sessions, the defender
shared with SFTP, TOTP codes used once, security headers, and where a login may send the browser.

Every refusal is checked three ways: its status (404 for what an account may not see, as for what does not
exist; 403 for what it may not do), that nothing changed (deliveries and paused targets as `rosterd outbox`
shows them, API clients as `rosterd api-client list` does, and every receipt file), and its `console.*` event
in the daemon's log.

One daemon serves the module (tenants north, south and east, each with an accepted upload delivered to a CERS
dry run and an API target, and a held upload; east lets its district accounts decide holds); the defender's
test bans 127.0.0.1, so it has a daemon of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pyotp
import pytest

from daemon.generator.generate import DistrictSpec, generate, write_zip
from daemon.passwords import hash_secret
from daemon.store import Store

from .conftest import ROSTERD, RunningDaemon, Tenant, make_tenant, require_openssh
from .console import Account, Browserless, add_account, console_url
from .test_holds import with_new_email

pytestmark = pytest.mark.xdist_group("console_security")

SPEC = DistrictSpec(schools=1, students_per_school=12, teachers_per_school=2, enrollments_per_student=2)
LOG_DEADLINE = 10.0
# any change at all holds an upload (the first one never is); east's district accounts decide its holds
TENANT_OPTIONS = {
    "north": "holds = { changed_share = 0.0 }",
    "south": "holds = { changed_share = 0.0 }",
    "east": "holds = { changed_share = 0.0 }\ndistrict_decides_holds = true",
}
TARGETS = ('[[tenants.targets]]\ntype = "cers"\ndry_run = true\n'
           '[[tenants.targets]]\ntype = "api"\nname = "feed"\nscope = {}')
# the module's daemon: a high threshold, so the few failed logins here never ban 127.0.0.1
SHARED_CONFIG = "[api]\nport = 0\n[defender]\nthreshold = 1000\n"
ERROR = re.compile(r'<p class="error" role="alert">([^<]*)</p>')


@dataclasses.dataclass
class Uploads:
    accepted: dict  # the receipt of day 1
    held: dict  # the receipt of day 2


@dataclasses.dataclass
class World:
    daemon: RunningDaemon
    base: str
    uploads: dict[str, Uploads]  # tenant -> its two uploads
    deliveries: dict[str, list[str]]  # tenant -> its delivery ids
    clients: dict[str, str]  # tenant -> its API client's id
    accounts: dict[str, Account]  # admin, viewer, north (a district account); a test makes what only it needs

    def browser(self) -> Browserless:
        return Browserless(self.base)


def cli(daemon: RunningDaemon, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(ROSTERD), *args, "--config", str(daemon.config)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def put(daemon: RunningDaemon, tenant: str, tables: dict, name: str) -> None:
    write_zip(tables, daemon.client_dir / name, SPEC.version)
    sent = daemon.sftp_batch(tenant, [f"put {name} inbox/{name}"])
    assert sent.returncode == 0, sent.stderr


def on_disk(daemon: RunningDaemon, tenant: str, file: str, states: tuple[str, ...], deliveries: int = 0) -> dict:
    """The upload's receipt file, read until the upload is in one of `states` and has `deliveries` final ones."""
    deadline = time.monotonic() + 60
    last = None
    while True:
        for path in daemon.results(tenant).glob(f"{file}.u-*.json"):
            last = json.loads(path.read_text())
            done = [d for d in last.get("deliveries", []) if d["state"] in ("delivered", "dead")]
            if last["state"] in states and len(done) >= deliveries:
                return last
        assert time.monotonic() < deadline, f"{tenant}/{file}: {last}\n{daemon.diagnosis()}"
        time.sleep(0.1)


def store_client(daemon: RunningDaemon, tenant: str) -> str:
    """An API client of the tenant's feed, put into the store as `rosterd api-client add` puts it."""
    client_id = f"{tenant}-feed-{secrets.token_hex(6)}"
    store = Store(daemon.state / "rosterd.db")
    try:
        store.add_api_client(client_id, tenant, "feed", hash_secret(secrets.token_urlsafe(24)))
    finally:
        store.close()
    return client_id


def state(daemon: RunningDaemon, tenants: tuple[str, ...] = ("north", "south")) -> dict:
    """What an action would change, read from the daemon's store as `rosterd outbox` and `rosterd api-client
    list` read it (in this process: each command costs seconds of start-up): every upload's state, delivery,
    paused or disabled target and API client; and every receipt file; of `tenants` (by default not east, whose
    approval in one test sends deliveries and rewrites receipts while later tests run)."""
    store = Store(daemon.state / "rosterd.db")
    try:
        return {
            "uploads": [(u.id, str(u.state), u.updated_at) for t in tenants for u in store.recent(t, 100)],
            "deliveries": [d for d in store.deliveries(None, limit=1000) if d.tenant in tenants],
            "held targets": {k: v for k, v in store.disabled_targets().items() if k[0] in tenants},
            "clients": [c for c in store.api_clients(None) if c.tenant in tenants],
            "receipts": {str(p.relative_to(daemon.state)): json.loads(p.read_bytes())
                         for t in tenants for p in sorted(daemon.state.glob(f"tenants/{t}/results/*.json"))},
        }  # fmt: skip
    finally:
        store.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, host_keys: Path, tenants: dict[str, Tenant]) -> Iterator[World]:
    require_openssh()
    east = make_tenant(tmp_path_factory.mktemp("east-credentials"), "east")
    chosen = [dataclasses.replace(t, extra=TENANT_OPTIONS[t.name] + "\n" + TARGETS)
              for t in (tenants["north"], tenants["south"], east)]  # fmt: skip
    daemon = RunningDaemon(tmp_path_factory.mktemp("console-security"), chosen, host_keys, SHARED_CONFIG)
    try:
        with ThreadPoolExecutor(3) as pool:  # made before the start (as an operator may), apart from the uploads
            made = {name: pool.submit(add_account, daemon, f"{name}-{secrets.token_hex(3)}", role=role, tenant=tenant)
                    for name, role, tenant in (("admin", "admin", None), ("viewer", "viewer", None),
                                               ("north", None, "north"))}  # fmt: skip
            accounts = {name: future.result() for name, future in made.items()}
        daemon.start()
        names = list(TENANT_OPTIONS)
        day1 = generate(SPEC)
        for tenant in names:
            put(daemon, tenant, day1, f"{tenant}-day1.zip")
        first = {t: on_disk(daemon, t, f"{t}-day1.zip", ("accepted",)) for t in names}
        for tenant in names:
            put(daemon, tenant, with_new_email(day1), f"{tenant}-day2.zip")
        second = {t: on_disk(daemon, t, f"{t}-day2.zip", ("held",)) for t in names}
        first = {t: on_disk(daemon, t, f"{t}-day1.zip", ("accepted",), deliveries=2) for t in names}
        yield World(
            daemon, console_url(daemon),
            {t: Uploads(first[t], second[t]) for t in names},
            {t: [d["delivery_id"] for d in first[t]["deliveries"]] for t in names},
            {t: store_client(daemon, t) for t in names},
            accounts,
        )  # fmt: skip
    finally:
        daemon.close()


# -- the log -------------------------------------------------------------------------------------------------------


class Log:
    """The daemon's events from now on: `wait` finds one logged after the mark (polling, with a deadline)."""

    def __init__(self, daemon: RunningDaemon) -> None:
        self.daemon = daemon
        self.mark = daemon.log.stat().st_size

    def since(self, name: str, **fields: object) -> list[dict]:
        with open(self.daemon.log, "rb") as log:
            log.seek(self.mark)
            lines = log.read().decode("utf-8", errors="replace").splitlines(keepends=True)
        events = [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}\n")]
        return [e for e in events if e.get("event") == name and all(e.get(k) == v for k, v in fields.items())]

    def wait(self, name: str, **fields: object) -> dict:
        return self.wait_all(name, 1, **fields)[0]

    def wait_all(self, name: str, count: int, **fields: object) -> list[dict]:
        """At least `count` such events since the mark."""
        deadline = time.monotonic() + LOG_DEADLINE
        while len(found := self.since(name, **fields)) < count:
            assert time.monotonic() < deadline, f"no {count} {name} {fields} logged:\n{self.daemon.output()[-4000:]}"
            time.sleep(0.05)
        return found


async def refused(world: World, browser: Browserless, method: str, path: str, status: int, account: Account,
                  absent: list[str] = ()) -> str:  # fmt: skip
    """Ask as `browser` (logged in as `account`); the answer must be `status`, show none of `absent`, and be
    logged as console.refused with its path and the account."""
    log = Log(world.daemon)
    if method == "GET":
        got, body = await browser.get(path, allow_redirects=False)
    else:
        got, body = await browser.post(path, {"reason": "probing"}, allow_redirects=False)
    assert got == status, (method, path, got, body[:500])
    for secret in absent:
        assert secret not in body, (method, path, secret)
    event = log.wait("console.refused", method=method, path=path.split("?")[0], status=status, account=account.name)
    assert event["remote_ip"] == "127.0.0.1"
    return body


def dry_run_files(world: World, tenant: str) -> list[tuple[str, str]]:
    """(delivery id, file name) of each file the tenant's CERS dry run wrote."""
    return [(d["delivery_id"], f["name"]) for d in world.uploads[tenant].accepted["deliveries"]
            for f in d.get("files", [])]  # fmt: skip


def south_data(world: World) -> list[str]:
    """What of south must never reach north's district account: upload ids, file names, delivery and client ids."""
    south = world.uploads["south"]
    return [south.accepted["upload_id"], south.held["upload_id"], south.accepted["file"], south.held["file"],
            *world.deliveries["south"], world.clients["south"], *(name for _, name in dry_run_files(world, "south"))]


# -- who sees and does what ----------------------------------------------------------------------------------------


async def test_a_district_account_finds_nothing_of_another_tenant_and_changes_nothing(world: World) -> None:
    me = world.accounts["north"]
    south = world.uploads["south"]
    accepted, held = south.accepted["upload_id"], south.held["upload_id"]
    absent = south_data(world)
    before = await asyncio.to_thread(state, world.daemon)
    async with world.browser() as browser:
        assert await browser.log_in(me) == 200
        pages = [
            "/tenants/south", "/tenants/south?partial=uploads", f"/uploads/{accepted}", f"/uploads/{held}",
            f"/uploads/{accepted}/changes", f"/uploads/{held}/changes", f"/uploads/{accepted}/findings.csv",
            f"/uploads/{held}/findings.csv?code=x", "/tenants/south/targets/cers", "/tenants/south/targets/feed",
            "/tenants/south/targets/cers/preview", "/tenants/south/targets/feed/preview?view=users",
            *(f"/deliveries/{d}" for d in world.deliveries["south"]),
            *(f"/deliveries/{d}/groups" for d in world.deliveries["south"]),
            *(f"/deliveries/{d}/files/{name}" for d, name in dry_run_files(world, "south")), "/settings",
        ]  # fmt: skip
        for path in pages:
            await refused(world, browser, "GET", path, 404, me, absent)
        actions = [
            f"/uploads/{held}/approve", f"/uploads/{held}/discard", f"/api-clients/{world.clients['south']}/revoke",
            *(f"/deliveries/{d}/replay" for d in world.deliveries["south"]),
            "/tenants/south/targets/cers/pause", "/tenants/south/targets/cers/enable",
            "/tenants/south/targets/feed/pause",
        ]  # fmt: skip
        for path in actions:
            await refused(world, browser, "POST", path, 404, me, absent)

        # south's ids answer as ids that do not exist: nothing tells them apart
        south_page = await refused(world, browser, "GET", f"/uploads/{accepted}", 404, me)
        nowhere = await refused(world, browser, "GET", "/uploads/u-00000000000000000000000000", 404, me)
        assert south_page == nowhere

        # north's own dry-run file is its to fetch; south's file name through north's delivery is not
        ((north_delivery, north_file),) = dry_run_files(world, "north")
        status, body = await browser.get(f"/deliveries/{north_delivery}/files/{north_file}")
        assert status == 200 and body.startswith("group_name,")
        for _, south_file in dry_run_files(world, "south"):
            await refused(world, browser, "GET", f"/deliveries/{north_delivery}/files/{south_file}", 404, me, absent)

        # what it may see shows only north
        for path in ("/holds", "/api-clients", "/tenants/north", "/tenants/north/targets/cers"):
            status, body = await browser.get(path)
            assert status == 200 and not [s for s in absent if s in body], path
        status, body = await browser.get("/holds")
        assert world.uploads["north"].held["upload_id"] in body
        status, body = await browser.get("/", allow_redirects=False)
        assert status == 303

        # its own tenant: what a district account may not do there is 403
        north = world.uploads["north"]
        own_actions = [
            f"/uploads/{north.held['upload_id']}/approve", f"/uploads/{north.held['upload_id']}/discard",
            f"/api-clients/{world.clients['north']}/revoke",
            *(f"/deliveries/{d}/replay" for d in world.deliveries["north"]),
            "/tenants/north/targets/cers/pause", "/tenants/north/targets/cers/enable",
        ]  # fmt: skip
        for path in own_actions:
            await refused(world, browser, "POST", path, 403, me, absent)
    assert await asyncio.to_thread(state, world.daemon) == before


async def test_a_viewer_sees_every_tenant_and_may_do_nothing(world: World) -> None:
    me = world.accounts["viewer"]
    before = await asyncio.to_thread(state, world.daemon)
    async with world.browser() as browser:
        assert await browser.log_in(me) == 200
        status, body = await browser.get("/holds")
        assert status == 200 and all(world.uploads[t].held["upload_id"] in body for t in ("north", "south"))
        for tenant in ("north", "south"):
            held = world.uploads[tenant].held["upload_id"]
            for path in (f"/uploads/{held}/approve", f"/uploads/{held}/discard",
                         f"/api-clients/{world.clients[tenant]}/revoke",
                         *(f"/deliveries/{d}/replay" for d in world.deliveries[tenant]),
                         f"/tenants/{tenant}/targets/cers/pause",
                         f"/tenants/{tenant}/targets/cers/enable"):  # fmt: skip
                await refused(world, browser, "POST", path, 403, me)
    assert await asyncio.to_thread(state, world.daemon) == before


async def test_a_district_account_decides_its_holds_only_where_the_tenant_lets_it(world: World) -> None:
    north_held = world.uploads["north"].held
    before = await asyncio.to_thread(state, world.daemon)
    async with world.browser() as browser:  # north: district_decides_holds is false
        assert await browser.log_in(world.accounts["north"]) == 200
        status, body = await browser.get(f"/uploads/{north_held['upload_id']}")
        assert status == 200 and f"/uploads/{north_held['upload_id']}/approve" not in body
        for verb in ("approve", "discard"):
            await refused(world, browser, "POST", f"/uploads/{north_held['upload_id']}/{verb}", 403,
                          world.accounts["north"])  # fmt: skip
    assert await asyncio.to_thread(state, world.daemon) == before

    east_held = world.uploads["east"].held
    me = await asyncio.to_thread(add_account, world.daemon, f"east-{secrets.token_hex(3)}", tenant="east")
    async with world.browser() as browser:  # east: district_decides_holds is true
        assert await browser.log_in(me) == 200
        await refused(world, browser, "POST", f"/uploads/{world.uploads['north'].held['upload_id']}/approve", 404, me)
        await refused(world, browser, "POST", "/tenants/east/targets/cers/pause", 403, me)  # holds only
        log = Log(world.daemon)
        status, body = await browser.get(f"/uploads/{east_held['upload_id']}")
        assert status == 200 and f"/uploads/{east_held['upload_id']}/approve" in body
        status, body = await browser.post(f"/uploads/{east_held['upload_id']}/approve",
                                          {"reason": "checked with the SIS"})  # fmt: skip
        assert status == 200, body[:500]
    action = log.wait("console.action", action="approve", account=me.name, upload_id=east_held["upload_id"])
    assert (action["role"], action["tenant"], action["outcome"]) == ("district", "east", "accepted")
    path = world.daemon.results("east") / f"{east_held['file']}.{east_held['upload_id']}.json"
    receipt = json.loads(path.read_text())
    assert receipt["state"] == "accepted"
    (decision,) = receipt["decisions"]
    assert decision["decision"] == "approved" and me.name in decision["operator"]
    assert "checked with the SIS" in decision["operator"]
    after = await asyncio.to_thread(state, world.daemon)
    assert [d for d in after["deliveries"] if d.tenant != "east"] == [
        d for d in before["deliveries"] if d.tenant != "east"]  # east's approval queued east's deliveries only


# -- CSRF ----------------------------------------------------------------------------------------------------------


async def test_a_post_without_this_sessions_token_or_from_another_origin_is_refused(world: World) -> None:
    me = world.accounts["admin"]
    pause = "/tenants/north/targets/cers/pause"
    before = await asyncio.to_thread(state, world.daemon)
    async with world.browser() as browser, world.browser() as other:
        assert await browser.log_in(me) == 200
        assert await other.log_in(me) == 200
        assert other.csrf != browser.csrf
        stale = browser.csrf
        await browser.post("/logout")
        assert await browser.log_in(me) == 200
        assert browser.csrf != stale
        cases = [
            ("no token", {}, {}),
            ("another session's token", {"csrf": other.csrf}, {}),
            ("a token from before logout", {"csrf": stale}, {}),
            ("a header of another session", {}, {"X-CSRF-Token": other.csrf}),
            ("another origin", {"csrf": browser.csrf}, {"Origin": "http://evil.example"}),
            ("another origin, header token", {}, {"X-CSRF-Token": browser.csrf, "Origin": "null"}),
        ]
        for why, form, headers in cases:
            log = Log(world.daemon)
            status, body = await browser.post(pause, form, csrf=False, headers=headers, allow_redirects=False)
            assert status == 403, (why, status, body[:300])
            event = log.wait("console.refused", method="POST", path=pause, status=403, account=me.name)
            assert ("origin" in event) == ("Origin" in headers), (why, event)
        assert await asyncio.to_thread(state, world.daemon) == before

        # the login form too: a login without the form's token is refused before the password is looked at
        async with world.browser() as stranger:
            log = Log(world.daemon)
            await stranger.get("/login")
            status, _ = await stranger.post("/login", {"name": me.name, "password": me.password}, csrf=False)
            assert status == 403
            log.wait("console.refused", method="POST", path="/login", status=403, account=None)
            status, _ = await stranger.get("/", allow_redirects=False)
            assert status == 303 and log.since("console.login") == []

        # the same request with this session's token, from this origin, is done: the refusals were the token's
        log = Log(world.daemon)
        status, _ = await browser.post(pause, headers={"Origin": world.base}, allow_redirects=False)
        assert status == 303
        log.wait("console.action", action="pause", account=me.name, target="cers", outcome="paused")
        assert ("north", "cers") in (await asyncio.to_thread(state, world.daemon))["held targets"]
        listed = await asyncio.to_thread(cli, world.daemon, "outbox", "north", "--format", "json")
        assert "target cers of north is" in listed.stderr  # as the operator's command shows it
        status, _ = await browser.post("/tenants/north/targets/cers/enable", csrf=False,
                                       headers={"X-CSRF-Token": browser.csrf}, allow_redirects=False)  # fmt: skip
        assert status == 303
        log.wait("console.action", action="enable", account=me.name, target="cers", outcome="enabled")


# -- sessions ------------------------------------------------------------------------------------------------------


def cookie_of(browser: Browserless) -> str:
    (morsel,) = [m for m in browser.session.cookie_jar if m.key == "rosterd"]
    return morsel.value


async def as_cookie(world: World, cookie: str) -> tuple[int, str, int]:
    """With only this cookie: GET /'s status and Location, and GET /events's status."""
    headers = {"Cookie": f"rosterd={cookie}"}  # sent as it is (a cookie jar keeps none for an IP host)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as bare:
        async with bare.get(world.base + "/", headers=headers, allow_redirects=False) as page:
            where = page.headers.get("Location", "")
            status = page.status
        async with bare.get(world.base + "/events", headers=headers, allow_redirects=False) as events:
            return status, where, events.status


async def test_logout_ends_the_session_and_login_replaces_its_id(world: World) -> None:
    me = world.accounts["admin"]
    async with world.browser() as browser:
        async with browser.session.get(world.base + "/login") as answer:
            (cookie,) = answer.headers.getall("Set-Cookie")
            browser.csrf = re.search(r'name="csrf" value="([^"]+)"', await answer.text())[1]
        assert cookie.startswith("rosterd=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Path=/" in cookie and "Max-Age" not in cookie and "expires" not in cookie.lower()
        anonymous = cookie_of(browser)

        log = Log(world.daemon)
        async with browser.session.post(world.base + "/login", allow_redirects=False, data={
                "csrf": browser.csrf, "name": me.name, "password": me.password}) as answer:  # fmt: skip
            assert answer.status == 303
            (cookie,) = answer.headers.getall("Set-Cookie")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        logged_in = cookie_of(browser)
        assert logged_in != anonymous and len(logged_in) >= 43  # a new id at login; 256 bits
        log.wait("console.login", account=me.name, role="admin", remote_ip="127.0.0.1")
        assert await as_cookie(world, anonymous) == (303, "/login", 401)  # the id from before the login is void
        assert (await as_cookie(world, logged_in))[0] == 200

        status, _ = await browser.get("/")
        assert status == 200
        status, body = await browser.post("/logout")
        assert status == 200 and 'action="/login"' in body
        log.wait("console.logout", account=me.name)
        assert cookie_of(browser) != logged_in
    assert await as_cookie(world, logged_in) == (303, "/login", 401)


async def test_a_disabled_account_is_out_at_its_next_request(world: World) -> None:
    me = await asyncio.to_thread(add_account, world.daemon, f"leaver-{secrets.token_hex(3)}", role="admin")
    async with world.browser() as browser:
        assert await browser.log_in(me) == 200
        status, _ = await browser.get("/tenants/north")
        assert status == 200
        session = cookie_of(browser)
        csrf = browser.csrf
        log = Log(world.daemon)
        await asyncio.to_thread(cli, world.daemon, "admin-user", "disable", me.name)
        before = await asyncio.to_thread(state, world.daemon)
        status, body = await browser.post("/tenants/north/targets/cers/pause", {"csrf": csrf}, csrf=False,
                                          allow_redirects=False)  # fmt: skip
        assert status == 403  # the session and its token are gone with the account
        log.wait("console.session_ended", account=me.name, reason="account disabled")
        log.wait("console.refused", method="POST", path="/tenants/north/targets/cers/pause", account=None)
        assert await asyncio.to_thread(state, world.daemon) == before
        assert await as_cookie(world, session) == (303, "/login", 401)
        log = Log(world.daemon)
        assert await browser.log_in(me) == 401  # nor can it log in again
        log.wait("console.login_failed", account=me.name)


# -- TOTP ----------------------------------------------------------------------------------------------------------


def wrong_code(totp: pyotp.TOTP) -> str:
    """A code good neither now nor a step before (nor a step after, should the clock turn meanwhile)."""
    now = datetime.now(UTC)
    near = {totp.at(now + timedelta(seconds=s)) for s in (-60, -30, 0, 30, 60)}
    return next(code for code in (f"{n:06d}" for n in range(1_000_000)) if code not in near)


async def test_a_totp_code_is_needed_and_works_once(world: World) -> None:
    me = await asyncio.to_thread(add_account, world.daemon, f"totp-{secrets.token_hex(3)}", role="viewer", totp=True)
    assert me.totp_secret
    totp = pyotp.TOTP(me.totp_secret)
    log = Log(world.daemon)
    async with world.browser() as browser:
        assert await browser.log_in(me) == 401  # no code
        assert await browser.log_in(me, wrong_code(totp)) == 401
        assert await browser.log_in(dataclasses.replace(me, password="wrong"), totp.now()) == 401
        assert len(log.since("console.login")) == 0
        code = totp.now()
        assert await browser.log_in(me, code) == 200
    log.wait("console.login", account=me.name)
    assert len(log.since("console.login_failed", account=me.name)) == 3
    async with world.browser() as again:
        assert await again.log_in(me, code) == 401  # the same code, a second time
        status, _ = await again.get("/", allow_redirects=False)
        assert status == 303
    assert len(log.wait_all("console.login_failed", 4, account=me.name)) == 4
    assert len(log.since("console.login", account=me.name)) == 1


# -- headers and redirects -----------------------------------------------------------------------------------------


async def test_pages_carry_the_security_headers(world: World) -> None:
    async with world.browser() as browser:
        answers = []
        async with browser.session.get(world.base + "/login") as answer:
            answers.append(("/login", answer.status, answer.headers, await answer.text()))
        assert await browser.log_in(world.accounts["admin"]) == 200
        north = world.uploads["north"].accepted["upload_id"]
        for path in ("/", "/holds", "/tenants/north", f"/uploads/{north}", f"/uploads/{north}/changes",
                     "/tenants/north/targets/cers", f"/deliveries/{world.deliveries['north'][0]}", "/api-clients",
                     "/settings", "/uploads/u-nothing", f"/uploads/{north}/findings.csv"):  # fmt: skip
            async with browser.session.get(world.base + path, allow_redirects=False) as answer:
                answers.append((path, answer.status, answer.headers, await answer.text()))
    for path, status, headers, body in answers:
        assert status == (404 if path == "/uploads/u-nothing" else 200), path
        policy = headers.get("Content-Security-Policy", "")
        directives = {d.split()[0]: d.split()[1:] for d in policy.split(";") if d.strip()}
        assert directives.get("default-src") == ["'none'"] or directives.get("default-src") == ["'self'"], path
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, path
        assert directives.get("script-src") == ["'self'"] and directives.get("frame-ancestors") == ["'none'"], path
        assert headers.get("X-Frame-Options") == "DENY", path
        assert headers.get("Cache-Control") == "no-store", path
        assert headers.get("X-Content-Type-Options") == "nosniff", path
        if "html" in headers.get("Content-Type", ""):
            assert not re.search(r"<script(?![^>]*\ssrc=)", body), path  # no inline script for the policy to block
            assert not re.search(r"\son[a-z]+\s*=", body), path  # nor inline handlers


OFF_SITE = ["//evil.example", "https://evil.example", "http://evil.example/", "///evil.example", "/\\evil.example",
            "\\\\evil.example", "/\t/evil.example", "https:evil.example", "evil.example", "javascript:alert(1)",
            " //evil.example"]  # fmt: skip


async def test_login_never_sends_the_browser_off_site(world: World) -> None:
    me = world.accounts["viewer"]
    async with world.browser() as browser:
        for target in ("//evil.example", "https://evil.example", "/\\evil.example", "/tenants/north?page=2"):
            await browser.get("/login?next=" + quote(target, safe=""))
            form = {"csrf": browser.csrf, "name": me.name, "password": me.password, "next": target}
            async with browser.session.post(world.base + "/login", data=form, allow_redirects=False) as answer:
                expected = target if target.startswith("/tenants/") else "/"  # a path of this site is kept
                assert (answer.status, answer.headers["Location"]) == (303, expected), target
        for target in OFF_SITE:  # logged in, the login page sends the browser on at once
            async with browser.session.get(world.base + "/login", params={"next": target},
                                           allow_redirects=False) as answer:  # fmt: skip
                assert (answer.status, answer.headers["Location"]) == (303, "/"), target


# -- the defender --------------------------------------------------------------------------------------------------


async def test_failed_logins_ban_the_address_from_the_console_and_sftp(
    rosterd: Callable[..., RunningDaemon], tenants: dict[str, Tenant]
) -> None:
    daemon = rosterd(tenants["north"], extra_config="[defender]\nthreshold = 4\n", start=False)
    me = await asyncio.to_thread(add_account, daemon, "gatekeeper", role="admin")
    await asyncio.to_thread(daemon.start)
    log = Log(daemon)
    async with Browserless(console_url(daemon)) as browser:
        await browser.get("/login")
        wrong = await browser.post("/login", {"name": me.name, "password": "not-it"})
        unknown = await browser.post("/login", {"name": "nobody-here", "password": "not-it"})
        assert wrong[0] == unknown[0] == 401
        assert ERROR.findall(wrong[1]) == ERROR.findall(unknown[1]) == ["Wrong name, password or code."]
        assert "nobody-here" not in unknown[1] and me.name not in wrong[1]
        log.wait("console.login_failed", account=me.name, remote_ip="127.0.0.1")
        log.wait("console.login_failed", account=None, remote_ip="127.0.0.1")
        # scored as SFTP failures are (the defaults: 1 for a wrong password, 2 for an unknown name), so the
        # next wrong password reaches 4 and bans; the one after is answered 429 before any check
        answers = []
        while not answers or answers[-1] == 401:
            assert len(answers) < 5, answers
            answers.append((await browser.post("/login", {"name": me.name, "password": f"guess-{len(answers)}"}))[0])
        assert answers == [401, 429]
        banned = log.wait("sftp.ip_banned", remote_ip="127.0.0.1", listener="console")
        assert banned["ban_count"] == 1
        assert len(log.since("console.login_failed")) == 3

        status, body = await browser.post("/login", {"name": me.name, "password": me.password})
        assert status == 429 and "Too many failed logins" in body
        log.wait("console.login_refused", reason="address banned", remote_ip="127.0.0.1")
        status, _ = await browser.get("/", allow_redirects=False)
        assert status == 303  # not logged in
    assert log.since("console.login") == []

    sftp = await asyncio.to_thread(daemon.sftp_batch, "north", ["ls /"])
    assert sftp.returncode != 0  # the right key does not help: the ban is the daemon's, not the console's
    log.wait("sftp.connection_refused", reason="banned")
    assert daemon.events("sftp.login_succeeded") == []
