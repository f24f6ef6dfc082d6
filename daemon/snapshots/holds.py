"""Mass-change holds: a change set that would delete or change too much waits for an admin.

A broken export (a filter left on, a school missing from the job, an empty enrollments file) looks exactly
like a district that lost half its students. Clever and ClassLink hold such syncs for review; so does
rosterd, with thresholds per tenant. The first snapshot of a tenant (and a rebaseline) is all additions and
is never held.

HoldThresholds is defined once, here: it is the `[holds]` section of the settings (and a tenant's own `holds`),
validated by daemon/config.py, and what the worker's job (daemon/snapshots/job.py) is given, as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import polars as pl


class HoldThresholds(BaseModel):
    """Mass-change holds: an upload crossing any of these waits for `rosterd approve`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users_deleted_share: float = Field(0.10, ge=0, le=1)  # more than this share of the previous users deleted
    enrollments_deleted_share: float = Field(0.10, ge=0, le=1)
    school_deleted: bool = True  # any org of type school deleted
    changed_share: float = Field(0.50, ge=0)  # more than this share of all previous rows added, updated or deleted


def crossed(
    thresholds: HoldThresholds,
    previous_rows: Mapping[str, int] | None,
    counts: Mapping[str, Mapping[str, int]],
    deleted_orgs: pl.DataFrame | None,
) -> list[dict]:
    """The thresholds this change set crosses, each with its figures; empty when it may go ahead.

    `previous_rows` is rows per entity in the snapshot diffed against (None: a first snapshot or a
    rebaseline), `counts` the change set's counts, `deleted_orgs` the org rows it deletes.
    """
    import polars as pl  # here, not above: the settings import this module and load without polars

    if not previous_rows:
        return []
    found = []
    for entity, limit in (("users", thresholds.users_deleted_share),
                          ("enrollments", thresholds.enrollments_deleted_share)):  # fmt: skip
        before = previous_rows.get(entity, 0)
        deleted = counts.get(entity, {}).get("deleted", 0)
        if before and deleted / before > limit:
            detail = f"{deleted} of {before} {entity} deleted ({deleted / before:.1%}, more than {limit:.0%})"
            found.append(_crossing(f"{entity}_deleted_share", limit, deleted, before, detail))
    if thresholds.school_deleted and deleted_orgs is not None and "type" in deleted_orgs.columns:
        schools = deleted_orgs.filter(pl.col("type") == "school")
        if schools.height:
            names = ", ".join(schools.get_column("sourcedId").head(5).to_list())
            more = f" and {schools.height - 5} more" if schools.height > 5 else ""
            found.append({"threshold": "school_deleted", "limit": True, "value": schools.height,
                          "detail": f"{schools.height} school(s) deleted: {names}{more}"})  # fmt: skip
    before_total = sum(previous_rows.values())
    changed = sum(sum(actions.values()) for actions in counts.values())
    if before_total and changed / before_total > thresholds.changed_share:
        found.append(_crossing("changed_share", thresholds.changed_share, changed, before_total,
                               f"{changed} of {before_total} rows changed ({changed / before_total:.1%}, "
                               f"more than {thresholds.changed_share:.0%})"))  # fmt: skip
    return found


def _crossing(name: str, limit: float, value: int, of: int, detail: str) -> dict:
    return {"threshold": name, "limit": limit, "value": value, "of": of, "detail": detail}
