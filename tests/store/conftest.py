"""The store tests run against every implementation of StoreInterface (implementations.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.store import StoreInterface
from tests.store.implementations import IMPLEMENTATIONS, open_implementation

TARGETS = {"north": ["cers", "vendor"]}


@pytest.fixture(params=IMPLEMENTATIONS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreInterface]:
    opened = open_implementation(request, request.param, tmp_path, TARGETS)
    yield opened
    opened.close()
