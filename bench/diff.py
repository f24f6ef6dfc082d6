"""What it costs to turn a district's nightly upload into its next snapshot and change set, against the floor
of merely reading the upload's CSVs.

Day 1 is the validator benchmark's district (cached in bench/out/ and shared with bench/validate.py); day 2 is
the same district after about 2% churn (students leaving and arriving with their enrollments, teachers'
e-mail changes, classes changing period: daemon/generator/churn.py), as a bulk package. Day 1's snapshot is
prepared untimed. Each timed run is a child process that does what the daemon's worker does with day 2:
validate it, read day 1's snapshot, merge, resolve references, diff, and write the new snapshot and its
change set (Parquet, fsynced) into a temporary folder. It must find exactly the churn's counts, or its
figures mean nothing. The floor is a plain polars read of day 2's CSVs as strings, in the same run.

Targets: at most 2.5x the floor's wall time, at most 1.5 GiB peak RSS. This prints figures and exits 0
whatever they are; it exits non-zero only when a run fails.

    .venv/bin/python bench/diff.py [--schools N] [--share 0.02] [--runs 3] [--read-whole] [--out DIR] [--record]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

import recording
from floor import BenchFailure, Figures, Run, figures_rows, run_child, run_floor, tail
from validate import (
    ENROLLMENTS_PER_STUDENT, STUDENTS_PER_SCHOOL, TEACHERS_PER_SCHOOL, _cache_stem, _measure_zip, describe_package,
    prepare_package,
)  # fmt: skip

from daemon.generator.churn import Churn, churn
from daemon.generator.generate import DistrictSpec, generate, write_zip

MAX_RATIO = 2.5
MAX_RSS_MIB = 1536
PHASES = ("validate", "read", "merge", "references", "diff", "write")


@dataclass(frozen=True)
class DayTwo:
    path: Path
    churn: Churn
    expected: dict[str, dict[str, int]]


@dataclass(frozen=True)
class PipelineFigures(Figures):
    """The pipeline's runs (`measured`) and the floor's, with what each timed child measured of itself."""

    phases: list[dict[str, float]]  # seconds per phase, as each timed child measured itself
    peaks: list[dict[str, int]]  # peak RSS (MiB) at the end of each phase, in each timed child

    def phase(self, name: str) -> float:
        return statistics.median(p[name] for p in self.phases)

    def peak_after(self, name: str) -> int:
        return max(p[name] for p in self.peaks)


# --- inputs ----------------------------------------------------------------------------------------------------


def prepare_day_two(spec: DistrictSpec, share: float, out: Path) -> DayTwo:
    """Day 2 of `spec`'s district as a bulk zip under `out`, generated unless a complete earlier one is there."""
    stem = f"{_cache_stem(spec)}-day2-churn{share:g}"
    path, sidecar = out / f"{stem}.zip", out / f"{stem}.json"
    if path.is_file() and sidecar.is_file():
        saved = json.loads(sidecar.read_text())
        if saved.get("spec") == dataclasses.asdict(spec):
            print(f"reusing {path}")
            return DayTwo(path, Churn(**saved["churn"]), saved["expected"])
    print(f"generating {path} ...", flush=True)
    started = time.perf_counter()
    tables = generate(spec)
    spec_churn = Churn.about(tables, share, spec.seed)
    day2 = churn(tables, spec.version, spec_churn)
    del tables
    partial = path.with_name(path.name + ".partial")
    write_zip(day2.bulk, partial, spec.version)
    os.replace(partial, path)
    sidecar.write_text(json.dumps({"spec": dataclasses.asdict(spec), "churn": dataclasses.asdict(spec_churn),
                                   "expected": day2.expected}, indent=2) + "\n")  # fmt: skip
    print(f"generated in {time.perf_counter() - started:.1f} s")
    return DayTwo(path, spec_churn, day2.expected)


def prepare_snapshot(day1: Path, folder: Path) -> None:
    """Day 1's snapshot, as the daemon would have stored it (untimed)."""
    from daemon.snapshots.diff import merge_package
    from daemon.oneroster.validate import validate_package
    from daemon.snapshots.storage import write_frames

    print("preparing day 1's snapshot (untimed) ...", flush=True)
    result = validate_package(day1)
    if not result.accepted:
        raise BenchFailure(f"day 1 was rejected: {dict(result.findings.counts)}")
    write_frames(folder, merge_package(None, result.roster))


