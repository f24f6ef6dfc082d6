"""What running rosterd as replicas on PostgreSQL and an S3-compatible bucket costs, set against one daemon on
SQLite and its own state directory (issue 17).

Replicas buy availability, not speed on one machine: every upload's bytes, snapshot and receipts now also
travel to the bucket, and every store call crosses a socket to PostgreSQL. This asks what that costs and
whether a second replica gives anything back when it shares the machine's cores.

1. Throughput. N tenants (`--tenants`, 10) each put a district (`--schools`, 50: about 1.8 MB) with OpenSSH's
   `sftp`, all at once; timed from the first put until the last tenant's final receipt is seen, as uploads per
   minute. (a) one replica on SQLite and its state directory (the default config), (b) one replica on
   PostgreSQL + S3, (c) two replicas on one database and one bucket, half the tenants putting to each one's
   SFTP port (no load balancer). Each replica runs rosterd's default two validation workers.
2. One large district (`--large-schools`, 1000: 35 MiB, bench/validate.py's district): day 1 put untimed,
   then day 2 (about 2% churn, daemon/generator/churn.py) as a bulk; timed from the put of day 2 to its final
   receipt, on (a) and (b), with where the time went by the daemon's log. Target: (b) at most 1.3x (a).

Every run starts afresh: new state directories, a new database (copied from a migrated template), a new
SeaweedFS. The configurations alternate run by run, so drift in the machine's load lands on each; the load
average is noted with every run, since others share this machine. Receipts are read from the state directory
of every replica (the one that processed an upload writes it there first).

The real parts: `rosterd serve` children (bench/servers.py), PostgreSQL from tests/postgres.py restarted with
its durability settings back on (the tests turn fsync off; SQLite here syncs every commit, so that would
flatter PostgreSQL), SeaweedFS's S3 gateway from tests/objects/seaweed.py (on this machine, sharing its cores).

    .venv/bin/python bench/replicas.py [--tenants N] [--runs N] [--record]
    .venv/bin/python bench/replicas.py --tenants 4 --runs 1 --large-schools 8   # a quick check that it works

It only measures: exits 0 whatever the figures, 1 when a step fails (a put, a start, a receipt not accepted).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import recording
from diff import prepare_day_two
from servers import BenchError, Keys, Server, exit_on_sigterm, make_key, proc_stats, rosterd_server, sftp_argv, tail
from validate import ENROLLMENTS_PER_STUDENT, STUDENTS_PER_SCHOOL, TEACHERS_PER_SCHOOL, prepare_package

from daemon.generator.generate import DistrictSpec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' helpers: a throwaway PostgreSQL and SeaweedFS
from tests.objects.seaweed import Seaweed  # noqa: E402
from tests.objects.seaweed import Server as SeaweedServer  # noqa: E402
from tests.postgres import Cluster  # noqa: E402

BENCH = Path(__file__).resolve().parent
MAX_LARGE_RATIO = 1.3
FINAL_STATES = ("accepted", "rejected", "duplicate", "held", "superseded", "discarded", "failed")
POLL_SECONDS = 0.05
# Arrivals are announced by the SFTP server; the periodic rescan is kept out of the way, as in burst.py.
INTAKE = {"settle_seconds": 0.5, "rescan_seconds": 3600}
SQLITE, POSTGRES = "SQLite + local", "PostgreSQL + S3"
SetUp = tuple[str, int]  # (storage, replicas)
THROUGHPUT_SETUPS: tuple[SetUp, ...] = ((SQLITE, 1), (POSTGRES, 1), (POSTGRES, 2))
LARGE_SETUPS: tuple[SetUp, ...] = ((SQLITE, 1), (POSTGRES, 1))
Say = Callable[[str], None]


def label(setup: SetUp) -> str:
    storage, count = setup
    return f"{storage}, {count} replica{'s' if count > 1 else ''}"


# --- the shared parts: PostgreSQL and SeaweedFS ------------------------------------------------------------


def make_durable(cluster: Cluster) -> None:
    """Restart the tests' cluster with PostgreSQL's own durability defaults (fsync, synchronous commit, full
    page writes), which the tests switch off for speed: the comparison is with SQLite at synchronous=FULL."""
    pg_ctl, data = str(cluster._bin / "pg_ctl"), str(cluster.data)
    cluster._run(pg_ctl, "-D", data, "-m", "fast", "-w", "stop")
    settings = f"-p {cluster.port} -k {cluster.folder} -h 127.0.0.1 -c shared_buffers=128MB -c max_connections=200"
    cluster._run(pg_ctl, "-D", data, "-l", str(cluster.folder / "server.log"), "-w", "-t", "60", "-o", settings,
                 "start")  # fmt: skip


@contextlib.contextmanager
def postgres_cluster(say: Say) -> Iterator[Cluster]:
    """One cluster for the whole benchmark; each run gets a database of its own in it."""
    cluster = Cluster()
    try:
        cluster.start()
        make_durable(cluster)
        say(f"PostgreSQL on port {cluster.port} (fsync on)")
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def seaweedfs(folder: Path) -> Iterator[tuple[Seaweed, int]]:
    """A fresh SeaweedFS for one run: the tests' server keeps at most 16 volumes of 16 MiB, which a few runs
    of the large district would fill (it then refuses writes, and the upload fails)."""
    folder.mkdir()
    server = SeaweedServer(folder)
    try:
        bucket = server.ready()
        assert server._process is not None
        yield bucket, server._process.pid  # its own session: the pid is its process group
    finally:
        server.stop()


def secret_file(path: Path, secret: str) -> str:
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return str(path)


@dataclass(frozen=True)
class Storage:
    """One run's [store] and [storage] tables (none for SQLite), and the processes that serve them."""

    sections: dict[str, Keys] = field(default_factory=dict)
    postgres: int | None = None  # the postmaster's pid: its backends are its children
    seaweed: int | None = None  # SeaweedFS's process group


