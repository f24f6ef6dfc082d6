"""How long rosterd keeps one tenant's SFTP session waiting while it takes in another upload.

Every SFTP session of every tenant is served by one asyncio event loop. Anything that holds that loop (work
done on it rather than in a worker thread or process, or a worker thread that keeps the GIL) stalls every
session at once, and a client waiting on a stalled server times out or crawls. This measures it from the
outside, the way a second uploader would feel it: while a district's zip is uploaded and then validated,
a separate SFTP session (asyncssh client, key auth, its own connection) lists `/inbox` over and over, and
each round trip is timed. A round trip is normally a millisecond or two; a long one means the loop was held.

One run: generate a district with `daemon.generator.generate` (300 schools by default, cached in bench/out/
as bench/validate.py does; or, with --random-mib, write that much random data for a long upload), start
`rosterd serve` on a free loopback port, probe for a short idle baseline, then upload the file with OpenSSH's
sftp in a child process (so the uploading client's work never lands on this process's loop), and keep
probing until the receipt `results/latest.json`, read over SFTP on a third connection, says the upload was
dealt with. Round trips are reported per phase: idle, upload (until the put's sftp process exits), intake
(claim, hash, validate in the process pool, write the receipt).
Target: the longest round trip under 200 ms in every phase.

    .venv/bin/python bench/loop_lag.py [--schools 300] [--version 1.1] [--random-mib N] [--interval-ms 5] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncssh

import recording
from servers import (
    ROUND_TRIP_TIMEOUT,
    TERMINAL_STATES,
    BenchError,
    Server,
    Timeline,
    asyncssh_version,
    exit_on_sigterm,
    connect,
    make_key,
    probe,
    rosterd_server,
    sftp_argv,
    tail,
    write_random,
)
from validate import (
    ENROLLMENTS_PER_STUDENT,
    STUDENTS_PER_SCHOOL,
    TEACHERS_PER_SCHOOL,
    describe_package,
    prepare_package,
)

from daemon.oneroster import schema
from daemon.generator.generate import DistrictSpec

BENCH = Path(__file__).resolve().parent
MAX_LAG_MS = 200.0
PHASES = ("idle", "upload", "intake")
RECEIPT_POLL_SECONDS = 0.1
UPLOAD_NAME = "upload.zip"
# rosterd's defaults, except the periodic rescan, which is kept out of the way (it is not what is measured).
INTAKE = {"settle_seconds": 0.5, "rescan_seconds": 3600}


# --- the SFTP work ----------------------------------------------------------------------------------------


async def upload(server: Server, key: Path, package: Path, work: Path, timeout: float) -> None:
    """Put the package with OpenSSH's sftp in a child process, killed if this is cancelled or times out."""
    batch = work / "put.batch"
    batch.write_text(f'put "{package}" "/inbox/{UPLOAD_NAME}"\n')
    proc = await asyncio.create_subprocess_exec(
        *sftp_argv(server, key, batch), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        raise BenchError(f"the upload did not finish within {timeout:.0f} s") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise BenchError(f"sftp put exited {proc.returncode}:\n{stderr.decode(errors='replace')[-3000:]}")


async def wait_for_receipt(sftp: asyncssh.SFTPClient, timeout: float) -> dict:
    """Poll results/latest.json until it reports a finished upload of UPLOAD_NAME."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(asyncssh.SFTPError, ValueError):
            async with sftp.open("/results/latest.json", "rb") as f:
                receipt = json.loads(await f.read())
            if receipt.get("file") == UPLOAD_NAME and receipt.get("state") in TERMINAL_STATES:
                return receipt
        await asyncio.sleep(RECEIPT_POLL_SECONDS)
    raise BenchError(f"no finished receipt for {UPLOAD_NAME} within {timeout:.0f} s")


async def run_phases(server: Server, key: Path, package: Path, work: Path, args: argparse.Namespace,
                     say: Callable[[str], None]) -> tuple[Timeline, dict]:  # fmt: skip
    timeline = Timeline()
    stop = asyncio.Event()
    async with await connect(server.port, key) as probe_conn, await connect(server.port, key) as watch_conn:
        probe_sftp = await probe_conn.start_sftp_client()
        watch_sftp = await watch_conn.start_sftp_client()
        prober = asyncio.create_task(probe(probe_sftp, timeline, stop, args.interval_ms / 1000))
        try:
            await asyncio.sleep(args.idle_seconds)
            say("uploading ...")
            timeline.enter("upload")
            await upload(server, key, package, work, args.timeout)
            say("uploaded; waiting for the receipt ...")
            timeline.enter("intake")
            receipt = await wait_for_receipt(watch_sftp, args.timeout)
            timeline.enter("done")
        finally:
            stop.set()
            with contextlib.suppress(Exception):  # a failed probe is reported just below
                await asyncio.wait_for(prober, timeout=ROUND_TRIP_TIMEOUT)
        if prober.done() and not prober.cancelled() and prober.exception():
            raise BenchError(f"a probe round trip failed: {prober.exception()!r}")
    return timeline, receipt


# --- reporting --------------------------------------------------------------------------------------------


def figures_table(timeline: Timeline) -> list[str]:
    lines = [
        "| phase | seconds | round trips | median ms | p99 ms | max ms | target | result |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for phase in PHASES:
        ms = timeline.samples(phase)
        if not ms:
            lines.append(f"| {phase} | {timeline.durations.get(phase, 0):.2f} | 0 | | | | | no samples |")
            continue
        verdict = "PASS" if max(ms) < MAX_LAG_MS else "FAIL"
        lines.append(f"| {phase} | {timeline.durations.get(phase, 0):.2f} | {recording.round_trip_cells(ms)} "
                     f"| max < {MAX_LAG_MS:.0f} | {verdict} |")  # fmt: skip
    return lines


def slowest(timeline: Timeline, n: int = 5) -> str:
    worst = sorted(timeline.trips, key=lambda t: t[2], reverse=True)[:n]
    return ", ".join(f"{ms:.0f} ms ({phase} +{into:.2f} s)" for phase, into, ms in worst)


def daemon_timings(log: Path) -> str:
    """What the daemon's own log says about the upload: its SFTP elapsed time and the validation time."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "upload.received" and "bytes" in event:
            found.append(f"received {event['bytes'] / 2**20:.1f} MiB")
        elif event.get("event") in ("upload.accepted", "upload.rejected") and "elapsed_ms" in event:
            found.append(f"{event['event']} after {event['elapsed_ms']} ms of validation")
    return "; ".join(found) or "(nothing logged)"


# --- command line -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/loop_lag.py",
        description="Time SFTP round trips on one session while rosterd takes in a district's upload on "
        "another. Prints figures; exits non-zero only if a step fails.",
    )
    parser.add_argument("--schools", type=int, default=300, help="schools in the district (default %(default)s)")
    parser.add_argument("--version", choices=sorted(schema.VERSIONS), default="1.1", help="OneRoster version")
    parser.add_argument("--interval-ms", type=float, default=5.0, help="pause between probes (default %(default)s)")
    parser.add_argument("--idle-seconds", type=float, default=2.0, help="idle baseline (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="limit for the upload and for intake")
    parser.add_argument("--random-mib", type=int, default=0,
                        help="upload this many MiB of random bytes instead of a district (a long upload; "
                        "intake rejects it as not a zip)")
    parser.add_argument("--out", type=Path, default=BENCH / "out", help="where generated districts are cached")
    parser.add_argument("--tmp", type=Path, help="where the temporary folder goes (default: the system's)")
    parser.add_argument("--record", action="store_true", help=f"append the figures to {recording.RESULTS.name}")
    return parser.parse_args(argv)


def measure(package: Path | None, args: argparse.Namespace,
            say: Callable[[str], None]) -> tuple[Timeline, dict, str]:  # fmt: skip
    """Run the phases against a fresh daemon; no package means --random-mib of random bytes."""
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rosterd-lag-bench-", dir=args.tmp,
                                                                    ignore_cleanup_errors=True)))  # fmt: skip
        key = make_key(work / "client_ed25519", "bench client")
        if package is None:
            say(f"writing {args.random_mib} MiB of random bytes ...")
            package = write_random(work / "random.bin", args.random_mib)
        server = stack.enter_context(rosterd_server(work, key, INTAKE))
        say(f"rosterd on port {server.port}; probing /inbox every {args.interval_ms:g} ms")
        try:
            timeline, receipt = asyncio.run(run_phases(server, key, package, work, args, say))
        except BenchError as failure:
            raise BenchError(f"{failure}\nrosterd log:\n{tail(server.log)}") from None
        return timeline, receipt, daemon_timings(server.log)


