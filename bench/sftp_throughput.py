"""How fast rosterd's SFTP server takes one large upload, against OpenSSH's own sshd on the same machine.

rosterd's SFTP server is asyncssh: the SSH transport, the decryption of every packet and the SFTP protocol
run in Python on one event loop, and written data goes to disk a MiB at a time in worker threads. OpenSSH's sshd with
internal-sftp is the C server a district would otherwise point its client at, so it is the yardstick: same
client (OpenSSH's sftp, default buffer and request count), same key, same file, same disk, same loopback.
Target: rosterd's median throughput at least 0.9 of sshd's.

One run: write a file of random bytes (1 GiB by default; random, so nothing can shortcut it), start both
servers on free loopback ports, put the file once to each untimed (the first put into a fresh server and
fresh files is slower than the rest), then put it N times per series, rotating which series goes first,
timing each put by wall clock (connection set-up included; the time of a bare login is shown for scale).

rosterd fsyncs every upload before it publishes it (a receipt must never name bytes a power cut could
lose); sshd does so only when the client asks (`put -f`). So each run measures three series: rosterd with a
plain put, sshd with a plain put (fast, not durable), and sshd with `put -f` (the same durability as
rosterd), and prints rosterd's ratio against both. Also, rosterd's intake takes each finished upload out of the inbox, hashes it and rejects it as not a zip
(or records it as a duplicate). The script waits for that receipt before the next timed put, and flushes
the page cache's dirty pages (`sync`) before each put, so neither intake nor writeback overlaps a timing.

    .venv/bin/python bench/sftp_throughput.py [--size-mib 1024] [--rounds 3] [--cipher NAME] [--record]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import recording
from servers import (
    TERMINAL_STATES,
    BenchError,
    Negotiated,
    Server,
    asyncssh_version,
    ensure_sshd,
    exit_on_sigterm,
    make_key,
    negotiated,
    openssh_client_version,
    rosterd_server,
    sftp_batch,
    sshd_server,
    tail,
    write_random,
)

MiB = 1024 * 1024
BLOCK = 16 * MiB
MIN_RATIO = 0.9
INTAKE_TIMEOUT = 300.0
# The notify path claims an upload at once; a long rescan keeps the periodic inbox scan out of the timings.
INTAKE = {"settle_seconds": 0.5, "rescan_seconds": 3600, "workers": 1}
UPLOAD_NAME = "big.zip"


@dataclass
class Side:
    server: Server
    fsync: bool = False  # the client asks the server to fsync (`put -f`)
    seconds: list[float] = field(default_factory=list)
    login_seconds: float = 0.0
    algorithms: Negotiated | None = None

    def rates(self, size_mib: float) -> list[float]:
        return [size_mib / s for s in self.seconds]

    def median_rate(self, size_mib: float) -> float:
        return statistics.median(self.rates(size_mib))

    @property
    def label(self) -> str:
        return f"{self.server.name}{' put -f' if self.fsync else ''}"


# --- the payload ------------------------------------------------------------------------------------------


def warm(path: Path) -> None:
    """Read the payload once, so every put reads it from the page cache and no put pays for the disk."""
    with path.open("rb") as f:
        while f.read(BLOCK):
            pass


# --- one put ----------------------------------------------------------------------------------------------


def _put_timeout(size_mib: int) -> float:
    return 120 + size_mib  # as slow as 1 MiB/s still finishes


def timed_put(side: Side, key: Path, payload: Path, work: Path, options: Sequence[str]) -> float:
    server = side.server
    target = f"{server.upload_dir}/{UPLOAD_NAME}"
    command = f'put {"-f " if side.fsync else ""}"{payload}" "{target}"'
    os.sync()
    started = time.perf_counter()
    done = sftp_batch(server, key, [command], work / "batch", _put_timeout(payload.stat().st_size // MiB), options)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"sftp put to {server.name} exited {done.returncode}:\n{done.stderr[-3000:]}\n"
                         f"{server.name} log:\n{tail(server.log)}")  # fmt: skip
    if side.algorithms is None:
        side.algorithms = negotiated(done.stderr)
    return seconds


def login_seconds(side: Side, key: Path, work: Path, options: Sequence[str]) -> float:
    """Median wall time of a session that only logs in and asks the working directory: the fixed cost."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        done = sftp_batch(side.server, key, ["pwd"], work / "batch", 60, options)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise BenchError(f"sftp login to {side.server.name} failed:\n{done.stderr[-3000:]}")
    return statistics.median(times)