def postmaster(cluster: Cluster) -> int:
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def storage_sections(storage: str, work: Path, cluster: Cluster | None) -> Iterator[Storage]:
    """The config's [store] and [storage] tables for one run: none for SQLite; for PostgreSQL + S3 a fresh
    database and a fresh bucket, both dropped when the run ends."""
    if storage == SQLITE:
        yield Storage()
        return
    assert cluster is not None
    database = cluster.new_database()  # migrated already, as `rosterd migrate` would leave it
    try:
        with seaweedfs(work / "seaweedfs") as (bucket, seaweed_group):
            yield Storage({
                "store": {"url": database.url, "secret_file": secret_file(work / "store-password", database.password)},
                "storage": {"kind": "s3", "endpoint": bucket.endpoint, "bucket": bucket.bucket,
                            "prefix": "bench", "access_key_id": bucket.access_key_id,
                            "secret_file": secret_file(work / "s3-secret", bucket.secret)},
            }, postmaster(cluster), seaweed_group)  # fmt: skip
    finally:
        cluster.drop(database)


@contextlib.contextmanager
def replicas(work: Path, key: Path, tenants: Sequence[str], count: int,
             sections: Mapping[str, Keys]) -> Iterator[list[Server]]:  # fmt: skip
    """`count` rosterd daemons with the same tenants and tables, one after another (the first one's host keys
    are the cluster's), each in its own folder under `work` with its own ports."""
    limits = {"max_sessions_per_ip": len(tenants) + 10}  # every client comes from 127.0.0.1
    with contextlib.ExitStack() as stack:
        servers = []
        for index in range(count):
            home = work / f"replica-{index}"
            home.mkdir()
            servers.append(stack.enter_context(rosterd_server(home, key, INTAKE, tenants=tenants, server=limits,
                                                              sections=sections)))  # fmt: skip
        yield servers


