"""The store tests run against every implementation of StoreInterface: SQLite today, PostgreSQL when issue 17
adds it (one more entry below, opening a throwaway database)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.store import Store, StoreInterface

TARGETS = {"north": ["cers", "vendor"]}

# name -> how to open a fresh, empty store of that kind in a test's own folder, with TARGETS configured
IMPLEMENTATIONS: dict[str, Callable[[Path], StoreInterface]] = {
    "sqlite": lambda folder: Store(folder / "rosterd.db", TARGETS),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreInterface]:
    opened = IMPLEMENTATIONS[request.param](tmp_path)
    yield opened
    opened.close()
