"""The snapshot catalog and an admin's decisions: accepted, held, superseded, approved, discarded, rebaseline."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from daemon.snapshots import storage
from daemon.store import Refused, SnapshotRecord, State, Store
from tests.store.implementations import IMPLEMENTATIONS, open_implementation

RESULT = {"verdict": "accepted", "version": "1.1", "mode": "lenient", "files": {}, "findings": [],
          "counts_by_code": {}, "findings_truncated": False}  # fmt: skip


@pytest.fixture(params=IMPLEMENTATIONS)
def store(request: pytest.FixtureRequest, tmp_path: Path):
    opened = open_implementation(request, request.param, tmp_path)
    yield opened
    opened.close()


def upload(store: Store, number: int, tenant: str = "north") -> str:
    upload_id = f"u-2026120{number}T000000Z-00000{number}"
    store.add(upload_id, tenant, f"day{number}.zip", f"{number}" * 64, 100, f"/state/uploads/{upload_id}")
    store.set_state(upload_id, State.VALIDATING)
    return upload_id


def record(store: Store, upload_id: str, held: bool = False, tenant: str = "north") -> None:
    """Record a snapshot diffed against the tenant's current one, as intake does."""
    current = store.current_snapshot(tenant)
    snapshot = SnapshotRecord(tenant=tenant, version="1.1", path=f"/state/snapshots/{tenant}/{upload_id}",
                              base_upload_id=current.upload_id if current else None, rows={"users": 10},
                              changes={"users": {"added": 10, "updated": 0, "deleted": 0}},
                              holds=[{"threshold": "users_deleted_share"}] if held else [])  # fmt: skip
    store.record_snapshot(upload_id, snapshot, State.HELD if held else State.ACCEPTED, RESULT)


def test_the_current_snapshot_is_the_newest_accepted(store: Store) -> None:
    assert store.current_snapshot("north") is None
    first, second = upload(store, 1), upload(store, 2)
    record(store, first)
    record(store, second, held=True)
    assert store.current_snapshot("north").upload_id == first  # a held snapshot is not current
    assert [(r.upload_id, u.state) for r, u in store.snapshots("north")] == [(second, State.HELD),
                                                                             (first, State.ACCEPTED)]  # fmt: skip
    assert store.current_snapshot("south") is None


def test_a_newer_accepted_upload_supersedes_older_held_ones(store: Store) -> None:
    first, held, newer = upload(store, 1), upload(store, 2), upload(store, 3)
    record(store, first)
    record(store, held, held=True)
    record(store, newer)
    assert store.get(held).state is State.SUPERSEDED
    assert store.history(held)[-1][2] == f"superseded by {newer}"
    assert store.current_snapshot("north").upload_id == newer
    assert [u.id for u in store.unanswered() if u.state is State.SUPERSEDED] == [held]  # its receipt is due


def test_approve_makes_a_held_upload_current_with_the_operator_recorded(store: Store) -> None:
    first, held = upload(store, 1), upload(store, 2)
    record(store, first)
    record(store, held, held=True)
    approved = store.decide(held, approve=True, operator="alice")
    assert approved.state is State.ACCEPTED
    assert store.history(held)[-1][0::2] == ("accepted", "approved by alice")
    assert store.current_snapshot("north").upload_id == held


def test_discard_leaves_the_current_snapshot(store: Store) -> None:
    first, held = upload(store, 1), upload(store, 2)
    record(store, first)
    record(store, held, held=True)
    assert store.decide(held, approve=False, operator="bob").state is State.DISCARDED
    assert store.current_snapshot("north").upload_id == first
    with pytest.raises(Refused, match="is discarded, not held"):
        store.decide(held, approve=True, operator="bob")


def test_only_the_newest_held_upload_can_be_approved(store: Store) -> None:
    first, older, newer = upload(store, 1), upload(store, 2), upload(store, 3)
    record(store, first)
    record(store, older, held=True)
    record(store, newer, held=True)
    with pytest.raises(Refused, match=f"{newer} of north is newer and held too"):
        store.decide(older, approve=True, operator="alice")
    store.decide(newer, approve=True, operator="alice")
    assert store.get(older).state is State.SUPERSEDED
    with pytest.raises(Refused, match="no upload u-nope"):
        store.decide("u-nope", approve=True, operator="alice")


