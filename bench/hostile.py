"""The hostile and broken uploads of tests/hostile.py at sizes too large for the test suite, against a daemon.

tests/e2e/test_hostile.py proves each case is answered; this asks what answering costs when the case is
big: a 1 GiB line, a 1 GiB zip bomb, a header of a million columns, a zip of 100,000 entries. It starts
`rosterd serve` on a free loopback port with one tenant, puts a valid baseline (so that accepted cases are
diffed against it, as in production), then each case with OpenSSH's sftp, one at a time so each is measured
alone; it waits for each receipt in results/ and prints: the receipt's state (and whether it is the one the
case expects), its codes, the validation time the daemon logged, and the peak resident memory of the
daemon's processes (the server and its validation workers, summed, sampled every 20 ms while the case was
in flight).

    .venv/bin/python bench/hostile.py                    # the large sizes
    .venv/bin/python bench/hostile.py --scale test       # the sizes of the test suite
    .venv/bin/python bench/hostile.py --max-ratio 1e9    # let compressible giants past the zip bomb limit
    .venv/bin/python bench/hostile.py --only one-100mb-line --only header-100k-columns

With the default limits most giants are stopped before they are read (zip.ratio_exceeded, zip.too_large);
`--max-ratio` turns the ratio limit off so that a 1 GiB line really reaches the validator. The script only
measures: it exits 0 whatever the states, and 1 when the daemon dies or a receipt does not come.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from servers import (
    LOOPBACK,
    TENANT,
    BenchError,
    Server,
    free_port,
    make_key,
    proc_stats,
    public_key_line,
    rosterd_config,
    rss_kib,
    sftp_batch,
    tail,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for tests.hostile

from tests.hostile import MIB, Case, Scale, build_cases, valid_zip  # noqa: E402

ROSTERD = Path(sys.executable).parent / "rosterd"
LARGE = Scale(
    long_line_bytes=1024 * MIB,
    bomb_bytes=1024 * MIB,
    size_lie_bytes=1024 * MIB,
    header_columns=1_000_000,
    many_entries=100_000,
    over_limit_line_bytes=256 * MIB,
    near_limit_line_bytes=1_000_000,
    long_value_bytes=1_000_000,
    header_cell_bytes=1_000_000,
)
SCALES = {"large": LARGE, "test": Scale()}
BASELINE = Case("baseline", valid_zip(), set(), accepted=True, note="the valid package every case is made from")
RECEIPT_TIMEOUT = 900.0
SAMPLE_SECONDS = 0.02
FINAL = ("accepted", "rejected", "duplicate", "held")


@dataclass
class Outcome:
    case: Case
    file: str
    state: str
    codes: list[str]
    validation_ms: int | None  # as the daemon logged it (upload.accepted / upload.rejected elapsed_ms)
    wall_s: float  # from the end of the put to the final receipt
    peak_mib: float  # the daemon's processes, summed

    @property
    def as_expected(self) -> bool:
        want = "accepted" if self.case.accepted else "rejected"
        return self.state == want and (self.case.expect or set()) <= set(self.codes)


# --- the daemon -------------------------------------------------------------------------------------------


@contextmanager
def daemon(workdir: Path, key: Path, max_ratio: float | None) -> Iterator[tuple[Server, subprocess.Popen]]:
    """`rosterd serve` with the tenant TENANT; its own process group, so its workers can be measured."""
    home = workdir / "rosterd"
    home.mkdir()
    port = free_port()
    config = rosterd_config(port, home / "state", public_key_line(key), {"settle_seconds": 0.5})
    if max_ratio is not None:
        config += f"\n[validation]\nmax_ratio = {max_ratio}\n"
    (home / "rosterd.toml").write_text(config)
    log = home / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(ROSTERD), "serve", "--config", str(home / "rosterd.toml")],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while '"daemon.started"' not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"rosterd did not start:\n{tail(log)}")
            time.sleep(0.05)
        yield Server("rosterd", port, TENANT, "/inbox", log, home / "state"), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def group_rss_mib(group: int) -> float:
    """The resident memory of every process in a process group, summed (from /proc)."""
    total = 0
    for pid, fields in proc_stats():
        if int(fields[2]) == group:  # pgrp
            with suppress(OSError):  # gone meanwhile
                total += rss_kib(pid)
    return total / 1024


class PeakSampler:
    """Samples a process group's memory in a thread; `peak` is the largest sum seen since the last reset."""

    def __init__(self, group: int) -> None:
        self.group = group
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, group_rss_mib(self.group))

    def reset(self) -> None:
        self.peak = group_rss_mib(self.group)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


# --- one case ---------------------------------------------------------------------------------------------


