"""Appending a dated entry to bench/RESULTS.md for the SFTP benchmarks: when, on what machine, at which commit.

The machine is described the way a person would check it by hand: `nproc`, `free -g`, `uname -m` and the
Python version. The commit is `git rev-parse --short HEAD`, marked when daemon/ differs from it, since the
daemon under test is the working tree (the package is installed in editable mode), not the commit.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "RESULTS.md"


def _run(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, cwd=BENCH, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _ram_gib() -> str:
    for line in _run(["free", "-g"]).splitlines():
        if line.startswith("Mem:"):
            return f"{line.split()[1]} GiB RAM (free -g)"
    return "RAM unknown"


def machine() -> str:
    cores = _run(["nproc"]) or str(os.cpu_count())
    arch = _run(["uname", "-m"]) or platform.machine()
    system = f"{platform.system()} {platform.release()} {arch}"
    return f"{system}, {cores} cores, {_ram_gib()}; Python {platform.python_version()}"


def commit() -> str:
    head = _run(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    status = _run(["git", "status", "--porcelain", "--", "../daemon"])  # lines: "XY path"
    changed = [line.split(maxsplit=1)[-1] for line in status.splitlines()]
    if not changed:
        return head
    return f"{head}, with uncommitted changes in {', '.join(changed)}"


def heading(title: str) -> str:
    return f"## {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC: {title}"


def append(title: str, lines: Sequence[str]) -> None:
    entry = ["", heading(title), "", f"- machine: {machine()}", f"- commit: {commit()}", *lines]
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write("\n".join(entry) + "\n")
    print(f"recorded in {RESULTS}")


def show(title: str, context: Sequence[str], table: Sequence[str], record: bool) -> None:
    """Print a run's context lines and figures table; with `record`, append them as an entry titled `title`."""
    print()
    print("\n".join(context))
    print()
    print("\n".join(table))
    if record:
        append(title, [*(f"- {line}" for line in context), "", *table])


def p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def round_trip_cells(ms: Sequence[float]) -> str:
    """Table cells for a series of round trips in milliseconds: count, median, p99, maximum."""
    if not ms:
        return "0 | | | "
    return f"{len(ms)} | {statistics.median(ms):.1f} | {p99(ms):.1f} | {max(ms):.1f}"
