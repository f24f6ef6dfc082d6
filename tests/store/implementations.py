"""Each implementation of StoreInterface, opened fresh and empty for one test: SQLite in the test's folder,
PostgreSQL in a database of the test's own on this worker's throwaway cluster (tests/postgres.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.store import Store, StoreInterface

IMPLEMENTATIONS = ("sqlite", "postgresql")


def open_implementation(request: pytest.FixtureRequest, kind: str, folder: Path,
                        targets: dict[str, list[str]] | None = None) -> StoreInterface:  # fmt: skip
    if kind == "sqlite":
        return Store(folder / "rosterd.db", targets)
    from daemon.store.postgres import PostgresStore

    database = request.getfixturevalue("postgres_database")
    return PostgresStore(database.url, database.password, targets)
