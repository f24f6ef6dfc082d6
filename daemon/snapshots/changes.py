"""A change set as data: per entity, the rows added, updated (with each changed field) and deleted.

Targets are fed from these frames, receipts and `rosterd diff` show their counts and a few examples, and a
change set is written beside its snapshot so a delivery can be replayed later. Everything a person reads
(old and new values, examples) is rendered here as the CSV text they would see in the file, with password
values never shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from daemon.files import fsync_file, write_whole
from daemon.oneroster.findings import REDACTED
from daemon.snapshots.storage import PARQUET_OPTIONS
from daemon.oneroster.schema import DEPENDENCY_ORDER, VERSIONS, Kind

ACTIONS = ("added", "updated", "deleted")
LIFECYCLE_COLUMNS = ("status", "dateLastModified")  # never part of the content hash or of "changed"
ROW_COLUMN = "_row"
CHANGED = "changed"
CHANGED_DTYPE = pl.List(pl.Struct({"field": pl.String, "old": pl.String, "new": pl.String}))
SECRET_COLUMNS = frozenset(c.name for v in VERSIONS.values() for t in v.tables.values() for c in t.columns
                           if c.kind is Kind.SECRET)  # fmt: skip
COUNTS_FILE = "counts.json"
FORMAT = 1  # of the folder a change set is written to


@dataclass(frozen=True)
class EntityChanges:
    added: pl.DataFrame  # the new rows, as in the new snapshot
    updated: pl.DataFrame  # the new rows that changed, plus `changed`: List(Struct{field, old, new})
    deleted: pl.DataFrame  # the old rows that are gone

    def counts(self) -> dict[str, int]:
        return {action: getattr(self, action).height for action in ACTIONS}


@dataclass(frozen=True)
class ChangeSet:
    entities: dict[str, EntityChanges]  # every entity of either snapshot, in dependency order

    def counts(self) -> dict[str, dict[str, int]]:
        return {entity: changes.counts() for entity, changes in self.entities.items()}

    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts().values())

    def is_empty(self) -> bool:
        return self.total() == 0

    def samples(self, per_action: int = 3) -> dict:
        """Up to `per_action` example rows per entity and action, the first by sourcedId; JSON-able.

        An added or deleted row shows its non-blank fields as CSV text (no lifecycle fields, no passwords); an
        updated row shows its sourcedId and every changed field. Entities and actions without rows are left out.
        """
        out: dict[str, dict[str, list[dict]]] = {}
        for entity, changes in self.entities.items():
            shown = {action: _examples(getattr(changes, action), per_action) for action in ACTIONS}
            shown = {action: rows for action, rows in shown.items() if rows}
            if shown:
                out[entity] = shown
        return out

    def write(self, folder: Path) -> None:
        """One Parquet file per entity and action (`users.added.parquet`, ...) and counts.json, each fsynced.

        Blocking. `folder` is created if need be; the caller renames it (or a folder holding it) into place
        once this returns."""
        folder.mkdir(parents=True, exist_ok=True)
        for entity, changes in self.entities.items():
            for action in ACTIONS:
                path = folder / f"{entity}.{action}.parquet"
                getattr(changes, action).write_parquet(path, **PARQUET_OPTIONS)
                fsync_file(path)
        meta = {"format": FORMAT, "entities": self.counts()}
        write_whole(folder / COUNTS_FILE, json.dumps(meta, indent=1) + "\n", mode=None)

    @classmethod
    def read(cls, folder: Path) -> ChangeSet:
        meta = json.loads((folder / COUNTS_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{folder}: change set format {meta.get('format')!r}, expected {FORMAT}")
        return cls({
            entity: EntityChanges(*(pl.read_parquet(folder / f"{entity}.{action}.parquet") for action in ACTIONS))
            for entity in meta["entities"]
        })  # fmt: skip


def entity_order(entities: set[str] | Mapping[str, object]) -> list[str]:
    """Dependency order (orgs before classes before enrollments), then any other entity by name."""
    known = [e for e in DEPENDENCY_ORDER if e in entities]
    return known + sorted(e for e in entities if e not in DEPENDENCY_ORDER)


def without_row(frame: pl.DataFrame | pl.LazyFrame | None) -> pl.DataFrame | pl.LazyFrame | None:
    """The frame without the validator's `_row` column (the same object when it has none)."""
    if frame is None:
        return None
    names = frame.collect_schema().names() if isinstance(frame, pl.LazyFrame) else frame.columns
    return frame.drop(ROW_COLUMN) if ROW_COLUMN in names else frame


