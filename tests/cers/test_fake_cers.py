"""The fake CERS server keeps the student-group import contract: uploads, validation, dedupe, replace, faults."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.cers import HEADERS, FakeCers, Group

DATA = Path(__file__).parent.parent / "data" / "cers"
SAMPLE = (DATA / "rdw_docs_sample_groups.csv").read_bytes()
HEADER = ",".join(HEADERS)
SCHOOL = "88800120012001"  # the sample's school
OTHER = "88800120012002"
ORDER = "sort CSV by school, group, year"
INVALID_HEADERS = f"Row: 0 Failure: Invalid headers. Headers must be in order: [{HEADER}]"
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def row(name: str = "Math7", school: str = SCHOOL, year: str = "2024", subject: str = "", ssid: str = "",
        login: str = "") -> str:
    return ",".join((name, school, year, subject, ssid, login))


def csv_bytes(*rows: str, newline: str = "\n", header: str = HEADER) -> bytes:
    return "".join(line + newline for line in (header, *rows)).encode()


def students(count: int, name: str = "Big") -> list[str]:
    return [row(name, ssid=f"SSID{number:04d}") for number in range(count)]


@pytest.fixture
async def start_cers():
    started: list[FakeCers] = []

    async def start(**options) -> FakeCers:
        fake = FakeCers(**{"schools": {SCHOOL, OTHER}, "school_years": {2018, 2024}, **options})
        await fake.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        await fake.close()


@pytest.fixture
async def cers(start_cers) -> FakeCers:
    return await start_cers()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def multipart(*parts: tuple[str, bytes, str | None]) -> aiohttp.MultipartWriter:
    """Form parts as (field name, bytes, filename or None for a plain field)."""
    writer = aiohttp.MultipartWriter("form-data")
    for name, data, filename in parts:
        part = writer.append(data, {"Content-Type": "text/csv"})
        part.set_content_disposition("form-data", name=name, **({"filename": filename} if filename else {}))
    return writer


async def send(
    http, method: str, url: str, *, token: str | None = "test-token", headers: dict | None = None, **options
) -> tuple[int, object]:
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    async with http.request(method, url, headers=headers, **options) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def upload(http, cers: FakeCers, data: bytes, *, filename: str = "groups.csv", **options) -> tuple[int, dict]:
    return await send(http, "POST", cers.imports_url, data=multipart(("file", data, filename)), **options)


async def message_for(http, cers: FakeCers, data: bytes) -> str:
    status, body = await upload(http, cers, data)
    assert status == 202
    return body["message"]


# --- accepted uploads


async def test_the_rdw_sample_is_accepted_and_becomes_two_groups(cers, http):
    status, body = await upload(http, cers, SAMPLE, filename="rdw_docs_sample_groups.csv")

    assert status == 202
    assert body["status"] == "ACCEPTED"
    assert body["message"] == f"2 group(s) accepted for {SCHOOL}."
    assert body["content"] == "GROUPS" and body["contentType"] == "text/csv"
    assert body["digest"] == hashlib.md5(SAMPLE).hexdigest().upper()
    assert body["batch"] == "rdw_docs_sample_groups.csv" and body["creator"] == "tester"
    assert ISO_UTC.fullmatch(body["created"]) and ISO_UTC.fullmatch(body["updated"])
    link = f"{cers.base_url}/imports/{body['id']}"
    assert body["_links"] == {
        "self": {"href": link},
        "payload": {"href": link + "/payload"},
        "payload-properties": {"href": link + "/payload/properties"},
    }
    assert cers.groups() == {
        (SCHOOL, "jt4thgrade", 2018): Group(
            "JT4thGrade", None, {"jteacher@example.com", "btutor@example.com"}, {"SSID001", "SSID002", "SSID003"}
        ),
        (SCHOOL, "me6thgrademath", 2018): Group(
            "ME6thGradeMath", "Math", {"meducator@example.com", "sinstructor@example.com"}, {"SSID010", "SSID011", "SSID012"}
        ),
    }
    [record] = cers.imports
    assert (record.status, record.id, len(record.rows)) == ("PROCESSED", body["id"], 12)


async def test_the_same_bytes_again_are_reported_processed_and_not_applied_again(cers, http):
    _, first = await upload(http, cers, SAMPLE)
    replacement = csv_bytes(row("JT4thGrade", year="2018", ssid="SSID999"))
    await upload(http, cers, replacement)

    status, again = await upload(http, cers, SAMPLE, filename="renamed.csv")

    assert status == 202
    assert again["status"] == "PROCESSED"
    assert (again["id"], again["created"], again["batch"]) == (first["id"], first["created"], "groups.csv")
    assert len(cers.imports) == 2
    assert cers.groups()[(SCHOOL, "jt4thgrade", 2018)].students == {"SSID999"}


async def test_a_rejected_file_stays_rejected_even_once_it_would_pass(cers, http):
    data = csv_bytes(row(year="2030"))
    _, first = await upload(http, cers, data)
    cers.school_years.add(2030)

    _, again = await upload(http, cers, data)

    assert first["status"] == again["status"] == "BAD_DATA"
    assert again["id"] == first["id"] and len(cers.imports) == 1


@pytest.mark.parametrize("path", ["/groups/imports", "/groups/imports/"])
async def test_a_raw_body_is_accepted_with_its_filename(cers, http, path):
    url = f"{cers.base_url}{path}?filename=raw.csv"
    status, body = await send(http, "POST", url, data=SAMPLE, headers={"Content-Type": "application/csv"})

    assert status == 202
    assert (body["status"], body["batch"], body["contentType"]) == ("ACCEPTED", "raw.csv", "application/csv")


async def test_the_file_field_is_chosen_among_several_file_parts(cers, http):
    form = multipart(("notes", b"not a csv", "notes.txt"), ("file", SAMPLE, "chosen.csv"), ("tag", b"x", None))
    status, body = await send(http, "POST", cers.imports_url, data=form)
    assert (status, body["batch"], body["status"]) == (202, "chosen.csv", "ACCEPTED")
    assert cers.imports[0].field == "file"


@pytest.mark.parametrize("parts", [
    [("file", SAMPLE, None)],  # a plain field, not a file
    [("upload", SAMPLE, "any.csv")],  # a lone file under another name: the vendor document says `file`
    [("a", SAMPLE, "a.csv"), ("b", SAMPLE, "b.csv")],
], ids=["not-a-file", "lone-file-misnamed", "two-misnamed"])  # fmt: skip
async def test_no_usable_file_part_is_a_400(cers, http, parts):
    status, body = await send(http, "POST", cers.imports_url, data=multipart(*parts))
    assert (status, body) == (400, "missing multipart file")
    assert cers.imports == []


@pytest.mark.parametrize(
    "data",
    [
        csv_bytes(row(), newline="\r\n"),
        csv_bytes(row(), newline="\r"),
        b"\xef\xbb\xbf" + csv_bytes(row()),
        csv_bytes(row(), header=HEADER.upper()),
        csv_bytes('"Math7","88800120012001","2024","Math","SSID1","a,b@example.com"'),
        csv_bytes(row(subject="MATH"), row(subject=""), row(subject="math")),
        csv_bytes(row(subject="all"), row("Ela7", subject="ELA"), row("Elpac7", subject="elpac")),
        csv_bytes(row("x" * 100), row("Name_with-dash")),
        csv_bytes(*students(200)),
    ],
    ids=["crlf", "cr", "bom", "upper-header", "quoted", "subject-case", "subjects", "names", "200-students"],
)
async def test_valid_files_are_accepted(cers, http, data):
    _, body = await upload(http, cers, data)
    assert body["status"] == "ACCEPTED", body["message"]


async def test_quoted_values_are_honoured(cers, http):
    await upload(http, cers, csv_bytes('"Math7","88800120012001","2024","Math","SSID1","a,b@example.com"'))
    assert cers.groups()[(SCHOOL, "math7", 2024)] == Group("Math7", "Math", {"a,b@example.com"}, {"SSID1"})


async def test_subjects_are_kept_by_their_code_and_all_means_none(cers, http):
    await upload(http, cers, csv_bytes(row("M", subject="MATH"), row("A", subject="all"), row("N")))
    assert [group.subject for group in cers.groups().values()] == ["Math", None, None]


async def test_the_success_message_counts_groups_per_school(cers, http):
    data = csv_bytes(row("A1"), row("A2"), row("A2", year="2018"), row("B1", school=OTHER))
    message = await message_for(http, cers, data)
    assert message == f"3 group(s) accepted for {SCHOOL}.\n1 group(s) accepted for {OTHER}."


# --- rejected uploads


async def test_the_tsv_processor_fixture_has_invalid_headers(cers, http):
    message = await message_for(http, cers, (DATA / "sample-group-004.crlf.tsv").read_bytes())
    assert message == INVALID_HEADERS


async def test_the_padded_processor_fixture_is_rejected_row_by_row(start_cers, http):
    cers = await start_cers(schools=None)
    school_order = "Failure: School [{}] is out-of-order: " + ORDER
    record_order = "Failure: Record is out-of-order: " + ORDER
    message = await message_for(http, cers, (DATA / "sample-group-003.lf.csv").read_bytes())
    assert message.splitlines() == [
        "Row: 2 Failure: Record does not contain a school year",  # " 2018"
        "Row: 3 Failure: Record does not contain a school year",  # "2018 "
        "Row: 5 " + school_order.format("DS9002"),  # "DS9002 " on row 4 is another school
        "Row: 5 " + record_order,
        "Row: 6 Failure: Invalid group name:  JT4thGrade",
        "Row: 7 " + school_order.format("DS9002"),
        "Row: 8 " + school_order.format(" DS9002"),
        "Row: 9 " + school_order.format("DS9002"),
        "Row: 9 " + record_order,
        "Row: 10 " + school_order.format(" DS9002"),
        "Row: 10 " + record_order,
        "Row: 11 " + school_order.format("DS9002"),
        "Row: 11 " + record_order,
    ]
    assert cers.imports[0].status == "BAD_DATA" and cers.groups() == {}


REJECTED = {
    "empty": (b"", "Row: 0 Failure: Empty file"),
    "header-only": (csv_bytes(), "Row: 0 Failure: Empty file"),
    "header-order": (csv_bytes(row(), header=",".join(HEADERS[1::-1] + HEADERS[2:])), INVALID_HEADERS),
    "header-extra": (csv_bytes(row() + ",", header=HEADER + ",note"), INVALID_HEADERS),
    "not-utf8": (
        csv_bytes(row()).replace(b"Math7", b"Math\xe9"),
        f"Row: 0 Failure: Error reading file [not UTF-8 at byte {len(HEADER) + 1 + 4}]",
    ),
    "mixed-endings": (
        f"{HEADER}\r\n{row()}\n".encode(),
        "Row: 0 Failure: Mixed line endings: use one of CRLF, LF or CR throughout the file",
    ),
    "open-quote": (
        csv_bytes(f'"Math7,{SCHOOL}'),
        "Row: 0 Failure: File does not appear to be a valid CSV with a header row",
    ),
    "short-row": (csv_bytes(f"Math7,{SCHOOL},2024"), "Row: 1 Failure: Record has 3 values; expected 6"),
    "no-school": (csv_bytes(row(school="")), "Row: 1 Failure: Record does not contain a school"),
    "no-name": (csv_bytes(row(name="")), "Row: 1 Failure: Record does not contain a group name"),
    "no-year": (csv_bytes(row(year="")), "Row: 1 Failure: Record does not contain a school year"),
    "padded-year": (csv_bytes(row(year=" 2024")), "Row: 1 Failure: Record does not contain a school year"),
    "span-year": (csv_bytes(row(year="2023-24")), "Row: 1 Failure: Record does not contain a school year"),
    "unknown-year": (csv_bytes(row(year="2019")), "Row: 1 Failure: Invalid school year: 2019"),
    "subject": (csv_bytes(row(subject="Science")), "Row: 1 Failure: Invalid subject: Science"),
    "padded-subject": (csv_bytes(row(subject=" Math")), "Row: 1 Failure: Invalid subject:  Math"),
    "unknown-school": (csv_bytes(row(school="999")), "Row: 1 Failure: School [999] can not be found"),
    "padded-school": (csv_bytes(row(school=SCHOOL + " ")), f"Row: 1 Failure: School [{SCHOOL} ] can not be found"),
    "school-order": (
        csv_bytes(row("G1"), row("G2", school=OTHER), row("G3")),
        f"Row: 3 Failure: School [{SCHOOL}] is out-of-order: {ORDER}",
    ),
    "group-order": (csv_bytes(row("G1"), row("G2"), row("G1")), f"Row: 3 Failure: Record is out-of-order: {ORDER}"),
    "group-order-any-case": (
        csv_bytes(row("G1"), row("G2"), row("g1")),
        f"Row: 3 Failure: Record is out-of-order: {ORDER}",
    ),
    "group-order-by-year": (
        csv_bytes(row("G1"), row("G1", year="2018"), row("G1")),
        f"Row: 3 Failure: Record is out-of-order: {ORDER}",
    ),
    "subject-change": (
        csv_bytes(row(subject="Math"), row(), row(subject="ELA")),
        "Row: 3 Failure: Record is attempting to re-define group subject from [Math] to [ELA]",
    ),
    "all-then-math": (
        csv_bytes(row(subject="All"), row(subject="Math")),
        "Row: 2 Failure: Record is attempting to re-define group subject from [All] to [Math]",
    ),
    "name-space": (csv_bytes(row("Math 7")), "Row: 1 Failure: Invalid group name: Math 7"),
    "name-dot": (csv_bytes(row("Math.7")), "Row: 1 Failure: Invalid group name: Math.7"),
    "name-long": (csv_bytes(row("x" * 101)), "Row: 1 Failure: Invalid group name: " + "x" * 101),
    "201-students": (  # reported on the group's last row
        csv_bytes(row("Big", subject="Math"), *students(201), row("Next")),
        f"Row: 202 Failure: School [{SCHOOL}] Group [Big] contains 201 students.  "
        "Maximum students allowed per group is 200",
    ),
}


@pytest.mark.parametrize("data, message", REJECTED.values(), ids=REJECTED.keys())
async def test_each_rule_rejects_the_whole_file_with_its_message(cers, http, data, message):
    status, body = await upload(http, cers, data)
    assert (status, body["status"], body["message"]) == (202, "BAD_DATA", message)
    assert cers.groups() == {}


async def test_one_failure_rejects_a_file_of_good_groups(cers, http):
    message = await message_for(http, cers, csv_bytes(row("Good1"), row("Good2"), row("Bad", year="2019")))
    assert message == "Row: 3 Failure: Invalid school year: 2019"
    assert cers.groups() == {}


async def test_an_unknown_school_is_reported_once(cers, http):
    message = await message_for(http, cers, csv_bytes(*(row(school="123", ssid=str(n)) for n in range(3))))
    assert message == "Row: 1 Failure: School [123] can not be found"


async def test_failures_are_listed_up_to_100(cers, http):
    message = await message_for(http, cers, csv_bytes(*(row(year="2019") for _ in range(105))))
    lines = message.splitlines()
    assert len(lines) == 101
    assert lines[99] == "Row: 100 Failure: Invalid school year: 2019"
    assert lines[100] == "With 5 additional validation failures"


async def test_a_file_may_hold_at_most_max_rows(start_cers, http):
    cers = await start_cers(max_rows=3)
    assert await message_for(http, cers, csv_bytes(*[row()] * 3)) == f"1 group(s) accepted for {SCHOOL}."
    message = await message_for(http, cers, csv_bytes(*[row()] * 4))
    assert message == "Row: 0 Failure: File contains 4 rows.  Maximum rows allowed per file is 3"


# --- delete-and-replace


async def test_an_upload_replaces_the_members_of_the_groups_it_names(cers, http):
    await upload(http, cers, csv_bytes(
        row("One", subject="Math", login="t1@example.com"), row("One", ssid="S1"), row("One", ssid="S2"),
        row("Two", login="t2@example.com"), row("Two", ssid="S3"),
    ))
    two = Group("Two", None, {"t2@example.com"}, {"S3"})

    await upload(http, cers, csv_bytes(row("ONE", ssid="S9"), row("ONE", login="t9@example.com")))
    assert cers.groups() == {
        (SCHOOL, "one", 2024): Group("ONE", None, {"t9@example.com"}, {"S9"}),  # the new spelling
        (SCHOOL, "two", 2024): two,
    }

    await upload(http, cers, csv_bytes(row("Two")))
    assert cers.groups()[(SCHOOL, "two", 2024)] == Group("Two", None, set(), set())
    assert cers.groups()[(SCHOOL, "one", 2024)].students == {"S9"}


# --- authorization


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dGVzdGVyOng="}, {"Authorization": "Bearer"}])
async def test_an_upload_without_a_bearer_token_is_a_401(cers, http, headers):
    async with http.post(cers.imports_url, data=multipart(("file", SAMPLE, "g.csv")), headers=headers) as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert cers.imports == []


async def test_an_unknown_token_is_a_401_invalid_token(cers, http):
    status, body = await upload(http, cers, SAMPLE, token="stolen")
    assert status == 401
    assert body["error"] == "invalid_token" and body["error_description"]


async def test_a_user_without_group_write_is_refused(start_cers, http):
    cers = await start_cers(group_write=lambda user: False)
    status, body = await upload(http, cers, SAMPLE)
    assert (status, body["error"]) == (403, "access_denied")
    assert cers.imports == []
    status, user = await send(http, "GET", cers.user_url)
    assert status == 200 and user["authorities"] == []


async def test_the_user_endpoint_shows_the_identity_and_its_rights(start_cers, http):
    cers = await start_cers(verify_token=lambda token: {"t-1": "sis@lea.example"}.get(token), schools={SCHOOL})
    status, user = await send(http, "GET", cers.user_url, token="t-1")
    assert status == 200
    assert user["username"] == "sis@lea.example"
    assert {"authority": "PERM_GROUP_WRITE"} in user["authorities"]
    assert [grant["id"] for grant in user["tenancyChain"]["grants"]] == [SCHOOL]
    assert (await send(http, "GET", cers.user_url, token=None))[0] == 401
    assert (await send(http, "GET", cers.user_url, token="test-token"))[0] == 401


async def test_import_status_is_for_administrators_only(cers, http):
    _, body = await upload(http, cers, SAMPLE)
    status, _ = await send(http, "GET", body["_links"]["self"]["href"])
    assert status == 403


async def test_every_request_is_recorded(cers, http):
    await upload(http, cers, SAMPLE)
    await send(http, "GET", cers.user_url, token=None)
    assert [(r.method, r.path, r.authorization, r.status) for r in cers.requests] == [
        ("POST", "/groups/imports/", True, 202),
        ("GET", "/imports/user", False, 401),
    ]


# --- faults


@pytest.mark.parametrize("fault, status", [("500", 500), ("503", 503), ("401", 401), ("429", 429)])
async def test_a_fault_answers_once_before_authentication(cers, http, fault, status):
    cers.faults.append(fault)
    assert (await upload(http, cers, SAMPLE, token=None))[0] == status
    assert cers.imports == [] and cers.faults == []
    again, body = await upload(http, cers, SAMPLE)
    assert (again, body["status"]) == (202, "ACCEPTED")


async def test_a_429_fault_may_say_when_to_come_back(cers, http):
    cers.faults += ["429:120", "429"]
    for retry_after in ("120", None):
        async with http.post(cers.imports_url, data=multipart(("file", SAMPLE, "g.csv")),
                             headers={"Authorization": "Bearer test-token"}) as response:  # fmt: skip
            assert (response.status, response.headers.get("Retry-After")) == (429, retry_after)
    assert cers.imports == []


async def test_every_request_carries_its_arrival_time(cers, http):
    from datetime import UTC, datetime

    before = datetime.now(UTC)
    await send(http, "GET", cers.user_url)
    assert before <= cers.requests[0].at <= datetime.now(UTC)


async def test_a_401_fault_reads_as_an_expired_token(cers, http):
    cers.faults.append("401")
    status, body = await send(http, "GET", cers.user_url)
    assert (status, body["error"]) == (401, "invalid_token")
    assert (await send(http, "GET", cers.user_url))[0] == 200


async def test_a_reset_drops_the_connection_without_processing(cers, http):
    cers.faults.append("reset")
    with pytest.raises(aiohttp.ClientConnectionError):
        await upload(http, cers, SAMPLE)
    assert cers.imports == [] and cers.requests[-1].status is None
    assert (await upload(http, cers, SAMPLE))[1]["status"] == "ACCEPTED"


async def test_a_timeout_processes_the_upload_but_answers_late(start_cers, http):
    cers = await start_cers(hang_seconds=60)  # answered at close: the client gives up long before
    cers.faults.append("timeout")
    with pytest.raises(TimeoutError):  # 2 s: time enough to process the file first, however loaded the machine
        await upload(http, cers, SAMPLE, timeout=aiohttp.ClientTimeout(total=2))
    assert [record.status for record in cers.imports] == ["PROCESSED"]
    assert len(cers.groups()) == 2

    status, body = await upload(http, cers, SAMPLE)  # a retry learns the first attempt went through
    assert (status, body["status"], body["id"]) == (202, "PROCESSED", cers.imports[0].id)


async def test_a_timeout_answer_arrives_after_hang_seconds(start_cers, http):
    cers = await start_cers(hang_seconds=0.3)
    cers.faults.append("timeout")
    began = time.monotonic()
    status, _ = await send(http, "GET", cers.user_url)
    assert status == 200 and time.monotonic() - began >= 0.3


async def test_close_does_not_wait_for_a_hanging_answer(http):
    cers = FakeCers(hang_seconds=30)
    await cers.start()
    cers.faults.append("timeout")
    with pytest.raises(TimeoutError):
        await send(http, "GET", cers.user_url, timeout=aiohttp.ClientTimeout(total=0.1))
    await asyncio.wait_for(cers.close(), 5)
