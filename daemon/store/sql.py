"""What the table modules need of a database connection: the small part of sqlite3's API that both stores
offer, so one module per table serves SQLite and PostgreSQL alike.

The table modules write SQL both databases read the same way: `?` placeholders (the PostgreSQL connection
turns them into its own), explicit column lists, upserts as `ON CONFLICT ... DO UPDATE` and a `rowid` column
for arrival order (SQLite's own; a generated column in PostgreSQL). A row is read by column name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

Row = Mapping[str, Any]


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Db(Protocol):
    """A connection inside a transaction or a read the store holds (daemon/store/connection.py, postgres.py)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


def placeholders(count: int) -> str:
    """`?, ?, ?` for an IN list of `count` values (count > 0: an empty IN list is not SQL in PostgreSQL)."""
    if count < 1:
        raise ValueError("an IN list needs at least one value")
    return ", ".join("?" * count)