@contextlib.contextmanager
def started(part: str, setup: SetUp, tenants: Sequence[str], args: argparse.Namespace,
            cluster: Cluster | None) -> Iterator[tuple[Path, Path, list[Server], Storage]]:  # fmt: skip
    """One run's world: a temporary folder, a client key, the storage and the replicas, all started afresh and
    all stopped and removed when the run ends, however it ends."""
    storage, count = setup
    with tempfile.TemporaryDirectory(prefix="rosterd-replicas-bench-", dir=args.tmp,
                                     ignore_cleanup_errors=True) as name:  # fmt: skip
        work = Path(name)
        key = make_key(work / "client_ed25519", "bench client")
        try:
            with storage_sections(storage, work, cluster) as shared:
                with replicas(work, key, tenants, count, shared.sections) as servers:
                    yield work, key, servers, shared
        finally:
            keep_logs(work, f"{part}-{label(setup)}", args.out)


def keep_logs(work: Path, name: str, out: Path) -> None:
    """The last run's daemon logs of each part and configuration, kept in `out` for a look at where the time
    went (bench/out/replicas-bench-logs/)."""
    for log in work.glob("replica-*/rosterd/daemon.log"):
        kept = out / "replicas-bench-logs" / f"{name.replace(' ', '')}-{log.parents[1].name}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, kept)


# --- where the CPU went ---------------------------------------------------------------------------------------

PARTS = ("rosterd serve", "validation workers", "PostgreSQL", "SeaweedFS")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Watched:
    """The processes a run's CPU time is counted for: with two cores, their sum against the wall time says
    whether the machine, not rosterd, is the limit."""

    servers: tuple[int, ...]  # each `rosterd serve`; its own session, so its pid is its process group
    storage: Storage

    def part(self, pid: int, ppid: int, group: int) -> str | None:
        if group in self.servers:
            return PARTS[0] if pid in self.servers else PARTS[1]  # the rest of its group: the worker pool
        if self.storage.postgres in (pid, ppid):
            return PARTS[2]
        if group == self.storage.seaweed:
            return PARTS[3]
        return None


def cpu_seconds(watched: Watched) -> Counter[str]:
    """User + system CPU seconds so far of each watched part (processes that exited meanwhile are missed:
    the worker pools and the database connections live as long as their daemon)."""
    totals: Counter[str] = Counter()
    for pid, fields in proc_stats():  # fields: state, ppid, pgrp, ...; utime and stime at 11 and 12
        part = watched.part(pid, int(fields[1]), int(fields[2]))
        if part is not None:
            totals[part] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return totals


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every core since boot, from /proc/stat: everyone's work, not just ours."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return sum(values) - idle, sum(values)


@dataclass(frozen=True)
class Cpu:
    """What a timed stretch cost: CPU seconds by part, and how busy the whole machine was meanwhile."""

    seconds: dict[str, float]
    machine_busy: float  # share of all cores' time, 0..1

    @classmethod
    @contextlib.contextmanager
    def counting(cls, watched: Watched, into: list[Cpu]) -> Iterator[None]:
        before, (busy, total) = cpu_seconds(watched), machine_ticks()
        yield
        after, (busy_after, total_after) = cpu_seconds(watched), machine_ticks()
        spent = {part: after[part] - before[part] for part in PARTS}
        into.append(cls(spent, (busy_after - busy) / max(1, total_after - total)))


def cpu_cells(runs: Sequence[Cpu], uploads: int) -> str:
    """Median CPU seconds per upload by part, then the median share of the machine busy."""
    by_part = ", ".join(f"{median([r.seconds[p] for r in runs]) / uploads:.2f}" for p in PARTS)
    return f"{by_part} | {median([r.machine_busy for r in runs]):.0%}"


# --- puts and receipts -------------------------------------------------------------------------------------


def start_put(server: Server, tenant: str, key: Path, package: Path, name: str, folder: Path) -> subprocess.Popen:
    """OpenSSH's sftp putting `package` as /inbox/`name` for `tenant`, not waited for; its chatter in a file."""
    batch = folder / f"{tenant}-{name}.batch"
    batch.write_text(f"put {package} /inbox/{name}\n")
    argv = sftp_argv(dataclasses.replace(server, user=tenant), key, batch)
    with (folder / f"{tenant}-{name}.log").open("wb") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def final_receipt(servers: Sequence[Server], tenant: str, name: str) -> tuple[int, dict] | None:
    """The tenant's final receipt for `name` and the index of the replica whose state directory has it."""
    for index, server in enumerate(servers):
        with contextlib.suppress(OSError, ValueError):
            receipt = json.loads((server.results(tenant) / "latest.json").read_text())
            if receipt.get("file") == name and receipt.get("state") in FINAL_STATES:
                return index, receipt
    return None