def district(args: argparse.Namespace, say: Callable[[str], None]) -> tuple[Path, str]:
    """The cached (or freshly generated) district zip, and a line describing it."""
    spec = DistrictSpec(
        schools=args.schools, students_per_school=STUDENTS_PER_SCHOOL, teachers_per_school=TEACHERS_PER_SCHOOL,
        enrollments_per_student=ENROLLMENTS_PER_STUDENT, version=args.version,
    )  # fmt: skip
    package = prepare_package(spec, args.out)
    described = describe_package(package)
    say("\n".join(described))
    return package.path, f"OneRoster {spec.version}, {spec.schools} schools, seed {spec.seed}; {described[0]}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()

    def say(line: str) -> None:
        print(line, flush=True)

    if args.random_mib:
        package, upload = None, f"{args.random_mib} MiB of random bytes (not a zip)"
    else:
        package, upload = district(args, say)
    try:
        timeline, receipt, logged = measure(package, args, say)
    except BenchError as failure:
        print(f"\nbench: FAILED: {failure}", file=sys.stderr)
        return 1
    context = [
        f"parameters: {upload}; probe interval {args.interval_ms:g} ms; asyncssh {asyncssh_version()}",
        f"receipt: {receipt['state']}; daemon log: {logged}",
        f"slowest round trips: {slowest(timeline)}",
    ]
    table = figures_table(timeline)
    recording.show("SFTP loop lag (bench/loop_lag.py)", context, table, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
