"""The CERS target end to end below the daemon: real snapshots, a token from Cognito (moto), group files
POSTed to the fake CERS server, which checks them against the documented contract and keeps the groups.

The measure of success is CERS's own state: after each delivery the fake's groups must be exactly the
groups worked out by hand for the small district (tests/cers/small_district.py) from README's rules, every
field compared, whatever was sent to get there.
"""

from __future__ import annotations

import asyncio
import csv
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from daemon.snapshots.job import UploadJob, run_job
from daemon.outbox import Job
from daemon.store import Delivery, DeliveryState
from daemon.receipts.writer import write_dry_run_files
from daemon.targets.cers.settings import CersTarget
from daemon.targets.cers.target import CersGroupsTarget
from tests.fakes.cers import FakeCers

from . import small_district as sd
from .moto_cognito import MotoCognito


def snapshot(tables: sd.Tables, folder: Path) -> Path:
    """A real snapshot folder of `tables`, made the way the daemon makes one."""
    package = sd.write_package(tables, folder.with_suffix(".zip"))
    outcome = run_job(UploadJob(package, folder))
    assert outcome.snapshot is not None, outcome.validation["counts_by_code"]
    return folder


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The small district's three days, as snapshot folders."""
    root = tmp_path_factory.mktemp("district")
    day1 = sd.day1()
    day2 = sd.day2(day1)
    return {"day1": snapshot(day1, root / "day1"), "day2": snapshot(day2, root / "day2"),
            "day3": snapshot(sd.day3(day2), root / "day3")}  # fmt: skip


def data_rows(data: bytes) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows[0] == sd.HEADER
    return rows[1:]


def delivery(upload_id: str, base: str | None = None, attempts: int = 1) -> Delivery:
    return Delivery(id=f"d-{upload_id}", tenant="north", target="cers", upload_id=upload_id,
                    idempotency_key=f"north.cers.{upload_id}", state=DeliveryState.IN_FLIGHT, attempts=attempts,
                    next_attempt_at="", created_at="", updated_at="", delivered_at=None, base_upload_id=base,
                    last_error=None, result=None)  # fmt: skip


@pytest.fixture
async def cers(cognito: MotoCognito):
    fake = FakeCers(verify_token=cognito.verify)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
def pool():
    with ThreadPoolExecutor(2) as executor:
        yield executor


def target_settings(cognito: MotoCognito, fake: FakeCers, **overrides) -> CersTarget:
    fields = {"imports_url": fake.imports_url, "cognito": cognito.settings(), "timeout_seconds": 5} | overrides
    return CersTarget(type="cers", **fields)


async def deliver(settings: CersTarget, job: Job, results: Path | None = None):
    """A delivery by a target that puts a dry run's files where the daemon's receipts writer would: in
    `results`, the tenant's results/ folder."""

    async def write_files(tenant: str, files: dict[str, bytes]) -> None:
        assert results is not None, "a dry run in a test that gave no results folder"
        await asyncio.to_thread(write_dry_run_files, results, files)

    target = CersGroupsTarget("north", settings, write_files)
    try:
        return await target.deliver(job)
    finally:
        await target.close()


