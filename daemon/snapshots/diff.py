"""The exact change set between two snapshots: per entity, keyed by sourcedId, the rows added, updated (with
every changed field) and deleted. This is the module the daemon calls: it also re-exports merge_package and
dangling_references (merge.py: the next snapshot from a package) and the ChangeSet data (changes.py).

Rows are compared by a 64-bit content hash over every field but the lifecycle ones, so a re-export that only
restamps dateLastModified changes nothing. Hashes come from polars, whose hash is stable only within one
polars release, so they are computed afresh for both snapshots at every diff and never stored. Keys are
matched by their hashes too (membership tests on u64 cost about half a join on millions of sourcedId
strings); every pairing that matters is then confirmed against the sourcedIds of the old rows the change set
shows (read back anyway), and a key-hash collision falls back to an exact join on the strings, so a
collision can cost time but never a wrong change set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from daemon.snapshots.changes import CHANGED, CHANGED_DTYPE, LIFECYCLE_COLUMNS, ROW_COLUMN, ChangeSet, EntityChanges, as_text
from daemon.snapshots.changes import entity_order, without_row
from daemon.snapshots.merge import DeltaWithoutSnapshot, check_snapshot_references, dangling_references, merge_package

__all__ = [
    "LIFECYCLE_COLUMNS", "ChangeSet", "EntityChanges", "DeltaWithoutSnapshot", "content_hashes",
    "diff_snapshots", "merge_package", "dangling_references", "check_snapshot_references",
]  # fmt: skip

KEY_SEED = 0x0E05_7E2D  # seeds keep the key hash and the content hash independent of each other
CONTENT_SEED = 0x5EED_C0DE  # plus the column's position: each content column has a hash of its own
FOLD = 0x9E37_79B9_7F4A_7C15  # odd (2**64 / golden ratio): folds one column's hash into the row's
Frame = pl.DataFrame | pl.LazyFrame
Frames = Mapping[str, Frame]


# --- content hashes ------------------------------------------------------------------------------------------


def content_columns(frame: pl.DataFrame | pl.Schema) -> list[str]:
    """The columns a row's content is made of, in a stable (sorted) order."""
    names = frame.columns if isinstance(frame, pl.DataFrame) else list(frame.names())
    return sorted(c for c in names if c not in LIFECYCLE_COLUMNS and c != ROW_COLUMN)


def content_hashes(frame: pl.DataFrame) -> pl.Series:
    """A u64 per row over every field but status, dateLastModified and `_row`.

    Comparable only between frames with the same content columns and types, hashed by the same polars
    release; an empty list and a blank hash alike, as both are a blank cell to the person who wrote it."""
    names = content_columns(frame)
    return frame.select(_hash([_canonical(pl.col(c), frame.schema[c]) for c in names])).to_series()


def _canonical(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.List):
        return pl.when(expr.list.len() > 0).then(expr)
    return expr


def _hash(exprs: list[pl.Expr]) -> pl.Expr:
    """One u64 per row: each column hashed alone, with a seed of its own, and the hashes folded in order.

    (A struct's hash would first serialise every row, at twice the time and several times the memory.) The
    fold multiplies by an odd constant, a bijection modulo 2**64, so rows that differ in one column always
    differ here; rows that differ in several collide with a chance of about 2**-64, like any 64-bit hash."""
    folded = None
    for position, expr in enumerate(exprs):
        column = expr.hash(CONTENT_SEED + position)
        folded = column if folded is None else folded * FOLD + column
    return (folded if folded is not None else pl.lit(0, pl.UInt64)).alias("_h")


def _comparable(old: pl.Schema, new: pl.Schema) -> tuple[list[str], list[pl.Expr], list[pl.Expr]]:
    """The union of both sides' content columns with, per side, the expressions that compare them: a column
    one side lacks is blank there, and a column typed differently on the two sides is compared as text."""
    names = sorted(set(content_columns(old)) | set(content_columns(new)))
    sides: tuple[list[pl.Expr], list[pl.Expr]] = ([], [])
    for name in names:
        types = (old.get(name), new.get(name))
        mixed = None not in types and types[0] != types[1]
        for side, own in zip(sides, types, strict=True):
            dtype = own if own is not None else next(t for t in types if t is not None)
            expr = pl.col(name) if own is not None else pl.lit(None, dtype)
            if mixed:
                text = as_text(expr, dtype, name)
                side.append(pl.when(text != "").then(text).alias(name))
            else:
                side.append(_canonical(expr, dtype).alias(name))
    return names, sides[0], sides[1]


# --- diff ------------------------------------------------------------------------------------------------------


