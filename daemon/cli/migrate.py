"""`rosterd migrate`: create or upgrade the store's schema.

PostgreSQL: the numbered migrations the database lacks are applied (daemon/store/postgres_schema.py), each in
its own transaction, under a lock, so replicas and operators may run it at the same time. A replica refuses
to start on a schema older or newer than its own. SQLite: the daemon and every command bring the file up to
date when they open it; `migrate` does just that, so a deployment script can run it whatever the store.
"""

from __future__ import annotations

import argparse
import sys

from daemon.cli.admin import EXIT_USAGE, settings_of
from daemon.cli.options import add_config_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "migrate",
        help="create or upgrade the store's schema (PostgreSQL: safe from several replicas at once)",
        description="Create or upgrade the schema of the store [store] names. With PostgreSQL, apply every "
        "numbered migration the database lacks, one transaction each, while other replicas keep running or "
        "migrate at the same time; replicas refuse to start until the schema is theirs. With SQLite (no [store] "
        "url), make or update the database file in the state directory. Exit status: 0 up to date, 2 the "
        "store cannot be reached or its schema is newer than this rosterd.",
    )
    add_config_option(parser)
    parser.set_defaults(func=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    from daemon.store import Store, StoreUnavailable
    from daemon.targets.secrets import SecretMissing

    settings = settings_of(args)
    if not settings.store.postgresql:
        database = settings.server.state_dir / "rosterd.db"
        Store(database, settings.target_names()).close()
        print(f"rosterd migrate: SQLite at {database} is up to date")
        return 0
    from daemon.store.postgres import migrate
    from daemon.store.postgres_schema import LATEST

    try:
        applied = migrate(settings.store.url, settings.store.password())
    except (StoreUnavailable, SecretMissing) as err:
        print(f"rosterd migrate: {err}", file=sys.stderr)
        return EXIT_USAGE
    for line in applied:
        print(f"rosterd migrate: applied {line}")
    print(f"rosterd migrate: the schema is at version {LATEST}" + ("" if applied else " (nothing to do)"))
    return 0
