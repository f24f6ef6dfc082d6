"""Pages of a publication (daemon/targets/api/publish.py): what one API request reads, and nothing more.

    reader = Reader()
    page = reader.collection(publication, "1.2", Endpoint for "/students", query, related_where=None)
    page.total, page.texts  # X-Total-Count, and the records' JSON texts with PLACEHOLDER hrefs

Every method blocks (Parquet reads): the server calls them in its own threads.

A page in the default order (sourcedId ascending, no filter) is a slice of the `_json` column, so polars reads
only the row groups that hold it. Any other query first finds the positions of its records, in order, from the
typed columns it names alone (filter, sort, the endpoint's own condition), and keeps them in a small cache, so
a crawl that pages through the same query finds them once; then it reads the `_json` of the page's positions,
one slice when they lie close together, else row group by row group. Ties in a sort are broken by sourcedId,
so pages never repeat or skip a record.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from daemon.targets.api.errors import bad_query, unknown_object
from daemon.targets.api.publish import META, PLACEHOLDER, ROW_GROUP, entity_file, visible_at
from daemon.targets.api.shapes import UTC_MS
from daemon.targets.api.query import Query, filter_expression

CACHE_ENTRIES = 64
SCHEMA_ENTRIES = 1024
CACHE_BYTES = 256 * 2**20  # positions (4 bytes a record) and gathered texts kept in all
GATHER_ROWS = 100_000  # a filter matching at most this many records has their texts read at once, and cached


@dataclass(frozen=True, slots=True)
class Publication:
    moment: datetime  # when it was switched in: the date of every record it changed
    moment_text: str  # the same as dateLastModified shows it
    base_url: str  # what its hrefs start with (before the version's path)


@dataclass(frozen=True, slots=True)
class Page:
    total: int  # records the query matches (X-Total-Count)
    texts: pl.Series  # stored text of this page's records, in order (the server fills in NOW_MARK and hrefs)


class Reader:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._positions: OrderedDict[tuple, pl.Series] = OrderedDict()
        self._schemas: OrderedDict[Path, tuple[dict[str, pl.DataType], int]] = OrderedDict()
        self._moments: OrderedDict[Path, Publication] = OrderedDict()
        self._computing: dict[tuple, threading.Event] = {}

    # -- what requests call ---------------------------------------------------------------------------------

    def collection(self, folder: Path, version: str, entity: str, query: Query, where: pl.Expr | None,
                   where_key: str) -> Page:  # fmt: skip
        """A page of `entity`'s records satisfying `where` (named `where_key` in the cache) and the query."""
        path = entity_file(folder, version, entity)
        if not path.is_file():
            return Page(0, pl.Series("_json", [], pl.String))
        columns = self.schema(path)
        named = {p.field for p in query.filter.predicates} if query.filter is not None else set()
        absent = frozenset((named | ({query.sort} if query.sort else set())) - columns.keys())
        types = dict(columns) | dict.fromkeys(absent, pl.String)  # a field no record carries reads as absent
        condition = where
        if query.filter is not None:
            expr = filter_expression(query.filter, types, {"dateLastModified": self._dated(path)})
            condition = expr if condition is None else condition & expr
        if query.sort is not None and isinstance(types[query.sort], pl.List | pl.Struct):
            raise bad_query("invalid_sort_field", f"sort cannot order by {query.sort}, which holds a list")
        if condition is None and query.sort is None:
            total = self.count(path)
            return Page(total, self._default_order(path, total, query))
        key = (str(path), where_key, _filter_key(query), query.sort, query.descending)
        positions = self._cached(key, lambda: self._find(path, condition, query.sort, query.descending, absent))
        if condition is not None and 0 < positions.len() <= GATHER_ROWS:  # a delta, a class's students, ...
            texts = self._cached((*key, "texts"), lambda: self._gather(path, condition, absent, positions))
            return Page(positions.len(), texts.slice(query.offset, query.limit))
        chosen = positions.slice(query.offset, query.limit)
        return Page(positions.len(), self._texts(path, chosen))

    def record(self, folder: Path, version: str, entity: str, sourced_id: str, where: pl.Expr | None) -> str:
        """The JSON text of one record; unknown (or not satisfying `where`): 404."""
        path = entity_file(folder, version, entity)
        if not path.is_file():
            raise unknown_object(f"No {entity} record with sourcedId {sourced_id!r}")
        found = self._scan(path).filter(_the_record(sourced_id, where)).select(SERVED).collect()
        if not found.height:
            raise unknown_object(f"No such record: {sourced_id!r}")
        return found["_json"][0]

    def exists(self, folder: Path, version: str, entity: str, sourced_id: str, where: pl.Expr | None = None) -> bool:
        path = entity_file(folder, version, entity)
        if not path.is_file():
            return False
        return self._scan(path).filter(_the_record(sourced_id, where)).select(pl.len()).collect().item() > 0

    def values(self, folder: Path, version: str, entity: str, where: pl.Expr, column: str, key: str) -> pl.Series:
        """The distinct values of `column` (a list column is flattened) among `entity`'s records satisfying
        `where`: the ids a relationship endpoint selects its records by."""
        path = entity_file(folder, version, entity)
        if not path.is_file():
            return pl.Series(column, [], pl.String)

        def find() -> pl.Series:
            picked = self._scan(path).filter(where).select(pl.col(column)).collect().to_series()
            if isinstance(picked.dtype, pl.List):
                picked = picked.explode()
            return picked.drop_nulls().unique().sort()

        return self._cached((str(path), "values", key, column), find)

    def schema(self, path: Path) -> dict[str, pl.DataType]:
        return self._file(path)[0]

    def count(self, path: Path) -> int:
        return self._file(path)[1]

    def _file(self, path: Path) -> tuple[dict[str, pl.DataType], int]:
        """A file's columns and records, read once (a publication never changes once written)."""
        with self._lock:
            known = self._schemas.get(path)
        if known is None:
            known = dict(pl.read_parquet_schema(path)), pl.scan_parquet(path).select(pl.len()).collect().item()
            with self._lock:
                self._schemas[path] = known
                while len(self._schemas) > SCHEMA_ENTRIES:  # publications replaced long ago
                    self._schemas.popitem(last=False)
        return known

    def forget(self, folder: Path) -> None:
        """Drop what is cached of a publication that was replaced."""
        prefix = str(folder)
        with self._lock:
            for key in [k for k in self._positions if k[0].startswith(prefix)]:
                del self._positions[key]
            for path in [p for p in self._schemas if str(p).startswith(prefix)]:
                del self._schemas[path]

    # -- how -------------------------------------------------------------------------------------------------

    def _default_order(self, path: Path, total: int, query: Query) -> pl.Series:
        if not query.descending:  # no filter and no sort: a slice of the texts alone
            return pl.scan_parquet(path).slice(query.offset, query.limit).select(SERVED).collect()["_json"]
        last = total - 1 - query.offset  # descending: the page runs backwards from here
        if last < 0:
            return pl.Series("_json", [], pl.String)
        first = max(0, last - query.limit + 1)
        return pl.scan_parquet(path).slice(first, last - first + 1).select(SERVED).collect()["_json"].reverse()

    def _find(self, path: Path, condition: pl.Expr | None, sort: str | None, descending: bool,
              absent: frozenset[str]) -> pl.Series:  # fmt: skip
        frame = self._scan(path, positions=True)
        if absent:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(name) for name in sorted(absent))
        if condition is not None:
            frame = frame.filter(condition)
        if sort is not None:
            by = self._dated(path) if sort == "dateLastModified" else pl.col(sort)
            frame = frame.sort([by, pl.col("sourcedId")], descending=descending, nulls_last=True)
        elif descending:
            frame = frame.sort("_pos", descending=True)
        return frame.select("_pos").collect()["_pos"]

    def _gather(self, path: Path, condition: pl.Expr, absent: frozenset[str], positions: pl.Series) -> pl.Series:
        """The texts of a filter's matches, in the query's order (`positions`), read in one pass with the
        filter handed to the Parquet reader (which then reads the texts of the matches alone): the matches of
        a delta or a relationship lie all over the file, and reading them page by page would read most row
        groups once for every page."""
        frame = self._scan(path, positions=True)
        if absent:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(name) for name in sorted(absent))
        found = frame.filter(condition).select("_pos", "_json").collect()
        return positions.to_frame("_pos").join(found, on="_pos", how="left", maintain_order="left")["_json"]

    def _texts(self, path: Path, positions: pl.Series) -> pl.Series:
        if positions.is_empty():
            return pl.Series("_json", [], pl.String)
        low, high = positions.min(), positions.max()
        if high - low < 2 * ROW_GROUP + 4 * positions.len():  # close together: one slice
            block = self._scan(path).slice(low, high - low + 1).select(SERVED).collect()
            return block[positions - low]["_json"]
        pieces = []
        wanted = pl.DataFrame({"_pos": positions}).with_row_index("_order")
        for group in (positions // ROW_GROUP).unique().sort():
            start = group * ROW_GROUP
            block = self._scan(path).slice(start, ROW_GROUP).select(SERVED).collect()
            here = wanted.filter((pl.col("_pos") // ROW_GROUP) == group)
            pieces.append(pl.concat([here, block[here["_pos"] - start]], how="horizontal"))
        return pl.concat(pieces).sort("_order")["_json"]

    def publication(self, folder: Path) -> Publication:
        """What the server fills into a publication's stored texts (see publish.py), read once."""
        with self._lock:
            known = self._moments.get(folder)
        if known is None:
            meta = json.loads((folder / META).read_text(encoding="utf-8"))
            moment = visible_at(folder)
            known = Publication(moment, moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
                                meta.get("base_url", PLACEHOLDER))  # fmt: skip
            with self._lock:
                self._moments[folder] = known
                while len(self._moments) > SCHEMA_ENTRIES:
                    self._moments.popitem(last=False)
        return known

    def _scan(self, path: Path, positions: bool = False) -> pl.LazyFrame:
        """The file, with `positions`, each row's position in it as `_pos`."""
        return pl.scan_parquet(path, row_index_name="_pos") if positions else pl.scan_parquet(path)

    def _dated(self, path: Path) -> pl.Expr:
        """dateLastModified with the dates its publication left to its moment filled in (see publish.py): in
        filters and sorts, as an expression, not a column replaced, so that the Parquet reader still gets the
        filter and reads the texts of the matches alone."""
        moment = self.publication(path.parent.parent).moment
        return pl.col("dateLastModified").fill_null(pl.lit(moment, UTC_MS))

    def _cached(self, key: tuple, compute: Callable[[], pl.Series]) -> pl.Series:
        """`compute()`, kept under `key`; threads asking for the same key meanwhile wait for the one computing
        it (a page and the next one read ahead start together), rather than compute it again."""
        with self._lock:
            found = self._positions.get(key)
            if found is not None:
                self._positions.move_to_end(key)
                return found
            busy = self._computing.get(key)
            if busy is None:
                busy = self._computing[key] = threading.Event()
                mine = True
            else:
                mine = False
        if not mine:
            busy.wait()
            with self._lock:
                found = self._positions.get(key)
            return found if found is not None else self._cached(key, compute)  # it failed there: try here
        made = None
        try:
            made = compute()
        finally:
            with self._lock:
                if made is not None:
                    self._positions[key] = made
                    while len(self._positions) > CACHE_ENTRIES or (len(self._positions) > 1 and sum(
                            s.estimated_size() for s in self._positions.values()) > CACHE_BYTES):  # fmt: skip
                        self._positions.popitem(last=False)
                del self._computing[key]
            busy.set()
        return made


SERVED = ("_json",)  # a record's stored text (see publish.py)


def _the_record(sourced_id: str, where: pl.Expr | None) -> pl.Expr:
    """The record `sourced_id`, if it satisfies `where` too."""
    by_id = pl.col("sourcedId") == sourced_id
    return by_id if where is None else by_id & where


def _filter_key(query: Query) -> tuple | None:
    if query.filter is None:
        return None
    return (query.filter.join, tuple((p.field, p.op, p.value) for p in query.filter.predicates))


def restrict(ids: Sequence[str] | pl.Series, column: str = "sourcedId") -> pl.Expr:
    return pl.col(column).is_in(pl.Series(ids, dtype=pl.String).implode())
