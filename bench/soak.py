"""The soak: ten minutes of everything an SFTP daemon meets in a year, then a check that nothing was left behind.

Uploaders finish what they start only some of the time; clients vanish at every stage of a session; a
validation worker may be killed by the kernel; a misbehaving client opens handles by the hundred. None of that
may leak a session slot, a file descriptor, memory or an upload, or slow down the tenants that behave.

One run starts `rosterd serve` on a free loopback port with several tenants (6 by default: `soak-0` floods,
the others upload) and, for `--minutes` (10 by default, the first of them a warm-up):

- each uploading tenant, one action after another with short random pauses: valid samples (each with a zip
  comment of its own, so that it is validated and not a duplicate), broken samples, exact copies of one of its
  earlier uploads, valid samples under names of 240 bytes; and disconnects at every stage of a session: the TCP
  connection closed (or reset) before the SSH handshake ends, the connection dropped after login before the sftp
  subsystem starts, an sftp channel opened and dropped before the SFTP handshake (with asyncssh, and with
  OpenSSH's `ssh -s TENANT@host sftp </dev/null`), a connection dropped in the middle of an upload, and one
  dropped after the last write but before the close;
- the flooding tenant, every `flood_every` seconds: one connection opens a thousand read handles on
  results/latest.json in one session and two hundred uploads in another, closes none of them and is dropped.
  The daemon runs with its open files limited to 1024 (soft and hard, `--nofile`), so a flood that the daemon
  does not cap takes every descriptor it has;
- every `kill_every` seconds after the warm-up, one of the daemon's validation workers is killed with SIGKILL;
- a probe session of every uploading tenant lists /inbox continuously, and the daemon's RSS and open files are
  sampled.

The clients run in a separate process (servers.Child), so that their work never delays the probes' own loop.
When the time is up the load stops, intake is given time to finish, every uploading tenant sends one more valid
upload (the canary: validation must still work after the kills), the probes stop, and the soak checks:

- every upload it completed reached a final state (accepted, rejected, duplicate, held, superseded,
  discarded or failed) with exactly one receipt .json in results/, and no receipt names an upload that it
  abandoned;
- the canaries were validated (accepted or held): the worker pool came back after every kill;
- the `rosterd_sftp_sessions` gauge on /metrics returned to 0;
- the daemon's RSS (VmRSS in /proc/PID/status) came back within 20% of its warm-up value (the median of the
  samples in the second half of the warm-up), and its open files to at most the fewest of those samples plus
  a few;
- nothing was left in any inbox;
- the probes' round trips stayed under 500 ms throughout, and none failed.

It prints a table, exits 1 when a check fails (2 when a step fails), and `--record` appends the figures to
bench/RESULTS.md. tests/e2e/test_soak.py runs a shorter soak through `soak()`.

    .venv/bin/python bench/soak.py [--minutes 10] [--tenants 6] [--kill-every 60] [--flood-every 30] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
from prometheus_client.parser import text_string_to_metric_families

import recording
from servers import (
    LOOPBACK,
    BenchError,
    Child,
    Server,
    Timeline,
    connect,
    exit_on_sigterm,
    make_key,
    probe,
    proc_stats,
    rosterd_server,
    rss_kib,
)

BENCH = Path(__file__).resolve().parent
SAMPLES = BENCH.parent / "samples"
VALID = ("valid-1.1-bulk.zip", "valid-1.2-bulk.zip", "valid-1.1-delta.zip", "lenient-excel-export.zip")
CANARY = "valid-1.1-bulk.zip"
FINAL_STATES = ("accepted", "rejected", "duplicate", "held", "superseded", "discarded", "failed")
LONG_NAME_BYTES = 240
ACTION_TIMEOUT = 60.0
RECEIPT_POLL_SECONDS = 0.5
GAUGE_WAIT_SECONDS = 15.0
FD_SLACK = 16  # open files may differ from the warm-up's by a few (the store, the watcher, a worker's pipes)
RSS_MARGIN = 0.20
PHASES = ("warm-up", "soak", "drain")
# What each uploading tenant does next, and how often (weights).
ACTIONS = {
    "valid": 4, "broken": 2, "duplicate": 1, "long-name": 1,
    "drop-before-ssh": 1, "drop-after-login": 1, "drop-sftp-channel": 1, "drop-mid-upload": 1,
    "drop-before-close": 1,
}  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """One soak's shape. The defaults are the benchmark's; the test runs a shorter, smaller one."""

    minutes: float = 10.0  # the whole load, warm-up included
    tenants: int = 6  # soak-0 floods; the others upload, disconnect and probe
    warmup_seconds: float = 60.0
    kill_every: float = 60.0  # seconds between worker kills, after the warm-up (0: none)
    flood_every: float = 30.0  # seconds between handle floods (0: none)
    flood_reads: int = 1000  # read handles on results/latest.json per flood
    flood_uploads: int = 200  # uploads opened and never closed per flood: with the reads, more than `nofile`
    pause_seconds: tuple[float, float] = (0.2, 1.0)  # between one tenant's actions
    probe_interval_ms: float = 50.0
    max_round_trip_ms: float = 500.0
    drain_seconds: float = 300.0  # how long intake may take to finish after the load stops
    nofile: int = 1024  # the daemon's limit of open files, soft and hard (it raises a soft one to the hard one)
    seed: int = 1

    @property
    def names(self) -> list[str]:
        return [f"soak-{i}" for i in range(self.tenants)]

    @property
    def flooder(self) -> str:
        return self.names[0]

    @property
    def uploaders(self) -> list[str]:
        return self.names[1:]


@dataclass(frozen=True)
class Check:
    name: str
    figure: str
    limit: str
    ok: bool


@dataclass
class Report:
    plan: Plan
    timeline: Timeline
    probe_failures: list[str] = field(default_factory=list)
    load: dict = field(default_factory=dict)  # what the load process did (see _Load.summary)
    receipts: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # tenant -> file -> receipts
    canaries: dict[str, str] = field(default_factory=dict)  # tenant -> the canary's state
    kills: list[tuple[float, int | None]] = field(default_factory=list)  # (seconds in, pid or None)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (seconds in, RSS KiB, open files)
    warm: tuple[int, int] = (0, 0)  # RSS KiB and open files after the warm-up
    end: tuple[int, int] = (0, 0)  # the same at the end
    sessions_end: float | None = None
    inbox_left: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


# --- the daemon's processes, from /proc -------------------------------------------------------------------


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, fields in proc_stats():
        children.setdefault(int(fields[1]), []).append(pid)  # ppid
    return children


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_pids(daemon_pid: int) -> list[int]:
    """The daemon's validation workers: its descendants without children of their own (a fork server, if the
    pool uses one, is their parent), other than multiprocessing's resource tracker."""
    children = _proc_children()
    found, stack = [], list(children.get(daemon_pid, []))
    while stack:
        pid = stack.pop()
        if children.get(pid):
            stack.extend(children[pid])
        elif "resource_tracker" not in _cmdline(pid):
            found.append(pid)
    return sorted(found)


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sftp_sessions(health_port: int) -> float:
    """The rosterd_sftp_sessions gauge, as Prometheus would scrape it."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{health_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rosterd_sftp_sessions":
                return sample.value
    raise BenchError("/metrics has no rosterd_sftp_sessions")


# --- the load (in the load process) -----------------------------------------------------------------------


def with_comment(data: bytes, comment: str) -> bytes:
    """The same zip with its own comment: the same roster, another sha256."""
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.comment = comment.encode()
    return buffer.getvalue()


def long_name(prefix: str) -> str:
    return prefix + "-" + "L" * (LONG_NAME_BYTES - len(prefix) - len("-.zip")) + ".zip"


def ssh_subsystem_argv(port: int, key: Path, tenant: str) -> list[str]:
    """OpenSSH asking for the sftp subsystem with nothing to say: stdin at EOF before the SFTP handshake."""
    return [
        "ssh", "-F", "/dev/null", "-p", str(port), "-i", str(key), "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-s", f"{tenant}@{LOOPBACK}",
        "sftp",
    ]  # fmt: skip


async def put(port: int, key: Path, tenant: str, name: str, data: bytes) -> None:
    """One whole upload on a connection of its own; it is complete once the close is answered."""
    async with await connect(port, key, tenant) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open(f"/inbox/{name}", "wb") as upload:
            await upload.write(data)


class _Load:
    """The clients of one soak, in the load process: every uploading tenant and the flooding one."""

    def __init__(self, port: int, key: Path, plan: Plan, seconds: float) -> None:
        self.port, self.key, self.plan = port, key, plan
        self.deadline = time.monotonic() + seconds
        self.samples = {p.name: p.read_bytes() for p in sorted(SAMPLES.glob("*.zip"))}
        self.completed: list[dict] = []  # uploads whose close succeeded: tenant, name, kind
        self.abandoned: list[dict] = []  # uploads dropped on purpose: tenant, name, kind
        self.actions: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_samples: dict[str, str] = {}
        self.floods: list[dict] = []

    def summary(self) -> dict:
        return {"completed": self.completed, "abandoned": self.abandoned, "actions": dict(self.actions),
                "errors": dict(self.errors), "error_samples": self.error_samples, "floods": self.floods}  # fmt: skip

    async def run(self) -> dict:
        tasks = [self._uploader(tenant, i) for i, tenant in enumerate(self.plan.uploaders)]
        if self.plan.flood_every:
            tasks.append(self._flooder(self.plan.flooder))
        await asyncio.gather(*tasks)
        return self.summary()

    async def _attempt(self, kind: str, action) -> None:
        """One action, bounded in time; a failure is counted, never fatal (a leak shows as refusals)."""
        self.actions[kind] += 1
        try:
            async with asyncio.timeout(ACTION_TIMEOUT):
                await action
        except (OSError, asyncssh.Error, TimeoutError, EOFError) as failure:
            self.errors[kind] += 1
            self.error_samples.setdefault(kind, repr(failure)[:300])

    # uploads

    async def _uploader(self, tenant: str, index: int) -> None:
        rng = random.Random(self.plan.seed * 1000 + index)
        sent: list[bytes] = []  # this tenant's completed uploads, for exact copies
        kinds, weights = list(ACTIONS), list(ACTIONS.values())
        sequence = 0
        while time.monotonic() < self.deadline:
            kind = rng.choices(kinds, weights)[0]
            if kind == "duplicate" and not sent:
                kind = "valid"
            sequence += 1
            name = f"{tenant}-{sequence:05d}-{kind}.zip"
            fresh = with_comment(self.samples[rng.choice(VALID)], f"{tenant} {sequence}")
            if kind == "valid":
                await self._attempt(kind, self._put(tenant, name, kind, fresh, sent))
            elif kind == "long-name":
                await self._attempt(kind, self._put(tenant, long_name(f"{tenant}-{sequence:05d}"), kind, fresh, sent))
            elif kind == "broken":
                broken = rng.choice([n for n in self.samples if n.startswith("broken-")])
                await self._attempt(kind, self._put(tenant, name, kind, self.samples[broken], sent))
            elif kind == "duplicate":
                await self._attempt(kind, self._put(tenant, name, kind, rng.choice(sent), sent))
            elif kind == "drop-before-ssh":
                await self._attempt(kind, self._drop_before_ssh(rng.randrange(3)))
            elif kind == "drop-after-login":
                await self._attempt(kind, self._drop_after_login(tenant))
            elif kind == "drop-sftp-channel":
                channel = self._drop_sftp_channel(tenant) if rng.random() < 0.5 else self._ssh_subsystem(tenant)
                await self._attempt(kind, channel)
            else:  # drop-mid-upload, drop-before-close
                await self._attempt(kind, self._drop_upload(tenant, name, kind, fresh, kind == "drop-mid-upload"))
            await asyncio.sleep(rng.uniform(*self.plan.pause_seconds))

    async def _put(self, tenant: str, name: str, kind: str, data: bytes, sent: list[bytes]) -> None:
        await put(self.port, self.key, tenant, name, data)
        self.completed.append({"tenant": tenant, "name": name, "kind": kind})
        sent.append(data)

    async def _drop_upload(self, tenant: str, name: str, kind: str, data: bytes, midway: bool) -> None:
        conn = await connect(self.port, self.key, tenant)
        try:
            sftp = await conn.start_sftp_client()
            upload = await sftp.open(f"/inbox/{name}", "wb")
            self.abandoned.append({"tenant": tenant, "name": name, "kind": kind})
            await upload.write(data[: len(data) // 2] if midway else data)
        finally:
            conn.abort()  # no close of the file, no SSH disconnect message: the client is simply gone

    # disconnects

    async def _drop_before_ssh(self, how: int) -> None:
        """0: close at once; 1: send a version line, then close; 2: the same, then a reset (RST)."""
        reader, writer = await asyncio.open_connection(LOOPBACK, self.port)
        try:
            if how:
                writer.write(b"SSH-2.0-soak\r\n")
                await writer.drain()
                await reader.readline()  # the server's version line
            if how == 2:
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _drop_after_login(self, tenant: str) -> None:
        conn = await connect(self.port, self.key, tenant)
        conn.abort()

    async def _drop_sftp_channel(self, tenant: str) -> None:
        conn = await connect(self.port, self.key, tenant)
        try:
            await conn.create_session(asyncssh.SSHClientSession, subsystem="sftp")
        finally:
            conn.abort()

    async def _ssh_subsystem(self, tenant: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *ssh_subsystem_argv(self.port, self.key, tenant), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    # floods

    async def _flooder(self, tenant: str) -> None:
        await self._attempt("flood-baseline", self._put(tenant, f"{tenant}-baseline.zip", "valid",
                                                       self.samples[CANARY], []))  # fmt: skip
        next_flood = time.monotonic() + self.plan.flood_every / 2
        while time.monotonic() + 5 < self.deadline:
            await asyncio.sleep(max(0.0, next_flood - time.monotonic()))
            next_flood += self.plan.flood_every
            await self._attempt("flood", self._flood(tenant, len(self.floods)))

    async def _flood(self, tenant: str, number: int) -> None:
        """Two sessions on one connection, one opening read handles, the other uploads, none of them closed;
        then the connection is dropped. A refused open is counted (the daemon may cap handles), not fatal."""
        outcome = {"reads": 0, "reads_refused": 0, "uploads": 0, "uploads_refused": 0}
        self.floods.append(outcome)
        handles: list[asyncssh.SFTPClientFile] = []  # held, so that nothing closes them before the drop
        conn = await connect(self.port, self.key, tenant)

        async def read_handles() -> None:
            sftp = await conn.start_sftp_client()
            for _ in range(self.plan.flood_reads):
                try:
                    handles.append(await sftp.open("/results/latest.json", "rb"))
                    outcome["reads"] += 1
                except asyncssh.SFTPError:
                    outcome["reads_refused"] += 1

        async def upload_handles() -> None:
            sftp = await conn.start_sftp_client()
            for i in range(self.plan.flood_uploads):
                name = f"{tenant}-flood{number:03d}-{i:04d}.zip"
                try:
                    handles.append(upload := await sftp.open(f"/inbox/{name}", "wb"))
                    self.abandoned.append({"tenant": tenant, "name": name, "kind": "flood"})
                    await upload.write(b"PK\x03\x04 never closed")
                    outcome["uploads"] += 1
                except asyncssh.SFTPError:
                    outcome["uploads_refused"] += 1

        try:
            await asyncio.gather(read_handles(), upload_handles())
        finally:
            conn.abort()


def run_load(port: int, key: Path, plan: Plan, seconds: float) -> dict:
    """The load process's entry point (servers.Child)."""
    return asyncio.run(_Load(port, key, plan, seconds).run())


