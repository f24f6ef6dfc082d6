"""Two replicas behind HAProxy (Debian's, in TCP mode, health-checking /readyz), on one PostgreSQL database and
one SeaweedFS bucket, with 50 uploads from 10 tenants and one replica killed with SIGKILL twice: once while it
validates an upload, once while it sends a delivery. Each time it stays down for longer than a lease, so the
other replica takes over what it held, and is then started again, as systemd would; meanwhile HAProxy sends
clients to the other replica.

Each tenant is a district whose SIS puts five days of rosters through the load balancer, one after another,
waiting only until the upload is recorded before the next (the test asks the database, where an SIS would
poll its `received` receipt; tests/e2e/test_replicas.py reads receipts across replicas): consecutive uploads
of a tenant land on either replica. An SIS whose transfer a kill cuts off, or whose file the killed replica
took but never recorded, sends the file again. Each tenant's
licence vendor takes the changes as signed webhook batches (tests/fakes/webhooks.py, strict about order).

At the end, from the database and the bucket (never from the code under test):
    - every upload ends in one final state, with exactly one receipt that says so; each day is accepted
      exactly once (a resent file is a duplicate of it);
    - every accepted upload reached its vendor, in upload order, no batch applied twice, and each vendor holds
      its district's last roster;
    - every snapshot in the catalogue is whole in the bucket (snapshot.json, and each entity's rows as
      catalogued).
"""

from __future__ import annotations

import dataclasses
import json
import asyncio
import secrets
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import polars as pl
import psycopg
import pytest

from daemon.generator.churn import Churn, churn
from daemon.generator.generate import DistrictSpec, generate, write_zip
from daemon.objects.mirror import Mirror
from daemon.objects.s3 import S3Storage
from daemon.snapshots import storage
from tests.fakes.threaded import served_in_thread
from tests.fakes.webhooks import WebhookReceiver
from tests.objects.seaweed import Seaweed
from tests.postgres import Database

from .conftest import RunningDaemon, Tenant, cluster_config, free_port, make_tenant
from .test_crash import district_roster, vendor_roster

TENANTS = 10
DAYS = 5
SPEC = DistrictSpec(schools=1, students_per_school=30, teachers_per_school=3, enrollments_per_student=3)
SECRET = "cluster-test-signing-secret-0123456789"
DEADLINE = 180.0
LEASE = 3.0  # seconds: a dead replica's claims lapse this soon


class SlowVendor(WebhookReceiver):
    """The strict vendor, taking 40 ms over each batch: a delivery stays in flight long enough to be cut."""

    async def _receive(self, request):
        await asyncio.sleep(0.04)
        return await super()._receive(request)


def haproxy_config(port: int, replicas: list[RunningDaemon], health: list[int]) -> str:
    servers = "\n".join(f"    server {name} 127.0.0.1:{r.port} check port {h} inter 300ms fall 2 rise 2"
                        for name, r, h in zip(("alpha", "beta"), replicas, health, strict=True))  # fmt: skip
    return f"""global
    maxconn 500
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend sftp
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
{servers}
"""