@dataclass(frozen=True)
class Finished:
    at: float  # time.time() when the final receipt was first seen
    replica: int  # whose state directory it was in: the replica that processed the upload
    receipt: dict


def check_puts(puts: Mapping[str, subprocess.Popen], folder: Path, name: str) -> None:
    for tenant, proc in puts.items():
        if proc.poll() not in (None, 0):
            log = folder / f"{tenant}-{name}.log"
            raise BenchError(f"{tenant}'s put of {name} exited with {proc.returncode}:\n{tail(log, 15)}")


def wait_for_receipts(servers: Sequence[Server], puts: Mapping[str, subprocess.Popen], name: str, folder: Path,
                      timeout: float) -> dict[str, Finished]:  # fmt: skip
    """Poll every replica's results/ until each tenant's upload has a final receipt; every one must be
    accepted, or the figures would time something other than the work. A failed put stops it at once."""
    found: dict[str, Finished] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(puts):
        for tenant in puts.keys() - found.keys():
            got = final_receipt(servers, tenant, name)
            if got is not None:
                found[tenant] = Finished(time.time(), *got)
        check_puts(puts, folder, name)
        if time.monotonic() > deadline:
            raise BenchError(f"{len(puts) - len(found)} of {len(puts)} uploads of {name} had no final receipt "
                             f"within {timeout:.0f} s")  # fmt: skip
        time.sleep(POLL_SECONDS)
    for proc in puts.values():
        proc.wait(timeout=60)
    check_puts(puts, folder, name)
    refused = {t: f.receipt["state"] for t, f in found.items() if f.receipt["state"] != "accepted"}
    if refused:
        raise BenchError(f"uploads not accepted: {refused}")
    return found


# --- the daemon's log: where an upload's seconds went ------------------------------------------------------

PHASES = ("put to received", "received to validating", "validating to accepted", "accepted to receipt seen")


def events_of(log: Path, upload_id: str) -> dict[str, float]:
    """The daemon's events for one upload, by name: their UTC timestamps as seconds since the epoch."""
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and upload_id in line:
            event = json.loads(line)
            if event.get("upload_id") == upload_id and "timestamp" in event:
                found[event["event"]] = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
    return found


def phases(logs: Sequence[Path], upload_id: str, put_at: float, seen_at: float) -> dict[str, float]:
    """Seconds from the put to its receipt, split by the upload's events in the logs of every replica (the one
    that received it and the one that processed it may differ)."""
    events = {name: at for log in logs for name, at in events_of(log, upload_id).items()}
    marks = [put_at, *(events.get(name, float("nan")) for name in
                       ("upload.received", "upload.validating", "upload.accepted")), seen_at]  # fmt: skip
    return {name: later - earlier for name, earlier, later in zip(PHASES, marks[:-1], marks[1:], strict=True)}


# --- 1. throughput -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    seconds: float
    load: float  # the 1-minute load average as the run began
    by_replica: dict[int, int]  # uploads each replica processed
    cpu: Cpu
    phases: dict[str, float]  # the median upload's seconds in each phase

    @property
    def per_minute(self) -> float:
        return 60 * sum(self.by_replica.values()) / self.seconds


def tenant_names(count: int) -> list[str]:
    return [f"district-{i:02d}" for i in range(count)]