# --- watching (in this process) ---------------------------------------------------------------------------


class _Watch:
    """The probes, the worker kills and the samples of one soak, against one daemon."""

    def __init__(self, server: Server, key: Path, plan: Plan, say: Callable[[str], None]) -> None:
        self.server, self.key, self.plan, self.say = server, key, plan, say
        self.report = Report(plan, Timeline(phase=PHASES[0]))
        self.started = time.monotonic()
        self.load_done = asyncio.Event()  # no more kills from then on: the canaries must meet a whole pool
        self.stop = asyncio.Event()

    def seconds_in(self) -> float:
        return time.monotonic() - self.started

    async def probe_forever(self, tenant: str) -> None:
        """One tenant's probe session, reconnected after a failure (which is recorded)."""
        while not self.stop.is_set():
            try:
                async with await connect(self.server.port, self.key, tenant) as conn:
                    sftp = await conn.start_sftp_client()
                    await probe(sftp, self.report.timeline, self.stop, self.plan.probe_interval_ms / 1000)
            except (OSError, asyncssh.Error, TimeoutError) as failure:
                self.report.probe_failures.append(f"{tenant} at {self.seconds_in():.0f} s: {failure!r}")
                await asyncio.sleep(1)

    async def kill_workers(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.load_done.wait(), self.plan.warmup_seconds)
        while self.plan.kill_every and not self.load_done.is_set():
            workers = await asyncio.to_thread(worker_pids, self.server.pid)
            victim = random.Random(len(self.report.kills)).choice(workers) if workers else None
            if victim is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            self.report.kills.append((self.seconds_in(), victim))
            self.say(f"{self.seconds_in():.0f} s: killed worker {victim}" if victim else "no worker to kill")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.load_done.wait(), self.plan.kill_every)

    async def sample_forever(self) -> None:
        while not self.stop.is_set():
            try:
                self.report.samples.append((self.seconds_in(), rss_kib(self.server.pid), open_files(self.server.pid)))
            except OSError:  # the daemon is gone: the end's figures say so
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 2.0)

    def warm_figures(self) -> tuple[int, int]:
        """Over the second half of the warm-up: the median RSS, and the fewest open files (a flood in flight
        holds hundreds for a moment; a leak keeps them)."""
        half = self.plan.warmup_seconds / 2
        late = [s for s in self.report.samples if half <= s[0] <= self.plan.warmup_seconds] or self.report.samples
        return int(statistics.median(s[1] for s in late)), min(s[2] for s in late)

    async def canaries(self) -> dict[str, str]:
        """One fresh valid upload per uploading tenant, and the state its receipt reaches."""
        data = (SAMPLES / CANARY).read_bytes()
        states, sent = {}, []
        for tenant in self.plan.uploaders:
            canary = {"tenant": tenant, "name": f"{tenant}-canary.zip", "kind": "canary"}
            try:
                async with asyncio.timeout(ACTION_TIMEOUT):
                    await put(self.server.port, self.key, tenant, canary["name"], with_comment(data, canary["name"]))
            except (OSError, asyncssh.Error, TimeoutError) as failure:
                states[tenant] = f"not sent ({failure!r})"
                continue
            self.report.load["completed"].append(canary)
            sent.append(canary)
        await self.wait_for_receipts(self.plan.drain_seconds, sent)
        for canary in sent:
            found = self.report.receipts.get(canary["tenant"], {}).get(canary["name"], [])
            states[canary["tenant"]] = found[0]["state"] if found else "no receipt"
        return states

    async def wait_for_receipts(self, timeout: float, uploads: list[dict] | None = None) -> None:
        """Until every completed upload (or each of `uploads`) has a final receipt, or `timeout`; report.receipts
        as found."""
        deadline = time.monotonic() + timeout
        while True:
            self.report.receipts = await asyncio.to_thread(read_receipts, self.server, self.plan.names)
            if not missing(self.report, uploads) or time.monotonic() > deadline:
                return
            await asyncio.sleep(RECEIPT_POLL_SECONDS)

    async def sessions_gauge(self) -> float:
        deadline = time.monotonic() + GAUGE_WAIT_SECONDS
        while True:
            value = await asyncio.to_thread(sftp_sessions, self.server.health_port)
            if value == 0 or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.5)

    async def run(self) -> Report:
        plan, report = self.plan, self.report
        seconds = plan.minutes * 60
        watchers = [asyncio.create_task(self.probe_forever(t)) for t in plan.uploaders]
        watchers += [asyncio.create_task(self.kill_workers()), asyncio.create_task(self.sample_forever())]
        try:
            with Child(run_load, self.server.port, self.key, plan, seconds) as load:
                await asyncio.sleep(plan.warmup_seconds)
                report.warm = self.warm_figures()
                report.timeline.enter("soak")
                self.say(f"warm-up done: RSS {report.warm[0] / 1024:.0f} MiB, {report.warm[1]} open files")
                report.load = await load.result(seconds + 2 * ACTION_TIMEOUT)
            self.load_done.set()
            report.timeline.enter("drain")
            self.say(f"load done ({len(report.load['completed'])} uploads completed); draining ...")
            await self.wait_for_receipts(plan.drain_seconds)
            report.canaries = await self.canaries()
            report.timeline.enter("done")
        finally:
            self.load_done.set()
            self.stop.set()
            await asyncio.wait(watchers, timeout=60)
            for task in watchers:
                task.cancel()
        report.sessions_end = await self.sessions_gauge()
        await asyncio.sleep(2)
        report.end = (rss_kib(self.server.pid), open_files(self.server.pid))
        if not report.end[0]:
            raise BenchError("the daemon exited during the soak")
        report.inbox_left = await asyncio.to_thread(inbox_leftovers, self.server, plan.names)
        report.checks = checks(report)
        return report