def receipt_of(results: Path, name: str, proc: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + RECEIPT_TIMEOUT
    while time.monotonic() < deadline:
        for path in results.glob(f"{name}.u-*.json"):
            receipt = json.loads(path.read_text())
            if receipt.get("state") in FINAL:
                return receipt
        if proc.poll() is not None:
            raise BenchError(f"rosterd died (exit {proc.returncode}) while {name} was validated:\n{tail(log)}")
        time.sleep(0.05)
    raise BenchError(f"no receipt for {name} within {RECEIPT_TIMEOUT:.0f} s: a hang?\n{tail(log)}")


def validation_ms(log: Path, upload_id: str) -> int | None:
    for line in log.read_text(errors="replace").splitlines():
        if upload_id in line and line.startswith("{"):
            event = json.loads(line)
            if event.get("event") in ("upload.accepted", "upload.rejected", "upload.held"):
                return event.get("elapsed_ms")
    return None


def run_case(server: Server, proc: subprocess.Popen, key: Path, workdir: Path, number: int, case: Case,
             sampler: PeakSampler) -> Outcome:  # fmt: skip
    name = f"{number:02d}-{case.name}.zip"
    (workdir / name).write_bytes(case.data)
    sampler.reset()
    sent = sftp_batch(server, key, [f"put {workdir / name} inbox/{name}"], workdir / ".batch", timeout=600)
    if sent.returncode != 0:
        raise BenchError(f"sftp could not put {name}:\n{sent.stderr[-2000:]}")
    put_done = time.monotonic()
    receipt = receipt_of(server.state_dir / "tenants" / TENANT / "results", name, proc, server.log)
    wall = time.monotonic() - put_done
    time.sleep(SAMPLE_SECONDS * 3)  # one more sample after the receipt
    codes = sorted((receipt.get("validation") or {}).get("counts_by_code", {}))
    if not codes and receipt.get("detail"):
        codes = [f"({receipt['detail'][:60]})"]
    (workdir / name).unlink()
    return Outcome(case, name, receipt["state"], codes, validation_ms(server.log, receipt["upload_id"]), wall,
                   sampler.peak)  # fmt: skip


# --- the run ----------------------------------------------------------------------------------------------


def print_row(o: Outcome, expected: str | None = None) -> None:
    mark = expected or ("ok" if o.as_expected else "UNEXPECTED")
    ms = "-" if o.validation_ms is None else f"{o.validation_ms}"
    codes = ", ".join(o.codes)
    print(f"{o.file:<40} {len(o.case.data) / 1e6:>8.2f} {o.state:<9} {mark:<10} {ms:>8} {o.wall_s:>7.2f} "
          f"{o.peak_mib:>8.0f}  {codes}", flush=True)  # fmt: skip


def run_all(cases: list[Case], max_ratio: float | None) -> list[Outcome]:
    """A daemon, a valid baseline, then every case in turn, each printed as soon as its receipt is in."""
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="rosterd-hostile-") as tmp:
        workdir = Path(tmp)
        key = make_key(workdir / "client_ed25519", "bench hostile")
        with daemon(workdir, key, max_ratio) as (server, proc), PeakSampler(proc.pid) as sampler:
            print(f"rosterd on {LOOPBACK}:{server.port}, idle at {group_rss_mib(proc.pid):.0f} MiB; "
                  f"max_ratio {max_ratio or 'default'}\n")  # fmt: skip
            print(f"{'upload':<40} {'MB':>8} {'state':<9} {'expected':<10} {'valid ms':>8} {'wall s':>7} "
                  f"{'peak MiB':>8}  codes")  # fmt: skip
            baseline = run_case(server, proc, key, workdir, 0, BASELINE, sampler)
            if baseline.state != "accepted":
                raise BenchError(f"the valid baseline was {baseline.state}: {baseline.codes}")
            print_row(baseline, expected="-")
            for number, case in enumerate(cases, start=1):
                outcomes.append(run_case(server, proc, key, workdir, number, case, sampler))
                print_row(outcomes[-1])
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="large", help="case sizes (default large)")
    parser.add_argument("--max-ratio", type=float, help="the daemon's [validation] max_ratio (default: its own)")
    parser.add_argument("--only", action="append", default=[], help="run only this case (repeatable)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    cases = build_cases(SCALES[args.scale])
    unknown = set(args.only) - {c.name for c in cases}
    if unknown:
        parser.error(f"no such case: {', '.join(sorted(unknown))}")
    cases = [c for c in cases if not args.only or c.name in args.only]
    print(f"{len(cases)} cases built in {time.monotonic() - started:.1f} s, "
          f"{sum(len(c.data) for c in cases) / 1e6:.1f} MB in all", flush=True)  # fmt: skip
    try:
        outcomes = run_all(cases, args.max_ratio)
    except BenchError as exc:
        print(f"\nstopped: {exc}", file=sys.stderr)
        return 1
    unexpected = [o.case.name for o in outcomes if not o.as_expected]
    slowest = max(outcomes, key=lambda o: o.wall_s)
    biggest = max(outcomes, key=lambda o: o.peak_mib)
    print(f"\n{len(outcomes)} cases; as expected: {len(outcomes) - len(unexpected)}"
          f"{'; not: ' + ', '.join(unexpected) if unexpected else ''}")  # fmt: skip
    print(f"slowest: {slowest.case.name} {slowest.wall_s:.1f} s; largest peak: {biggest.case.name} "
          f"{biggest.peak_mib:.0f} MiB; total {time.monotonic() - started:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
