"""What only the PostgreSQL store has to show: its schema comes from `migrate` alone (safely from several
replicas at once), a database it cannot use is refused with what to do, and two replicas writing at the same
moment still take the decisions one store would."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from daemon.store import Refused, SnapshotRecord, State
from daemon.store.postgres import PostgresStore, StoreUnavailable, migrate
from tests.postgres import Cluster, Database
from tests.test_snapshot_store import RESULT, upload

TARGETS = {"north": ["cers", "vendor"]}


@pytest.fixture
def empty_database(postgres_cluster: Cluster):
    database = postgres_cluster.new_database(migrated=False)
    yield database
    postgres_cluster.drop(database)


def applied(database: Database) -> list[int]:
    with psycopg.connect(database.url, password=database.password) as connection:
        return [row[0] for row in connection.execute("SELECT version FROM schema_migrations ORDER BY version")]


def test_a_database_without_the_schema_is_refused_until_migrated(empty_database: Database) -> None:
    with pytest.raises(StoreUnavailable, match="schema version 0, this rosterd needs 4: run `rosterd migrate`"):
        PostgresStore(empty_database.url, empty_database.password, TARGETS)
    done = migrate(empty_database.url, empty_database.password)
    assert [line.split(":")[0] for line in done] == ["1", "2", "3", "4"]  # tables, leases twice, SFTP state
    assert migrate(empty_database.url, empty_database.password) == []  # nothing left to do
    PostgresStore(empty_database.url, empty_database.password, TARGETS).close()


def test_replicas_migrating_at_once_apply_each_migration_once(empty_database: Database) -> None:
    start = threading.Barrier(4)

    def one_replica(_: int) -> list[str]:
        start.wait()
        return migrate(empty_database.url, empty_database.password)

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(one_replica, range(4)))
    assert sorted(len(o) for o in outcomes) == [0, 0, 0, 4]  # one did the work; the others found it done
    assert applied(empty_database) == [1, 2, 3, 4]


def test_a_database_migrated_by_a_newer_rosterd_is_refused(postgres_database: Database) -> None:
    with psycopg.connect(postgres_database.url, password=postgres_database.password, autocommit=True) as db:
        db.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', '2027-01-01T00:00:00.000Z')")
    with pytest.raises(StoreUnavailable, match="schema version 99, newer than this rosterd knows"):
        PostgresStore(postgres_database.url, postgres_database.password, TARGETS)
    with pytest.raises(StoreUnavailable, match="upgrade this one"):
        migrate(postgres_database.url, postgres_database.password)


def test_a_wrong_password_is_refused_without_being_repeated(postgres_database: Database) -> None:
    wrong = "not-the-password-31337"
    with pytest.raises(StoreUnavailable) as refused:
        PostgresStore(postgres_database.url, wrong, TARGETS)
    message = str(refused.value)
    assert "password authentication failed" in message and wrong not in message
    assert f"/{postgres_database.name}" in message  # which database, so the operator knows where to look


def test_an_unreachable_database_is_refused_with_where_it_was_looked_for(postgres_cluster: Cluster) -> None:
    from tests.postgres import free_port

    url = f"postgresql://rosterd@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(StoreUnavailable, match="127.0.0.1:.*/nowhere"):
        migrate(url, "x")


def test_two_replicas_deciding_the_same_held_upload_at_once_take_one_decision(postgres_database: Database) -> None:
    """Approving checks that the upload is still held, then accepts it: two replicas interleaving those steps
    would both accept it (two decisions, two deliveries per target). The store's write lock orders them."""
    replicas = [PostgresStore(postgres_database.url, postgres_database.password, TARGETS) for _ in range(2)]
    try:
        for round_ in range(1, 9):
            held = upload(replicas[0], round_)
            current = replicas[0].current_snapshot("north")
            snapshot = SnapshotRecord(tenant="north", version="1.1", path=f"/s/{held}", rows={"users": 1},
                                      base_upload_id=current.upload_id if current else None, changes={},
                                      holds=[{"threshold": "users_deleted_share"}])  # fmt: skip
            replicas[0].record_snapshot(held, snapshot, State.HELD, RESULT)
            start = threading.Barrier(2)

            def approve(replica: PostgresStore, upload_id: str = held) -> str:
                start.wait()
                try:
                    replica.decide(upload_id, approve=True, operator=f"op{id(replica) % 7}")
                except Refused as refused:
                    return str(refused)
                return "approved"

            with ThreadPoolExecutor(2) as pool:
                outcomes = sorted(pool.map(approve, replicas))
            assert outcomes[0] == "approved" and outcomes[1] == f"upload {held} is accepted, not held"
            assert len(replicas[1].decisions(held)) == 1
            assert sorted(d.target for d in replicas[1].deliveries(upload_id=held)) == ["cers", "vendor"]
    finally:
        for replica in replicas:
            replica.close()


def test_queuing_the_same_delivery_from_two_replicas_queues_it_once(postgres_database: Database) -> None:
    replicas = [PostgresStore(postgres_database.url, postgres_database.password, TARGETS) for _ in range(2)]
    try:
        first = upload(replicas[0], 1)
        snapshot = SnapshotRecord(tenant="north", version="1.1", path="/s/1", base_upload_id=None, rows={},
                                  changes={}, holds=[])  # fmt: skip
        replicas[0].record_snapshot(first, snapshot, State.ACCEPTED, RESULT)
        for day in ("2099-01-01", "2099-01-02", "2099-01-03"):  # after the acceptance's delivery
            start = threading.Barrier(2)

            def queue(replica: PostgresStore, day: str = day) -> bool:
                start.wait()
                return replica.queue_dated("north", "vendor", day, f"{day}T00:00:00.000Z") is not None

            with ThreadPoolExecutor(2) as pool:
                assert sorted(pool.map(queue, replicas)) == [False, True]
        dated = [d for d in replicas[1].deliveries(upload_id=first) if d.target == "vendor"]
        assert len(dated) == 4  # the one queued on acceptance and one per day
    finally:
        for replica in replicas:
            replica.close()


def test_one_replica_holds_the_store_alone_until_it_closes(postgres_database: Database) -> None:
    first, second = (PostgresStore(postgres_database.url, postgres_database.password, TARGETS) for _ in range(2))
    try:
        assert first.hold_alone() and first.hold_alone()  # asking again while holding it is fine
        assert not second.hold_alone()
        first.close()
        assert second.hold_alone()
    finally:
        second.close()


def test_both_stores_have_the_same_tables_and_columns(postgres_database: Database, tmp_path) -> None:
    """The two schemas are written by hand, one per dialect (postgres_schema.py beside the SQLite one): a column
    added to one and not the other would only fail where that store runs."""
    from daemon.store import Store

    Store(tmp_path / "rosterd.db", TARGETS).close()  # creates its schema
    with contextlib.closing(sqlite3.connect(tmp_path / "rosterd.db")) as db:
        names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        sqlite = {name: {column[1] for column in db.execute(f"PRAGMA table_info({name})")}
                  for name in names if not name.startswith("sqlite_")}  # fmt: skip
    postgres: dict[str, set[str]] = {}
    with psycopg.connect(postgres_database.url, password=postgres_database.password) as db:
        for table, column in db.execute("SELECT table_name, column_name FROM information_schema.columns "
                                        "WHERE table_schema = 'public'"):  # fmt: skip
            if column != "rowid":  # an identity column standing for the rowid every SQLite table has unasked
                postgres.setdefault(table, set()).add(column)
    postgres.pop("schema_migrations", None)  # PostgreSQL's record of its numbered migrations
    sqlite.pop("schema_migrations", None)
    assert sqlite == postgres