def burst(servers: Sequence[Server], key: Path, package: Path, tenants: Sequence[str], folder: Path,
          watched: Watched, timeout: float) -> Burst:  # fmt: skip
    """Every tenant puts `package` at once, tenant i to replica i mod len(servers); first put to last receipt."""
    load, cpu = os.getloadavg()[0], []
    with Cpu.counting(watched, cpu):
        started = time.time()
        puts = {t: start_put(servers[i % len(servers)], t, key, package, "district.zip", folder)
                for i, t in enumerate(tenants)}  # fmt: skip
        try:
            found = wait_for_receipts(servers, puts, "district.zip", folder, timeout)
        finally:
            for proc in puts.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    last = max(f.at for f in found.values())
    logs = [server.log for server in servers]
    each = [phases(logs, f.receipt["upload_id"], started, f.at) for f in found.values()]
    spent = {name: median([p[name] for p in each]) for name in PHASES}
    return Burst(last - started, load, dict(Counter(f.replica for f in found.values())), cpu[0], spent)


def throughput_run(setup: SetUp, package: Path, args: argparse.Namespace, cluster: Cluster | None,
                   say: Say) -> Burst:  # fmt: skip
    tenants = tenant_names(args.tenants)
    with started("throughput", setup, tenants, args, cluster) as (work, key, servers, shared):
        watched = Watched(tuple(s.pid for s in servers if s.pid), shared)
        result = burst(servers, key, package, tenants, work, watched, args.timeout)
    say(f"  {label(setup)}: {result.seconds:.2f} s, {result.per_minute:.1f} uploads/min "
        f"(load {result.load:.2f}; processed by replica: {result.by_replica})")  # fmt: skip
    return result


# --- 2. one large district ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Large:
    day1: float  # put to final receipt, seconds
    day2: float
    load: float
    phases: dict[str, float]  # day 2, from the daemon's log: where the seconds went
    cpu: Cpu  # day 2's


