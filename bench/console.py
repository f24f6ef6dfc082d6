"""The admin console (daemon/console) with 200 tenants and 10,000 uploads in history: every page under 200 ms.

One run builds a state directory through the store's own methods (daemon/store: add, set_state,
record_snapshot, claim_delivery, finish_delivery, decide, add_api_client, mark_answered; no SQL), with the
validator bypassed: `--tenants` (200) tenants of `--uploads` (50) nightly uploads each, day after day over the
last 50 days, a mix of states (accepted with snapshot records and change counts, rejected with validation
results and their findings files, duplicates, held ones superseded, discarded or still held, a failed one),
each accepted upload delivered to the tenant's one or two targets (webhooks to a closed loopback port, an api
target for every tenth tenant with two API clients), most deliveries delivered, some dead, some failed and
waiting for a retry in 2099. One upload of the measured tenant has `--findings` (100,000) findings in its
findings Parquet file and a stored result whose counts_by_code agree; its accepted upload of the night before
last has a real change set folder (ChangeSet.write of polars frames). Every receipt is marked written, so the
daemon starts with nothing to catch up on. The store's clock (daemon.store.now) and delivery ids are moved to
each upload's night, as tests move them, and the build runs with synchronous=OFF on its own connection (the
daemon opens the database afresh, as configured): about 40 s.

Then it starts the real daemon (`rosterd serve`, console on a free port: `[admin] port = 0`), makes an admin
with `rosterd admin-user add --password-stdin`, logs in through the form (CSRF field, cookie jar) and times each
page (aiohttp client on loopback, one request at a time, body read whole): `--warmup` (3) requests each, then
`--requests` (30) rounds, each round asking every page once in turn, so drift lands on all of them alike. The
baseline, in the same rounds: GET /login from a client not logged in (the cheapest page: no store read). For
each page: median and p95 ms, the ratio median / baseline's median, PASS or FAIL against 200 ms (p95). The
findings CSV of the 100,000-findings upload is a download, not a page: its time and size are shown apart.

Last, bulk work: a generated district (`--busy-schools`, default 1000 schools, bench/validate.py's, cached in
bench/out/) is copied into the inbox of a tenant with no accepted upload yet, and while intake validates it,
diffs it and writes its snapshot (worker processes), the overview, the tenant's page and the 100,000-findings
upload are asked again and again: their median, p95 and maximum then, against the same target.

It prints figures and exits 0 whatever they are; it exits non-zero only when a step fails.

    .venv/bin/python bench/console.py [--requests 30] [--record]
    .venv/bin/python bench/console.py --tenants 20 --uploads 10 --findings 5000 --requests 5 --busy-schools 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import polars as pl

import recording
from servers import LOOPBACK, ROSTERD, BenchError, _running, exit_on_sigterm, free_port, started_event, tail
from validate import ENROLLMENTS_PER_STUDENT, STUDENTS_PER_SCHOOL, TEACHERS_PER_SCHOOL, prepare_package

import daemon.store
import daemon.store.deliveries
from daemon.config import hash_password, load_settings
from daemon.snapshots import findings_file, storage
from daemon.snapshots.changes import CHANGED_DTYPE, ChangeSet, EntityChanges
from daemon.snapshots.retention import trim
from daemon.generator.generate import DistrictSpec
from daemon.store import DeliveryState, SnapshotRecord, State, Store, stamp

TARGET_MS = 200.0
ADMIN = "bench-admin"
TARGET_NAMES = ("hooks", "mirror")  # webhooks; every tenth tenant has an api target as its second instead
API_TARGET = "vendor-api"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
FILES = {"orgs.csv": 21, "academicSessions.csv": 3, "courses.csv": 140, "classes.csv": 3000, "users.csv": 9500,
         "enrollments.csv": 54000, "demographics.csv": 9000}  # fmt: skip
# The 100,000 findings: (code, severity, file, column, share).
FLOOD = (("reference.missing", "error", "enrollments.csv", "classSourcedId", 0.55),
         ("row.invalid_enum", "error", "users.csv", "role", 0.25),
         ("row.bad_date", "error", "classes.csv", "dateLastModified", 0.12),
         ("user.email_format", "warning", "users.csv", "email", 0.08))  # fmt: skip
FILTER_CODE = "reference.missing"
BUSY_PAGES = ("overview", "tenant", "upload 100k findings")
TIMEOUT = 1800.0
MiB = 1024**2


# --- the state directory, through the store --------------------------------------------------------------------


class Clock:
    """The store's clock (daemon.store.now, which a test may patch as well): the time the builder sets, one
    millisecond later at each read so writes keep their order."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def set(self, at: datetime) -> None:
        self.at = at

    def now(self) -> str:
        self.at += timedelta(milliseconds=1)
        return stamp(self.at)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{self.at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass
class Layout:
    """What the pages are asked about."""

    tenants: list[str]
    tenant: str = ""  # the measured tenant (T)
    upload: str = ""  # its accepted upload of the night before last, with a real change set (U)
    flood: str = ""  # its upload with the 100,000 findings
    target: str = TARGET_NAMES[0]  # G
    delivery: str = ""  # a dead delivery of T (D)
    busy_tenant: str = ""  # no accepted upload: the district copied in during the measures is its first
    counts: Counter = field(default_factory=Counter)  # uploads by state, deliveries by state
    findings_files: int = 0
    build_seconds: float = 0.0


def targets_of(index: int) -> list[str]:
    if index % 10 == 0:
        return [TARGET_NAMES[0], API_TARGET]
    return list(TARGET_NAMES) if index % 2 == 0 else [TARGET_NAMES[0]]


def fate(tenant_index: int, k: int, last: int, busy: bool) -> State:
    """What upload k (0 = oldest) of a tenant became."""
    if busy:
        return State.REJECTED
    if k == 0:
        return State.ACCEPTED
    if k == last and tenant_index % 4 == 1:
        return State.HELD  # still waiting for an admin: on /holds
    if k % 10 in (3, 7):
        return State.REJECTED
    if k % 17 == 5:
        return State.DUPLICATE
    if k % 20 == 11:
        return State.SUPERSEDED  # held, then a newer upload is accepted
    if k % 25 == 13:
        return State.DISCARDED
    if k == 30:
        return State.FAILED
    return State.ACCEPTED


def result_of(verdict: str, findings: list[dict], rows: dict[str, int]) -> dict:
    counts = Counter(f["code"] for f in findings)
    files = {name: {"mode": "bulk", "rows": rows.get(name.removesuffix(".csv"), n), "dropped": 0}
             for name, n in FILES.items()}  # fmt: skip
    return trim({"verdict": verdict, "version": "1.1", "mode": "lenient", "files": files,
                 "counts_by_code": dict(counts), "findings": findings, "findings_truncated": False})  # fmt: skip


def some_findings(rng: random.Random, n: int) -> list[dict]:
    out = []
    for i in range(n):
        code, severity, file, column, _share = rng.choice(FLOOD)
        out.append(finding(code, severity, file, column, i + 2, rng))
    return out


def finding(code: str, severity: str, file: str, column: str, row: int, rng: random.Random) -> dict:
    value = f"cls-{rng.randrange(10**6):06d}" if column == "classSourcedId" else f"v{rng.randrange(10**5)}"
    return {"code": code, "severity": severity, "message": f"{column} {value!r} is not valid here ({code})",
            "file": file, "row": row, "column": column, "value": value, "sourcedId": f"s-{row:07d}"}  # fmt: skip


def flood_findings(n: int, rng: random.Random) -> list[dict]:
    out = []
    for code, severity, file, column, share in FLOOD:
        out.extend(finding(code, severity, file, column, row + 2, rng) for row in range(round(n * share)))
    return out[:n] + [finding(*FLOOD[0][:4], n + i + 2, rng) for i in range(n - len(out))]


def roster_rows(rng: random.Random, day: int) -> dict[str, int]:
    grow = 1 + day / 500
    return {e.removesuffix(".csv"): int(n * grow * rng.uniform(0.98, 1.02)) for e, n in FILES.items()}


def samples_of(rng: random.Random) -> dict:
    """Change-set examples as a receipt keeps them: three rows per entity and action."""
    def row(i: int) -> dict:
        return {"sourcedId": f"u-{rng.randrange(10**6):06d}", "role": "student", "givenName": f"Given{i}",
                "familyName": f"Family{i}", "email": f"s{i}@example.org"}  # fmt: skip

    changed = [{"field": "email", "old": "a@example.org", "new": "b@example.org"}]
    return {e: {"added": [row(i) for i in range(3)], "updated": [{"sourcedId": f"u-{i}", "changed": changed}
                                                                  for i in range(3)],
                "deleted": [row(i) for i in range(3)]} for e in ("users", "enrollments", "classes")}  # fmt: skip


def write_change_set(folder: Path, rng: random.Random) -> dict[str, dict[str, int]]:
    """A real change set (users and enrollments: added, updated, deleted) under folder/changes, as the worker
    writes it; returns its counts."""
    def users(n: int, start: int) -> pl.DataFrame:
        ids = [f"usr-{start + i:07d}" for i in range(n)]
        return pl.DataFrame({"sourcedId": ids, "status": ["active"] * n, "dateLastModified": [None] * n,
                             "enabledUser": ["true"] * n, "orgSourcedIds": [["org-001"]] * n,
                             "role": [rng.choice(["student", "teacher"]) for _ in ids],
                             "username": [i.replace("usr", "user") for i in ids],
                             "givenName": [f"Given{i}" for i in range(n)],
                             "familyName": [f"Family{i}" for i in range(n)],
                             "email": [f"{i}@district.example" for i in ids], "password": ["secret"] * n},
                            schema_overrides={"dateLastModified": pl.String})  # fmt: skip

    def enrollments(n: int, start: int) -> pl.DataFrame:
        return pl.DataFrame({"sourcedId": [f"enr-{start + i:08d}" for i in range(n)],
                             "classSourcedId": [f"cls-{i % 3000:05d}" for i in range(n)],
                             "schoolSourcedId": ["org-001"] * n, "userSourcedId": [f"usr-{i:07d}" for i in range(n)],
                             "role": ["student"] * n})  # fmt: skip

    def updated(frame: pl.DataFrame) -> pl.DataFrame:
        changes = [[{"field": "email", "old": f"old{i}@district.example", "new": f"new{i}@district.example"}]
                   for i in range(frame.height)]  # fmt: skip
        return frame.with_columns(pl.Series("changed", changes, dtype=CHANGED_DTYPE))

    change_set = ChangeSet({
        "users": EntityChanges(users(2500, 0), updated(users(1500, 100_000)), users(300, 200_000)),
        "enrollments": EntityChanges(enrollments(15_000, 0), updated(enrollments(0, 0)), enrollments(1800, 500_000)),
    })  # fmt: skip
    change_set.write(folder / storage.CHANGES_FOLDER)
    return change_set.counts()


def build_state(state_dir: Path, targets: dict[str, list[str]], args: argparse.Namespace,
                say: Callable[[str], None]) -> Layout:  # fmt: skip
    """The history, through the store's methods, with the store's clock moved back to each upload's night."""
    started = time.perf_counter()
    rng = random.Random(20261207)
    tenants = list(targets)
    layout = Layout(tenants, tenant=tenants[0], busy_tenant=tenants[-1])
    clock = Clock()
    saved = daemon.store.now, daemon.store.deliveries.new_delivery_id
    daemon.store.now = clock.now  # as tests move the store's clock
    daemon.store.deliveries.new_delivery_id = lambda: clock.new_id("d")  # ids of the night, as a real run's
    store = Store(state_dir / "rosterd.db", targets)
    store._db.execute("PRAGMA synchronous=OFF")  # building only: the daemon opens the database anew
    try:
        _build(store, state_dir, layout, clock, rng, args, say)
        layout.delivery = layout.delivery or store.deliveries(layout.tenant, limit=1)[0].id
        for tenant in tenants:  # every receipt written: the daemon starts with nothing to catch up on
            for upload in store.unanswered(tenant):
                store.mark_answered(upload.id)
        for index, tenant in enumerate(tenants):
            if API_TARGET in targets[tenant]:
                for j in range(2):
                    store.add_api_client(f"{tenant}-client-{j}", tenant, API_TARGET, args.secret_hash)
                if index % 20 == 0:
                    store.revoke_api_client(f"{tenant}-client-1")
    finally:
        store.close()
        daemon.store.now, daemon.store.deliveries.new_delivery_id = saved
    layout.build_seconds = time.perf_counter() - started
    return layout


def _build(store: Store, state_dir: Path, layout: Layout, clock: Clock, rng: random.Random,
           args: argparse.Namespace, say: Callable[[str], None]) -> None:  # fmt: skip
    first_night = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0) - timedelta(days=args.uploads)
    current: dict[str, tuple[str, str] | None] = {t: None for t in layout.tenants}  # upload id, sha256
    held: dict[str, str] = {}
    last = args.uploads - 1
    for k in range(args.uploads):
        night = first_night + timedelta(days=k)
        for index, tenant in enumerate(layout.tenants):
            clock.set(night + timedelta(seconds=index * 13 + rng.randrange(10)))
            state = fate(index, k, last, tenant == layout.busy_tenant)
            if tenant == layout.tenant and k in (last - 2, last - 1):  # the flooded upload, then U
                state = State.REJECTED if k == last - 2 else State.ACCEPTED
            upload_id = clock.new_id("u")
            previous = current[tenant]
            sha = previous[1] if state is State.DUPLICATE and previous else secrets.token_hex(32)
            name = f"{tenant}-{night:%Y%m%d}.zip"
            kept = state_dir / "uploads" / tenant / f"{upload_id}--{name}"
            upload = store.add(upload_id, tenant, name, sha, rng.randrange(2 * MiB, 40 * MiB), str(kept))
            if upload.state is State.DUPLICATE:
                layout.counts["upload duplicate"] += 1
                continue
            clock.set(clock.at + timedelta(seconds=5))
            store.set_state(upload_id, State.VALIDATING)
            clock.set(clock.at + timedelta(seconds=20 + rng.randrange(60)))
            rows = roster_rows(rng, k)
            if state is State.REJECTED:
                flood = tenant == layout.tenant and k == last - 2
                findings = flood_findings(args.findings, rng) if flood else some_findings(rng, rng.randrange(5, 400))
                findings_file.write(findings_file.path_of(state_dir, tenant, upload_id), findings)
                layout.findings_files += 1
                store.set_state(upload_id, State.REJECTED, result=result_of("rejected", findings, rows))
                if flood:
                    layout.flood = upload_id
            elif state is State.FAILED:
                store.set_state(upload_id, State.FAILED, detail="the worker process died twice (bench)")
            else:
                _snapshot(store, state_dir, layout, tenant, upload_id, state, previous, rows, rng, k == last - 1)
                if state is State.ACCEPTED:
                    current[tenant] = (upload_id, sha)
                    if held.pop(tenant, None):
                        layout.counts["upload superseded"] += 1
                    _deliver(store, layout, clock, tenant, upload_id, k, last, rng)
                elif state is State.SUPERSEDED:
                    held[tenant] = upload_id  # the next accepted upload supersedes it
                elif state is State.DISCARDED:
                    clock.set(clock.at + timedelta(hours=3))
                    store.decide(upload_id, approve=False, operator="ops (bench; reason: the export was cut short)")
            layout.counts[f"upload {state}"] += state is not State.SUPERSEDED
        if k % 10 == 9:
            made = sum(v for c, v in layout.counts.items() if c.startswith("upload"))
            say(f"   night {k + 1}/{args.uploads}: {made} uploads")