def read_receipts(server: Server, tenants: Sequence[str]) -> dict[str, dict[str, list[dict]]]:
    """tenant -> uploaded file name -> the receipts in results/ that name it (latest.json aside). Blocking."""
    found: dict[str, dict[str, list[dict]]] = {}
    for tenant in tenants:
        by_file: dict[str, list[dict]] = {}
        for path in server.results(tenant).glob("*.json"):
            if path.name == "latest.json" or path.name.startswith("."):
                continue
            with contextlib.suppress(OSError, ValueError):
                receipt = json.loads(path.read_text())
                by_file.setdefault(receipt["file"], []).append(receipt)
        found[tenant] = by_file
    return found


def missing(report: Report, uploads: list[dict] | None = None) -> list[str]:
    """Completed uploads (or those of `uploads`) without a final receipt yet."""
    gone = []
    for upload in report.load.get("completed", []) if uploads is None else uploads:
        receipts = report.receipts.get(upload["tenant"], {}).get(upload["name"], [])
        if not any(r.get("state") in FINAL_STATES for r in receipts):
            gone.append(f"{upload['tenant']}/{upload['name']}")
    return gone


def inbox_leftovers(server: Server, tenants: Sequence[str]) -> list[str]:
    assert server.state_dir is not None
    return sorted(f"{t}/{p.name}" for t in tenants for p in (server.state_dir / "tenants" / t / "inbox").iterdir())