# --- the timed child -----------------------------------------------------------------------------------------------


def child(snapshot: Path, package: Path, out: Path, scan: bool) -> int:
    """Day 2 against day 1's snapshot, as the daemon's worker does it; prints phase times and counts as JSON.

    With `scan`, day 1's snapshot is scanned (LazyFrames) rather than read, so only what the diff needs of
    it is ever in memory."""
    from daemon.snapshots.diff import check_snapshot_references, diff_snapshots, merge_package
    from daemon.oneroster.validate import validate_package
    from daemon.snapshots.storage import read_frames, write_frames

    times: dict[str, float] = {}
    peaks: dict[str, int] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[name], clock = now - clock, now
        peaks[name] = _peak_rss_mib()

    result = validate_package(package)
    lap("validate")
    if not result.accepted:
        print(json.dumps({"error": "day 2 was rejected", "counts_by_code": dict(result.findings.counts)}))
        return 1
    previous = {p.stem: pl.scan_parquet(p) for p in sorted(snapshot.glob("*.parquet"))} if scan else (
        read_frames(snapshot))  # fmt: skip
    lap("read")
    frames = merge_package(previous, result.roster)
    lap("merge")
    dangling = check_snapshot_references(frames, result.roster.version, result.roster)
    lap("references")
    changes = diff_snapshots(previous, frames)
    lap("diff")
    write_frames(out / "snapshot", frames)
    (out / "snapshot" / "changes").mkdir()
    changes.write(out / "snapshot" / "changes")
    lap("write")
    print(json.dumps({"phases": times, "peaks": peaks, "counts": changes.counts(), "dangling": dict(dangling.counts)}))
    return 0


def _peak_rss_mib() -> int:
    """The process's peak resident memory so far (VmHWM), to see which phase sets the peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


def run_pipeline(snapshot: Path, day2: DayTwo, scratch: Path, scan: bool) -> tuple[Run, dict[str, float], dict[str, int]]:
    argv = [sys.executable, __file__, "--child", str(snapshot), str(day2.path)]
    with tempfile.TemporaryDirectory(dir=scratch) as out:
        run, code, stdout, stderr = run_child([*argv, out, *([] if scan else ["--read-whole"])])
    try:
        report = json.loads(stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        report = {}
    if code != 0 or "phases" not in report:
        raise BenchFailure(f"the pipeline exited {code}: {report or tail(stdout)}\nstderr:\n{tail(stderr) or '(empty)'}")
    if report["counts"] != day2.expected or report["dangling"]:
        raise BenchFailure(f"the change set is wrong: {report['counts']} (dangling {report['dangling']}), "
                           f"expected {day2.expected}")  # fmt: skip
    return run, report["phases"], report["peaks"]


def measure(snapshot: Path, day2: DayTwo, runs: int, scratch: Path, scan: bool) -> PipelineFigures:
    """Alternate pipeline and floor so a change in the machine's load falls on both alike."""
    for path in (day2.path, *snapshot.iterdir()):  # warm the page cache: neither side pays for the disk
        path.read_bytes()
    pipeline, floor, phases, peaks = [], [], [], []
    for i in range(1, runs + 1):
        run, times, peak = run_pipeline(snapshot, day2, scratch, scan)
        pipeline.append(run)
        phases.append(times)
        peaks.append(peak)
        shown = ", ".join(f"{name} {times[name]:.2f} s/{peak[name]} MiB" for name in PHASES)
        print(f"  run {i}/{runs} pipeline {run.wall:7.2f} s {run.rss_mib:7.0f} MiB  ({shown})", flush=True)
        floor.append(run_floor(day2.path))
        print(f"  run {i}/{runs} floor    {floor[-1].wall:7.2f} s {floor[-1].rss_mib:7.0f} MiB", flush=True)
    return PipelineFigures(pipeline, floor, phases, peaks)


# --- reporting -------------------------------------------------------------------------------------------------


