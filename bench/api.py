"""The OneRoster REST API (issue 15) on the benchmark district: publication, crawls, pages, deltas, ten clients.

One run starts a real `rosterd serve` (bench/servers.py: temporary state, free loopback ports) with one tenant
and an api target `vendor` (the default versions, 1.1 and 1.2; its rate limit raised out of the way, since the
limiter is not what is measured), makes clients with `rosterd api-client add`, and puts day 1 of the
1000-school district (bench/validate.py's, cached in bench/out/) to /inbox with OpenSSH's sftp. Then:

1. publication: the api target's delivery (delivery.started to delivery.delivered in the daemon's log) and the
   peak RSS of the daemon's worker processes meanwhile (/proc, every 0.2 s). Over 3 min or 6 GiB is a design
   problem: the run stops there (unless --go-on).
2. full crawl of /users and /enrollments (1.1) in pages of 5000, one aiohttp client with keep-alive, against the
   floor: one process reads the stored snapshot's users and enrollments Parquet files and writes them as JSON
   lines (polars write_ndjson), timed inside that process; the two alternate (--runs). Target: at most 3x.
3. pages of 1000 users at random offsets (--pages, one client, one after another): median and p95 under 50 ms.
4. day 2 (bench/diff.py's 2% churn) is put and published; `filter=dateLastModified>'T'`, T the first
   publication's time, crawled over both collections: its wall time against the full crawl's (target: at most
   a tenth), and its record count beside the churn's added + updated + deleted.
5. ten clients (ten client ids, asyncio tasks in a separate process) crawl users and enrollments at once: each
   page's records come in strictly increasing sourcedId order and each crawl's count equals X-Total-Count (so
   no record repeats or is missed); the daemon's RSS (rosterd serve and every process under it) stays under
   1.5 GiB; and an SFTP session of the same tenant (asyncssh, `ls /inbox` in a loop, as bench/loop_lag.py)
   keeps its round trips under 200 ms.

Every crawl checks every page the same way as in 5. It prints figures and exits 0 whatever they are; it exits
non-zero only when a step fails.

    .venv/bin/python bench/api.py [--schools 1000] [--runs 2] [--pages 200] [--clients 10] [--record]
    .venv/bin/python bench/api.py --schools 8 --runs 1 --pages 20 --clients 3    # a quick check that it works
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
import polars as pl

import recording
from diff import DayTwo, prepare_day_two
from servers import (
    LOOPBACK, ROSTERD, TENANT, BenchError, Child, Server, Timeline, connect, exit_on_sigterm, make_key, probe,
    free_port, proc_stats, rosterd_server, sftp_batch, tail,
)  # fmt: skip
from validate import (
    ENROLLMENTS_PER_STUDENT, STUDENTS_PER_SCHOOL, TEACHERS_PER_SCHOOL, Package, describe_package, prepare_package,
)  # fmt: skip

from daemon.generator.generate import DistrictSpec
from daemon.targets.api.publish import visible_at
from daemon.targets.api.target import current_publication

TARGET = "vendor"
BASE = "/ims/oneroster/v1p1"
CRAWLED = ("users", "enrollments")
CRAWL_LIMIT = 5000
PAGE_LIMIT = 1000
MAX_PUBLISH_SECONDS = 180.0
MAX_WORKER_GIB = 6.0
MAX_CRAWL_RATIO = 3.0
MAX_PAGE_MS = 50.0
MAX_DELTA_SHARE = 0.1  # "a small fraction" of the full crawl
MAX_DAEMON_MIB = 1536
MAX_LAG_MS = 200.0
SAMPLE_SECONDS = 0.2
TIMEOUT = 1800.0  # for an upload, its intake and its publication
INTAKE = {"settle_seconds": 0.5, "rescan_seconds": 3600}
TARGET_TOML = (
    f'[[tenants.targets]]\ntype = "api"\nname = "{TARGET}"\n'
    "[tenants.targets.rate_limit]\nrequests_per_second = 100000.0\nburst = 100000\n"
)
# A record of a page begins right after the array's bracket or a comma; a reference inside it begins with href.
RECORD_ID = re.compile(rb'[\[,]\{"sourcedId":"([^"]*)"')
MiB = 1024**2


# --- the daemon's memory ---------------------------------------------------------------------------------------


class RssSampler:
    """The resident memory of `rosterd serve` and every process under it, every SAMPLE_SECONDS, in a thread:
    (wall time, {pid: KiB}) per sample."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.samples: list[tuple[float, dict[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.samples.append((time.time(), self._tree()))

    def _tree(self) -> dict[int, int]:
        children: dict[int, list[int]] = {}
        for pid, fields in proc_stats():
            children.setdefault(int(fields[1]), []).append(pid)
        sizes, todo = {}, [self.root]
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, ()))
            with contextlib.suppress(OSError, ValueError):
                sizes[pid] = _rss_kib(pid)
        return sizes

    def peaks(self, start: float, end: float) -> tuple[float, float, float]:
        """MiB between wall times start and end: the whole tree's peak, the serve process's, the largest worker's."""
        window = [sizes for at, sizes in self.samples if start <= at <= end] or [self.samples[-1][1]]
        tree = max(sum(s.values()) for s in window)
        serve = max(s.get(self.root, 0) for s in window)
        worker = max((kib for s in window for pid, kib in s.items() if pid != self.root), default=0)
        return tree / 1024, serve / 1024, worker / 1024


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4  # resident pages of 4 KiB


