"""How long `rosterd validate` takes on a district-sized package, and how much memory it needs, set against
the floor: a bare polars read of the same CSVs as strings, which no validator can beat.

Targets: validation within 2x the floor's wall time, and under 1 GiB peak RSS. This prints figures and
exits 0 whatever they are; it exits non-zero only when a run fails (validation or the floor read).

    .venv/bin/python bench/validate.py [--schools N] [--version 1.1] [--runs 3] [--out DIR] [--record]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from floor import BenchFailure, Figures, Run, figures_rows, run_child, run_floor, tail

from daemon.oneroster import schema
from daemon.generator.generate import DistrictSpec, generate, write_zip

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "RESULTS.md"
MAX_RATIO = 2.0
MAX_RSS_MIB = 1024
MiB = 1024 * 1024

# Pinned here rather than taken from DistrictSpec's defaults, so the load only changes when this file does.
STUDENTS_PER_SCHOOL = 450
TEACHERS_PER_SCHOOL = 25
ENROLLMENTS_PER_STUDENT = 6

RESULTS_HEADING = """\
# Validation benchmark results

Entries appended by `bench/validate.py --record`, oldest first. Each compares `rosterd validate` with the
floor (a plain polars read of the same CSVs) on a generated district; see `bench/README.md`.
"""


@dataclass(frozen=True)
class Package:
    path: Path
    spec: DistrictSpec
    rows: dict[str, int]  # data rows per table, from the generator
    zip_bytes: int
    csv_bytes: int  # uncompressed, every .csv entry including the manifest


# --- the package ------------------------------------------------------------------------------------------


def _cache_stem(spec: DistrictSpec) -> str:
    return (
        f"district-{spec.version}-{spec.schools}sch-{spec.students_per_school}stu-"
        f"{spec.teachers_per_school}tch-{spec.enrollments_per_student}enr-seed{spec.seed}"
    )


def _measure_zip(path: Path, spec: DistrictSpec, rows: dict[str, int]) -> Package:
    with zipfile.ZipFile(path) as zf:
        csv_bytes = sum(i.file_size for i in zf.infolist() if i.filename.lower().endswith(".csv"))
    return Package(path, spec, rows, path.stat().st_size, csv_bytes)


def prepare_package(spec: DistrictSpec, out: Path) -> Package:
    """The district zip for `spec` under `out`, generated unless a complete earlier one is there.

    The sidecar JSON is written last, so a zip without one (an interrupted run) is never reused."""
    out.mkdir(parents=True, exist_ok=True)
    stem = _cache_stem(spec)
    path, sidecar = out / f"{stem}.zip", out / f"{stem}.json"
    if path.is_file() and sidecar.is_file():
        saved = json.loads(sidecar.read_text())
        if saved.get("spec") == dataclasses.asdict(spec):
            print(f"reusing {path}")
            return _measure_zip(path, spec, saved["rows"])
    print(f"generating {path} ...", flush=True)
    started = time.perf_counter()
    tables = generate(spec)
    rows = {entity: frame.height for entity, frame in tables.items()}
    partial = path.with_name(path.name + ".partial")
    write_zip(tables, partial, spec.version)
    del tables
    gc.collect()
    os.replace(partial, path)
    sidecar.write_text(json.dumps({"spec": dataclasses.asdict(spec), "rows": rows}, indent=2) + "\n")
    print(f"generated in {time.perf_counter() - started:.1f} s")
    return _measure_zip(path, spec, rows)


def describe_package(package: Package) -> list[str]:
    rows = ", ".join(f"{entity} {n:,}" for entity, n in package.rows.items())
    return [
        f"zip {package.zip_bytes / MiB:,.1f} MiB, CSV uncompressed {package.csv_bytes / MiB:,.1f} MiB",
        f"rows {sum(package.rows.values()):,}: {rows}",
    ]


# --- measuring --------------------------------------------------------------------------------------------


def run_validate(rosterd: Path, package: Path) -> Run:
    run, code, stdout, stderr = run_child([str(rosterd), "validate", str(package), "--format", "json"])
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        report = {}
    verdict = report.get("verdict")
    if code != 0 or verdict != "accepted":
        counts = report.get("counts_by_code") or {}
        findings = ", ".join(f"{c} x{n}" for c, n in sorted(counts.items())) or "none reported"
        raise BenchFailure(
            f"rosterd validate exited {code} with verdict {verdict!r} (wanted 0 and 'accepted')\n"
            f"findings: {findings}\nstderr:\n{tail(stderr) or '(empty)'}"
            + ("" if report else f"\nstdout:\n{tail(stdout) or '(empty)'}")
        )
    return run


def measure(rosterd: Path, package: Path, runs: int) -> Figures:
    """Alternate validate and floor so a change in the machine's load falls on both alike."""
    with package.open("rb") as f:  # warm the page cache so the first run does not pay for the disk
        while f.read(16 * MiB):
            pass
    validate, floor = [], []
    for i in range(1, runs + 1):
        validate.append(run_validate(rosterd, package))
        print(f"  run {i}/{runs} validate {validate[-1].wall:7.2f} s {validate[-1].rss_mib:7.0f} MiB", flush=True)
        floor.append(run_floor(package))
        print(f"  run {i}/{runs} floor    {floor[-1].wall:7.2f} s {floor[-1].rss_mib:7.0f} MiB", flush=True)
    return Figures(validate, floor)


