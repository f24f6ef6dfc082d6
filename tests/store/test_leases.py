"""Replicas sharing one store and its outbox: a delivery is sent by one replica at a time, under a lease it
renews; a replica that stops renewing (it died) loses the delivery to another once the lease lapses, and its
late outcome is not recorded over the other's. Two handles on one store stand for two replicas (for SQLite,
two connections to one file; for PostgreSQL, two pools on one database); the clock is moved by hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import daemon.store
from daemon.store import DeliveryState, Refused, StoreInterface
from tests.store.implementations import IMPLEMENTATIONS, open_implementation
from tests.test_snapshot_store import record, upload

TARGETS = {"north": ["cers"]}
T0 = "2026-12-07T10:00:00.000Z"


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.at = T0
        monkeypatch.setattr(daemon.store, "now", lambda: self.at)


@pytest.fixture(params=IMPLEMENTATIONS)
def replicas(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[StoreInterface, StoreInterface]]:
    pair = [open_implementation(request, request.param, tmp_path, TARGETS) for _ in range(2)]
    for name, replica in zip(("alpha:2022", "beta:2022"), pair, strict=True):
        replica.replica, replica.lease_seconds = name, 60
    yield pair[0], pair[1]
    for replica in pair:
        replica.close()


def queued(store: StoreInterface) -> str:
    """One accepted upload: its one delivery (to cers), pending."""
    first = upload(store, 1)
    record(store, first)
    (delivery,) = store.deliveries(upload_id=first)
    return delivery.id


def test_a_claimed_delivery_is_leased_to_its_replica_and_refused_to_the_other(replicas, monkeypatch) -> None:
    alpha, beta = replicas
    clock = Clock(monkeypatch)
    delivery_id = queued(alpha)
    claimed = alpha.claim_delivery(delivery_id)
    assert (claimed.state, claimed.claimed_by, claimed.lease_until) == (DeliveryState.IN_FLIGHT, "alpha:2022",
                                                                        "2026-12-07T10:01:00.000Z")  # fmt: skip
    clock.at = "2026-12-07T10:00:59.999Z"
    with pytest.raises(Refused, match="is being sent by alpha:2022 .* until 2026-12-07T10:01:00.000Z"):
        beta.claim_delivery(delivery_id)
    assert alpha.renew_delivery(delivery_id)  # alpha is alive: its lease now runs to 10:01:59.999
    clock.at = "2026-12-07T10:01:30.000Z"
    with pytest.raises(Refused):
        beta.claim_delivery(delivery_id)
    assert alpha.finish_delivery(delivery_id, DeliveryState.DELIVERED).state is DeliveryState.DELIVERED
    with pytest.raises(Refused, match="is delivered already"):
        beta.claim_delivery(delivery_id)


def test_a_lapsed_lease_is_taken_over_and_the_first_replicas_late_outcome_is_not_recorded(replicas,
                                                                                         monkeypatch) -> None:  # fmt: skip
    alpha, beta = replicas
    clock = Clock(monkeypatch)
    delivery_id = queued(alpha)
    alpha.claim_delivery(delivery_id)
    clock.at = "2026-12-07T10:01:00.001Z"  # alpha stopped renewing a minute ago
    taken = beta.claim_delivery(delivery_id)
    assert (taken.claimed_by, taken.attempts, taken.lease_until) == ("beta:2022", 2, "2026-12-07T10:02:00.001Z")
    assert not alpha.renew_delivery(delivery_id)  # alpha learns it lost the delivery
    with pytest.raises(Refused, match="taken over by beta:2022"):
        alpha.finish_delivery(delivery_id, DeliveryState.FAILED, error="too late")
    done = beta.finish_delivery(delivery_id, DeliveryState.DELIVERED)
    assert (done.state, done.last_error, done.lease_until) == (DeliveryState.DELIVERED, None, None)


def test_at_start_a_replica_resumes_its_own_and_lapsed_deliveries_and_leaves_the_others(replicas,
                                                                                       monkeypatch) -> None:  # fmt: skip
    alpha, beta = replicas
    clock = Clock(monkeypatch)
    alpha.targets = beta.targets = {"north": ["cers"], "south": ["cers"]}
    mine, theirs = queued(alpha), None
    south = upload(alpha, 2, tenant="south")
    record(alpha, south, tenant="south")
    (theirs,) = (d.id for d in alpha.deliveries(upload_id=south))
    alpha.claim_delivery(mine)
    beta.claim_delivery(theirs)
    clock.at = "2026-12-07T10:00:30.000Z"  # alpha restarts; beta is alive and sending
    assert alpha.resume_deliveries() == 1
    assert alpha.delivery(mine).state is DeliveryState.PENDING
    assert alpha.delivery(theirs).state is DeliveryState.IN_FLIGHT
    clock.at = "2026-12-07T10:01:00.001Z"  # beta died: its lease lapsed
    assert alpha.resume_deliveries() == 1
    assert alpha.delivery(theirs).state is DeliveryState.PENDING
