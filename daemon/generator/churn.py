"""Day 2 of a generated district: known changes, written both as a bulk package and as the equivalent delta,
with the change counts a diff of day 1 and day 2 must find. Tests and benchmarks of snapshots and change
sets build their inputs here, so "what changed" is stated once and checked against both forms.

The changes: students leave (with their enrollments, demographics and 1.2 roles), new students arrive at the
first school (with the same), teachers get a new e-mail address, and classes move to period 7.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from daemon.generator.generate import (
    _REASSIGN, _WITHDRAW, _demographics, _finish, _new_enrollments, _new_students, _roles, _sample, _stamp,
    _users,
)  # fmt: skip

_MOVE = 204  # salt for the classes that change period
NEW_PERIOD = "7"


@dataclass(frozen=True)
class Churn:
    withdrawn: int = 3  # students who leave
    arrivals: int = 3  # new students
    new_emails: int = 2  # teachers whose e-mail address changes
    period_changes: int = 2  # classes that move to period 7
    seed: int = 1

    @classmethod
    def about(cls, base: Mapping[str, pl.DataFrame], share: float, seed: int = 1) -> Churn:
        """Changes touching about `share` of the district's rows: half the share of students leave and as
        many arrive (each with their enrollments), and `share` of the teachers and of the classes change."""
        users = base["users"]["sourcedId"]
        students = int(users.str.starts_with("stu-").sum())
        teachers = int(users.str.starts_with("tch-").sum())
        moving = round(students * share / 2)
        return cls(moving, moving, round(teachers * share), round(base["classes"].height * share), seed)


@dataclass(frozen=True)
class DayTwo:
    bulk: dict[str, pl.DataFrame]  # every table of day 2 (a bulk package)
    delta: dict[str, pl.DataFrame]  # only the changed rows, with status and dateLastModified (a delta package)
    expected: dict[str, dict[str, int]]  # per entity of day 1: the rows added, updated and deleted
    changed_fields: dict[str, set[str]]  # per entity with updates: the fields they change


def churn(base: Mapping[str, pl.DataFrame], version: str, spec: Churn = Churn()) -> DayTwo:
    """Day 2 of the generated district `base` (generate.generate's tables) with the changes of `spec`."""
    seed = spec.seed
    users, classes = base["users"], base["classes"]
    students = users.filter(pl.col("sourcedId").str.starts_with("stu-"))
    teachers = users.filter(pl.col("sourcedId").str.starts_with("tch-"))
    leaving = _sample(students, spec.withdrawn, seed, _WITHDRAW)["sourcedId"]
    readdressed = _sample(teachers, spec.new_emails, seed, _REASSIGN)["sourcedId"]
    moved = _sample(classes, spec.period_changes, seed, _MOVE)["sourcedId"]
    people = _new_students(students, spec.arrivals, seed)

    arrived = {"users": _users(people, version), "enrollments": _finish(_new_enrollments(people, base, seed),
                                                                       "enrollments", version)}  # fmt: skip
    if "demographics" in base:
        arrived["demographics"] = _demographics(people, version, seed)
    if "roles" in base:
        arrived["roles"] = _roles(people)
    owner = {"users": "sourcedId", "demographics": "sourcedId", "enrollments": "userSourcedId", "roles": "userSourcedId"}
    edits = {
        "users": (readdressed, {"email": pl.col("email").str.replace("@", "@staff.", literal=True)}),
        "classes": (moved, {"periods": pl.lit(NEW_PERIOD),
                            "title": pl.col("title").str.replace(r"Period \d+$", f"Period {NEW_PERIOD}")}),
    }  # fmt: skip

    bulk, delta, expected = {}, {}, {}
    for entity, frame in base.items():
        gone = pl.col(owner[entity]).is_in(leaving.implode()) if entity in owner else pl.lit(False)
        ids, columns = edits.get(entity, (pl.Series([], dtype=pl.String), {}))
        edited = pl.col("sourcedId").is_in(ids.implode())
        changed = _rewrite(frame, edited, columns)
        new = arrived.get(entity, frame.clear())
        bulk[entity] = pl.concat([changed.filter(~gone), new])
        removed = frame.filter(gone)
        rows = [_stamp(removed, "tobedeleted"), _stamp(new, "active"), _stamp(changed.filter(edited), "active")]
        rows = pl.concat([_finish(r, entity, version) for r in rows])
        if rows.height:
            delta[entity] = rows
        expected[entity] = {"added": new.height, "updated": ids.len(), "deleted": removed.height}
    fields = {entity: set(columns) for entity, (ids, columns) in edits.items() if ids.len()}
    return DayTwo(bulk, delta, expected, fields)


def _rewrite(frame: pl.DataFrame, rows: pl.Expr, columns: dict[str, pl.Expr]) -> pl.DataFrame:
    """`frame` with `columns` recomputed on the rows where `rows` holds, in place."""
    return frame.with_columns(pl.when(rows).then(expr).otherwise(pl.col(name)).alias(name)
                              for name, expr in columns.items())  # fmt: skip

