"""The writes that span tables (package docstring): each is one transaction, all or nothing, with one time.
The `store` fixture (conftest.py) has targets cers and vendor for tenant north."""

from __future__ import annotations

import pytest

import daemon.store
from daemon.store import Action, DeliveryState, Refused, SnapshotRecord, StaleBase, State, StoreInterface
from tests.test_snapshot_store import RESULT, record, upload


def test_accepting_an_upload_writes_one_time_in_every_table_it_touches(
    store: StoreInterface, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clock that moves a millisecond each time it is read: a second reading within the transaction would
    leave two times behind."""
    ticks = iter(f"2026-12-01T00:00:00.{n:03d}Z" for n in range(1, 999))
    monkeypatch.setattr(daemon.store, "now", lambda: next(ticks))
    first = upload(store, 1)  # add, then set_state: two writes, two readings (.001, .002)
    record(store, first)  # the third reading
    snapshot, accepted = store.snapshots("north")[0]
    queued = store.deliveries(upload_id=first)
    assert snapshot.created_at == accepted.updated_at == store.history(first)[-1][1] == "2026-12-01T00:00:00.003Z"
    assert [d.created_at for d in queued] == ["2026-12-01T00:00:00.003Z"] * 2


def test_a_refused_approval_records_no_decision_and_queues_nothing(store: StoreInterface) -> None:
    first, older, newer = upload(store, 1), upload(store, 2), upload(store, 3)
    record(store, first)
    record(store, older, held=True)
    record(store, newer, held=True)
    with pytest.raises(Refused):
        store.decide(older, approve=True, operator="alice")
    assert store.decisions(older) == [] and store.deliveries(upload_id=older) == []
    assert [store.get(u).state for u in (older, newer)] == [State.HELD, State.HELD]
    assert store.history(older)[-1][0] == "held"


def test_a_stale_snapshot_leaves_no_result_and_no_delivery(store: StoreInterface) -> None:
    first, late = upload(store, 1), upload(store, 2)
    stale = SnapshotRecord(tenant="north", version="1.1", path="/x", base_upload_id=None, rows={}, changes={},
                           holds=[])  # fmt: skip
    record(store, first)  # `late` was diffed against nothing, and now `first` is current
    with pytest.raises(StaleBase):
        store.record_snapshot(late, stale, State.ACCEPTED, RESULT)
    assert store.result(late) is None and store.deliveries(upload_id=late) == []
    assert store.history(late)[-1][0] == "validating"


def test_a_refused_replay_records_no_decision_and_leaves_the_delivery_as_it_was(store: StoreInterface) -> None:
    first, second = upload(store, 1), upload(store, 2)
    record(store, first)
    record(store, second)
    older, newer = (next(d for d in store.deliveries(upload_id=u) if d.target == "cers") for u in (first, second))
    for delivery in (older, newer):
        store.claim_delivery(delivery.id)
        store.finish_delivery(delivery.id, DeliveryState.DELIVERED)
    before = store.delivery(older.id)
    with pytest.raises(Refused, match=f"delivery {newer.id} to cers is newer and delivered"):
        store.replay_delivery(older.id, "dave")
    assert store.delivery(older.id) == before and store.decisions(first) == []
    replayed = store.replay_delivery(older.id, "dave", force=True)
    assert (replayed.state, replayed.attempts) == (DeliveryState.PENDING, 0)
    assert [(d.action, d.delivery_id, d.operator) for d in store.decisions(first)] == [
        (Action.REPLAYED, older.id, "dave")]  # fmt: skip


def test_a_rebaseline_bears_on_the_upload_taken_as_the_fresh_baseline(store: StoreInterface) -> None:
    first = upload(store, 1)
    record(store, first)
    store.request_rebaseline("north", "carol")
    assert store.decisions(first) == []  # not yet used: it bears on no upload
    fresh = upload(store, 2)
    baseline = SnapshotRecord(tenant="north", version="1.1", path="/x", base_upload_id=None, rows={}, changes={},
                              holds=[])  # fmt: skip
    store.record_snapshot(fresh, baseline, State.ACCEPTED, RESULT, check_base=False)
    assert store.rebaseline_requested("north") is None
    assert [(d.action, d.operator) for d in store.decisions(fresh)] == [(Action.REBASELINE, "carol")]
