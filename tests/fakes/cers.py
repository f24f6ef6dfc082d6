"""A fake CERS student-group import service, for tests of the CERS target.

It keeps the contract described in /work/shared/reference/cers_groups.md (sections 1-3 and 6) as
strictly as that document allows, so a client cannot pass here by luck: every row rule is checked at
upload time, a failure rejects the whole file (HTTP 202, status BAD_DATA), identical bytes are never
processed twice, and an accepted file replaces the members of exactly the groups it names.

Where the reference leaves a case open, the fake takes the stricter reading and says so below
(header-only file, mixed line endings, a data row without six values, bytes that are not UTF-8, a
multipart upload whose file is not in the field `file`).

A test arranges trouble through `faults`: each request pops the first one, before authentication.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import BodyPartReader, hdrs, web

from tests.fakes import service
from tests.fakes.service import FakeService, Seen, drop_connection, is_rate_limit, retry_after

HEADERS = ("group_name", "school_natural_id", "school_year", "subject_code", "student_ssid", "group_user_login")
MAX_STUDENTS_PER_GROUP = 200
MAX_LISTED = 100  # message lines before "With <k> additional ..."
FAULTS = (*service.FAULTS, "401")
FILE_FIELD = "file"  # the multipart field CERS's vendor document names for the group file
ORDER = "sort CSV by school, group, year"
_GROUP_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")  # CERS's own rule, stricter than RDW's
_INTEGER = re.compile(r"[+-]?[0-9]+")  # what Java's Integer.valueOf takes: no whitespace
_LINE_END = re.compile(r"\r\n|\r|\n")


def _accept_test_token(token: str) -> str | None:
    return "tester" if token == "test-token" else None


@dataclass
class Group:
    name: str = ""  # as the last file that named the group spelled it
    subject: str | None = None  # the configured code's spelling; None means all subjects
    users: set[str] = field(default_factory=set)
    students: set[str] = field(default_factory=set)


@dataclass
class Import:
    id: int
    batch: str | None  # the uploaded file's name
    digest: str  # uppercase hex MD5 of the exact bytes
    status: str  # ACCEPTED (only in the first answer), PROCESSED or BAD_DATA
    message: str
    creator: str
    content_type: str | None
    created: datetime
    rows: tuple[tuple[str, ...], ...]  # the data rows as parsed (empty when the file could not be parsed)
    field: str | None = None  # the multipart field that carried the file; None for a raw body
    updated: datetime | None = None


@dataclass
class SeenRequest(Seen):
    method: str
    path: str
    authorization: bool  # an Authorization header was sent
    at: datetime  # when the request arrived


# ---------------------------------------------------------------------------------------------------
# Validation: the rules CERS applies before it answers an upload.


@dataclass
class _Block:
    """The contiguous rows of one group within a file."""

    school: str
    name: str
    year: int
    last_row: int  # where a too-large group is reported
    subject: str | None = None  # the first non-blank valid subject, as written
    users: set[str] = field(default_factory=set)
    students: set[str] = field(default_factory=set)
    ssid_rows: int = 0  # rows with an SSID, duplicates included, as CERS counts them

    @property
    def identity(self) -> tuple[str, str, int]:
        return (self.school.lower(), self.name.lower(), self.year)


@dataclass
class Verdict:
    rows: tuple[tuple[str, ...], ...]
    failures: list[tuple[int, str]]  # (row, text); row 0 is the file itself
    blocks: list[_Block]


class _RowChecker:
    """Walks the data rows once, in order: contiguity rules are about order, so this is row by row."""

    def __init__(self, *, schools: set[str] | None, school_years: set[int], subjects: set[str]) -> None:
        self.schools = schools
        self.school_years = school_years
        self.subjects = {code.lower() for code in subjects} | {"all"}
        self.failures: dict[tuple[int, str], None] = {}  # an ordered set: identical failures once
        self.blocks: list[_Block] = []
        self._school: str | None = None
        self._left_schools: set[str] = set()
        self._left_groups: set[tuple[str, str, int]] = set()
        self._unknown_schools: set[str] = set()
        self._block: _Block | None = None

    def fail(self, row: int, text: str) -> None:
        self.failures.setdefault((row, text))

    def check(self, row: int, values: list[str]) -> None:
        if len(values) != len(HEADERS):  # RDW might let extra values through; a client must not rely on it
            self.fail(row, f"Record has {len(values)} values; expected {len(HEADERS)}")
            return
        name, school, year_text, subject, ssid, login = values
        year = self._check_values(row, name, school, year_text, subject)
        if not school.strip():
            return
        self._enter_school(row, school)
        if name.strip() and year is not None:
            self._add_member(self._enter_group(row, school, name, year), row, subject, ssid, login)

    def finish(self) -> list[tuple[int, str]]:
        self._leave_group()
        return sorted(self.failures, key=lambda failure: failure[0])

    def _check_values(self, row: int, name: str, school: str, year_text: str, subject: str) -> int | None:
        if not school.strip():
            self.fail(row, "Record does not contain a school")
        elif self.schools is not None and school not in self.schools and school not in self._unknown_schools:
            self._unknown_schools.add(school)
            self.fail(row, f"School [{school}] can not be found")
        if not name.strip():
            self.fail(row, "Record does not contain a group name")
        elif not _GROUP_NAME.fullmatch(name):
            self.fail(row, f"Invalid group name: {name}")
        year = int(year_text) if _INTEGER.fullmatch(year_text) else None
        if year is None:
            self.fail(row, "Record does not contain a school year")
        elif year not in self.school_years:
            self.fail(row, f"Invalid school year: {year}")
        if subject.strip() and subject.lower() not in self.subjects:
            self.fail(row, f"Invalid subject: {subject}")
        return year

    def _enter_school(self, row: int, school: str) -> None:
        if school == self._school:
            return
        if school in self._left_schools:
            self.fail(row, f"School [{school}] is out-of-order: {ORDER}")
        if self._school is not None:
            self._left_schools.add(self._school)
        self._school = school

    def _enter_group(self, row: int, school: str, name: str, year: int) -> _Block:
        block = _Block(school, name, year, last_row=row)
        if self._block is not None and self._block.identity == block.identity:
            return self._block
        self._leave_group()
        if block.identity in self._left_groups:
            self.fail(row, f"Record is out-of-order: {ORDER}")
        self._block = block
        self.blocks.append(block)
        return block

    def _leave_group(self) -> None:
        block, self._block = self._block, None
        if block is None:
            return
        self._left_groups.add(block.identity)
        if block.ssid_rows > MAX_STUDENTS_PER_GROUP:
            self.fail(
                block.last_row,
                f"School [{block.school}] Group [{block.name}] contains {block.ssid_rows} students.  "
                f"Maximum students allowed per group is {MAX_STUDENTS_PER_GROUP}",
            )

    def _add_member(self, block: _Block, row: int, subject: str, ssid: str, login: str) -> None:
        block.last_row = row
        if subject.strip() and subject.lower() in self.subjects:
            if block.subject is None:
                block.subject = subject
            elif block.subject.lower() != subject.lower():
                self.fail(row, f"Record is attempting to re-define group subject from [{block.subject}] to [{subject}]")
        if ssid.strip():
            block.ssid_rows += 1
            block.students.add(ssid.strip())  # the loader trims what the validator let through
        if login.strip():
            block.users.add(login.strip())


def _file_problem(data: bytes) -> tuple[str, str | None]:
    """The decoded text, or a row-0 failure that stops the check before any row is read."""
    if not data:
        return "", "Empty file"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:  # RDW would read on with replacement characters: never what was meant
        return "", f"Error reading file [not UTF-8 at byte {exc.start}]"
    # CERS sniffs one line ending per file and loads with it, so a mixture would be loaded wrongly.
    if len(set(_LINE_END.findall(text))) > 1:
        return text, "Mixed line endings: use one of CRLF, LF or CR throughout the file"
    return text, None


def check_file(
    data: bytes, *, schools: set[str] | None, school_years: set[int], subjects: set[str], max_rows: int
) -> Verdict:
    """Every failure CERS would report for this upload; no failures means ACCEPTED."""
    text, problem = _file_problem(data)
    if problem:
        return Verdict((), [(0, problem)], [])
    try:
        records = [record for record in csv.reader(io.StringIO(text, newline=""), strict=True) if record]
    except csv.Error:
        return Verdict((), [(0, "File does not appear to be a valid CSV with a header row")], [])
    if not records:
        return Verdict((), [(0, "Empty file")], [])
    rows = tuple(tuple(record) for record in records[1:])
    if tuple(name.lower() for name in records[0]) != HEADERS:
        return Verdict(rows, [(0, f"Invalid headers. Headers must be in order: [{','.join(HEADERS)}]")], [])
    if not rows:  # a header alone carries no group: stricter than RDW, which would accept it
        return Verdict(rows, [(0, "Empty file")], [])
    checker = _RowChecker(schools=schools, school_years=school_years, subjects=subjects)
    if len(rows) > max_rows:
        checker.fail(0, f"File contains {len(rows)} rows.  Maximum rows allowed per file is {max_rows}")
    for number, values in enumerate(records[1:], start=1):
        checker.check(number, values)
    return Verdict(rows, checker.finish(), checker.blocks)


def _capped(lines: list[str], what: str) -> str:
    if len(lines) > MAX_LISTED:
        lines = [*lines[:MAX_LISTED], f"With {len(lines) - MAX_LISTED} additional {what}"]
    return "\n".join(lines)


def render_message(verdict: Verdict) -> str:
    if verdict.failures:
        return _capped([f"Row: {row} Failure: {text}" for row, text in verdict.failures], "validation failures")
    per_school: dict[str, int] = {}
    for block in verdict.blocks:
        per_school[block.school] = per_school.get(block.school, 0) + 1
    return _capped([f"{count} group(s) accepted for {school}." for school, count in per_school.items()], "schools")


# ---------------------------------------------------------------------------------------------------
# The HTTP service.


@dataclass
class _Upload:
    data: bytes
    batch: str | None
    content_type: str | None
    field: str | None = None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None


def _oauth_error(status: type[web.HTTPException], error: str, description: str) -> web.HTTPException:
    challenge = f'Bearer error="{error}", error_description="{description}"'
    return status(
        text=json.dumps({"error": error, "error_description": description}),
        content_type="application/json",
        headers={hdrs.WWW_AUTHENTICATE: challenge} if status is web.HTTPUnauthorized else None,
    )


class FakeCers(FakeService):
    def __init__(
        self,
        *,
        verify_token: Callable[[str], str | None] = _accept_test_token,
        schools: set[str] | None = None,  # school ids the caller may write to; None: any
        school_years: set[int] | None = None,  # default 2020..2035
        subjects: set[str] | None = None,  # default Math, ELA, ELPAC ("All" is always valid)
        group_write: Callable[[str], bool] = lambda user: True,
        max_rows: int = 200_000,
        hang_seconds: float = 30.0,
    ) -> None:
        super().__init__(hang_seconds=hang_seconds)
        self.verify_token = verify_token
        self.schools = schools
        self.school_years = set(range(2020, 2036)) if school_years is None else school_years
        self.subjects = {"Math", "ELA", "ELPAC"} if subjects is None else subjects
        self.group_write = group_write
        self.max_rows = max_rows
        self.imports: list[Import] = []
        self.base_url = ""
        self._groups: dict[tuple[str, str, int], Group] = {}

    @property
    def imports_url(self) -> str:
        return self.base_url + "/groups/imports/"

    @property
    def user_url(self) -> str:
        return self.base_url + "/imports/user"

    def groups(self) -> dict[tuple[str, str, int], Group]:
        """CERS's groups now, keyed by (school, lower-cased group name, year); a copy."""
        return {key: Group(g.name, g.subject, set(g.users), set(g.students)) for key, g in self._groups.items()}

    async def start(self) -> str:
        app = web.Application(middlewares=[self._observe])
        app.router.add_post("/groups/imports", self._post_import)
        app.router.add_post("/groups/imports/", self._post_import)
        app.router.add_get("/imports/user", self._get_user)
        app.router.add_get(r"/imports/{id:\d+}{rest:(/payload(/properties)?)?}", self._admin_only)
        self.base_url = await self._serve(app)
        return self.base_url

    # --- every request: record it, then apply the next fault

    @web.middleware
    async def _observe(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        seen = self._record(
            SeenRequest(request.method, request.path, hdrs.AUTHORIZATION in request.headers, datetime.now(UTC))
        )
        try:
            response = await self._answer(request, handler, seen.fault)
        except web.HTTPException as exc:
            seen.status = exc.status
            raise
        seen.status = None if seen.fault == "reset" else response.status
        return response

    async def _answer(self, request: web.Request, handler: Callable, fault: str | None) -> web.StreamResponse:
        if fault == "500":
            body = {"status": 500, "error": "Internal Server Error", "path": request.path}
            return web.json_response(body, status=500)
        if fault == "503":
            return web.Response(status=503, text="Service Temporarily Unavailable")
        if fault == "401":
            raise _oauth_error(web.HTTPUnauthorized, "invalid_token", "Access token expired")
        if is_rate_limit(fault):  # a gateway's rate limit
            return web.Response(status=429, text="Too Many Requests", headers=retry_after(fault))
        if fault == "reset":
            await request.read()
            drop_connection(request)
            return web.Response()  # goes nowhere
        if fault not in (None, "timeout"):
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        try:
            return await handler(request)
        finally:
            if fault == "timeout":  # the work is done; only the answer is late
                await self._hang()

    # --- routes

    def _authenticate(self, request: web.Request) -> str:
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _oauth_error(
                web.HTTPUnauthorized, "unauthorized", "Full authentication is required to access this resource"
            )
        user = self.verify_token(token.strip())
        if user is None:
            raise _oauth_error(web.HTTPUnauthorized, "invalid_token", "Invalid access token")
        return user

    async def _post_import(self, request: web.Request) -> web.Response:
        user = self._authenticate(request)
        if not self.group_write(user):
            raise _oauth_error(web.HTTPForbidden, "access_denied", "Access is denied")
        upload = await self._read_upload(request)
        digest = hashlib.md5(upload.data).hexdigest().upper()
        earlier = next((record for record in self.imports if record.digest == digest), None)
        if earlier is not None:  # CERS never processes the same bytes twice, whatever happened before
            return web.json_response(self._resource(earlier), status=202)
        verdict = check_file(
            upload.data,
            schools=self.schools,
            school_years=self.school_years,
            subjects=self.subjects,
            max_rows=self.max_rows,
        )
        now = datetime.now(UTC)
        record = Import(
            id=len(self.imports) + 1,
            batch=upload.batch,
            digest=digest,
            status="BAD_DATA" if verdict.failures else "ACCEPTED",
            message=render_message(verdict),
            creator=user,
            content_type=upload.content_type,
            created=now,
            rows=verdict.rows,
            field=upload.field,
            updated=now,
        )
        self.imports.append(record)
        answer = self._resource(record)
        if record.status == "ACCEPTED":  # the fake's group processor runs at once
            self._apply(verdict.blocks)
            record.status, record.updated = "PROCESSED", datetime.now(UTC)
        return web.json_response(answer, status=202)

    async def _read_upload(self, request: web.Request) -> _Upload:
        if not request.content_type.startswith("multipart/"):
            batch = request.query.get("batch") or request.query.get("filename")
            return _Upload(await request.read(), batch, request.headers.get(hdrs.CONTENT_TYPE))
        files: list[_Upload] = []
        try:
            async for part in await request.multipart():
                # As in Spring: only a part with a filename is a file; other fields are properties.
                if isinstance(part, BodyPartReader) and part.filename is not None:
                    content_type = part.headers.get(hdrs.CONTENT_TYPE)
                    files.append(_Upload(await part.read(), part.filename, content_type, part.name))
        except (ValueError, AssertionError) as exc:
            raise web.HTTPBadRequest(text=f"unreadable multipart body: {exc}") from exc
        # CERS's vendor document names the field `file`. RDW's open-source code would also take a lone file
        # part under any name, but nothing says CERS's deployment does: the fake takes `file` only.
        named = [upload for upload in files if upload.field == FILE_FIELD]
        if not named:
            raise web.HTTPBadRequest(text="missing multipart file")
        return named[0]

    def _apply(self, blocks: list[_Block]) -> None:
        """Delete-and-replace per group named in the file; other groups stay as they are."""
        canonical = {code.lower(): code for code in self.subjects}
        for block in blocks:
            subject = canonical.get(block.subject.lower()) if block.subject else None
            key = (block.school.strip(), block.name.strip().lower(), block.year)
            self._groups[key] = Group(block.name.strip(), subject, set(block.users), set(block.students))

    def _resource(self, record: Import) -> dict:
        link = f"{self.base_url}/imports/{record.id}"
        body = {
            "id": record.id,
            "content": "GROUPS",
            "contentType": record.content_type,
            "digest": record.digest,
            "status": record.status,
            "batch": record.batch,
            "creator": record.creator,
            "created": _iso(record.created),
            "updated": _iso(record.updated),
            "message": record.message,
            "_links": {
                "self": {"href": link},
                "payload": {"href": f"{link}/payload"},
                "payload-properties": {"href": f"{link}/payload/properties"},
            },
        }
        return {name: value for name, value in body.items() if value is not None}

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self._authenticate(request)
        writes = self.group_write(user)
        if not writes:
            grants = []
        elif self.schools is None:
            grants = [{"level": "STATE", "id": "CA", "role": "GROUP_ADMIN", "clientId": "CA", "stateId": "CA"}]
        else:
            grants = [
                {"level": "SCHOOL", "id": school, "role": "GROUP_ADMIN", "clientId": "CA", "stateId": "CA",
                 "entityId": school}
                for school in sorted(self.schools)
            ]
        authorities = [{"authority": "ROLE_GROUP_ADMIN"}, {"authority": "PERM_GROUP_WRITE"}] if writes else []
        return web.json_response({
            "password": "N/A",
            "username": user,
            "authorities": authorities,
            "accountNonExpired": True,
            "accountNonLocked": True,
            "credentialsNonExpired": True,
            "enabled": True,
            "tenancyChain": {"grants": grants, "empty": not grants},
        })

    async def _admin_only(self, request: web.Request) -> web.Response:
        """Import status and payloads are for Smarter administrators only; a group credential gets 403."""
        self._authenticate(request)
        raise _oauth_error(web.HTTPForbidden, "access_denied", "Access is denied")
