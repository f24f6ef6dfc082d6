"""The CERS target end to end below the daemon: real snapshots, a token from Cognito (moto), group files
POSTed to the fake CERS server, which checks them against the documented contract and keeps the groups.

The measure of success is CERS's own state: after each delivery the fake's groups must be exactly the
groups of the snapshot delivered, whatever was sent to get there.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from daemon.ingest import process_upload
from daemon.oneroster.churn import Churn, churn
from daemon.oneroster.generate import DistrictSpec, generate, write_zip
from daemon.outbox import Job
from daemon.store import Delivery, DeliveryState
from daemon.targets.cers import groups as cers_groups
from daemon.targets.cers.settings import CersTarget
from daemon.targets.cers.target import CersGroupsTarget, build_files
from tests.fakes.cers import FakeCers

from .moto_cognito import MotoCognito


def snapshot(tables: dict[str, pl.DataFrame], folder: Path, version: str = "1.1") -> Path:
    """A real snapshot folder of `tables`, made the way the daemon makes one."""
    package = folder.with_suffix(".zip")
    write_zip(tables, package, version)
    outcome = process_upload(str(package), {"staging": str(folder), "base": None, "holds": {}})
    assert "snapshot" in outcome, outcome["validation"]["counts_by_code"]
    return folder


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Day 1 of a small generated district and a day 2 with churn, as snapshot folders."""
    root = tmp_path_factory.mktemp("district")
    day1 = generate(DistrictSpec(schools=2, students_per_school=60, teachers_per_school=4))
    day2 = churn(day1, "1.1", Churn(withdrawn=3, arrivals=2, new_emails=1, period_changes=1))
    return {"day1": snapshot(day1, root / "day1"), "day2": snapshot(day2.bulk, root / "day2")}


def expected_groups(folder: Path, target: CersTarget) -> dict[tuple[str, str, int], tuple[str | None, set, set]]:
    """The groups a snapshot should leave in CERS, keyed as the fake keys them."""
    frames = {p.stem: pl.read_parquet(p) for p in folder.glob("*.parquet")}
    built, _findings = cers_groups.build_groups(frames, target.mapping, target.filters)
    return {(g["school_natural_id"].lower(), g["group_name"].lower(), g["school_year"]):
            (None if g["subject_code"] in ("", "All") else g["subject_code"], set(g["teachers"]), set(g["students"]))
            for g in built.iter_rows(named=True)}  # fmt: skip


def cers_state(fake: FakeCers) -> dict:
    return {key: (None if g.subject in (None, "All") else g.subject, g.users, g.students)
            for key, g in fake.groups().items()}  # fmt: skip


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


async def deliver(settings: CersTarget, job: Job):
    target = CersGroupsTarget("north", settings)
    try:
        return await target.deliver(job)
    finally:
        await target.close()


