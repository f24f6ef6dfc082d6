"""The PostgreSQL store: the same methods and table modules as the SQLite one (daemon/store/__init__.py), over
a pool of connections to a database several replicas share.

What makes it safe across processes:
    - every write transaction first takes one advisory lock (`pg_advisory_xact_lock`), so writes run one
      at a time across the cluster, as SQLite's BEGIN IMMEDIATE makes them run on one machine: a read
      inside a write (the tenant's current upload, a target's newest delivery) cannot be overtaken. A write
      is a few small statements, so the lock is held for milliseconds;
    - a read runs in one REPEATABLE READ, READ ONLY transaction: the tables it joins show one moment;
    - the schema is versioned (daemon/store/postgres_schema.py) and only `migrate` changes it; a store opened
      on a database whose schema is older or newer than this rosterd's refuses with what to do.

Every connection gets a statement timeout, so a database that stops answering fails a call with an error
(readiness reports it) instead of stalling the thread that made it. Passwords are given to the driver as a
separate argument, never put in the url, so no message built from the url holds one.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from daemon.store import Store
from daemon.store.postgres_schema import APPLIED, LATEST, MIGRATIONS
from daemon.store.records import StoreUnavailable, now

# Advisory lock keys: "rosterdW" (writes), "rosterdM" (migrations) and "rosterdA" (a daemon alone on the store)
# as 64-bit integers, unlikely to meet another application's.
WRITE_LOCK = int.from_bytes(b"rosterdW", "big")
MIGRATE_LOCK = int.from_bytes(b"rosterdM", "big")
ALONE_LOCK = int.from_bytes(b"rosterdA", "big")
CONNECT_SECONDS = 10
STATEMENT_SECONDS = 30


@functools.lru_cache(maxsize=512)
def _dialect(sql: str) -> str:
    """The table modules' `?` placeholders as psycopg's `%s` (a literal % doubled first). No statement of
    theirs has a ? or % inside a quoted literal."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Connection:
    """A pooled connection with the two calls the table modules make (daemon/store/sql.py)."""

    def __init__(self, connection: psycopg.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor:
        return self._connection.execute(_dialect(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> psycopg.Cursor:
        cursor = self._connection.cursor()
        cursor.executemany(_dialect(sql), [tuple(p) for p in parameters])
        return cursor


def _connect_options(password: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "autocommit": True,  # transactions are begun explicitly below
        "row_factory": dict_row,
        # values are quoted on the client: `? IS NULL` needs no type the server would have to guess
        "cursor_factory": psycopg.ClientCursor,
        "connect_timeout": CONNECT_SECONDS,
        "options": f"-c statement_timeout={STATEMENT_SECONDS * 1000} -c idle_in_transaction_session_timeout="
        f"{STATEMENT_SECONDS * 1000}",
        "application_name": "rosterd",
        # a connection a firewall dropped in silence is noticed in about a minute, not hours later
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    if password is not None:
        options["password"] = password
    return options


class PostgresDatabase:
    """A pool of connections, and the write transaction and consistent read every store method runs in."""

    def __init__(self, url: str, password: str | None, max_connections: int = 8) -> None:
        _connect(url, password).close()  # one plain attempt first: a refusal is reported at once, with its reason
        self._pool = ConnectionPool(url, kwargs=_connect_options(password), min_size=1, max_size=max_connections,
                                    open=True, timeout=STATEMENT_SECONDS, check=ConnectionPool.check_connection,
                                    name="rosterd-store")  # fmt: skip
        self._url, self._password = url, password
        self._alone: psycopg.Connection | None = None

    @contextmanager
    def transaction(self) -> Iterator[_Connection]:
        with self._reachable(), self._pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield _Connection(connection)

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        """The database gone (down, unreachable, a connection cut, none free in time, a statement timed out)
        raised as StoreUnavailable, which callers tell from a refusal or a bug: they wait and try again."""
        try:
            yield
        except (psycopg.OperationalError, PoolTimeout) as err:
            raise StoreUnavailable(f"PostgreSQL at {_where(self._url)}: {_first_line(err)}") from err

    @contextmanager
    def read(self) -> Iterator[_Connection]:
        with self._reachable(), self._pool.connection() as connection:
            connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield _Connection(connection)
            finally:
                if connection.info.transaction_status != psycopg.pq.TransactionStatus.UNKNOWN:
                    connection.execute("ROLLBACK")  # nothing was written: ending it is all there is to do

    def schema_version(self) -> int:
        with self._pool.connection() as connection:
            return _applied_version(connection)

    def hold_alone(self) -> bool:
        """A session lock on a connection of its own, outside the pool: PostgreSQL gives it up when that
        connection ends, so a replica that dies frees it for the next one."""
        if self._alone is None:
            connection = _connect(self._url, self._password)
            row = connection.execute("SELECT pg_try_advisory_lock(%s) AS held", (ALONE_LOCK,)).fetchone()
            if not row["held"]:
                connection.close()
                return False
            self._alone = connection
        return True

    def close(self) -> None:
        if self._alone is not None:
            self._alone.close()
        self._pool.close()


class PostgresStore(Store):
    """The store on PostgreSQL (the method docstrings are StoreInterface's; the methods are Store's)."""

    def __init__(self, url: str, password: str | None, targets: dict[str, list[str]] | None = None,
                 max_connections: int = 8) -> None:  # fmt: skip
        # replicas share it: their SFTP servers share host keys and the defender through it
        self._begin(PostgresDatabase(url, password, max_connections), targets, shared=True)
        version = self._database.schema_version()
        if version != LATEST:
            self._database.close()
            raise StoreUnavailable(_version_mismatch(_where(url), version))


def migrate(url: str, password: str | None) -> list[str]:
    """Apply every migration the database lacks, oldest first, each in its own transaction; returns what was
    applied ("1: ..."). Several replicas may call it at once: an advisory lock lets one work while the others
    wait, and those then find nothing left to do."""
    applied: list[str] = []
    with _connect(url, password) as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        try:
            connection.execute(APPLIED)
            version = _applied_version(connection)
            if version > LATEST:
                raise StoreUnavailable(_version_mismatch(_where(url), version))
            for migration in MIGRATIONS:
                if migration.version <= version:
                    continue
                with connection.transaction():
                    connection.execute(migration.sql)
                    connection.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES "
                                       "(%s, %s, %s)", (migration.version, migration.name, now()))  # fmt: skip
                applied.append(f"{migration.version}: {migration.name}")
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
    return applied


def _applied_version(connection: psycopg.Connection) -> int:
    """The newest migration the database has had (0: none, not even the table that records them)."""
    exists = connection.execute("SELECT to_regclass('schema_migrations') AS t").fetchone()
    if exists is None or _value(exists) is None:
        return 0
    row = connection.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").fetchone()
    return int(_value(row))


def _value(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def _version_mismatch(where: str, version: int) -> str:
    if version < LATEST:
        return (f"the database at {where} has schema version {version}, this rosterd needs {LATEST}: run "
                "`rosterd migrate` (safe while other replicas run)")  # fmt: skip
    return (f"the database at {where} has schema version {version}, newer than this rosterd knows ({LATEST}): "
            "a newer rosterd migrated it; upgrade this one")  # fmt: skip


def _where(url: str) -> str:
    """host:port/database of a url, for messages."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def _connect(url: str, password: str | None) -> psycopg.Connection:
    try:
        return psycopg.connect(url, **_connect_options(password))
    except psycopg.OperationalError as err:
        raise StoreUnavailable(f"PostgreSQL at {_where(url)}: {_first_line(err)}") from None


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