def figures_table(f: PipelineFigures) -> list[str]:
    return [
        *figures_rows(f, "pipeline", MAX_RATIO, MAX_RSS_MIB, ratio_digits=3),
        "| median per phase (s), in the child | " + ", ".join(f"{p} {f.phase(p):.2f}" for p in PHASES) + " | | | |",
        "| peak RSS after each phase (MiB) | " + ", ".join(f"{p} {f.peak_after(p)}" for p in PHASES) + " | | | |",
    ]


def describe(day2: DayTwo) -> list[str]:
    c = day2.churn
    changed = sum(sum(counts.values()) for counts in day2.expected.values())
    per_entity = ", ".join(f"{e} +{n['added']:,}/~{n['updated']:,}/-{n['deleted']:,}"
                           for e, n in day2.expected.items() if sum(n.values()))  # fmt: skip
    return [
        f"day 2: {c.withdrawn:,} students leave and {c.arrivals:,} arrive (with their enrollments), "
        f"{c.new_emails:,} teachers' e-mails and {c.period_changes:,} classes' periods change",
        f"day 2 changes {changed:,} rows: {per_entity}",
    ]


# --- command line ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/diff.py",
        description="Time validate + merge + diff + snapshot write of a day-2 upload against day 1's snapshot, "
        "and its peak memory, against a plain polars read of day 2's CSVs. Prints figures; exits non-zero only "
        "if a run fails.",
    )
    parser.add_argument("--schools", type=int, default=1000, help="schools in the district (default %(default)s)")
    parser.add_argument("--share", type=float, default=0.02, help="share of rows day 2 changes (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (default %(default)s)")
    parser.add_argument("--out", type=Path, default=recording.BENCH / "out", help="where generated districts are cached")
    parser.add_argument("--read-whole", dest="scan", action="store_false",
                        help="read day 1's snapshot whole instead of scanning it (LazyFrames) as the daemon does")  # fmt: skip
    parser.add_argument("--record", action="store_true", help=f"append the results to {recording.RESULTS.name}")
    parser.add_argument("--child", nargs=3, metavar=("SNAPSHOT", "ZIP", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(*map(Path, args.child), args.scan)
    spec = DistrictSpec(
        schools=args.schools, students_per_school=STUDENTS_PER_SCHOOL, teachers_per_school=TEACHERS_PER_SCHOOL,
        enrollments_per_student=ENROLLMENTS_PER_STUDENT, version="1.1",
    )  # fmt: skip
    day1 = prepare_package(spec, args.out)
    day2 = prepare_day_two(spec, args.share, args.out)
    gc.collect()
    print("\n".join(["day 1: " + line for line in describe_package(day1)] + describe(day2)))
    print(f"day 2 zip {day2.path.stat().st_size / 2**20:,.1f} MiB")
    try:
        with tempfile.TemporaryDirectory(dir=args.out, prefix="diff-bench-") as scratch:
            snapshot = Path(scratch) / "day1"
            prepare_snapshot(day1.path, snapshot)
            print(f"measuring {args.runs} run(s) each, alternating pipeline and floor")
            figures = measure(snapshot, day2, args.runs, Path(scratch), args.scan)
    except BenchFailure as failure:
        print(f"\nbench: FAILED: {failure}", file=sys.stderr)
        return 1
    print()
    table = figures_table(figures)
    print("\n".join(table))
    if args.record:
        day2_package = _measure_zip(day2.path, spec, {})
        context = [
            f"parameters: OneRoster {spec.version}, {spec.schools} schools x {spec.students_per_school} students, "
            f"{spec.teachers_per_school} teachers, {spec.enrollments_per_student} enrollments per student, "
            f"seed {spec.seed}, churn share {args.share:g}; {args.runs} run(s) each; polars {pl.__version__}",
            "day 1's snapshot " + ("scanned (LazyFrames, only what the diff needs is read, as the daemon does)" if args.scan
                                   else "read whole (read_frames), as daemon/snapshots/job.py does"),
            *(f"day 1: {line}" for line in describe_package(day1)), *describe(day2),
            f"day 2 zip {day2_package.zip_bytes / 2**20:,.1f} MiB, CSV uncompressed "
            f"{day2_package.csv_bytes / 2**20:,.1f} MiB",
        ]  # fmt: skip
        recording.append("diff (bench/diff.py)", [*(f"- {line}" for line in context), "", *table])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