async def test_the_first_delivery_sends_every_group_and_the_next_only_the_changed_ones(
    cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    settings = target_settings(cognito, cers)
    first = await deliver(settings, Job(delivery("u-1"), district["day1"], None, pool))
    assert first.state is DeliveryState.DELIVERED, first.error
    assert cers.groups() == sd.DAY1_CERS
    (sent,) = first.result["files"]
    assert sent["status"] == "ACCEPTED" and sent["name"] == "rosterd-north-u-1-1.csv"
    (posted,) = cers.imports
    assert (posted.field, posted.batch, posted.content_type) == ("file", "rosterd-north-u-1-1.csv", "text/csv")
    assert sd.blocks(posted.rows) == sd.expected_blocks(sd.DAY1_GROUPS)
    assert first.result["counts"]["sent"] == first.result["counts"]["groups"] == 5
    assert first.result["credential"] == cognito.username
    assert [(f["code"], f["sourcedId"]) for f in first.result["findings"]] == [("cers.school_without_id", "sch-new")]

    second = await deliver(settings, Job(delivery("u-2", base="u-1"), district["day2"], district["day1"], pool))
    assert second.state is DeliveryState.DELIVERED, second.error
    assert cers.groups() == sd.DAY2_CERS
    assert sd.blocks(cers.imports[-1].rows) == sd.expected_blocks(sd.DAY2_SENT)  # the study hall did not change
    assert (second.result["counts"]["sent"], second.result["counts"]["groups"]) == (4, 4)

    third = await deliver(settings, Job(delivery("u-3", base="u-2"), district["day3"], district["day2"], pool))
    assert third.state is DeliveryState.DELIVERED, third.error
    assert cers.groups() == sd.DAY3_CERS
    assert sd.blocks(cers.imports[-1].rows) == sd.expected_blocks(sd.DAY3_SENT)


async def test_a_repeated_attempt_sends_the_same_bytes_which_cers_reports_as_processed(
    cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    settings = target_settings(cognito, cers)
    job = Job(delivery("u-1"), district["day1"], None, pool)
    assert (await deliver(settings, job)).state is DeliveryState.DELIVERED
    again = await deliver(settings, Job(delivery("u-1", attempts=2), district["day1"], None, pool))
    assert again.state is DeliveryState.DELIVERED
    assert again.result["files"][0]["status"] == "PROCESSED"
    assert again.result["files"][0]["id"] == cers.imports[0].id and len(cers.imports) == 1


async def test_a_large_change_is_split_into_files_at_group_boundaries(
    cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    settings = target_settings(cognito, cers, max_rows_per_file=10)  # the day-1 file has 21 rows
    outcome = await deliver(settings, Job(delivery("u-1"), district["day1"], None, pool))
    assert outcome.state is DeliveryState.DELIVERED, outcome.error
    names = [f["name"] for f in outcome.result["files"]]
    assert len(names) > 1 and names == [f"rosterd-north-u-1-{n}.csv" for n in range(1, len(names) + 1)]
    assert all(f["status"] == "ACCEPTED" and f["rows"] <= 10 for f in outcome.result["files"])
    per_file = [sd.blocks(posted.rows) for posted in cers.imports]
    assert sum(len(found) for found in per_file) == 5  # no group in two files
    assert {key: rows for found in per_file for key, rows in found.items()} == sd.expected_blocks(sd.DAY1_GROUPS)
    assert cers.groups() == sd.DAY1_CERS


async def test_an_expired_token_gets_one_fresh_login(
    cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    settings = target_settings(cognito, cers, max_rows_per_file=400)
    target = CersGroupsTarget("north", settings)
    try:
        await target.client().auth.token()  # logged in and cached
        await asyncio.to_thread(cognito.verify.reject_issued_so_far)  # CERS now refuses that token: 401
        outcome = await target.deliver(Job(delivery("u-1"), district["day1"], None, pool))
    finally:
        await target.close()
    assert outcome.state is DeliveryState.DELIVERED, outcome.error
    statuses = [r.status for r in cers.requests]
    assert statuses[0] == 401 and all(s == 202 for s in statuses[1:])
    assert cers.groups() == sd.DAY1_CERS


@pytest.mark.parametrize("fault", ["500", "503", "timeout", "reset"])
async def test_server_trouble_is_retried(
    fault: str, cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    cers.faults.append(fault)
    cers.hang_seconds = 10
    settings = target_settings(cognito, cers, timeout_seconds=1)
    outcome = await deliver(settings, Job(delivery("u-1"), district["day1"], None, pool))
    assert outcome.state is DeliveryState.FAILED
    expected = {"500": "HTTP 500", "503": "HTTP 503", "timeout": "no answer within 1 s", "reset": "ClientOSError"}
    assert expected[fault] in outcome.error
    if fault != "timeout":  # a timed-out POST may have been processed; the others were not
        assert cers.groups() == {}
    again = await deliver(settings, Job(delivery("u-1", attempts=2), district["day1"], None, pool))
    assert again.state is DeliveryState.DELIVERED
    assert again.result["files"][0]["status"] == ("PROCESSED" if fault == "timeout" else "ACCEPTED")
    assert cers.groups() == sd.DAY1_CERS


async def test_a_credential_without_group_write_is_refused_for_good(
    cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    cers.group_write = lambda user: False
    outcome = await deliver(target_settings(cognito, cers), Job(delivery("u-1"), district["day1"], None, pool))
    assert outcome.state is DeliveryState.DEAD
    assert "403" in outcome.error and "GROUP_WRITE" in outcome.error and cognito.username in outcome.error


async def test_bad_data_is_refused_for_good_with_cers_own_rows(
    cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    cers.schools = {sd.OAK}  # the credential covers one school only
    outcome = await deliver(target_settings(cognito, cers), Job(delivery("u-1"), district["day1"], None, pool))
    assert outcome.state is DeliveryState.DEAD
    assert "BAD_DATA" in outcome.error and f"Failure: School [{sd.RIVER}] can not be found" in outcome.error
    assert outcome.result["files"][0]["status"] == "BAD_DATA" and cers.groups() == {}


@pytest.mark.parametrize("retry_after", ["120", None])
async def test_a_rate_limit_is_retried_no_sooner_than_cers_asks(
    retry_after: str | None, cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    cers.faults.append("429" + (f":{retry_after}" if retry_after else ""))
    outcome = await deliver(target_settings(cognito, cers), Job(delivery("u-1"), district["day1"], None, pool))
    assert outcome.state is DeliveryState.FAILED and "HTTP 429" in outcome.error
    assert outcome.retry_after == (120.0 if retry_after else None) and cers.groups() == {}


async def test_a_refused_cognito_credential_is_dead(cognito: MotoCognito, cers: FakeCers, district: dict, pool,
                                                    tmp_path: Path) -> None:  # fmt: skip
    cognito.secret_file.write_text("not-the-secret")
    outcome = await deliver(target_settings(cognito, cers), Job(delivery("u-1"), district["day1"], None, pool))
    assert outcome.state is DeliveryState.DEAD and "NotAuthorizedException" in outcome.error
    assert "not-the-secret" not in outcome.error and cers.requests == []


async def test_dry_run_writes_the_exact_files_to_results(district: dict, pool, tmp_path: Path) -> None:
    settings = CersTarget(type="cers", dry_run=True, imports_url="http://127.0.0.1:9/never/")
    outcome = await deliver(settings, Job(delivery("u-1"), district["day1"], None, pool), tmp_path)
    assert outcome.state is DeliveryState.DELIVERED and outcome.result["dry_run"] is True
    written = sorted((tmp_path / "cers").iterdir())
    assert [p.name for p in written] == ["rosterd-north-u-1-1.csv"]
    data = written[0].read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf") and b"\r" not in data and data.endswith(b"\n")
    assert sd.blocks(data_rows(data)) == sd.expected_blocks(sd.DAY1_GROUPS)


async def test_nothing_changed_sends_nothing(cognito: MotoCognito, cers: FakeCers, district: dict, pool,
                                             tmp_path: Path) -> None:  # fmt: skip
    outcome = await deliver(target_settings(cognito, cers),
                            Job(delivery("u-2", base="u-1"), district["day1"], district["day1"], pool))
    assert outcome.state is DeliveryState.DELIVERED
    assert outcome.result["files"] == [] and outcome.result["counts"]["sent"] == 0 and cers.requests == []
