"""A longer crash proof than CI runs: tests/e2e/test_crash.py over many seeds (each a different series of
kill -9 moments across uploads and webhook deliveries), with a tally at the end.

    .venv/bin/python bench/crash.py --seeds 20          # seeds 1..20
    .venv/bin/python bench/crash.py --first 100 --seeds 5

Each seed runs in its own pytest process; a failing seed is printed with the end of its output, and the
exit status is 1 when any seed failed (the failure is a real finding: rerun it with ROSTERD_CRASH_SEED=N).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="how many seeds (default 10)")
    parser.add_argument("--first", type=int, default=1, help="the first seed (default 1)")
    args = parser.parse_args(argv)
    failed, seconds = [], []
    for seed in range(args.first, args.first + args.seeds):
        started = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/e2e/test_crash.py"],
                             cwd=ROOT, env={**os.environ, "ROSTERD_CRASH_SEED": str(seed)}, capture_output=True,
                             text=True)  # fmt: skip
        seconds.append(time.monotonic() - started)
        verdict = "ok" if run.returncode == 0 else "FAILED"
        print(f"seed {seed:>4}: {verdict} in {seconds[-1]:.1f} s", flush=True)
        if run.returncode != 0:
            failed.append(seed)
            print("\n".join(run.stdout.splitlines()[-30:]), flush=True)
    print(f"\n{args.seeds - len(failed)} of {args.seeds} seeds passed; median {statistics.median(seconds):.1f} s per "
          f"series" + (f"; failed seeds: {failed}" if failed else ""))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
