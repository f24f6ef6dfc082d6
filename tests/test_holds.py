"""Hold thresholds: each one triggers just past its limit and not at it; first snapshots are never held."""

from __future__ import annotations

import polars as pl

from daemon.snapshots.holds import HoldThresholds, crossed

BEFORE = {"users": 1000, "enrollments": 6000, "orgs": 11, "classes": 300}
NO_ORGS = pl.DataFrame({"sourcedId": [], "type": []}, schema={"sourcedId": pl.String, "type": pl.String})


def counts(**deleted: int) -> dict:
    return {entity: {"added": 0, "updated": 0, "deleted": deleted.get(entity, 0)} for entity in BEFORE}


def names(found: list[dict]) -> list[str]:
    return [hold["threshold"] for hold in found]


def test_nothing_is_held_at_the_limits() -> None:
    assert crossed(HoldThresholds(), BEFORE, counts(users=100, enrollments=600), NO_ORGS) == []


def test_users_and_enrollments_deleted_past_ten_percent() -> None:
    found = crossed(HoldThresholds(), BEFORE, counts(users=101, enrollments=601), NO_ORGS)
    assert names(found) == ["users_deleted_share", "enrollments_deleted_share"]
    assert found[0]["value"] == 101 and found[0]["of"] == 1000
    assert found[0]["detail"] == "101 of 1000 users deleted (10.1%, more than 10%)"


def test_any_school_deleted() -> None:
    orgs = pl.DataFrame({"sourcedId": ["sch-1", "dst-1"], "type": ["school", "district"]})
    found = crossed(HoldThresholds(), BEFORE, counts(orgs=2), orgs)
    assert names(found) == ["school_deleted"] and "sch-1" in found[0]["detail"] and "dst-1" not in found[0]["detail"]
    assert crossed(HoldThresholds(school_deleted=False), BEFORE, counts(orgs=2), orgs) == []


def test_more_than_half_of_all_rows_changed() -> None:
    total = sum(BEFORE.values())  # 7311
    churn = {entity: {"added": 0, "updated": 0, "deleted": 0} for entity in BEFORE}
    churn["enrollments"]["updated"] = total // 2
    assert crossed(HoldThresholds(enrollments_deleted_share=1), BEFORE, churn, NO_ORGS) == []
    churn["enrollments"]["added"] = 1
    found = crossed(HoldThresholds(enrollments_deleted_share=1), BEFORE, churn, NO_ORGS)
    assert names(found) == ["changed_share"] and found[0]["value"] == total // 2 + 1


def test_a_first_snapshot_or_rebaseline_is_never_held() -> None:
    everything = {entity: {"added": n, "updated": 0, "deleted": 0} for entity, n in BEFORE.items()}
    assert crossed(HoldThresholds(), None, everything, None) == []


def test_tenant_thresholds_apply() -> None:
    strict = HoldThresholds(users_deleted_share=0.01)
    assert names(crossed(strict, BEFORE, counts(users=11), NO_ORGS)) == ["users_deleted_share"]