# --- between puts -----------------------------------------------------------------------------------------


def _read_receipt(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def settle_rosterd(server: Server, previous_id: str | None, size: int) -> dict:
    """Wait for the receipt of the upload just made; then drop the kept copy, so disk use stays flat."""
    deadline = time.monotonic() + INTAKE_TIMEOUT
    while time.monotonic() < deadline:
        receipt = _read_receipt(server.latest_receipt)
        if receipt and receipt.get("upload_id") != previous_id and receipt.get("state") in TERMINAL_STATES:
            break
        time.sleep(0.2)
    else:
        raise BenchError(f"no receipt from rosterd within {INTAKE_TIMEOUT:.0f} s; log:\n{tail(server.log)}")
    if receipt.get("bytes") != size:
        raise BenchError(f"rosterd received {receipt.get('bytes')} bytes, not {size}: {receipt}")
    assert server.state_dir is not None
    for kept in [*server.state_dir.glob("uploads/*/*.zip"), *server.state_dir.glob("quarantine/*/*")]:
        kept.unlink(missing_ok=True)
    return receipt


def settle_sshd(server: Server, size: int) -> None:
    uploaded = Path(server.upload_dir) / UPLOAD_NAME
    got = uploaded.stat().st_size if uploaded.exists() else None
    if got != size:
        raise BenchError(f"sshd holds {got} bytes, not {size}")
    uploaded.unlink()


# --- the rounds -------------------------------------------------------------------------------------------


def run_rounds(sides: Sequence[Side], key: Path, payload: Path, work: Path, args: argparse.Namespace,
               say: Callable[[str], None]) -> list[str]:  # fmt: skip
    """One untimed warm-up put to each server, then the rounds, each round in another order (rotated).

    Returns the intake states rosterd reported for the timed puts."""
    size = payload.stat().st_size
    options = ["-c", args.cipher] if args.cipher else []
    states: list[str] = []
    previous_id = None

    rosterd = sides[0]

    def put(side: Side, label: str) -> float:
        nonlocal previous_id
        seconds = timed_put(side, key, payload, work, options)
        if side is rosterd:
            receipt = settle_rosterd(side.server, previous_id, size)
            previous_id = receipt["upload_id"]
            states.append(receipt["state"])
        else:
            settle_sshd(side.server, size)
        say(f"  {label:12} {side.label:14} {seconds:7.2f} s {args.size_mib / seconds:8.1f} MiB/s")
        return seconds

    for side in sides[:2]:  # one warm-up per server
        put(side, "warm-up")
    states.clear()
    for round_no in range(1, args.rounds + 1):
        shift = (round_no - 1) % len(sides)
        for side in [*sides[shift:], *sides[:shift]]:
            side.seconds.append(put(side, f"round {round_no}/{args.rounds}"))
    return states


# --- reporting --------------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def figures_table(rosterd: Side, sshd: Side, durable: Side, size_mib: int) -> list[str]:
    sides = (rosterd, sshd, durable)

    def row(measure: str, cell: Callable[[Side], str]) -> str:
        return f"| {measure} | {' | '.join(cell(side) for side in sides)} | | |"

    def ratio_row(other: Side, what: str) -> str:
        ratio = rosterd.median_rate(size_mib) / other.median_rate(size_mib)
        return f"| ratio rosterd / {what} (median MiB/s) | {ratio:.3f} | | | ≥ {MIN_RATIO} | {_verdict(ratio >= MIN_RATIO)} |"

    return [
        "| measure | rosterd | sshd | sshd, put -f | target | result |",
        "|---|---:|---:|---:|---|---|",
        row("MiB/s per round", lambda side: ", ".join(f"{r:.1f}" for r in side.rates(size_mib))),
        row("median MiB/s", lambda side: f"{side.median_rate(size_mib):.1f}"),
        row("median put (s)", lambda side: f"{statistics.median(side.seconds):.2f}"),
        row("login only (s), included above", lambda side: f"{side.login_seconds:.2f}"),
        ratio_row(sshd, "sshd (not durable)"),
        ratio_row(durable, "sshd with put -f (durable, as rosterd)"),
    ]


def context_lines(rosterd: Side, sshd: Side, args: argparse.Namespace, states: list[str]) -> list[str]:
    def algs(side: Side) -> str:
        a = side.algorithms or Negotiated("", "", "", "")
        mac = "" if a.mac in ("", "<implicit>") else f", MAC {a.mac}"
        return f"{side.server.name}: {a.server_software or '?'}, kex {a.kex or '?'}, cipher {a.cipher or '?'}{mac}"

    fsync = ("rosterd fsyncs each upload before publishing it; sshd is measured without `put -f` (no fsync) and "
             "with it (fsync@openssh.com)")  # fmt: skip
    return [
        f"parameters: {args.size_mib} MiB of random bytes, 1 warm-up put then {args.rounds} round(s), order rotated each round; "
        f"client {openssh_client_version()}, default write size and requests (255 KiB writes, as both servers "
        f"advertise limits@openssh.com; 64 in flight); {fsync}",
        f"servers: rosterd on asyncssh {asyncssh_version()}; sshd with internal-sftp",
        f"negotiated: {algs(rosterd)}; {algs(sshd)}",
        f"rosterd intake after each put (waited for, not timed): {', '.join(states)}",
    ]


# --- command line -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/sftp_throughput.py",
        description="Upload one large file with OpenSSH's sftp to rosterd and to OpenSSH's sshd, alternating, "
        "and compare their throughput. Prints figures; exits non-zero only if a step fails.",
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the uploaded file (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="puts to each server (default %(default)s)")
    parser.add_argument("--cipher", help="ask the client for this cipher (sftp -c), e.g. aes128-gcm@openssh.com")
    parser.add_argument("--tmp", type=Path, help="where the temporary folder goes (default: the system's)")
    parser.add_argument("--record", action="store_true", help=f"append the figures to {recording.RESULTS.name}")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.size_mib < 1:
        parser.error("--rounds and --size-mib must be at least 1")
    return args


def measure(args: argparse.Namespace, say: Callable[[str], None]) -> tuple[Side, Side, Side, list[str]]:
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rosterd-sftp-bench-", dir=args.tmp,
                                                                    ignore_cleanup_errors=True)))  # fmt: skip
        say(f"temporary folder {work}")
        key = make_key(work / "client_ed25519", "bench client")
        say(f"writing {args.size_mib} MiB of random bytes ...")
        payload = write_random(work / "payload.bin", args.size_mib)
        warm(payload)
        rosterd = Side(stack.enter_context(rosterd_server(work, key, INTAKE)))
        sshd = Side(stack.enter_context(sshd_server(work, key)))
        say(f"rosterd on port {rosterd.server.port}, sshd on port {sshd.server.port}")
        options = ["-c", args.cipher] if args.cipher else []
        for side in (rosterd, sshd):
            side.login_seconds = login_seconds(side, key, work, options)
        durable = Side(sshd.server, fsync=True, login_seconds=sshd.login_seconds)
        states = run_rounds((rosterd, sshd, durable), key, payload, work, args, say)
        durable.algorithms = sshd.algorithms
        return rosterd, sshd, durable, states


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        ensure_sshd(say)
        rosterd, sshd, durable, states = measure(args, say)
    except BenchError as failure:
        print(f"\nbench: FAILED: {failure}", file=sys.stderr)
        return 1
    table = figures_table(rosterd, sshd, durable, args.size_mib)
    context = context_lines(rosterd, sshd, args, states)
    recording.show("SFTP throughput (bench/sftp_throughput.py)", context, table, args.record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