def diff_snapshots(old: Frames | None, new: Frames) -> ChangeSet:
    """The change set from snapshot `old` (None: none yet, so everything is added) to snapshot `new`.

    Every entity of either snapshot is in it, in dependency order, even with no changes. Frames may carry
    `_row`; it is ignored and left out of the result. An entity that is the very same frame on both sides
    (carried over by a merge) is unchanged without a look at its rows.

    `old` may hold LazyFrames (`pl.scan_parquet` of a stored snapshot): such an entity is read twice, each
    time streaming, once for its hashes and once for the rows that were deleted or changed, so the old
    snapshot is never in memory whole: of its rows, the diff holds only their hashes."""
    old = old or {}
    pairs = {e: (without_row(old.get(e)), without_row(new.get(e))) for e in entity_order(set(old) | set(new))}
    return ChangeSet({e: _entity_changes(o, n) for e, (o, n) in pairs.items()})


def _entity_changes(old: Frame | None, new: Frame | None) -> EntityChanges:
    if old is None or new is None or old is new:
        rows = _eager(new if new is not None else old)
        none = rows.clear()
        return EntityChanges(rows if old is None else none, _no_updates(rows), rows if new is None else none)
    new = _eager(new)
    names, old_exprs, new_exprs = _comparable(_schema(old), new.schema)
    old_rows, new_rows = _collect(old, [_hashes(old, old_exprs), _hashes(new, new_exprs)])
    old_in, new_in = (found.to_series() for found in pl.collect_all([_held_by(old_rows, new_rows),
                                                                      _held_by(new_rows, old_rows)]))  # fmt: skip
    match = _pair(old_rows, new_rows, old_in, new_in)
    # The old rows the change set shows are read back once; they also confirm the changed pairs' sourcedIds.
    picked = _rows(old, _shown(match)) if match is not None else None
    if match is None or not _confirmed(match, picked.slice(match.deleted_count), new["sourcedId"]):
        match = _match_exactly(old_rows.hstack(_columns(old, "sourcedId")), new_rows.hstack([new["sourcedId"]]))
        picked = _rows(old, _shown(match))
    gone = match.deleted_count
    added = new.filter(match.added) if match.added.any() else new.clear()
    updated = _updated(picked.slice(gone), new[match.new_index], names, old_exprs, new_exprs)
    return EntityChanges(added, updated, picked.head(gone))


def _hashes(frame: Frame, exprs: list[pl.Expr]) -> pl.LazyFrame:
    """Per row: the key hash `_k` (of the sourcedId) and the content hash `_h`."""
    return frame.lazy().select(pl.col("sourcedId").hash(KEY_SEED).alias("_k"), _hash(exprs))


def _held_by(rows: pl.DataFrame, other: pl.DataFrame) -> pl.LazyFrame:
    """Per row of `rows`: does `other` hold its key hash? (A sourcedId whose key hash the other side lacks is
    certainly absent from it.)"""
    return rows.lazy().select(pl.col("_k").is_in(other["_k"].implode()))


def _shown(match: _Match) -> pl.Series:
    """The old rows a change set shows: the deleted ones, then the old side of each changed pair."""
    return pl.concat([match.deleted.arg_true(), match.old_index])


def _collect(source: Frame, queries: list[pl.LazyFrame]) -> list[pl.DataFrame]:
    """The queries run in parallel; streaming when `source` is a scan, so it is read a slice at a time."""
    return pl.collect_all(queries, engine="streaming" if isinstance(source, pl.LazyFrame) else "auto")


def _schema(frame: Frame) -> pl.Schema:
    return frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema


def _eager(frame: Frame) -> pl.DataFrame:
    return frame.collect() if isinstance(frame, pl.LazyFrame) else frame


def _columns(frame: Frame, *names: str) -> pl.DataFrame:
    return frame.select(names).collect() if isinstance(frame, pl.LazyFrame) else frame.select(names)


def _rows(frame: Frame, index: pl.Series) -> pl.DataFrame:
    """The rows at `index`, in that order; a lazy frame is read for those rows only."""
    if isinstance(frame, pl.DataFrame):
        return frame[index]
    [picked] = _collect(frame, [frame.with_row_index("_i").filter(pl.col("_i").is_in(index.implode()))])
    return index.alias("_i").to_frame().join(picked, on="_i", how="left", maintain_order="left").drop("_i")


