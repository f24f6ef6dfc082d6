"""One scripted session, recorded so that a change meant to keep behaviour can be checked to have kept it.

A refactor (moving modules, typing the seams between stages) must leave what a district and an operator see
exactly as it was: the receipts, the log events, the CLI's answers. This script plays the same session
against a fresh `rosterd serve` every time and writes what came out, with everything that differs from run
to run (upload and delivery ids, times, durations, ports, temporary paths) replaced by stable stand-ins:

1. tenant `north`, with a CERS target in dry-run mode, puts `valid-1.1-bulk.zip` (accepted, delivered),
2. `broken-school-not-a-school.zip` (rejected), `valid-1.1-bulk.zip` again (a duplicate),
3. `valid-1.1-delta.zip` (accepted: a delta),
4. a bulk package without the students of the second school (held: over 10% of users deleted), which
   `rosterd approve` then applies,
5. then `rosterd status`, `snapshots` and `outbox` (JSON) are asked, and the daemon is stopped (SIGTERM).

Uploads go one at a time with OpenSSH's sftp, each waited for until its receipt (and, when accepted, its
delivery) is final, so the order of events is the same on every run.

    .venv/bin/python bench/session.py --out before.json          # on the old tree
    .venv/bin/python bench/session.py --out after.json --compare before.json

With --compare it prints every difference and exits 1 if there is one. Not a benchmark: nothing is timed.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from servers import TENANT, BenchError, make_key, rosterd_server, sftp_batch

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
ROSTERD = Path(sys.executable).parent / "rosterd"
FINAL = {"accepted", "rejected", "duplicate", "held", "failed", "discarded", "superseded"}
WAIT_SECONDS = 120.0
CERS_DRY_RUN = '\n[[tenants.targets]]\ntype = "cers"\ndry_run = true\n'
INTAKE = {"settle_seconds": 0.5, "rescan_seconds": 3600}

# What changes from run to run, and what stands for it.
_IDS = re.compile(r"\b(u|d)-\d{8}T\d{6}Z-[0-9a-f]{6}\b")
_FINGERPRINTS = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_TIMES = re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?\b")
_VOLATILE_KEYS = {"elapsed_ms", "duration_ms", "pid", "port", "health_port", "ts", "timestamp", "time",
                  "remote_port", "session_id", "open_files_limit", "age_seconds", "workers_pids"}  # fmt: skip


def without_second_school(bulk: Path) -> bytes:
    """The bulk package with the students of school 2 (sourcedIds stu-0002-...) and their rows left out."""
    out = io.BytesIO()
    with zipfile.ZipFile(bulk) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename in ("users.csv", "enrollments.csv", "demographics.csv"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if "stu-0002-" not in line).encode()
            dst.writestr(info, data)
    return out.getvalue()


class Session:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.key = make_key(work / "client_key", "session")
        self.ids: dict[str, str] = {}

    def stand_in(self, text: str) -> str:
        def name(match: re.Match) -> str:
            return self.ids.setdefault(match.group(0), f"{match.group(1)}-{len(self.ids) + 1}")

        text = _IDS.sub(name, text.replace(str(self.work), "<work>"))
        return _FINGERPRINTS.sub("SHA256:<host key>", _TIMES.sub("<time>", text))

    def clean(self, value: object) -> object:
        if isinstance(value, dict):
            return {k: ("<varies>" if k in _VOLATILE_KEYS else self.clean(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.clean(v) for v in value]
        return self.stand_in(value) if isinstance(value, str) else value

    def run(self) -> dict:
        record: dict = {"receipts": [], "receipt_texts": [], "cli": {}, "events": []}
        with rosterd_server(self.work, self.key, INTAKE, tenant_toml=CERS_DRY_RUN) as server:
            config = self.work / "rosterd" / "rosterd.toml"
            held = self.work / "no-second-school.zip"
            held.write_bytes(without_second_school(SAMPLES / "valid-1.1-bulk.zip"))
            steps = [SAMPLES / "valid-1.1-bulk.zip", SAMPLES / "broken-school-not-a-school.zip",
                     SAMPLES / "valid-1.1-bulk.zip", SAMPLES / "valid-1.1-delta.zip", held]  # fmt: skip
            for number, package in enumerate(steps, start=1):
                receipt = self.put(server, package, f"{number:02d}-{package.name}")
                if receipt["state"] == "held":
                    self.cli(config, "approve", receipt["upload_id"])
                    receipt = self.wait(server, f"{number:02d}-{package.name}", {"accepted"})
            for name, argv in {"status": ["status", "--format", "json"],
                               "snapshots": ["snapshots", TENANT, "--format", "json"],
                               "outbox": ["outbox", "--format", "json"]}.items():  # fmt: skip
                record["cli"][name] = self.clean(json.loads(self.cli(config, *argv)))
            results = server.results(TENANT)
            for path in sorted(results.glob("*.json")):
                if path.name != "latest.json":
                    record["receipts"].append(self.clean(json.loads(path.read_text())))
                    record["receipt_texts"].append(self.stand_in(path.with_suffix(".txt").read_text()))
            log = server.log
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                event = json.loads(line)
                record["events"].append(self.clean({k: v for k, v in event.items() if k != "level"} |
                                                   {"level": event.get("level")}))  # fmt: skip
        record["events"].sort(key=lambda e: json.dumps(e, sort_keys=True))  # concurrent stages interleave freely
        return record

    def put(self, server, package: Path, name: str) -> dict:
        batch = self.work / "batch"
        done = sftp_batch(server, self.key, [f"put {package} /inbox/{name}"], batch, WAIT_SECONDS)
        if done.returncode != 0:
            raise BenchError(f"sftp put {name} failed: {done.stderr.strip()[-500:]}")
        return self.wait(server, name, FINAL)

    def wait(self, server, name: str, states: set[str]) -> dict:
        """The upload's receipt once its state is one of `states` and each of its deliveries is over."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            for path in server.results(TENANT).glob(f"{name}.*.json"):
                receipt = json.loads(path.read_text())
                deliveries = receipt.get("deliveries") or []
                if receipt["state"] in states and all(d["state"] in ("delivered", "dead") for d in deliveries):
                    return receipt
            time.sleep(0.2)
        raise BenchError(f"no final receipt for {name} within {WAIT_SECONDS:.0f} s")

    def cli(self, config: Path, *argv: str) -> str:
        done = subprocess.run([str(ROSTERD), *argv, "--config", str(config)], capture_output=True, text=True,
                              timeout=WAIT_SECONDS)  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"rosterd {' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
        return done.stdout


def compare(before: dict, after: dict) -> list[str]:
    old = json.dumps(before, indent=1, sort_keys=True).splitlines()
    new = json.dumps(after, indent=1, sort_keys=True).splitlines()
    return list(difflib.unified_diff(old, new, "before", "after", lineterm="", n=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the session's record (JSON)")
    parser.add_argument("--compare", type=Path, help="a record of an earlier run to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rosterd-session-") as work:
        try:
            record = Session(Path(work)).run()
        except BenchError as exc:
            print(f"session failed: {exc}", file=sys.stderr)
            return 1
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"{len(record['receipts'])} receipts, {len(record['events'])} log events written to {args.out}")
    if args.compare:
        differences = compare(json.loads(args.compare.read_text()), record)
        print("\n".join(differences) if differences else "no difference")
        return 1 if differences else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