# --- the daemon's log and state --------------------------------------------------------------------------------


def events(log: Path, name: str, **match: str) -> list[dict]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            event = json.loads(line)
            if event.get("event") == name and all(event.get(k) == v for k, v in match.items()):
                found.append(event)
    return found


def wait_for_event(log: Path, name: str, timeout: float, **match: str) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(log, name, **match)
        if found:
            return found[-1]
        if events(log, "delivery.dead", **match) or events(log, "delivery.failed", **match):
            raise BenchError(f"the delivery failed: {events(log, 'delivery.failed', **match)[-1:]}\n{tail(log)}")
        time.sleep(0.5)
    raise BenchError(f"no {name} {match} within {timeout:.0f} s; the log:\n{tail(log)}")


def at(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def add_client(server: Server) -> tuple[str, str]:
    config = server.log.parent / "rosterd.toml"
    done = subprocess.run([str(ROSTERD), "api-client", "add", TENANT, TARGET, "--config", str(config)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    found = dict(re.findall(r"^(client_id|client_secret): (\S+)$", done.stdout, re.M))
    if done.returncode != 0 or len(found) != 2:
        raise BenchError(f"rosterd api-client add exited {done.returncode}: {done.stdout}{done.stderr}")
    return found["client_id"], found["client_secret"]


@dataclass(frozen=True)
class Publication:
    upload_id: str
    seconds: float  # delivery.started to delivery.delivered
    accepted_to_served: float  # the receipt's acceptance (snapshot.accepted) to delivery.delivered
    tree_mib: float
    serve_mib: float
    worker_mib: float
    folder: Path
    summary: dict
    snapshot: Path
    parquet_mib: float = 0.0  # the publication's files, measured when it is made (a later one removes them)


def upload_and_publish(server: Server, key: Path, package: Path, name: str, work: Path,
                       sampler: RssSampler) -> Publication:  # fmt: skip
    done = sftp_batch(server, key, [f'put "{package}" "/inbox/{name}"'], work / "put.batch", TIMEOUT)
    if done.returncode != 0:
        raise BenchError(f"sftp put exited {done.returncode}:\n{done.stderr[-3000:]}")
    receipt = wait_for_receipt(server, name)
    if receipt.get("state") != "accepted":
        raise BenchError(f"{name} was not accepted: {json.dumps(receipt)[:2000]}")
    upload_id = receipt["upload_id"]
    delivered = wait_for_event(server.log, "delivery.delivered", TIMEOUT, target=TARGET, upload_id=upload_id)
    started = events(server.log, "delivery.started", target=TARGET, upload_id=upload_id)[0]
    accepted = events(server.log, "snapshot.accepted", upload_id=upload_id) or [started]
    time.sleep(2 * SAMPLE_SECONDS)  # the sampler's last sample of the window
    tree, serve, worker = sampler.peaks(at(started), at(delivered))
    assert server.state_dir is not None
    folder = current_publication(server.state_dir, TENANT, TARGET)
    if folder is None or not folder.name.startswith(upload_id):
        raise BenchError(f"the served publication is {folder}, not {upload_id}'s")
    snapshot = server.state_dir / "snapshots" / TENANT / upload_id
    if not snapshot.is_dir():
        raise BenchError(f"no stored snapshot at {snapshot}")
    return Publication(upload_id, at(delivered) - at(started), at(delivered) - at(accepted[0]), tree, serve,
                       worker, folder, json.loads((folder / "published.json").read_text()), snapshot,
                       sum(path.stat().st_size for path in folder.rglob("*.parquet")) / MiB)  # fmt: skip


def wait_for_receipt(server: Server, name: str) -> dict:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            receipt = json.loads(server.latest_receipt.read_text())
            if receipt.get("file") == name and receipt.get("state") in ("accepted", "rejected", "duplicate", "held"):
                return receipt
        time.sleep(0.25)
    raise BenchError(f"no final receipt for {name} within {TIMEOUT:.0f} s")


# --- the HTTP client ---------------------------------------------------------------------------------------------


@dataclass
class Crawl:
    collection: str
    total: int = 0  # X-Total-Count
    records: int = 0  # records received, each with a sourcedId above the one before
    pages: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        return not self.errors and self.records == self.total


async def token(session: aiohttp.ClientSession, port: int, client: tuple[str, str]) -> str:
    basic = "Basic " + base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()
    async with session.post(f"http://{LOOPBACK}:{port}/oauth2/token", data={"grant_type": "client_credentials"},
                            headers={"Authorization": basic}) as response:  # fmt: skip
        body = await response.json()
        if response.status != 200:
            raise BenchError(f"the token endpoint answered {response.status}: {body}")
        return body["access_token"]


async def crawl(session: aiohttp.ClientSession, port: int, bearer: str, collection: str,
                query: dict[str, str] | None = None, thorough: bool = True) -> Crawl:  # fmt: skip
    """Every page of `collection` (limit CRAWL_LIMIT), checked: its records in strictly increasing sourcedId
    order across pages (the default order), so none repeats, and as many as X-Total-Count says. Not
    `thorough` (the timed crawl, a consumer that stores pages as they come): each page's record count, and its
    first record after the last page's last, with bytes searches that cost the client next to nothing; the
    thorough check of every id (a regular expression over megabytes a page) is run by the ten clients of 5."""
    result, last = Crawl(collection), b""
    url = f"http://{LOOPBACK}:{port}{BASE}/{collection}"
    headers = {"Authorization": f"Bearer {bearer}"}
    started = time.perf_counter()
    offset, total = 0, None
    while total is None or offset < total:
        params = {**(query or {}), "limit": str(CRAWL_LIMIT), "offset": str(offset)}
        async with session.get(url, params=params, headers=headers) as response:
            body = await response.read()
            if response.status != 200:
                raise BenchError(f"{collection} offset {offset}: {response.status} {body[:500]!r}")
            count = int(response.headers["X-Total-Count"])
        if total is not None and count != total:
            result.errors.append(f"X-Total-Count went from {total} to {count} at offset {offset}")
        total = count
        ids = RECORD_ID.findall(body) if thorough else _ends(body)
        found = len(ids) if thorough else body.count(b'{"sourcedId":"')
        if found != min(CRAWL_LIMIT, max(0, total - offset)):
            result.errors.append(f"offset {offset}: {found} records")
        if ids and not (last < ids[0] and all(a < b for a, b in zip(ids, ids[1:]))):
            result.errors.append(f"offset {offset}: records out of order or repeated")
        last = ids[-1] if ids else last
        result.records += found
        result.pages += 1
        offset += CRAWL_LIMIT
    result.total, result.seconds = total, time.perf_counter() - started
    return result


def _ends(body: bytes) -> list[bytes]:
    """The first and the last record's sourcedId of a page (records start with `{"sourcedId":"`)."""
    first = body.find(b'{"sourcedId":"')
    if first < 0:
        return []
    last = body.rfind(b'{"sourcedId":"')
    start, end = first + 14, last + 14
    return [body[start : body.index(b'"', start)], body[end : body.index(b'"', end)]]


async def crawl_all(port: int, client: tuple[str, str], query: dict[str, str] | None = None,
                    thorough: bool = True) -> list[Crawl]:  # fmt: skip
    async with aiohttp.ClientSession() as session:
        bearer = await token(session, port, client)
        return [await crawl(session, port, bearer, collection, query, thorough) for collection in CRAWLED]


async def random_pages(port: int, client: tuple[str, str], total: int, count: int) -> list[float]:
    """Milliseconds for each of `count` pages of PAGE_LIMIT users at random offsets, one after another."""
    chosen = random.Random(15)
    times = []
    async with aiohttp.ClientSession() as session:
        bearer = await token(session, port, client)
        headers = {"Authorization": f"Bearer {bearer}"}
        url = f"http://{LOOPBACK}:{port}{BASE}/users"
        for _ in range(count):
            params = {"limit": str(PAGE_LIMIT), "offset": str(chosen.randrange(max(1, total - PAGE_LIMIT)))}
            started = time.perf_counter()
            async with session.get(url, params=params, headers=headers) as response:
                body = await response.read()
            times.append((time.perf_counter() - started) * 1000)
            if response.status != 200 or len(RECORD_ID.findall(body)) != min(PAGE_LIMIT, total):
                raise BenchError(f"a page of users at {params['offset']}: {response.status} {body[:300]!r}")
    return times


def many_clients(port: int, clients: list[tuple[str, str]]) -> list[list[dict]]:
    """In the load process: every client crawls at once; each crawl as a dict (it crosses a pipe)."""

    async def run() -> list[list[Crawl]]:
        return await asyncio.gather(*(crawl_all(port, client) for client in clients))

    return [[vars(c) for c in crawls] for crawls in asyncio.run(run())]


# --- the floor -----------------------------------------------------------------------------------------------------


def floor_child(snapshot: Path, out: Path) -> int:
    """Read the snapshot's users and enrollments Parquet files and write them as JSON lines; prints the time."""
    started = time.perf_counter()
    rows = 0
    for collection in CRAWLED:
        frame = pl.read_parquet(snapshot / f"{collection}.parquet")
        frame.write_ndjson(out / f"{collection}.ndjson")
        rows += frame.height
    print(json.dumps({"seconds": time.perf_counter() - started, "rows": rows}))
    return 0


def run_floor(snapshot: Path, scratch: Path) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(dir=scratch) as out:
        done = subprocess.run([sys.executable, __file__, "--floor", str(snapshot), out], capture_output=True,
                              text=True, timeout=600)  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"the floor exited {done.returncode}:\n{tail_text(done.stderr)}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["seconds"], report["rows"]


def tail_text(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --- the measures ----------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    publish: Publication | None = None
    republish: Publication | None = None
    crawls: list[list[Crawl]] = field(default_factory=list)  # per run: users, enrollments
    floors: list[float] = field(default_factory=list)
    floor_rows: int = 0
    pages_ms: list[float] = field(default_factory=list)
    delta: list[Crawl] = field(default_factory=list)
    delta_since: str = ""
    expected_delta: dict[str, int] = field(default_factory=dict)
    many: list[list[dict]] = field(default_factory=list)
    many_seconds: float = 0.0
    many_tree_mib: float = 0.0
    many_serve_mib: float = 0.0
    many_window: tuple[float, float] = (0.0, 0.0)  # wall times
    lag: Timeline | None = None

    def crawl_seconds(self) -> float:
        return statistics.median(sum(c.seconds for c in run) for run in self.crawls)


def measure(args: argparse.Namespace, day1: Package, day2: DayTwo, say: Callable[[str], None]) -> Figures:
    figures = Figures()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rosterd-api-bench-", dir=args.tmp)))
        key = make_key(work / "client", "api-bench")
        server = stack.enter_context(rosterd_server(work, key, INTAKE, sections={"api": {"host": LOOPBACK, "port": free_port()}},
                                                    tenant_toml=TARGET_TOML))  # fmt: skip
        assert server.pid is not None
        sampler = stack.enter_context(RssSampler(server.pid))
        port = wait_for_event(server.log, "api.started", 30)["port"]
        clients = [add_client(server) for _ in range(max(1, args.clients))]
        say(f"rosterd serve (pid {server.pid}) with the API on port {port}; {len(clients)} clients; uploading day 1 ...")
        stack.callback(_keep_log, server.log, args.out / "api-bench-daemon.log")

        p = figures.publish = upload_and_publish(server, key, day1.path, "day1.zip", work, sampler)
        say(f"1. published in {p.seconds:.1f} s ({p.accepted_to_served:.1f} s after acceptance); worker peak "
            f"{p.worker_mib:,.0f} MiB, daemon {p.tree_mib:,.0f} MiB")  # fmt: skip
        if (p.seconds > MAX_PUBLISH_SECONDS or p.worker_mib > MAX_WORKER_GIB * 1024) and not args.go_on:
            raise BenchError(f"publication took {p.seconds:.1f} s with a worker at {p.worker_mib:,.0f} MiB: over "
                             f"{MAX_PUBLISH_SECONDS:.0f} s or {MAX_WORKER_GIB} GiB, a design problem (--go-on to continue)")
        for path in [*p.folder.rglob("*.parquet"), *p.snapshot.glob("*.parquet")]:
            path.read_bytes()  # the page cache warm for both sides

        for i in range(1, args.runs + 1):
            crawls = asyncio.run(crawl_all(port, clients[0], thorough=False))
            _check(crawls)
            figures.crawls.append(crawls)
            seconds, figures.floor_rows = run_floor(p.snapshot, work)
            figures.floors.append(seconds)
            say(f"2. run {i}/{args.runs}: crawl " + ", ".join(f"{c.collection} {c.records:,} in {c.seconds:.1f} s"
                for c in crawls) + f"; floor {seconds:.1f} s")  # fmt: skip

        users = figures.crawls[0][0].total
        figures.pages_ms = asyncio.run(random_pages(port, clients[0], users, args.pages))
        say(f"3. {args.pages} pages of {PAGE_LIMIT} users: median {statistics.median(figures.pages_ms):.1f} ms")

        figures.delta_since = visible_at(p.folder).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        say(f"4. uploading day 2 (changes since {figures.delta_since}) ...")
        figures.republish = upload_and_publish(server, key, day2.path, "day2.zip", work, sampler)
        say(f"   republished in {figures.republish.seconds:.1f} s, worker peak {figures.republish.worker_mib:,.0f} MiB")
        figures.delta = asyncio.run(crawl_all(port, clients[0], {"filter": f"dateLastModified>'{figures.delta_since}'"}))
        _check(figures.delta)
        figures.expected_delta = {c: sum(day2.expected.get(c, {}).values()) for c in CRAWLED}
        say("   delta: " + ", ".join(f"{c.collection} {c.records:,} in {c.seconds:.2f} s" for c in figures.delta))

        say(f"5. {len(clients)} clients crawling at once, an SFTP session listing /inbox meanwhile ...")
        figures.lag = asyncio.run(_many(server, key, port, clients, figures))
        figures.many_tree_mib, figures.many_serve_mib, _ = sampler.peaks(*figures.many_window)
        say(f"   done in {figures.many_seconds:.1f} s; daemon peak {figures.many_tree_mib:,.0f} MiB")
    return figures


def _keep_log(log: Path, kept: Path) -> None:
    """The daemon's log outlives its temporary folder, for whoever reads why a step failed."""
    with contextlib.suppress(OSError):
        shutil.copyfile(log, kept)
        print(f"the daemon's log is kept in {kept}")


async def _many(server: Server, key: Path, port: int, clients: list[tuple[str, str]], figures: Figures) -> Timeline:
    timeline = Timeline()
    stop = asyncio.Event()
    async with await connect(server.port, key) as conn:
        sftp = await conn.start_sftp_client()
        prober = asyncio.create_task(probe(sftp, timeline, stop, 0.005))
        try:
            await asyncio.sleep(2.0)
            timeline.enter("crawl")
            started, wall = time.perf_counter(), time.time()
            with Child(many_clients, port, clients) as load:
                figures.many = await load.result(TIMEOUT)
            figures.many_seconds = time.perf_counter() - started
            figures.many_window = (wall, time.time())
            timeline.enter("done")
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(prober, timeout=30)
        if prober.done() and not prober.cancelled() and prober.exception():
            raise BenchError(f"a probe round trip failed: {prober.exception()!r}")
    return timeline


def _check(crawls: Sequence[Crawl]) -> None:
    for c in crawls:
        if not c.correct:
            raise BenchError(f"the crawl of {c.collection} was wrong: {c.records} of {c.total}; {c.errors[:5]}")


# --- reporting ---------------------------------------------------------------------------------------------------------


def p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def figures_table(f: Figures) -> list[str]:
    assert f.publish is not None and f.republish is not None and f.lag is not None
    p, q = f.publish, f.republish
    crawl, floor = f.crawl_seconds(), statistics.median(f.floors)
    records = sum(c.records for c in f.crawls[0])
    delta_s = sum(c.seconds for c in f.delta)
    delta_n = {c.collection: c.records for c in f.delta}
    many_ok = all(c["records"] == c["total"] and not c["errors"] for crawls in f.many for c in crawls)
    many_records = sum(c["records"] for crawls in f.many for c in crawls)
    lag = f.lag.samples("crawl")
    idle = f.lag.samples("idle")
    per_collection = ", ".join(f"{c.collection} {statistics.median(r[i].seconds for r in f.crawls):.1f} s"
                               for i, c in enumerate(f.crawls[0]))  # fmt: skip
    return [
        "| measure | figure | target | result |",
        "|---|---|---|---|",
        f"| 1. first publication (delivery.started to delivered) | {p.seconds:.1f} s "
        f"({p.accepted_to_served:.1f} s after snapshot.accepted) | ≤ {MAX_PUBLISH_SECONDS:.0f} s | "
        f"{verdict(p.seconds <= MAX_PUBLISH_SECONDS)} |",
        f"| 1. its largest worker's peak RSS (daemon in all: {p.tree_mib:,.0f} MiB) | {p.worker_mib:,.0f} MiB | "
        f"≤ {MAX_WORKER_GIB:.0f} GiB | {verdict(p.worker_mib <= MAX_WORKER_GIB * 1024)} |",
        f"| 2. full crawl, users + enrollments, limit {CRAWL_LIMIT} ({records:,} records; {per_collection}) | "
        f"{crawl:.1f} s ({records / crawl:,.0f} records/s) | | |",
        f"| 2. floor: snapshot Parquet to JSON lines in one process ({f.floor_rows:,} rows) | {floor:.1f} s | | |",
        f"| 2. crawl / floor | {crawl / floor:.2f} | ≤ {MAX_CRAWL_RATIO:g} | {verdict(crawl / floor <= MAX_CRAWL_RATIO)} |",
        f"| 3. page of {PAGE_LIMIT} users at a random offset ({len(f.pages_ms)} requests): median, p95, max | "
        f"{statistics.median(f.pages_ms):.1f}, {p95(f.pages_ms):.1f}, {max(f.pages_ms):.1f} ms | median < "
        f"{MAX_PAGE_MS:.0f} ms | {verdict(statistics.median(f.pages_ms) < MAX_PAGE_MS)} |",
        f"| 4. day 2 publication | {q.seconds:.1f} s, worker peak {q.worker_mib:,.0f} MiB | | |",
        f"| 4. delta crawl (dateLastModified>'{f.delta_since}') / full crawl | {delta_s:.2f} s / {crawl:.1f} s = "
        f"{delta_s / crawl:.3f} | ≤ {MAX_DELTA_SHARE:g} | {verdict(delta_s / crawl <= MAX_DELTA_SHARE)} |",
        "| 4. delta records: served vs the churn's added+updated+deleted | "
        + ", ".join(f"{c} {delta_n[c]:,} vs {f.expected_delta[c]:,}" for c in CRAWLED) + " | about equal | "
        + verdict(all(abs(delta_n[c] - f.expected_delta[c]) <= 0.1 * max(1, f.expected_delta[c]) for c in CRAWLED))
        + " |",
        f"| 5. {len(f.many)} clients at once: every page in order, counts = X-Total-Count ({many_records:,} records "
        f"in {f.many_seconds:.1f} s) | {'all correct' if many_ok else 'WRONG'} | all correct | {verdict(many_ok)} |",
        f"| 5. daemon RSS peak, serve + workers (serve alone {f.many_serve_mib:,.0f} MiB) | {f.many_tree_mib:,.0f} MiB "
        f"| < {MAX_DAEMON_MIB} MiB | {verdict(f.many_tree_mib < MAX_DAEMON_MIB)} |",
        f"| 5. SFTP `ls /inbox` round trips meanwhile ({len(lag)}; idle median {statistics.median(idle):.1f} ms): "
        f"median, p95, max | {statistics.median(lag):.1f}, {p95(lag):.1f}, {max(lag):.1f} ms | max < {MAX_LAG_MS:.0f} "
        f"ms | {verdict(max(lag) < MAX_LAG_MS)} |",
    ]


def context_lines(args: argparse.Namespace, spec: DistrictSpec, day1: Package, day2: DayTwo, f: Figures) -> list[str]:
    assert f.publish is not None
    versions = ", ".join(f"{v}: {sum(c['records'] for c in counts.values()):,} records"
                         for v, counts in f.publish.summary["versions"].items())  # fmt: skip
    size = f.publish.parquet_mib
    return [
        f"parameters: OneRoster {spec.version}, {spec.schools} schools x {spec.students_per_school} students, "
        f"{spec.teachers_per_school} teachers, {spec.enrollments_per_student} enrollments per student, seed "
        f"{spec.seed}; churn share {args.share:g}; {args.runs} crawl/floor run(s), {args.pages} random pages, "
        f"{len(f.many)} clients; polars {pl.__version__}, aiohttp {aiohttp.__version__}",
        *(f"day 1: {line}" for line in describe_package(day1)),
        f"publication: versions {versions}; {size:,.0f} MiB of Parquet; crawled as 1.1 ({BASE})",
        f"one client crawls page after page (keep-alive); in 5 the {len(f.many)} clients are asyncio tasks in one "
        "other process, each with its own client id and connection",
    ]


# --- command line -----------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/api.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--schools", type=int, default=1000, help="schools in the district (default %(default)s)")
    parser.add_argument("--share", type=float, default=0.02, help="day 2's churn (default %(default)s)")
    parser.add_argument("--runs", type=int, default=2, help="crawl and floor runs (default %(default)s)")
    parser.add_argument("--pages", type=int, default=200, help="random pages of users (default %(default)s)")
    parser.add_argument("--clients", type=int, default=10, help="clients crawling at once (default %(default)s)")
    parser.add_argument("--go-on", action="store_true", help="go on after a publication over 3 min or 6 GiB")
    parser.add_argument("--out", type=Path, default=recording.BENCH / "out", help="where districts are cached")
    parser.add_argument("--tmp", type=Path, help="where the temporary folder goes (default: the system's)")
    parser.add_argument("--record", action="store_true", help=f"append the figures to {recording.RESULTS.name}")
    parser.add_argument("--floor", nargs=2, metavar=("SNAPSHOT", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.floor:
        return floor_child(*map(Path, args.floor))
    exit_on_sigterm()
    spec = DistrictSpec(args.schools, STUDENTS_PER_SCHOOL, TEACHERS_PER_SCHOOL, ENROLLMENTS_PER_STUDENT, "1.1")
    day1, day2 = prepare_package(spec, args.out), prepare_day_two(spec, args.share, args.out)
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {text}", flush=True)

    try:
        figures = measure(args, day1, day2, say)
    except BenchError as failure:
        print(f"\nbench: FAILED: {failure}", file=sys.stderr)
        return 1
    if args.record and "# API benchmark results" not in recording.RESULTS.read_text(encoding="utf-8"):
        with recording.RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n# API benchmark results\n\nbench/api.py: the OneRoster REST API on the benchmark district.\n")
    recording.show("OneRoster API (bench/api.py)", context_lines(args, spec, day1, day2, figures),
                   figures_table(figures), args.record)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