# --- values as a person sees them --------------------------------------------------------------------------


def as_text(expr: pl.Expr, dtype: pl.DataType, name: str) -> pl.Expr:
    """A column rendered as the CSV text of its cell: lists comma-joined, dates ISO, blank as ""."""
    if name in SECRET_COLUMNS:
        return pl.when(expr.is_not_null()).then(pl.lit(REDACTED)).otherwise(pl.lit(""))
    if isinstance(dtype, pl.List):
        text = expr.list.join(",")
    elif isinstance(dtype, pl.Datetime):
        text = expr.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ") if dtype.time_zone else (
            expr.dt.strftime("%Y-%m-%dT%H:%M:%S%.3f"))  # fmt: skip
    elif dtype == pl.Date:
        text = expr.dt.strftime("%Y-%m-%d")
    elif dtype == pl.Boolean:
        text = pl.when(expr).then(pl.lit("true")).when(expr.not_()).then(pl.lit("false"))
    else:
        text = expr.cast(pl.String)
    return text.fill_null("")


def _examples(frame: pl.DataFrame, n: int) -> list[dict]:
    if frame.height == 0 or n <= 0:
        return []
    first = frame.bottom_k(n, by="sourcedId") if "sourcedId" in frame.columns else frame.head(n)
    if CHANGED in first.columns:
        return [{"sourcedId": row["sourcedId"], CHANGED: row[CHANGED]}
                for row in first.select("sourcedId", CHANGED).iter_rows(named=True)]  # fmt: skip
    shown = [c for c in first.columns if c not in (*LIFECYCLE_COLUMNS, ROW_COLUMN) and c not in SECRET_COLUMNS]
    text = first.select(as_text(pl.col(c), first.schema[c], c).alias(c) for c in shown)
    return [{k: v for k, v in row.items() if v != "" or k == "sourcedId"} for row in text.iter_rows(named=True)]


# --- text for people -----------------------------------------------------------------------------------------


def render_text(changes: ChangeSet, per_action: int = 3) -> str:
    """A table of counts per entity and action, then up to `per_action` examples of each."""
    counts = changes.counts()
    width = max([len("entity"), *map(len, counts)])
    lines = [f"{'entity':<{width}}  {'added':>9}  {'updated':>9}  {'deleted':>9}"]
    for entity, c in counts.items():
        lines.append(f"{entity:<{width}}  {c['added']:>9,}  {c['updated']:>9,}  {c['deleted']:>9,}")
    totals = {a: sum(c[a] for c in counts.values()) for a in ACTIONS}
    lines.append(f"{'total':<{width}}  {totals['added']:>9,}  {totals['updated']:>9,}  {totals['deleted']:>9,}")
    if changes.is_empty():
        return "\n".join([*lines, "", "no changes"]) + "\n"
    for entity, actions in changes.samples(per_action).items():
        lines += ["", entity]
        for action, rows in actions.items():
            more = counts[entity][action] - len(rows)
            for row in rows:
                lines.append(f"  {action:<8} {_describe(row)}")
            if more > 0:
                lines.append(f"  {'':<8} … and {more:,} more {action}")
    return "\n".join(lines) + "\n"


def _describe(row: dict, width: int = 160) -> str:
    if CHANGED in row:
        fields = "; ".join(f"{c['field']}: {c['old']!r} -> {c['new']!r}" for c in row[CHANGED])
        return f"{row['sourcedId']}  {fields}"
    rest = ", ".join(f"{k}={v}" for k, v in row.items() if k != "sourcedId")
    return f"{row['sourcedId']}  {rest if len(rest) <= width else rest[: width - 1] + '…'}"
