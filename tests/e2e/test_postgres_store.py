"""The daemon on PostgreSQL ([store] url), as an operator runs it: `rosterd migrate`, then `rosterd serve`, with
the password in a file named by secret_file. Uploads through the real OpenSSH client are recorded in the
database (the CLI reads them back from there), a restart resumes from it, and a second daemon on the same
database refuses to start while uploads still live on one machine's disk."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg

from tests.postgres import Cluster, Database

from .conftest import ROSTERD, RunningDaemon, Tenant, copy_sample


def store_config(database: Database, folder: Path) -> str:
    secret = folder / "store-password"
    secret.write_text(database.password + "\n")
    secret.chmod(0o600)
    return f'[store]\nurl = "{database.url}"\nsecret_file = "{secret}"\n'


def rosterd_cli(daemon: RunningDaemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROSTERD), *args, "--config", str(daemon.config)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_a_daemon_on_postgresql_records_uploads_there_and_resumes_from_it(
    rosterd, tenants: dict[str, Tenant], postgres_cluster: Cluster, tmp_path: Path
) -> None:
    database = postgres_cluster.new_database(migrated=False)
    daemon = rosterd(tenants["north"], start=False, extra_config=store_config(database, tmp_path))

    refused = subprocess.run([str(ROSTERD), "serve", "--config", str(daemon.config)], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert refused.returncode != 0 and "run `rosterd migrate`" in refused.stdout + refused.stderr
    migrated = rosterd_cli(daemon, "migrate")
    assert migrated.returncode == 0 and "applied 1:" in migrated.stdout, migrated.stderr
    assert "nothing to do" in rosterd_cli(daemon, "migrate").stdout

    daemon.start()
    copy_sample("valid-1.1-bulk.zip", daemon.client_dir / "day1.zip")
    assert daemon.sftp_batch("north", ["put day1.zip inbox/day1.zip"]).returncode == 0
    receipt = daemon.wait_for_receipt("north", "day1.zip")
    assert receipt["state"] == "accepted"
    with psycopg.connect(database.url, password=database.password) as db:
        (state,) = db.execute("SELECT state FROM uploads WHERE id = %s", (receipt["upload_id"],)).fetchone()
    assert state == "accepted"

    status = rosterd_cli(daemon, "status", "--format", "json")
    assert status.returncode == 0, status.stderr
    assert receipt["upload_id"] in status.stdout

    daemon.restart()  # the same upload again is a duplicate of the current roster the database remembers
    copy_sample("valid-1.1-bulk.zip", daemon.client_dir / "day2.zip")
    assert daemon.sftp_batch("north", ["put day2.zip inbox/day2.zip"]).returncode == 0
    again = daemon.wait_for_receipt("north", "day2.zip")
    assert again["state"] == "duplicate" and receipt["upload_id"] in again["detail"]


def test_a_second_daemon_on_the_same_database_refuses_to_start(
    postgres_database: Database, rosterd, tenants: dict[str, Tenant], tmp_path: Path
) -> None:
    config = store_config(postgres_database, tmp_path)
    first = rosterd(tenants["north"], extra_config=config)
    second = rosterd(tenants["north"], start=False, extra_config=config)
    refused = subprocess.run([str(ROSTERD), "serve", "--config", str(second.config)], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert refused.returncode != 0
    assert "another rosterd already runs on this PostgreSQL database" in refused.stdout + refused.stderr
    assert first.proc.poll() is None
    first.stop()
    second.start()  # the first one's lock went with it (start waits for daemon.started)
    assert second.proc.poll() is None
