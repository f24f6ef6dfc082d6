"""Fixtures more than one test folder uses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.objects.seaweed import Seaweed, server_for
from tests.postgres import Cluster, Database


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """This worker's own PostgreSQL (tests/postgres.py), started at first use and removed at the end."""
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_database(postgres_cluster: Cluster) -> Iterator[Database]:
    """A database of this test's own, with the schema migrated. A test that starts daemons on it names this
    fixture before `rosterd`, so that the daemons stop before the database is dropped."""
    database = postgres_cluster.new_database()
    yield database
    postgres_cluster.drop(database)


@pytest.fixture(scope="session")
def seaweed(pytestconfig: pytest.Config) -> Seaweed:
    """This worker's own SeaweedFS S3 server (tests/objects/seaweed.py), started at first use."""
    return server_for(pytestconfig).ready()
