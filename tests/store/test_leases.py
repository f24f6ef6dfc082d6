"""Replicas sharing one store and its outbox: a delivery is sent by one replica at a time, under a lease it
renews; a replica that stops renewing (it died) loses the delivery to another once the lease lapses, and its
late outcome is not recorded over the other's. Two handles on one store stand for two replicas (for SQLite,
two connections to one file; for PostgreSQL, two pools on one database); the clock is moved by hand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import daemon.store
from daemon.store import DeliveryState, Refused, State, StoreInterface
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


def test_an_upload_is_processed_by_one_replica_at_a_time_and_a_lapsed_claim_is_taken_over(replicas,
                                                                                         monkeypatch) -> None:  # fmt: skip
    alpha, beta = replicas
    clock = Clock(monkeypatch)
    first = upload(alpha, 1)  # received, then validating: unclaimed so far (no replica's turn was recorded)
    claimed = alpha.claim_upload(first)
    assert (claimed.claimed_by, claimed.lease_until) == ("alpha:2022", "2026-12-07T10:01:00.000Z")
    with pytest.raises(Refused, match="is being processed by alpha:2022"):
        beta.claim_upload(first)
    clock.at = "2026-12-07T10:00:40.000Z"
    assert alpha.renew_upload(first)
    clock.at = "2026-12-07T10:01:40.000Z"  # alpha renewed at :40, so its lease runs to 10:01:40.000 still
    with pytest.raises(Refused):
        beta.claim_upload(first)
    clock.at = "2026-12-07T10:01:40.001Z"  # alpha died after its last renewal
    assert beta.claim_upload(first).claimed_by == "beta:2022"
    assert not alpha.renew_upload(first)
    with pytest.raises(Refused, match="taken over by beta:2022"):
        alpha.set_state(first, State.REJECTED)
    with pytest.raises(Refused, match="taken over by beta:2022"):
        record(alpha, first)
    record(beta, first)
    done = alpha.get(first)
    assert (done.state, done.claimed_by, done.lease_until) == (State.ACCEPTED, "beta:2022", None)
    with pytest.raises(Refused, match="is accepted already"):
        alpha.claim_upload(first)


def test_a_tenants_uploads_are_claimed_in_arrival_order_across_replicas(replicas, monkeypatch) -> None:
    alpha, beta = replicas
    Clock(monkeypatch)
    older, newer = upload(alpha, 1), upload(beta, 2)
    other_tenant = upload(beta, 3, tenant="south")
    with pytest.raises(Refused, match=f"upload {older} of north arrived earlier and is not finished"):
        beta.claim_upload(newer)
    assert beta.claim_upload(other_tenant).claimed_by == "beta:2022"  # other tenants are not held up
    alpha.claim_upload(older)
    alpha.set_state(older, State.REJECTED)  # finished: the next one's turn
    assert beta.claim_upload(newer).claimed_by == "beta:2022"