class Sis:
    """One district's SIS: puts each day's file through the load balancer and sends it again when cut off."""

    def __init__(self, tenant: Tenant, replica: RunningDaemon, port: int, folder: Path, database: Database) -> None:
        self.tenant, self.replica, self.port, self.folder = tenant, replica, port, folder
        self.database = database

    def sftp(self, commands: list[str]) -> subprocess.CompletedProcess:
        batch = self.folder / f".batch-{secrets.token_hex(4)}"
        batch.write_text("\n".join(commands) + "\n")
        args = self.replica.sftp_args(self.tenant.name, batch, self.tenant.key)
        args[args.index("-P") + 1] = str(self.port)  # the load balancer, not the replica
        return subprocess.run(args, cwd=self.folder, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    def send(self, name: str) -> None:
        """Put the file until a transfer completes, then wait until some replica has recorded it."""
        deadline = time.monotonic() + DEADLINE / 2
        while True:
            put = self.sftp([f"put {name} inbox/{name}"])
            if put.returncode == 0 and self._recorded(name, min(deadline, time.monotonic() + 15)):
                return
            assert time.monotonic() < deadline, f"{self.tenant.name}/{name} never got in: {put.stderr}"
            time.sleep(0.5)

    def _recorded(self, name: str, until: float) -> bool:
        while time.monotonic() < until:
            if query(self.database, "SELECT 1 FROM uploads WHERE tenant = %s AND name = %s", self.tenant.name, name):
                return True
            time.sleep(0.1)
        return False


def query(database: Database, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(database.url, password=database.password) as db:
        return db.execute(sql, args).fetchall()


def wait_for(database: Database, sql: str, replica: str, deadline: float) -> bool:
    """Until a row of `sql` (with the replica's name) shows up: True, or False when the deadline passed."""
    while time.monotonic() < deadline:
        if query(database, sql, replica):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_two_replicas_behind_haproxy_lose_nothing_and_repeat_nothing_when_one_is_killed(
    postgres_database: Database, seaweed: Seaweed, rosterd, tmp_path: Path
) -> None:
    database, prefix = postgres_database, f"cluster-{secrets.token_hex(4)}"
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(SECRET)
    with ExitStack() as stack:
        receivers = {f"d{n:02d}": stack.enter_context(served_in_thread(SlowVendor(SECRET)))
                     for n in range(1, TENANTS + 1)}  # fmt: skip
        tenants = [dataclasses.replace(make_tenant(tmp_path, name, password=False), extra="\n".join([
            "[[tenants.targets]]", 'type = "webhook"', 'name = "vendor"', f'url = "{receiver.url}"',
            "batch_size = 25", "timeout_seconds = 5", f'signing = {{ secret_file = "{secret_file}" }}']))
            for name, receiver in receivers.items()]  # fmt: skip
        extra = cluster_config(database, seaweed, tmp_path, prefix) + (
            f"\n[outbox]\nretry_first_seconds = 0.2\nretry_max_seconds = 1\npoll_seconds = 0.2\n"
            f"lease_seconds = {LEASE}\n")  # fmt: skip
        health = [free_port(), free_port()]
        replicas = [rosterd(*tenants, extra_config=extra, settings={"health": {"port": port}}) for port in health]
        alpha = replicas[0]
        balancer = tmp_path / "haproxy.cfg"
        port = free_port()
        balancer.write_text(haproxy_config(port, replicas, health))
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(balancer)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        stack.callback(_stop, haproxy)

        rosters = _write_days(tenants, tmp_path)
        kills: list[dict] = []
        killer = threading.Thread(target=_kill_twice, args=(alpha, database, kills), daemon=True)
        killer.start()
        with ThreadPoolExecutor(TENANTS) as pool:
            sent = [pool.submit(_send_days, Sis(t, alpha, port, rosters / t.name, database)) for t in tenants]
            for done in sent:
                done.result()
        killer.join(DEADLINE)
        assert [k["moment"] for k in kills] == ["validating", "delivering"], kills
        assert all(kill["held"] for kill in kills), kills  # each kill cut something off

        _settle(database, deadline=time.monotonic() + DEADLINE)
        beta = f"{socket.gethostname()}:{replicas[1].port}"
        (upload_cut, delivery_cut) = (kill["held"] for kill in kills)
        finished_by = query(database, "SELECT claimed_by FROM uploads WHERE id = ANY(%s)", upload_cut)
        sent_by = query(database, "SELECT claimed_by FROM deliveries WHERE id = ANY(%s)", delivery_cut)
        assert {r[0] for r in finished_by} == {beta} and {r[0] for r in sent_by} == {beta}, (finished_by, sent_by)
        _check(database, seaweed, prefix, receivers, tmp_path)


def _write_days(tenants: list[Tenant], folder: Path) -> Path:
    """Five days of each district: a bulk roster, then one churned bulk a day."""
    rosters = folder / "rosters"
    for number, tenant in enumerate(tenants):
        days = [generate(dataclasses.replace(SPEC, seed=number + 1))]
        for day in range(1, DAYS):
            days.append(churn(days[-1], SPEC.version, Churn(withdrawn=1, arrivals=1, new_emails=1, period_changes=1,
                                                            seed=number * 100 + day)).bulk)  # fmt: skip
        (rosters / tenant.name).mkdir(parents=True)
        for day, tables in enumerate(days, start=1):
            write_zip(tables, rosters / tenant.name / f"day{day}.zip", SPEC.version)
    return rosters


def _send_days(sis: Sis) -> None:
    for day in range(1, DAYS + 1):
        sis.send(f"day{day}.zip")


def _kill_twice(alpha: RunningDaemon, database: Database, kills: list[dict]) -> None:
    """SIGKILL alpha while it validates an upload it claimed, start it again; then the same while it sends a
    delivery. What it held is read from the database with alpha dead."""
    replica = f"{socket.gethostname()}:{alpha.port}"  # its name among the replicas: HOST:PORT by default
    deadline = time.monotonic() + DEADLINE
    for moment, sql in (
        ("validating", "SELECT id FROM uploads WHERE state = 'validating' AND claimed_by = %s"),
        ("delivering", "SELECT id FROM deliveries WHERE state = 'in_flight' AND claimed_by = %s"),
    ):
        if not wait_for(database, sql, replica, deadline):
            return
        alpha.kill()  # SIGKILL to its process group: its worker processes too
        held = [r[0] for r in query(database, sql, replica)]
        kills.append({"moment": moment, "held": held})
        time.sleep(LEASE + 2.0)  # down for longer than its lease: the other replica takes its work over
        alpha.start()


def _settle(database: Database, deadline: float) -> None:
    while True:
        unfinished = query(database, "SELECT tenant, name, state FROM uploads WHERE state IN ('received', "
                                     "'validating') OR answered_at IS NULL")  # fmt: skip
        open_deliveries = query(database, "SELECT tenant, upload_id, state FROM deliveries WHERE state != "
                                          "'delivered'")  # fmt: skip
        if not unfinished and not open_deliveries:
            return
        assert time.monotonic() < deadline, f"not settled: {unfinished} {open_deliveries}"
        time.sleep(0.3)


def _check(database: Database, seaweed: Seaweed, prefix: str, receivers: dict[str, WebhookReceiver],
           folder: Path) -> None:  # fmt: skip
    bucket = S3Storage(seaweed.bucket, prefix, "us-east-1", seaweed.endpoint, seaweed.access_key_id, seaweed.secret)
    uploads = query(database, "SELECT tenant, name, id, state FROM uploads ORDER BY rowid")
    for tenant, receiver in receivers.items():
        mine = [(name, upload_id, state) for t, name, upload_id, state in uploads if t == tenant]
        accepted = [(name, upload_id) for name, upload_id, state in mine if state == "accepted"]
        # each day accepted once, in the order the days were sent; anything else a resent day's duplicate
        assert [name for name, _ in accepted] == [f"day{d}.zip" for d in range(1, DAYS + 1)], mine
        assert {state for _, _, state in mine} <= {"accepted", "duplicate"}, mine
        # one receipt per upload, in its final state
        receipts = [info.key for info in bucket.list(f"tenants/{tenant}/results/") if info.key.endswith(".json")
                    and not info.key.endswith("/latest.json")]  # fmt: skip
        for name, upload_id, state in mine:
            own = [key for key in receipts if key.endswith(f"/{name}.{upload_id}.json")]
            assert len(own) == 1, (tenant, name, upload_id, receipts)
            assert json.loads(bucket.get_bytes(own[0]))["state"] == state
        assert len(receipts) == len(mine)
        # the vendor got every accepted upload, in order, each batch applied once, and holds the last roster
        assert receiver.anomalies == [] and receiver.rejected == [], (tenant, receiver.anomalies, receiver.rejected)
        delivered = list(dict.fromkeys(batch["upload_id"] for batch in receiver.batches))
        assert delivered == [upload_id for _, upload_id in accepted], (tenant, delivered)
        last = Mirror(bucket, folder / "check").fetch_folder(
            folder / "check" / "snapshots" / tenant / accepted[-1][1], storage.META_FILE)  # fmt: skip
        assert last is not None and vendor_roster(receiver) == district_roster(last)
    # every catalogued snapshot is whole in the bucket
    for tenant, upload_id, rows, pruned in query(database, "SELECT tenant, upload_id, rows, pruned_at FROM "
                                                           "snapshots"):  # fmt: skip
        if pruned is not None:
            continue
        base = f"snapshots/{tenant}/{upload_id}/"
        assert bucket.info(base + storage.META_FILE) is not None, base
        for entity, count in json.loads(rows).items():
            source, options = bucket.polars_source(f"{base}{entity}.parquet")
            height = pl.scan_parquet(source, storage_options=options, glob=False).select(pl.len()).collect().item()
            assert height == count, (base, entity)
    bucket.close()


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
