"""Two replicas behind HAProxy (Debian's, in TCP mode, health-checking /readyz), on one PostgreSQL database and
one SeaweedFS bucket, with 50 uploads from 10 tenants and one replica killed with SIGKILL twice: once while it
validates an upload, once while it sends a delivery to CERS. Each time it stays down until the other replica
has taken over what it held (once its lease lapsed), and is then started again, as systemd would; meanwhile
HAProxy sends clients to the other replica.

Each tenant is a district whose SIS puts five days of rosters through the load balancer, one after another,
waiting only until the upload is recorded before the next (the test asks the database, where an SIS would
poll its `received` receipt; tests/e2e/test_replicas.py reads receipts across replicas): consecutive uploads
of a tenant land on either replica. An SIS whose transfer a kill cuts off, or whose file the killed replica
took but never recorded, sends the file again. Each tenant's licence vendor takes the changes as signed webhook
batches (tests/fakes/webhooks.py, strict about order). Three of the districts also send their student groups to
CERS: each to a strict fake CERS of its own (tests/fakes/cers.py) with a token from moto's Cognito.

The second kill is aimed: while it is aiming, each fake CERS applies a file and then holds its answer back
until the test has asked the database who sends that delivery. The other replica's answers go out at once;
the first file the doomed replica sends is the moment of the kill. So CERS has taken the file and its sender
dies without knowing it: the other replica must send it again, byte for byte (CERS answers PROCESSED and
applies nothing twice), and go on in order. Whatever webhook deliveries the replica had in flight then are cut
too; the outbox's lease and takeover are the same for every kind of target.

At the end, from the database, the bucket and the fakes' own records (never from the code under test):
    - every upload ends in one final state, with exactly one receipt that says so; each day is accepted
      exactly once (a resent file is a duplicate of it);
    - every accepted upload reached its vendor, in upload order, no batch applied twice, and each vendor holds
      its district's last roster;
    - every accepted upload of a CERS district reached its CERS, in upload order, each file applied once (the
      file cut off by the kill sent again byte for byte, which CERS answered PROCESSED), and after each
      upload's files CERS held the groups of that day's roster, worked out here by hand from the generated
      tables;
    - every snapshot in the catalogue is whole in the bucket (snapshot.json, and each entity's rows as
      catalogued).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import secrets
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import polars as pl
import pytest

from daemon.generator.churn import Churn, churn
from daemon.generator.generate import DistrictSpec, generate, write_zip
from tests.cers.moto_cognito import running_cognito
from tests.fakes.cers import FakeCers, Group
from tests.fakes.threaded import served_in_thread
from tests.fakes.webhooks import WebhookReceiver
from tests.objects.seaweed import Seaweed
from tests.postgres import Database

from .conftest import RunningDaemon, Tenant, cluster_config, free_port, make_tenant
from .shared_state import check_one_final_receipt_each, check_snapshots_whole, fetch_snapshot, open_bucket, query
from .test_cers import live_target
from .test_crash import district_roster, vendor_roster

TENANTS = 10
CERS_TENANTS = ("d02", "d05", "d08")
DAYS = 5
SPEC = DistrictSpec(schools=1, students_per_school=30, teachers_per_school=3, enrollments_per_student=3)
SECRET = "cluster-test-signing-secret-0123456789"
DEADLINE = 180.0
LEASE = 3.0  # seconds: a dead replica's claims lapse this soon
VALIDATING = "SELECT id FROM uploads WHERE state = 'validating' AND claimed_by = %s"
DELIVERING = "SELECT id FROM deliveries WHERE state = 'in_flight' AND claimed_by = %s"
CERS_DELIVERED = "SELECT count(*) FROM deliveries WHERE target = 'cers' AND state = 'delivered'"
Tables = dict[str, pl.DataFrame]


class SlowVendor(WebhookReceiver):
    """The strict vendor, taking 40 ms over each batch: a delivery stays in flight long enough to be cut."""

    async def _receive(self, request):
        await asyncio.sleep(0.04)
        return await super()._receive(request)


class HeldCers(FakeCers):
    """The strict fake CERS, which (while `holding`) applies each file and then holds its answer back until the
    test releases it: the file is taken, and its sender is still waiting to hear so. `answers` keeps the file
    name and the status of every answer to an upload, in order, and `after` the groups CERS held after each
    file it applied."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.holding = False
        self.held: tuple[tuple[int, str], ...] = ()  # (token, file name) of each answer held now
        self.answers: list[tuple[str, str]] = []
        self.after: list[tuple[str, dict[tuple[str, str, int], Group]]] = []
        self._released: set[int] = set()
        self._tokens = itertools.count()

    def release(self, token: int) -> None:
        self._released.add(token)

    async def _post_import(self, request):
        response = await super()._post_import(request)
        answer = json.loads(response.body)
        self.answers.append((answer["batch"], answer["status"]))
        if answer["status"] == "ACCEPTED":
            self.after.append((answer["batch"], self.groups()))
        token = next(self._tokens)
        self.held = (*self.held, (token, answer["batch"]))
        try:
            while self.holding and token not in self._released:
                await asyncio.sleep(0.01)
        finally:
            self.held = tuple(entry for entry in self.held if entry[0] != token)
        return response


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
        cognito = stack.enter_context(running_cognito(tmp_path / "cognito"))
        cers = {name: stack.enter_context(served_in_thread(HeldCers(verify_token=cognito.verify)))
                for name in CERS_TENANTS}  # fmt: skip
        tenants = [dataclasses.replace(make_tenant(tmp_path, name, password=False), extra="\n".join([
            "[[tenants.targets]]", 'type = "webhook"', 'name = "vendor"', f'url = "{receiver.url}"',
            "batch_size = 25", "timeout_seconds = 5", f'signing = {{ secret_file = "{secret_file}" }}',
            *([live_target(cognito, cers[name])] if name in cers else [])]))
            for name, receiver in receivers.items()]  # fmt: skip
        extra = cluster_config(database, seaweed, tmp_path, prefix) + (
            f"\n[outbox]\nretry_first_seconds = 0.2\nretry_max_seconds = 1\npoll_seconds = 0.2\n"
            f"lease_seconds = {LEASE}\n")  # fmt: skip
        health = [free_port(), free_port()]
        replicas = [rosterd(*tenants, extra_config=extra, settings={"health": {"port": port},
                                                                      "intake": {"workers": 2}}) for port in health]
        alpha = replicas[0]
        balancer = tmp_path / "haproxy.cfg"
        port = free_port()
        balancer.write_text(haproxy_config(port, replicas, health))
        haproxy = subprocess.Popen(["haproxy", "-db", "-f", str(balancer)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        stack.callback(_stop, haproxy)

        rosters, days = _write_days(tenants, tmp_path)
        kills: list[dict] = []
        killer = threading.Thread(target=_kill_twice, args=(alpha, database, cers, kills), daemon=True)
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
        _check_cers(database, cers, days, kills[1]["cers"])


def _write_days(tenants: list[Tenant], folder: Path) -> tuple[Path, dict[str, list[Tables]]]:
    """Five days of each district: a bulk roster, then one churned bulk a day. The zips' folder, and each
    district's tables by day."""
    rosters, tables = folder / "rosters", {}
    for number, tenant in enumerate(tenants):
        days = [generate(dataclasses.replace(SPEC, seed=number + 1))]
        for day in range(1, DAYS):
            days.append(churn(days[-1], SPEC.version, Churn(withdrawn=1, arrivals=1, new_emails=1, period_changes=1,
                                                            seed=number * 100 + day)).bulk)  # fmt: skip
        (rosters / tenant.name).mkdir(parents=True)
        for day, day_tables in enumerate(days, start=1):
            write_zip(day_tables, rosters / tenant.name / f"day{day}.zip", SPEC.version)
        tables[tenant.name] = days
    return rosters, tables


def _send_days(sis: Sis) -> None:
    for day in range(1, DAYS + 1):
        sis.send(f"day{day}.zip")


def _kill_twice(alpha: RunningDaemon, database: Database, cers: dict[str, HeldCers], kills: list[dict]) -> None:
    """SIGKILL alpha while it validates an upload it claimed, start it again; then the same while CERS holds
    the answer to a file alpha sent. What it held is read from the database with alpha dead."""
    replica = f"{socket.gethostname()}:{alpha.port}"  # its name among the replicas: HOST:PORT by default
    deadline = time.monotonic() + DEADLINE
    if not wait_for(database, VALIDATING, replica, deadline):
        return
    _kill_and_restart(alpha, database, replica, cers, kills, "validating", VALIDATING, None)
    if (aimed := _sent_by(replica, database, cers, deadline)) is not None:
        _kill_and_restart(alpha, database, replica, cers, kills, "delivering", DELIVERING, aimed)


def _kill_and_restart(alpha: RunningDaemon, database: Database, replica: str, cers: dict[str, HeldCers],
                      kills: list[dict], moment: str, held: str, aimed: tuple | None) -> None:  # fmt: skip
    alpha.kill()  # SIGKILL to its process group: its worker processes too
    cut = [r[0] for r in query(database, held, replica)]
    kills.append({"moment": moment, "held": cut, "cers": aimed})
    for fake in cers.values():
        fake.holding = False  # an answer held for the dead replica goes nowhere
    # down until the other replica has taken over all it held (after its lease lapsed): a replica that comes
    # back sooner takes its own claims back, as it should
    table = "uploads" if held == VALIDATING else "deliveries"
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and query(database, f"SELECT id FROM {table} WHERE id = ANY(%s) AND "
                                                          "claimed_by = %s", cut, replica):  # fmt: skip
        time.sleep(0.1)
    alpha.start()


def _sent_by(replica: str, database: Database, cers: dict[str, HeldCers], deadline: float) -> tuple | None:
    """Hold every CERS answer until the database says which replica's delivery it answers: let the others
    go, and return (tenant, upload_id, file) of the first whose sender is `replica`, its answer still held."""
    for fake in cers.values():
        fake.holding = True
    every = len(cers) * DAYS  # CERS deliveries in all: once all are delivered, there is nothing left to aim at
    while time.monotonic() < deadline and query(database, CERS_DELIVERED)[0][0] < every:
        for tenant, fake in cers.items():
            for token, name in fake.held:
                upload_id = _upload_of(tenant, name)
                sender = query(database, "SELECT claimed_by FROM deliveries WHERE tenant = %s AND target = 'cers' "
                                         "AND upload_id = %s AND state = 'in_flight'", tenant, upload_id)  # fmt: skip
                if sender == [(replica,)]:
                    return tenant, upload_id, name
                fake.release(token)
        time.sleep(0.02)
    for fake in cers.values():
        fake.holding = False
    return None


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


def _accepted(database: Database, tenant: str) -> list[str]:
    """The tenant's accepted uploads, in the order they were recorded."""
    return [r[0] for r in query(database, "SELECT id FROM uploads WHERE tenant = %s AND state = 'accepted' "
                                          "ORDER BY rowid", tenant)]  # fmt: skip


def _check(database: Database, seaweed: Seaweed, prefix: str, receivers: dict[str, WebhookReceiver],
           folder: Path) -> None:  # fmt: skip
    bucket = open_bucket(seaweed, prefix)
    uploads = query(database, "SELECT tenant, name, id, state FROM uploads ORDER BY rowid")
    for tenant, receiver in receivers.items():
        mine = [(name, upload_id, state) for t, name, upload_id, state in uploads if t == tenant]
        accepted = [(name, upload_id) for name, upload_id, state in mine if state == "accepted"]
        # each day accepted once, in the order the days were sent; anything else a resent day's duplicate
        assert [name for name, _ in accepted] == [f"day{d}.zip" for d in range(1, DAYS + 1)], mine
        assert {state for _, _, state in mine} <= {"accepted", "duplicate"}, mine
        check_one_final_receipt_each(bucket, tenant, mine)
        # the vendor got every accepted upload, in order, each batch applied once, and holds the last roster
        assert receiver.anomalies == [] and receiver.rejected == [], (tenant, receiver.anomalies, receiver.rejected)
        delivered = list(dict.fromkeys(batch["upload_id"] for batch in receiver.batches))
        assert delivered == [upload_id for _, upload_id in accepted], (tenant, delivered)
        last = fetch_snapshot(bucket, folder / "check", tenant, accepted[-1][1])
        assert vendor_roster(receiver) == district_roster(last)
    check_snapshots_whole(database, bucket)
    bucket.close()


def _check_cers(database: Database, cers: dict[str, HeldCers], days: dict[str, list[Tables]], aimed: tuple) -> None:
    """Each CERS district's files, from the fake's own records: every accepted upload's, in upload order, each
    applied once (a file sent again is the same bytes, which CERS answers PROCESSED and does not apply); the
    file the kill was aimed at was sent again so; after each upload's files CERS held that day's groups."""
    for tenant, fake in cers.items():
        accepted = _accepted(database, tenant)
        uploads = [_upload_of(tenant, record.batch) for record in fake.imports]
        assert all(record.status == "PROCESSED" for record in fake.imports), [r.message for r in fake.imports]
        # upload order: each upload's files together, the uploads in the order they were accepted (every day
        # changes some group, so every delivery sends a file)
        assert list(dict.fromkeys(uploads)) == accepted and uploads == sorted(uploads, key=accepted.index), uploads
        assert {status for _, status in fake.answers} <= {"ACCEPTED", "PROCESSED"}, fake.answers
        if tenant == aimed[0]:
            assert [status for name, status in fake.answers if name == aimed[2]][:2] == ["ACCEPTED", "PROCESSED"]
        # each upload's files brought CERS to that day's groups; it ends with the last day's
        held = {_upload_of(tenant, name): groups for name, groups in fake.after}  # the last file of each upload
        for day, upload_id in enumerate(accepted):
            assert held[upload_id] == cers_groups(days[tenant][day]), (tenant, day + 1)
        assert fake.groups() == cers_groups(days[tenant][-1]), tenant


def _upload_of(tenant: str, file_name: str) -> str:
    """The upload a CERS file belongs to, from its name (README: rosterd-<tenant>-<upload_id>-<n>.csv)."""
    return file_name.removeprefix(f"rosterd-{tenant}-").rsplit("-", 1)[0]


def cers_groups(tables: Tables) -> dict[tuple[str, str, int], Group]:
    """The CERS groups of a generated district, by README's rules: one group per class, named by its classCode
    (the generator's use only letters, digits and '-', which CERS keeps as they are), at its school's
    identifier, in its terms' schoolYear; Math for a SCED code 02xxx, ELA for 01xxx, else All (which CERS
    stores as no subject); its teachers' e-mails and its students' identifiers. Keyed as the fake CERS keys
    them: (school, lower-cased name, year)."""
    users = tables["users"].select("sourcedId", "email", "identifier")
    members = tables["enrollments"].join(users, left_on="userSourcedId", right_on="sourcedId").group_by(
        "classSourcedId").agg(
        teachers=pl.col("email").filter(pl.col("role") == "teacher"),
        students=pl.col("identifier").filter(pl.col("role") == "student"),
    )  # fmt: skip
    schools = tables["orgs"].select(schoolSourcedId="sourcedId", school="identifier")
    years = tables["academicSessions"].select(term="sourcedId", year=pl.col("schoolYear").cast(pl.Int64))
    classes = (
        tables["classes"]
        .with_columns(term=pl.col("termSourcedIds").str.split(","))
        .explode("term")
        .join(years, on="term")
        .group_by("sourcedId", "classCode", "schoolSourcedId", "subjectCodes")
        .agg(pl.col("year").unique())
        .join(schools, on="schoolSourcedId")
        .join(members, left_on="sourcedId", right_on="classSourcedId", how="left")
    )
    assert classes.height == tables["classes"].height and classes["classCode"].str.contains("^[A-Za-z0-9-]+$").all()
    groups = {}
    for row in classes.iter_rows(named=True):
        (year,) = row["year"]  # all the class's terms in one school year
        subject = {"02": "Math", "01": "ELA"}.get(row["subjectCodes"][:2])
        groups[(row["school"], row["classCode"].lower(), year)] = Group(
            row["classCode"], subject, set(row["teachers"] or ()), set(row["students"] or ()))
    return groups


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