def _snapshot(store: Store, state_dir: Path, layout: Layout, tenant: str, upload_id: str, state: State,
              previous: tuple[str, str] | None, rows: dict[str, int], rng: random.Random, real: bool) -> None:  # fmt: skip
    folder = storage.final_folder(state_dir, tenant, upload_id)
    changes = {e: {"added": rng.randrange(0, n // 50 + 2), "updated": rng.randrange(0, n // 100 + 2),
                   "deleted": rng.randrange(0, n // 200 + 2)} for e, n in rows.items()}  # fmt: skip
    if real and tenant == layout.tenant:
        changes = write_change_set(folder, rng)  # the record's counts are the files' own
        layout.upload = upload_id
    holds = []
    if state is not State.ACCEPTED:  # held (and later superseded or discarded)
        deleted = rows["users"] // 4
        changes["users"]["deleted"] = deleted
        holds = [{"threshold": "deleted_share", "limit": 0.05, "value": deleted, "of": rows["users"],
                  "detail": f"{deleted} of {rows['users']} users would be deleted (limit 5%)"}]  # fmt: skip
    record = SnapshotRecord(tenant=tenant, version="1.1", path=str(folder),
                            base_upload_id=previous[0] if previous else None, rows=rows, changes=changes,
                            holds=holds, samples=samples_of(rng))  # fmt: skip
    warnings = some_findings(rng, rng.randrange(0, 4))
    for f in warnings:
        f["severity"] = "warning"
    store.record_snapshot(upload_id, record, State.ACCEPTED if state is State.ACCEPTED else State.HELD,
                          result_of("accepted", warnings, rows), check_base=False)  # fmt: skip


def _deliver(store: Store, layout: Layout, clock: Clock, tenant: str, upload_id: str, k: int, last: int,
             rng: random.Random) -> None:  # fmt: skip
    # newest first: with a limit of its targets, the read stops at the rows just queued (no scan of them all)
    for delivery in store.deliveries(tenant, upload_id=upload_id, limit=len(store.targets[tenant])):
        clock.set(clock.at + timedelta(seconds=30 + rng.randrange(30)))
        store.claim_delivery(delivery.id)
        if k >= last - 3 and delivery.target == TARGET_NAMES[1] and rng.random() < 0.3:
            store.finish_delivery(delivery.id, DeliveryState.FAILED, error="connection refused (bench)",
                                  next_attempt_at="2099-01-01T00:00:00.000Z")  # fmt: skip
            layout.counts["delivery failed"] += 1
        elif rng.random() < 0.06:
            store.finish_delivery(delivery.id, DeliveryState.DEAD, error="HTTP 400: the vendor refused the batch "
                                  "(bench)", result={"status": 400, "requests": 1})  # fmt: skip
            layout.counts["delivery dead"] += 1
            if tenant == layout.tenant:
                layout.delivery = delivery.id
        else:
            store.finish_delivery(delivery.id, DeliveryState.DELIVERED, result={"events": rng.randrange(10, 5000),
                                  "requests": rng.randrange(1, 6)})  # fmt: skip
            layout.counts["delivery delivered"] += 1
            if tenant == layout.tenant and not layout.delivery and k >= last - 5:
                layout.delivery = delivery.id


def config_text(state_dir: Path, port: int, targets: dict[str, list[str]], password_hash: str, secret: Path) -> str:
    lines = [
        "[server]", f'host = "{LOOPBACK}"', f"port = {port}", f"state_dir = {json.dumps(str(state_dir))}",
        "min_free_bytes = 0", "", "[intake]", "settle_seconds = 0.5", "rescan_seconds = 3600", "",
        "[health]", f'host = "{LOOPBACK}"', "port = 0", "", "[api]", f'host = "{LOOPBACK}"', "port = 0", "",
        "[admin]", f'host = "{LOOPBACK}"', "port = 0", "",
    ]  # fmt: skip
    for tenant, names in targets.items():
        lines += ["[[tenants]]", f'name = "{tenant}"', f"password_hash = {json.dumps(password_hash)}",
                  f"max_upload_bytes = {4 * 1024**3}", f"inbox_quota_bytes = {8 * 1024**3}", ""]  # fmt: skip
        for name in names:
            if name == API_TARGET:
                lines += ["[[tenants.targets]]", 'type = "api"', f'name = "{name}"', ""]
            else:  # port 9 (discard) is closed on loopback: an attempt fails at once
                lines += ["[[tenants.targets]]", 'type = "webhook"', f'name = "{name}"',
                          f'url = "http://{LOOPBACK}:9/{tenant}/{name}"', "[tenants.targets.signing]",
                          f"secret_file = {json.dumps(str(secret))}", ""]  # fmt: skip
    return "\n".join(lines)


# --- the console, over HTTP -----------------------------------------------------------------------------------


@dataclass
class Timed:
    name: str
    path: str
    ms: list[float] = field(default_factory=list)
    bytes: int = 0


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    async with session.get(url, allow_redirects=False) as answer:
        body = await answer.read()
    return (time.perf_counter() - started) * 1000, answer.status, len(body)


async def log_in(base: str, password: str) -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # unsafe: an IP host
    async with session.get(f"{base}/login") as answer:
        found = CSRF.search(await answer.text())
    if not found:
        raise BenchError("GET /login has no csrf field")
    form = {"name": ADMIN, "password": password, "code": "", "csrf": found[1]}
    async with session.post(f"{base}/login", data=form, allow_redirects=False) as answer:
        if answer.status != 303:
            raise BenchError(f"POST /login answered {answer.status}: {(await answer.text())[:500]}")
    return session


def pages_of(layout: Layout) -> list[tuple[str, str]]:
    t, u, f = layout.tenant, layout.upload, layout.flood
    return [
        ("overview", "/"),
        ("holds", "/holds"),
        ("tenant", f"/tenants/{t}"),
        ("upload (ordinary)", f"/uploads/{u}"),
        ("upload 100k findings", f"/uploads/{f}"),
        ("upload 100k findings, code filter, page 50", f"/uploads/{f}?code={FILTER_CODE}&page=50"),
        ("change set", f"/uploads/{u}/changes"),
        ("target outbox", f"/tenants/{t}/targets/{layout.target}"),
        ("delivery", f"/deliveries/{layout.delivery}"),
        ("api clients", "/api-clients"),
        ("settings", "/settings"),
    ]


async def measure_pages(base: str, password: str, layout: Layout, args: argparse.Namespace,
                        say: Callable[[str], None]) -> tuple[Timed, list[Timed], Timed]:  # fmt: skip
    baseline = Timed("GET /login (baseline: no store read)", "/login")
    pages = [Timed(name, path) for name, path in pages_of(layout)]
    csv = Timed("findings.csv of the 100k upload (a download)", f"/uploads/{layout.flood}/findings.csv")
    async with contextlib.AsyncExitStack() as stack:
        anonymous = await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
        admin = await log_in(base, password)
        stack.push_async_callback(admin.close)
        for series, session in ((baseline, anonymous), *((p, admin) for p in pages), (csv, admin)):
            for _ in range(args.warmup):
                _ms, status, size = await fetch(session, base + series.path)
                if status != 200:
                    raise BenchError(f"{series.path} answered {status}")
                series.bytes = size
        for i in range(args.requests):
            for series, session in ((baseline, anonymous), *((p, admin) for p in pages)):
                ms, status, _size = await fetch(session, base + series.path)
                if status != 200:
                    raise BenchError(f"{series.path} answered {status} in round {i + 1}")
                series.ms.append(ms)
            if (i + 1) % 10 == 0:
                say(f"   round {i + 1}/{args.requests}")
        for _ in range(args.csv_requests):
            ms, status, _size = await fetch(admin, base + csv.path)
            if status != 200:
                raise BenchError(f"{csv.path} answered {status}")
            csv.ms.append(ms)
    return baseline, pages, csv


async def measure_busy(base: str, password: str, layout: Layout, state_dir: Path, log: Path, zip_path: Path,
                       say: Callable[[str], None]) -> tuple[list[Timed], float, str]:  # fmt: skip
    """Copy the district into the busy tenant's inbox and ask pages until its receipt is final."""
    wanted = dict(pages_of(layout))
    series = [Timed(name, wanted[name]) for name in BUSY_PAGES]
    inbox = state_dir / "tenants" / layout.busy_tenant / "inbox"
    partial = inbox / ".busy.zip.partial"  # hidden: intake ignores it until it is renamed
    shutil.copyfile(zip_path, partial)
    admin = await log_in(base, password)
    try:
        partial.rename(inbox / "busy.zip")
        started = time.perf_counter()
        await wait_for_log(log, "upload.validating", layout.busy_tenant, 120)
        say(f"   validating after {time.perf_counter() - started:.1f} s; asking pages meanwhile ...")
        final = ""
        while not final:
            for s in series:
                ms, status, _size = await fetch(admin, base + s.path)
                if status != 200:
                    raise BenchError(f"{s.path} answered {status} during the upload")
                s.ms.append(ms)
            final = final_state(log, layout.busy_tenant)
            if time.perf_counter() - started > TIMEOUT:
                raise BenchError(f"the busy upload had no final state within {TIMEOUT:.0f} s")
        return series, time.perf_counter() - started, final
    finally:
        await admin.close()


def log_events(log: Path, name: str, tenant: str) -> list[dict]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            event = json.loads(line)
            if event.get("event") == name and event.get("tenant") == tenant:
                found.append(event)
    return found


async def wait_for_log(log: Path, name: str, tenant: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = log_events(log, name, tenant)
        if found:
            return found[-1]
        await asyncio.sleep(0.05)
    raise BenchError(f"no {name} of {tenant} within {timeout:.0f} s; the log:\n{tail(log)}")


def final_state(log: Path, tenant: str) -> str:
    for name in ("upload.accepted", "upload.rejected", "upload.failed", "upload.held"):
        if log_events(log, name, tenant):
            return name
    return ""


# --- a run ------------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    layout: Layout
    baseline: Timed
    pages: list[Timed]
    csv: Timed
    busy: list[Timed] = field(default_factory=list)
    busy_seconds: float = 0.0
    busy_outcome: str = ""
    busy_zip_mib: float = 0.0
    start_seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)  # the 1-minute load average before and after the page measures


def run(args: argparse.Namespace, say: Callable[[str], None]) -> Figures:
    busy_zip = None
    if args.busy_schools:
        spec = DistrictSpec(args.busy_schools, STUDENTS_PER_SCHOOL, TEACHERS_PER_SCHOOL, ENROLLMENTS_PER_STUDENT, "1.1")
        busy_zip = prepare_package(spec, args.out).path
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rosterd-console-bench-", dir=args.tmp)))
        state_dir, config = work / "state", work / "rosterd.toml"
        secret = work / "webhook.secret"
        secret.write_text(secrets.token_hex(32))
        secret.chmod(0o600)
        targets = {f"district-{i:03d}": targets_of(i) for i in range(args.tenants)}
        args.secret_hash = hash_password(secrets.token_urlsafe(16))  # one hash for every tenant and API client
        port = free_port()
        config.write_text(config_text(state_dir, port, targets, args.secret_hash, secret))
        load_settings(config)  # a config the daemon would refuse stops the run here, before the build
        say(f"building {args.tenants} tenants x {args.uploads} uploads through the store ...")
        layout = build_state(state_dir, targets, args, say)
        made = ", ".join(f"{k} {v:,}" for k, v in sorted(layout.counts.items()))
        say(f"   built in {layout.build_seconds:.1f} s: {made}")
        password = secrets.token_urlsafe(16)
        done = subprocess.run([str(ROSTERD), "admin-user", "add", ADMIN, "--password-stdin", "--config", str(config)],
                              input=password + "\n", capture_output=True, text=True, timeout=60)  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"rosterd admin-user add exited {done.returncode}: {done.stderr}")
        log = work / "daemon.log"
        began = time.perf_counter()
        stack.callback(_keep_log, log, args.out / "console-bench-daemon.log")  # after the daemon stopped
        serve = [str(ROSTERD), "serve", "--config", str(config)]
        proc = stack.enter_context(_running(serve, port, "rosterd serve", log))
        started_event(log, proc)
        console = next(json.loads(line) for line in log.read_text().splitlines()
                       if line.startswith("{") and '"console.started"' in line)  # fmt: skip
        start_seconds = time.perf_counter() - began
        base = f"http://{LOOPBACK}:{console['port']}"
        say(f"rosterd serve (pid {proc.pid}) started in {start_seconds:.1f} s, console at {base}; timing pages ...")
        load_before = os.getloadavg()[0]
        baseline, pages, csv = asyncio.run(measure_pages(base, password, layout, args, say))
        figures = Figures(layout, baseline, pages, csv, start_seconds=start_seconds,
                          load=(load_before, os.getloadavg()[0]))  # fmt: skip
        if busy_zip is not None:
            figures.busy_zip_mib = busy_zip.stat().st_size / MiB
            say(f"copying {busy_zip.name} ({figures.busy_zip_mib:.1f} MiB) into {layout.busy_tenant}'s inbox ...")
            figures.busy, figures.busy_seconds, figures.busy_outcome = asyncio.run(
                measure_busy(base, password, layout, state_dir, log, busy_zip, say))
            say(f"   {figures.busy_outcome} after {figures.busy_seconds:.1f} s")
    return figures


def _keep_log(log: Path, kept: Path) -> None:
    with contextlib.suppress(OSError):
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, kept)
        print(f"the daemon's log is kept in {kept}")


# --- reporting ---------------------------------------------------------------------------------------------------


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def figures_table(f: Figures) -> list[str]:
    base = statistics.median(f.baseline.ms)
    rows = [
        "| page | path | bytes | median ms | p95 ms | max ms | median / baseline | p95 < 200 ms |",
        "|---|---|---|---|---|---|---|---|",
        f"| {f.baseline.name} | `{f.baseline.path}` | {f.baseline.bytes:,} | {base:.1f} | {p95(f.baseline.ms):.1f} "
        f"| {max(f.baseline.ms):.1f} | 1.0 | |",
    ]  # fmt: skip
    for p in f.pages:
        median = statistics.median(p.ms)
        rows.append(f"| {p.name} | `{_short(p.path, f.layout)}` | {p.bytes:,} | {median:.1f} | {p95(p.ms):.1f} | "
                    f"{max(p.ms):.1f} | {median / base:.1f} | {verdict(p95(p.ms) < TARGET_MS)} |")  # fmt: skip
    c = f.csv
    rows.append(f"| {c.name}, {len(c.ms)} requests | `{_short(c.path, f.layout)}` | {c.bytes:,} "
                f"({c.bytes / MiB:.1f} MiB) | "
                f"{statistics.median(c.ms):.1f} | {p95(c.ms):.1f} | {max(c.ms):.1f} | "
                f"{statistics.median(c.ms) / base:.1f} | (a download) |")  # fmt: skip
    for b in f.busy:
        rows.append(f"| during the upload's intake: {b.name}, {len(b.ms)} requests | `{_short(b.path, f.layout)}` | | "
                    f"{statistics.median(b.ms):.1f} | {p95(b.ms):.1f} | {max(b.ms):.1f} | "
                    f"{statistics.median(b.ms) / base:.1f} | {verdict(p95(b.ms) < TARGET_MS)} |")  # fmt: skip
    return rows


def _short(path: str, layout: Layout) -> str:
    """Ids as the context line names them (U, F, D), so the table stays narrow."""
    for long, short in ((layout.upload, "U"), (layout.flood, "F"), (layout.delivery, "D")):
        path = path.replace(long, short)
    return path


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def context_lines(args: argparse.Namespace, f: Figures) -> list[str]:
    layout = f.layout
    counts = ", ".join(f"{k.split(' ', 1)[1]} {v:,}" for k, v in sorted(layout.counts.items())
                       if k.startswith("upload"))  # fmt: skip
    deliveries = ", ".join(f"{k.split(' ', 1)[1]} {v:,}" for k, v in sorted(layout.counts.items())
                           if k.startswith("delivery"))  # fmt: skip
    lines = [
        f"state: {len(layout.tenants)} tenants x {args.uploads} uploads ({counts}); deliveries: {deliveries}; "
        f"{layout.findings_files:,} findings files; built through the store in {layout.build_seconds:.0f} s",
        f"measured: tenant {layout.tenant} (T), its accepted upload {layout.upload} (U, a real change set), "
        f"its upload {layout.flood} with {args.findings:,} findings (F), target {layout.target}, delivery "
        f"{layout.delivery} (D); daemon started in {f.start_seconds:.1f} s",
        f"{args.warmup} warm-up requests per page, then {args.requests} rounds of every page in turn, one request at "
        f"a time (aiohttp {aiohttp.__version__}, loopback, body read whole); findings.csv {args.csv_requests} times; "
        f"polars {pl.__version__}; load average (1 min) {f.load[0]:.1f} before the page measures, {f.load[1]:.1f} "
        "after: anything else running on the machine slows the pages, and the baseline alike",
    ]
    if f.busy:
        lines.append(f"bulk work: a {args.busy_schools}-school district ({f.busy_zip_mib:.1f} MiB zip) copied into "
                     f"{layout.busy_tenant}'s inbox; pages asked from upload.validating until {f.busy_outcome} "
                     f"({f.busy_seconds:.1f} s)")  # fmt: skip
    return lines


# --- command line -------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/console.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=200, help="tenants (default %(default)s)")
    parser.add_argument("--uploads", type=int, default=50, help="uploads per tenant (default %(default)s)")
    parser.add_argument("--findings", type=int, default=100_000, help="findings of the flooded upload")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per page first")
    parser.add_argument("--csv-requests", type=int, default=5, help="timed downloads of findings.csv")
    parser.add_argument("--busy-schools", type=int, default=1000,
                        help="schools of the district uploaded during the last measure (0: skip it)")
    parser.add_argument("--out", type=Path, default=recording.BENCH / "out", help="where districts are cached")
    parser.add_argument("--tmp", type=Path, help="where the temporary folder goes (default: the system's)")
    parser.add_argument("--record", action="store_true", help=f"append the figures to {recording.RESULTS.name}")
    args = parser.parse_args(argv)
    if args.tenants < 2 or args.uploads < 10:
        parser.error("at least 2 tenants and 10 uploads each")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {text}", flush=True)

    try:
        figures = run(args, say)
    except BenchError as failure:
        print(f"\nbench: FAILED: {failure}", file=sys.stderr)
        return 1
    if args.record and "# Console benchmark results" not in recording.RESULTS.read_text(encoding="utf-8"):
        with recording.RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n# Console benchmark results\n\nbench/console.py: the admin console's pages with 200 tenants "
                    "and 10,000 uploads in history; target: every page under 200 ms.\n")  # fmt: skip
    recording.show("admin console (bench/console.py)", context_lines(args, figures), figures_table(figures),
                   args.record)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