def test_a_rebaseline_request_lasts_until_an_upload_is_accepted(store: Store) -> None:
    first = upload(store, 1)
    record(store, first)
    store.request_rebaseline("north", "carol")
    assert store.rebaseline_requested("north")[1] == "carol"
    held = upload(store, 2)
    record(store, held, held=True)
    assert store.rebaseline_requested("north") is not None  # a held upload does not use it up
    second = upload(store, 3)
    record(store, second)
    assert store.rebaseline_requested("north") is None


def test_snapshot_folders_are_published_whole(tmp_path: Path) -> None:
    frames = {"users": pl.DataFrame({"sourcedId": ["u1", "u2"], "grades": [["09"], ["10", "11"]]})}
    staging = storage.staging_folder(tmp_path, "north", "u-1")
    final = storage.final_folder(tmp_path, "north", "u-1")
    staging.parent.mkdir(parents=True)
    storage.write_frames(staging, frames)
    meta = storage.SnapshotMeta(version="1.1", rows={"users": 2}, changes={"users": {"added": 2}}, holds=[],
                                base_upload_id=None)  # fmt: skip
    storage.write_meta(staging, meta)
    (final).mkdir()  # a folder left by an attempt that a crash cut short
    (final / "stale.parquet").write_bytes(b"old")

    storage.publish(staging, final)

    assert not staging.exists() and not (final / "stale.parquet").exists()
    assert storage.read_frames(final)["users"].equals(frames["users"])
    assert storage.read_meta(final) == meta


# snapshot.json as rosterd has written it since snapshots began: the base upload is `base`.
SNAPSHOT_JSON = """{
 "base": "u-20261201T080000Z-0a1b2c",
 "changes": {
  "users": {
   "added": 1,
   "deleted": 2,
   "updated": 0
  }
 },
 "holds": [],
 "rows": {
  "users": 45
 },
 "version": "1.1"
}
"""


def test_a_snapshot_json_written_before_reads_back_and_is_written_the_same(tmp_path: Path) -> None:
    (tmp_path / "snapshot.json").write_text(SNAPSHOT_JSON)
    meta = storage.read_meta(tmp_path)
    assert meta == storage.SnapshotMeta(version="1.1", rows={"users": 45}, holds=[],
                                        changes={"users": {"added": 1, "deleted": 2, "updated": 0}},
                                        base_upload_id="u-20261201T080000Z-0a1b2c")  # fmt: skip
    (tmp_path / "snapshot.json").unlink()
    storage.write_meta(tmp_path, meta)
    assert (tmp_path / "snapshot.json").read_text() == SNAPSHOT_JSON


def test_a_snapshot_diffed_against_a_base_that_is_no_longer_current_is_not_recorded(store: Store) -> None:
    from daemon.store import StaleBase

    first, held, late = upload(store, 1), upload(store, 2), upload(store, 3)
    record(store, first)
    record(store, held, held=True)
    store.decide(held, approve=True, operator="alice")  # while `late` was being diffed against `first`
    stale = SnapshotRecord(tenant="north", version="1.1", path="/x", base_upload_id=first, rows={}, changes={},
                           holds=[])  # fmt: skip
    with pytest.raises(StaleBase):
        store.record_snapshot(late, stale, State.ACCEPTED, RESULT)
    assert store.get(late).state is State.VALIDATING and store.snapshot(late) is None
    fresh = SnapshotRecord(tenant="north", version="1.1", path="/x", base_upload_id=held, rows={}, changes={},
                           holds=[])  # fmt: skip
    assert store.record_snapshot(late, fresh, State.ACCEPTED, RESULT).state is State.ACCEPTED
    rebased = upload(store, 4)
    store.record_snapshot(rebased, stale, State.ACCEPTED, RESULT, check_base=False)  # a rebaseline: no base