def put_and_wait(server: Server, key: Path, package: Path, name: str, folder: Path,
                 timeout: float) -> tuple[float, Finished]:  # fmt: skip
    """One put of the only tenant's package; when it began (time.time()) and its final receipt."""
    put_at = time.time()
    proc = start_put(server, server.user, key, package, name, folder)
    try:
        found = wait_for_receipts([server], {server.user: proc}, name, folder, timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return put_at, found[server.user]


def large_run(setup: SetUp, days: tuple[Path, Path], args: argparse.Namespace, cluster: Cluster | None,
              say: Say) -> Large:  # fmt: skip
    with started("large", setup, ["large"], args, cluster) as (work, key, (server,), shared):
        day1_at, day1 = put_and_wait(server, key, days[0], "day1.zip", work, args.timeout)
        load, cpu = os.getloadavg()[0], []
        with Cpu.counting(Watched((server.pid or 0,), shared), cpu):
            day2_at, day2 = put_and_wait(server, key, days[1], "day2.zip", work, args.timeout)
        spent = phases([server.log], day2.receipt["upload_id"], day2_at, day2.at)
    result = Large(day1.at - day1_at, day2.at - day2_at, load, spent, cpu[0])
    say(f"  {label(setup)}: day 2 {result.day2:.2f} s (day 1 {result.day1:.2f} s; load {load:.2f}; "
        + ", ".join(f"{k} {v:.2f}" for k, v in spent.items()) + ")")
    return result


# --- the runs ------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    throughput: dict[SetUp, list[Burst]] = field(default_factory=dict)
    large: dict[SetUp, list[Large]] = field(default_factory=dict)
    loads: list[float] = field(default_factory=list)  # the 1-minute load average, at start and end


def measure(args: argparse.Namespace, package: Path | None, days: tuple[Path, Path] | None, say: Say) -> Figures:
    """Every configuration once per run, in turn, so a change in the machine's load falls on all of them."""
    figures = Figures(loads=[os.getloadavg()[0]])
    with postgres_cluster(say) as cluster:
        for run in range(1, args.runs + 1):
            if package is not None:
                say(f"throughput, run {run} of {args.runs}:")
                for setup in THROUGHPUT_SETUPS:
                    figures.throughput.setdefault(setup, []).append(throughput_run(setup, package, args, cluster,
                                                                                   say))  # fmt: skip
            if days is not None:
                say(f"large district, run {run} of {args.runs}:")
                for setup in LARGE_SETUPS:
                    figures.large.setdefault(setup, []).append(large_run(setup, days, args, cluster, say))
    figures.loads.append(os.getloadavg()[0])
    return figures


# --- reporting -----------------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def throughput_table(figures: Figures) -> list[str]:
    lines = ["| configuration | runs: first put to last receipt (s) | median (s) | uploads/min (median) | "
             "load avg at start | processed per replica | the median upload: " + ", ".join(PHASES) + " (s) | "
             "CPU s per upload: " + ", ".join(PARTS) + " | machine busy |",
             "|---|---|---:|---:|---|---|---|---|---:|"]  # fmt: skip
    for setup, bursts in figures.throughput.items():
        per_replica = "; ".join(" / ".join(str(b.by_replica.get(i, 0)) for i in range(setup[1])) for b in bursts)
        uploads = sum(bursts[0].by_replica.values())
        lines.append(f"| {label(setup)} | {series_cells([b.seconds for b in bursts])} | "
                     f"{median([b.per_minute for b in bursts]):.1f} | {listed([b.load for b in bursts])} | "
                     f"{per_replica} | {phase_cells(bursts)} | "
                     f"{cpu_cells([b.cpu for b in bursts], uploads)} |")  # fmt: skip
    return lines


def listed(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def series_cells(values: Sequence[float]) -> str:
    """Two cells: each run's value, then their median."""
    return f"{listed(values)} | {median(values):.2f}"


def throughput_ratios(figures: Figures) -> str:
    rate = {setup: median([b.per_minute for b in bursts]) for setup, bursts in figures.throughput.items()}
    a, b, c = (rate.get(setup, 0.0) for setup in THROUGHPUT_SETUPS)
    if not (a and b):
        return ""
    return f"uploads/min ratios: (b)/(a) = {b / a:.2f}, (c)/(b) = {c / b:.2f}"


def phase_cells(runs: Sequence[Burst] | Sequence[Large]) -> str:
    """The median over runs of each phase's seconds."""
    return ", ".join(f"{median([r.phases[p] for r in runs]):.2f}" for p in PHASES)


def large_table(figures: Figures) -> list[str]:
    lines = ["| configuration | day 2 runs, put to final receipt (s) | median (s) | day 1 median (s) | "
             "load avg before day 2 | day 2 medians: " + ", ".join(PHASES) + " (s) | day 2 CPU s: "
             + ", ".join(PARTS) + " | machine busy |", "|---|---|---:|---:|---|---|---|---:|"]  # fmt: skip
    for setup, runs in figures.large.items():
        lines.append(f"| {label(setup)} | {series_cells([r.day2 for r in runs])} | "
                     f"{median([r.day1 for r in runs]):.2f} | {listed([r.load for r in runs])} | "
                     f"{phase_cells(runs)} | {cpu_cells([r.cpu for r in runs], 1)} |")  # fmt: skip
    return lines


def large_verdict(figures: Figures) -> str:
    day2 = {setup: median([r.day2 for r in runs]) for setup, runs in figures.large.items()}
    sqlite, postgres = (day2.get(setup, 0.0) for setup in LARGE_SETUPS)
    if not (sqlite and postgres):
        return ""
    ratio = postgres / sqlite
    verdict = "PASS" if ratio <= MAX_LARGE_RATIO else "FAIL"
    return (f"large district, day 2: PostgreSQL + S3 / SQLite + local = {ratio:.2f} "
            f"(target ≤ {MAX_LARGE_RATIO}): {verdict}")  # fmt: skip


def context_lines(args: argparse.Namespace, described: Mapping[str, str], figures: Figures) -> list[str]:
    lines = [
        f"parameters: {args.runs} run(s) of each configuration, alternating; {args.tenants} tenants; "
        f"each replica with rosterd's default [intake] workers = 2 (validation processes); intake settle 0.5 s",
        *(f"{what}: {text}" for what, text in described.items()),
        "PostgreSQL (tests/postgres.py's cluster, restarted with fsync, synchronous_commit and full_page_writes on) "
        "and SeaweedFS (`weed server -s3`, tests/objects/seaweed.py) on this same machine, a fresh database and "
        "SeaweedFS each run; SQLite at synchronous=FULL",
        f"load average (1 min): {figures.loads[0]:.2f} at start, {figures.loads[-1]:.2f} at end "
        "(others run tests on this machine)",
    ]
    return lines + [line for line in (throughput_ratios(figures), large_verdict(figures)) if line]


# --- command line ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/replicas.py",
        description="Throughput of N uploads and one large district's day 2, on SQLite + local disk against "
        "PostgreSQL + S3 (one and two replicas). Prints figures; exits non-zero only if a step fails.",
    )
    parser.add_argument("--tenants", type=int, default=10, help="tenants uploading at once (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each configuration (default %(default)s)")
    parser.add_argument("--schools", type=int, default=50,
                        help="schools in each tenant's district for the throughput (default %(default)s)")
    parser.add_argument("--large-schools", type=int, default=1000,
                        help="schools in the large district (default %(default)s; 0 skips that part)")
    parser.add_argument("--share", type=float, default=0.02, help="day 2's churn (default %(default)s)")
    parser.add_argument("--skip-throughput", action="store_true", help="measure only the large district")
    parser.add_argument("--timeout", type=float, default=900.0, help="limit for each run's receipts, seconds")
    parser.add_argument("--out", type=Path, default=BENCH / "out", help="where generated districts are cached")
    parser.add_argument("--tmp", type=Path, help="where the temporary folders go (default: the system's)")
    parser.add_argument("--record", action="store_true", help=f"append the figures to {recording.RESULTS.name}")
    return parser.parse_args(argv)


def spec(schools: int) -> DistrictSpec:
    return DistrictSpec(schools=schools, students_per_school=STUDENTS_PER_SCHOOL,
                        teachers_per_school=TEACHERS_PER_SCHOOL, enrollments_per_student=ENROLLMENTS_PER_STUDENT,
                        version="1.1")  # fmt: skip


def size(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def inputs(args: argparse.Namespace) -> tuple[Path | None, tuple[Path, Path] | None, dict[str, str]]:
    """The districts (cached in --out, generated when missing) and a line describing each."""
    described: dict[str, str] = {}
    package = days = None
    if not args.skip_throughput:
        package = prepare_package(spec(args.schools), args.out).path
        described["throughput"] = (f"each tenant puts a district of {args.schools} schools x {STUDENTS_PER_SCHOOL} "
                                   f"students, OneRoster 1.1 ({size(package)}), all at once")  # fmt: skip
    if args.large_schools:
        day1 = prepare_package(spec(args.large_schools), args.out).path
        day2 = prepare_day_two(spec(args.large_schools), args.share, args.out)
        days = (day1, day2.path)
        described["large district"] = (
            f"{args.large_schools} schools x {STUDENTS_PER_SCHOOL} students; day 1 bulk ({size(day1)}, untimed) then "
            f"day 2 bulk after {args.share:.0%} churn ({size(day2.path)}): validate, diff, snapshot write"
        )  # fmt: skip
    return package, days, described


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()

    def say(line: str) -> None:
        print(line, flush=True)

    package, days, described = inputs(args)
    try:
        figures = measure(args, package, days, say)
    except (BenchError, RuntimeError) as failure:  # RuntimeError: PostgreSQL or SeaweedFS would not start
        print(f"\nbench: FAILED: {failure}", file=sys.stderr)
        return 1
    table = [*throughput_table(figures), ""] if figures.throughput else []
    table += large_table(figures) if figures.large else []
    if args.record and "# Replicas benchmark results" not in recording.RESULTS.read_text(encoding="utf-8"):
        with recording.RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n# Replicas benchmark results\n\nbench/replicas.py: SQLite + local disk against PostgreSQL "
                    "+ S3 (issue 17), one and two replicas on one machine.\n")  # fmt: skip
    recording.show("replicas (bench/replicas.py)", context_lines(args, described, figures), table, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
