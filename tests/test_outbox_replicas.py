"""Two replicas' outboxes on one store: a target's delivery is sent by one of them at a time, and the other
takes it over only once the first stops renewing its lease (it died). Each replica is a real Outbox on its own
handle to the store (SQLite: two connections to one file; PostgreSQL: two pools on one database); the targets
are the scripted stand-ins of tests/test_outbox.py."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from daemon.outbox import Outbox
from daemon.store import DeliveryState, StoreInterface
from tests.store.implementations import IMPLEMENTATIONS, open_implementation
from tests.test_outbox import ScriptedTarget, policy
from tests.test_snapshot_store import record, upload

LEASE = 3.0  # seconds: a lapse comes soon; a live replica renews it every second, so a loaded machine that
# holds a renewal up for a moment does not make a live replica look dead


@pytest.fixture(params=IMPLEMENTATIONS)
def replicas(request: pytest.FixtureRequest, tmp_path):
    pair = [open_implementation(request, request.param, tmp_path, {"north": ["cers"]}) for _ in range(2)]
    for name, replica in zip(("alpha", "beta"), pair, strict=True):
        replica.replica, replica.lease_seconds = name, LEASE
    yield pair
    for replica in pair:
        replica.close()


def outbox(store: StoreInterface, target: ScriptedTarget, pool, lines: list) -> Outbox:
    return Outbox(store, {(target.tenant, target.name): target}, pool, policy(),
                  lambda level, event, **f: lines.append((event, f)))  # fmt: skip


async def until(check, what: str, seconds: float = 10.0) -> None:
    try:
        async with asyncio.timeout(seconds):
            while not await asyncio.to_thread(check):
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {seconds} s") from None


async def test_a_live_replica_keeps_its_delivery_and_a_dead_ones_is_taken_over(replicas) -> None:
    alpha, beta = replicas
    first = upload(alpha, 1)
    record(alpha, first)
    (delivery,) = alpha.deliveries(upload_id=first)
    stuck = asyncio.Event()  # never set: alpha's receiver does not answer
    alpha_target, beta_target = ScriptedTarget("north", "cers", hold=stuck), ScriptedTarget("north", "cers")
    alpha_lines: list = []
    beta_lines: list = []
    with ThreadPoolExecutor(2) as pool:
        first_outbox = outbox(alpha, alpha_target, pool, alpha_lines)
        await first_outbox.start()
        await until(lambda: len(alpha_target.jobs) == 1, "alpha sends")
        second_outbox = outbox(beta, beta_target, pool, beta_lines)
        await second_outbox.start()
        try:
            # alpha stays alive for two leases: its renewals keep beta off the delivery
            for _ in range(2):
                await asyncio.sleep(LEASE)
                assert beta.delivery(delivery.id).claimed_by == "alpha" and beta_target.jobs == []
            await first_outbox.stop()  # alpha dies mid-send: nothing recorded, no renewal any more
            await until(lambda: beta.delivery(delivery.id).state is DeliveryState.DELIVERED, "beta delivers")
        finally:
            await second_outbox.stop()
    (job,) = beta_target.jobs
    assert job.delivery.idempotency_key == delivery.idempotency_key == f"north.cers.{first}"
    assert job.delivery.attempts == 2 and job.delivery.claimed_by == "beta"
    done = beta.delivery(delivery.id)
    assert (done.claimed_by, done.attempts, done.lease_until) == ("beta", 2, None)
    assert [e for e, _ in alpha_lines if e.startswith("delivery.")] == ["delivery.started"]