async def test_the_first_delivery_sends_every_group_and_the_next_only_the_changed_ones(
    cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    settings = target_settings(cognito, cers)
    first = await deliver(settings, Job(delivery("u-1"), district["day1"], None, tmp_path, pool))
    assert first.state is DeliveryState.DELIVERED, first.error
    assert cers_state(cers) == expected_groups(district["day1"], settings)
    (sent,) = first.result["files"]
    assert sent["status"] == "ACCEPTED" and sent["name"] == "rosterd-north-u-1-1.csv"
    assert first.result["counts"]["sent"] == first.result["counts"]["groups"] == len(cers.groups())
    assert first.result["credential"] == cognito.username

    second = await deliver(settings, Job(delivery("u-2", base="u-1"), district["day2"], district["day1"], tmp_path, pool))
    assert second.state is DeliveryState.DELIVERED, second.error
    assert cers_state(cers) == expected_groups(district["day2"], settings)
    counts = second.result["counts"]
    assert 0 < counts["sent"] < counts["groups"]  # only the groups the churn touched
    assert counts["sent"] == counts["added"] + counts["changed"] + counts["emptied"]
    assert cers.imports[-1].status == "PROCESSED" and len(cers.imports[-1].rows) < len(cers.imports[0].rows)


async def test_a_repeated_attempt_sends_the_same_bytes_which_cers_reports_as_processed(
    cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    settings = target_settings(cognito, cers)
    job = Job(delivery("u-1"), district["day1"], None, tmp_path, pool)
    assert (await deliver(settings, job)).state is DeliveryState.DELIVERED
    again = await deliver(settings, Job(delivery("u-1", attempts=2), district["day1"], None, tmp_path, pool))
    assert again.state is DeliveryState.DELIVERED
    assert again.result["files"][0]["status"] == "PROCESSED"
    assert again.result["files"][0]["id"] == cers.imports[0].id and len(cers.imports) == 1


async def test_a_large_change_is_split_into_files_at_group_boundaries(
    cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    settings = target_settings(cognito, cers, max_rows_per_file=150)
    outcome = await deliver(settings, Job(delivery("u-1"), district["day1"], None, tmp_path, pool))
    assert outcome.state is DeliveryState.DELIVERED, outcome.error
    names = [f["name"] for f in outcome.result["files"]]
    assert len(names) > 2 and names == [f"rosterd-north-u-1-{n}.csv" for n in range(1, len(names) + 1)]
    assert all(f["status"] == "ACCEPTED" and f["rows"] <= 150 for f in outcome.result["files"])
    assert cers_state(cers) == expected_groups(district["day1"], settings)


async def test_an_expired_token_gets_one_fresh_login(
    cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    settings = target_settings(cognito, cers, max_rows_per_file=400)
    target = CersGroupsTarget("north", settings)
    try:
        await target.client().auth.token()  # logged in and cached
        await asyncio.to_thread(cognito.verify.reject_issued_so_far)  # CERS now refuses that token: 401
        outcome = await target.deliver(Job(delivery("u-1"), district["day1"], None, tmp_path, pool))
    finally:
        await target.close()
    assert outcome.state is DeliveryState.DELIVERED, outcome.error
    statuses = [r.status for r in cers.requests]
    assert statuses[0] == 401 and all(s == 202 for s in statuses[1:])


@pytest.mark.parametrize("fault", ["500", "503", "timeout", "reset"])
async def test_server_trouble_is_retried(
    fault: str, cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    cers.faults.append(fault)
    cers.hang_seconds = 10
    settings = target_settings(cognito, cers, timeout_seconds=1)
    outcome = await deliver(settings, Job(delivery("u-1"), district["day1"], None, tmp_path, pool))
    assert outcome.state is DeliveryState.FAILED
    expected = {"500": "HTTP 500", "503": "HTTP 503", "timeout": "no answer within 1 s", "reset": "ClientOSError"}
    assert expected[fault] in outcome.error
    if fault != "timeout":  # a timed-out POST may have been processed; the others were not
        assert cers.groups() == {}
    again = await deliver(settings, Job(delivery("u-1", attempts=2), district["day1"], None, tmp_path, pool))
    assert again.state is DeliveryState.DELIVERED
    assert again.result["files"][0]["status"] == ("PROCESSED" if fault == "timeout" else "ACCEPTED")
    assert cers_state(cers) == expected_groups(district["day1"], settings)


async def test_a_credential_without_group_write_is_refused_for_good(
    cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    cers.group_write = lambda user: False
    outcome = await deliver(target_settings(cognito, cers), Job(delivery("u-1"), district["day1"], None, tmp_path, pool))
    assert outcome.state is DeliveryState.DEAD
    assert "403" in outcome.error and "GROUP_WRITE" in outcome.error and cognito.username in outcome.error


async def test_bad_data_is_refused_for_good_with_cers_own_rows(
    cognito: MotoCognito, cers: FakeCers, district: dict, pool, tmp_path: Path
) -> None:
    frames = {p.stem: pl.read_parquet(p) for p in district["day1"].glob("*.parquet")}
    schools = set(frames["orgs"].filter(pl.col("type") == "school")["identifier"])
    cers.schools = {sorted(schools)[0]}  # the credential covers one school only
    outcome = await deliver(target_settings(cognito, cers), Job(delivery("u-1"), district["day1"], None, tmp_path, pool))
    assert outcome.state is DeliveryState.DEAD
    assert "BAD_DATA" in outcome.error and "Row: " in outcome.error and "can not be found" in outcome.error
    assert outcome.result["files"][0]["status"] == "BAD_DATA"


async def test_a_refused_cognito_credential_is_dead(cognito: MotoCognito, cers: FakeCers, district: dict, pool,
                                                    tmp_path: Path) -> None:  # fmt: skip
    cognito.secret_file.write_text("not-the-secret")
    outcome = await deliver(target_settings(cognito, cers), Job(delivery("u-1"), district["day1"], None, tmp_path, pool))
    assert outcome.state is DeliveryState.DEAD and "NotAuthorizedException" in outcome.error
    assert "not-the-secret" not in outcome.error and cers.requests == []


async def test_dry_run_writes_the_exact_files_to_results(district: dict, pool, tmp_path: Path) -> None:
    settings = CersTarget(type="cers", dry_run=True, imports_url="http://127.0.0.1:9/never/")
    outcome = await deliver(settings, Job(delivery("u-1"), district["day1"], None, tmp_path, pool))
    assert outcome.state is DeliveryState.DELIVERED and outcome.result["dry_run"] is True
    written = sorted((tmp_path / "cers").iterdir())
    assert [p.name for p in written] == ["rosterd-north-u-1-1.csv"]
    built = build_files(str(district["day1"]), None, settings.model_dump(mode="json"))
    assert written[0].read_bytes() == built["files"][0]
    assert written[0].read_bytes().startswith(b"group_name,school_natural_id,school_year,subject_code,student_ssid,"
                                              b"group_user_login\n")  # fmt: skip


async def test_nothing_changed_sends_nothing(cognito: MotoCognito, cers: FakeCers, district: dict, pool,
                                             tmp_path: Path) -> None:  # fmt: skip
    outcome = await deliver(target_settings(cognito, cers),
                            Job(delivery("u-2", base="u-1"), district["day1"], district["day1"], tmp_path, pool))
    assert outcome.state is DeliveryState.DELIVERED
    assert outcome.result["files"] == [] and outcome.result["counts"]["sent"] == 0 and cers.requests == []
