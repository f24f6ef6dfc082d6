"""Measuring a stage against the floor: a bare polars read of the same package's CSVs as strings, which no
validator or pipeline can beat.

bench/validate.py (`rosterd validate`) and bench/diff.py (the worker's job on day 2) each time a child process
and the floor on the same zip, alternating them; both report their figures through `Figures` and
`figures_rows`, so their tables read alike.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The floor: open the zip and read every CSV in it as strings, keeping nothing.
FLOOR_CODE = """\
import sys, zipfile
import polars
with zipfile.ZipFile(sys.argv[1]) as zf:
    for name in zf.namelist():
        if name.lower().endswith(".csv"):
            polars.read_csv(zf.read(name), infer_schema=False)
"""


class BenchFailure(Exception):
    """A measured run did not do its job, so its figures mean nothing."""


@dataclass(frozen=True)
class Run:
    wall: float  # seconds
    rss_mib: float  # peak resident set size


@dataclass(frozen=True)
class Figures:
    """The runs of what is measured and of the floor."""

    measured: list[Run]
    floor: list[Run]

    @property
    def measured_wall(self) -> float:
        return statistics.median(r.wall for r in self.measured)

    @property
    def floor_wall(self) -> float:
        return statistics.median(r.wall for r in self.floor)

    @property
    def ratio(self) -> float:
        return self.measured_wall / self.floor_wall

    @property
    def measured_rss(self) -> float:
        return max(r.rss_mib for r in self.measured)

    @property
    def floor_rss(self) -> float:
        return max(r.rss_mib for r in self.floor)


def run_child(argv: Sequence[str]) -> tuple[Run, int, str, str]:
    """Run argv to completion: its wall time and peak RSS, exit code, stdout and stderr.

    Output goes to temporary files rather than pipes so the child never blocks on a full pipe, and the
    child is reaped with wait4 (not Popen.wait) because only wait4 hands back its resource usage."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return Run(wall, usage.ru_maxrss / 1024), proc.returncode, stdout, stderr  # ru_maxrss is KiB on Linux


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_floor(package: Path) -> Run:
    run, code, _, stderr = run_child([sys.executable, "-c", FLOOR_CODE, str(package)])
    if code != 0:
        raise BenchFailure(f"the floor read exited {code}\nstderr:\n{tail(stderr)}")
    return run


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def figures_rows(f: Figures, measured: str, max_ratio: float, max_rss_mib: int, ratio_digits: int) -> list[str]:
    """A Markdown table of `f` (it reads as well in a terminal as in RESULTS.md): the median wall times and
    their ratio, and the peak RSS, each against its target; `measured` heads the measured column."""
    return [
        f"| measure | {measured} | floor | target | result |",
        "|---|---:|---:|---|---|",
        f"| median wall (s) | {f.measured_wall:.2f} | {f.floor_wall:.2f} | | |",
        f"| wall ratio ({measured} / floor) | {f.ratio:.{ratio_digits}f} | | ≤ {max_ratio:.1f} "
        f"| {_verdict(f.ratio <= max_ratio)} |",
        f"| peak RSS, max over runs (MiB) | {f.measured_rss:.0f} | {f.floor_rss:.0f} | ≤ {max_rss_mib} "
        f"| {_verdict(f.measured_rss <= max_rss_mib)} |",
    ]