# --- the checks -------------------------------------------------------------------------------------------


def _few(names: Sequence[str], n: int = 3) -> str:
    return ", ".join(name[:80] for name in names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def checks(report: Report) -> list[Check]:
    plan, completed = report.plan, report.load.get("completed", [])
    found: list[Check] = []

    unfinished, doubled = missing(report), []
    for upload in completed:
        if len(report.receipts.get(upload["tenant"], {}).get(upload["name"], [])) > 1:
            doubled.append(f"{upload['tenant']}/{upload['name']}")
    abandoned = {(a["tenant"], a["name"]) for a in report.load.get("abandoned", [])}
    published = [f"{t}/{name}" for t, by_file in report.receipts.items() for name in by_file if (t, name) in abandoned]
    figure = f"{len(completed) - len(unfinished) - len(doubled)} of {len(completed)} with one final receipt"
    for label, names in (("no final receipt", unfinished), ("several", doubled), ("abandoned but received", published)):
        if names:
            figure += f"; {label}: {len(names)} ({_few(names)})"
    found.append(Check("uploads answered", figure, "all, one receipt each", bool(completed) and not
                       (unfinished or doubled or published)))  # fmt: skip

    validated = [t for t, state in report.canaries.items() if state in ("accepted", "held")]
    canaries = ", ".join(f"{t} {s}" for t, s in sorted(report.canaries.items()))
    found.append(Check("validation after worker kills", f"{len(report.kills)} kills; canaries: {canaries or 'none'}",
                       "every canary accepted or held", bool(report.canaries) and
                       len(validated) == len(report.canaries)))  # fmt: skip

    found.append(Check("rosterd_sftp_sessions at the end", f"{report.sessions_end:g}" if report.sessions_end is not None
                       else "not read", "0", report.sessions_end == 0))  # fmt: skip

    (warm_rss, warm_fds), (end_rss, end_fds) = report.warm, report.end
    growth = end_rss / warm_rss - 1 if warm_rss else float("inf")
    found.append(Check("daemon RSS back to its warm-up value",
                       f"{end_rss / 1024:.0f} MiB against {warm_rss / 1024:.0f} MiB ({growth:+.0%})",
                       f"at most {RSS_MARGIN:+.0%}", growth <= RSS_MARGIN))  # fmt: skip
    found.append(Check("daemon open files back to their warm-up count", f"{end_fds} against {warm_fds}",
                       f"at most +{FD_SLACK}", end_fds <= warm_fds + FD_SLACK))  # fmt: skip

    found.append(Check("inboxes empty at the end", f"{len(report.inbox_left)} files" +
                       (f" ({_few(report.inbox_left)})" if report.inbox_left else ""), "0",
                       not report.inbox_left))  # fmt: skip

    trips = report.timeline.trips
    worst = max((ms for _, _, ms in trips), default=float("inf"))
    figure = f"worst {worst:.0f} ms over {len(trips)} ls; {len(report.probe_failures)} failed"
    if report.probe_failures:
        figure += f" ({_few(report.probe_failures, 1)})"
    found.append(Check("other tenants' ls round trips", figure, f"all < {plan.max_round_trip_ms:.0f} ms",
                       bool(trips) and worst < plan.max_round_trip_ms and not report.probe_failures))  # fmt: skip
    return found


# --- running it -------------------------------------------------------------------------------------------


def soak(plan: Plan, workdir: Path, say: Callable[[str], None] = print) -> Report:
    """Start a daemon under `workdir`, soak it by `plan`, stop it; the report holds the checks."""
    key = make_key(workdir / "client_ed25519", "soak client")
    server_options = {
        "max_sessions_per_ip": 100,  # every client is 127.0.0.1
        "login_grace_seconds": 30,
    }
    # The defender would ban 127.0.0.1, the address of every client here, for the refusals a leak causes; the
    # soak is after the leak itself. receipts_kept: every receipt of the run stays, so that each can be counted.
    sections = {"defender": {"enabled": False}}
    intake = {"settle_seconds": 0.5, "rescan_seconds": 10, "receipts_kept": 1_000_000}
    with rosterd_server(workdir, key, intake, tenants=plan.names, server=server_options, sections=sections,
                        nofile=plan.nofile) as server:  # fmt: skip
        say(f"rosterd (pid {server.pid}) on port {server.port}, tenants {', '.join(plan.names)}; "
            f"soaking for {plan.minutes:g} min")  # fmt: skip
        return asyncio.run(_Watch(server, key, plan, say).run())


def figures(report: Report) -> list[str]:
    """The run in a few lines: what the load did, the kills, the floods, the round trips per phase."""
    load = report.load
    actions = ", ".join(f"{kind} {n}" + (f" ({load['errors'][kind]} failed)" if load["errors"].get(kind) else "")
                        for kind, n in sorted(load.get("actions", {}).items()))  # fmt: skip
    states = Counter(r["state"] for by_file in report.receipts.values() for rs in by_file.values() for r in rs)
    floods = load.get("floods", [])
    lines = [
        f"actions: {actions}",
        f"receipts by state: {', '.join(f'{s} {n}' for s, n in sorted(states.items()))}",
        f"worker kills at: {', '.join(f'{t:.0f} s' for t, _ in report.kills) or 'none'}",
    ]
    if floods:
        total = {key: sum(f[key] for f in floods) for key in floods[0]}
        lines.append(f"floods: {len(floods)}, each of {report.plan.flood_reads} read handles and "
                     f"{report.plan.flood_uploads} uploads never closed; opened {total['reads']} and "
                     f"{total['uploads']}, refused {total['reads_refused']} and {total['uploads_refused']}")  # fmt: skip
    for kind, sample in sorted(load.get("error_samples", {}).items()):
        lines.append(f"first failure of {kind}: {sample}")
    peak = max((s[1] for s in report.samples), default=0)
    by_minute = {int(seconds // 60): kib for seconds, kib, _ in report.samples}  # the last sample of each minute
    lines.append(f"daemon RSS: warm-up {report.warm[0] / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, "
                 f"end {report.end[0] / 1024:.0f} MiB; at the end of each minute (MiB): "
                 + " ".join(f"{kib / 1024:.0f}" for _, kib in sorted(by_minute.items())))  # fmt: skip
    return lines


def table(report: Report) -> list[str]:
    lines = ["| check | figure | limit | result |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.figure} | {c.limit} | {'PASS' if c.ok else 'FAIL'} |" for c in report.checks]
    lines += ["", "| ls round trips | seconds | count | median ms | p99 ms | max ms |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for phase in PHASES:
        ms = report.timeline.samples(phase)
        lines.append(f"| {phase} | {report.timeline.durations.get(phase, 0):.0f} | {recording.round_trip_cells(ms)} |")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = Plan()
    parser = argparse.ArgumentParser(
        prog="bench/soak.py",
        description="Soak rosterd with uploads, abrupt disconnects, worker kills and handle floods, then check "
        "that nothing leaked. Exits 1 when a check fails.",
    )
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="load time, warm-up included")
    parser.add_argument("--tenants", type=int, default=defaults.tenants, help="tenants (one of them floods)")
    parser.add_argument("--warmup-seconds", type=float, default=defaults.warmup_seconds)
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every, help="seconds; 0: no kills")
    parser.add_argument("--flood-every", type=float, default=defaults.flood_every, help="seconds; 0: no floods")
    parser.add_argument("--flood-reads", type=int, default=defaults.flood_reads)
    parser.add_argument("--flood-uploads", type=int, default=defaults.flood_uploads)
    parser.add_argument("--max-round-trip-ms", type=float, default=defaults.max_round_trip_ms)
    parser.add_argument("--nofile", type=int, default=defaults.nofile,
                        help="the daemon's limit of open files, soft and hard")  # fmt: skip
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--tmp", type=Path, help="where the temporary folder goes (default: the system's)")
    parser.add_argument("--record", action="store_true", help=f"append the figures to {recording.RESULTS.name}")
    args = parser.parse_args(argv)
    if args.tenants < 2:
        parser.error("--tenants must be at least 2: one floods, the others upload")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    plan = Plan(minutes=args.minutes, tenants=args.tenants, warmup_seconds=args.warmup_seconds,
                kill_every=args.kill_every, flood_every=args.flood_every, flood_reads=args.flood_reads,
                flood_uploads=args.flood_uploads, max_round_trip_ms=args.max_round_trip_ms, nofile=args.nofile,
                seed=args.seed)  # fmt: skip

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        with tempfile.TemporaryDirectory(prefix="rosterd-soak-", dir=args.tmp, ignore_cleanup_errors=True) as work:
            report = soak(plan, Path(work), say)
    except BenchError as failure:
        print(f"\nsoak: FAILED: {failure}", file=sys.stderr)
        return 2
    context = [
        f"parameters: {plan.minutes:g} min ({plan.warmup_seconds:g} s warm-up), {plan.tenants} tenants "
        f"({len(plan.uploaders)} uploading and probing, 1 flooding), a worker killed every {plan.kill_every:g} s, "
        f"the daemon's open files limited to {plan.nofile}, seed {plan.seed}",
        *figures(report),
    ]
    recording.show("soak (bench/soak.py)", context, table(report), args.record)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