# --- reporting --------------------------------------------------------------------------------------------


def figures_table(f: Figures) -> list[str]:
    return figures_rows(f, "validate", MAX_RATIO, MAX_RSS_MIB, ratio_digits=2)


def _total_ram() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    except OSError:
        pass
    return "RAM unknown"


def _commit() -> str:
    """The commit measured, marked when the working tree differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=BENCH,
                               capture_output=True, text=True)  # fmt: skip
    except OSError:
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def record(package: Package, runs: int, figures: Figures) -> None:
    spec = package.spec
    entry = [
        "",
        f"## {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {platform.platform()}, {os.cpu_count()} cores, {_total_ram()}; "
        f"Python {platform.python_version()}, polars {pl.__version__}",
        f"- commit: {_commit()}",
        f"- parameters: OneRoster {spec.version}, {spec.schools} schools x {spec.students_per_school} students, "
        f"{spec.teachers_per_school} teachers, {spec.enrollments_per_student} enrollments per student, "
        f"seed {spec.seed}; {runs} run(s) each",
        *(f"- {line}" for line in describe_package(package)),
        "",
        *figures_table(figures),
    ]
    text = "\n".join(entry) + "\n"
    if not RESULTS.exists():
        text = RESULTS_HEADING + text
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(text)
    print(f"recorded in {RESULTS}")


# --- command line -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/validate.py",
        description="Time `rosterd validate` and its peak memory on a generated district, against a plain "
        "polars read of the same CSVs. Prints figures; exits non-zero only if a run fails.",
    )
    parser.add_argument("--schools", type=int, default=1000, help="schools in the district (default %(default)s)")
    parser.add_argument("--version", choices=sorted(schema.VERSIONS), default="1.1", help="OneRoster version")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (default %(default)s)")
    parser.add_argument("--out", type=Path, default=BENCH / "out", help="where generated districts are cached")
    parser.add_argument("--record", action="store_true", help=f"append the results to {RESULTS.name}")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rosterd = Path(sys.executable).parent / "rosterd"
    if not rosterd.is_file():
        print(f"bench: no rosterd console script next to {sys.executable}; run `make bench`", file=sys.stderr)
        return 2
    spec = DistrictSpec(
        schools=args.schools, students_per_school=STUDENTS_PER_SCHOOL, teachers_per_school=TEACHERS_PER_SCHOOL,
        enrollments_per_student=ENROLLMENTS_PER_STUDENT, version=args.version,
    )  # fmt: skip
    package = prepare_package(spec, args.out)
    print("\n".join(describe_package(package)))
    print(f"measuring {args.runs} run(s) each, alternating validate and floor")
    try:
        figures = measure(rosterd, package.path, args.runs)
    except BenchFailure as failure:
        print(f"\nbench: FAILED: {failure}", file=sys.stderr)
        return 1
    print()
    print("\n".join(figures_table(figures)))
    if args.record:
        record(package, args.runs, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