def _no_updates(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.clear().with_columns(pl.lit(None, CHANGED_DTYPE).alias(CHANGED))


@dataclass(frozen=True)
class _Match:
    added: pl.Series  # over the new rows: no old row has this sourcedId
    deleted: pl.Series  # over the old rows: no new row has this sourcedId
    old_index: pl.Series  # pairs of rows with the same sourcedId and different content
    new_index: pl.Series

    @property
    def deleted_count(self) -> int:
        return int(self.deleted.sum())


def _match(old: pl.DataFrame, new: pl.DataFrame, old_in: pl.Series, new_in: pl.Series) -> _Match:
    """Pair old and new rows by sourcedId (`sourcedId`, key hash `_k`, content hash `_h` on each side), given
    which rows' key hashes the other side holds (`old_in`, `new_in`): _pair, its changed pairs confirmed by
    their sourcedIds, and the exact path when anything is unexpected (a collision).

    The diff takes these steps apart: it holds no sourcedIds of the old side, and confirms the changed pairs
    with the old rows it reads back for the change set anyway."""
    match = _pair(old, new, old_in, new_in)
    if match is None or not _confirmed(match, old[match.old_index], new["sourcedId"]):
        return _match_exactly(old, new)
    return match


def _pair(old: pl.DataFrame, new: pl.DataFrame, old_in: pl.Series, new_in: pl.Series) -> _Match | None:
    """Pair old and new rows by key hash `_k`, given which rows' key hashes the other side holds; None when the
    hashes cannot pair them (a collision).

    The rows present on both sides pair up in order when the export kept its row order (the common case),
    else after a sort by key hash. Unchanged pairs agree on both hashes (the content hash covers the
    sourcedId); the changed pairs are still to be confirmed by their sourcedIds (_confirmed)."""
    both_old = old.select("_k", "_h").with_row_index("_i").filter(old_in)
    both_new = new.select("_k", "_h").with_row_index("_i").filter(new_in)
    if both_old.height != both_new.height:
        return None
    if not both_old["_k"].equals(both_new["_k"]):
        both_old, both_new = both_old.sort("_k"), both_new.sort("_k")
        if not both_old["_k"].equals(both_new["_k"]):
            return None
    differ = both_old["_h"] != both_new["_h"]
    return _Match(~new_in, ~old_in, both_old["_i"].filter(differ), both_new["_i"].filter(differ))


def _confirmed(match: _Match, changed: pl.DataFrame, new_ids: pl.Series) -> bool:
    """Whether the old rows of the changed pairs (`changed`, in pair order) have their new rows' sourcedIds."""
    return changed["sourcedId"].equals(new_ids.gather(match.new_index))


def _match_exactly(old: pl.DataFrame, new: pl.DataFrame) -> _Match:
    """The same pairing by a join on the sourcedId strings: slower, and free of hash collisions."""
    pairs = old.select("sourcedId", "_h").with_row_index("_i").join(
        new.select("sourcedId", "_h").with_row_index("_j"), on="sourcedId", how="inner"
    ).filter(pl.col("_h") != pl.col("_h_right"))  # fmt: skip
    return _Match(
        ~new["sourcedId"].is_in(old["sourcedId"].implode()),
        ~old["sourcedId"].is_in(new["sourcedId"].implode()),
        pairs["_i"],
        pairs["_j"],
    )


def _updated(
    old: pl.DataFrame, new: pl.DataFrame, names: list[str], old_exprs: list[pl.Expr], new_exprs: list[pl.Expr]
) -> pl.DataFrame:
    """The new rows of changed pairs (row i of `old` and `new` share a sourcedId) with their changed fields,
    in the new frame's column order."""
    if new.height == 0:
        return _no_updates(new)
    order = {name: i for i, name in enumerate(new.columns)}
    order.update({name: len(order) + i for i, name in enumerate(n for n in old.columns if n not in order)})
    sides = pl.concat([
        old.select(e.name.prefix("old:") for e in old_exprs),
        new.select(e.name.prefix("new:") for e in new_exprs),
    ], how="horizontal").with_row_index("_i")  # fmt: skip
    parts = []  # one row per changed field, field by field in column order
    for name in sorted(names, key=order.__getitem__):
        before, after = f"old:{name}", f"new:{name}"
        parts.append(sides.filter(pl.col(before).ne_missing(pl.col(after))).select(
            "_i", field=pl.lit(name), old=as_text(pl.col(before), sides.schema[before], name),
            new=as_text(pl.col(after), sides.schema[after], name)))  # fmt: skip
    changed = pl.concat(parts).group_by("_i").agg(pl.struct("field", "old", "new").alias(CHANGED))
    updated = new.with_row_index("_i").join(changed, on="_i", how="inner", maintain_order="left")
    return updated.drop("_i").with_columns(pl.col(CHANGED).cast(CHANGED_DTYPE))

