"""`rosterd serve` end to end, as an operator and an SIS would use it: real daemon, real OpenSSH client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROSTERD = Path(sys.executable).parent / "rosterd"
SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def daemon(tmp_path: Path):
    key = tmp_path / "client_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    port = free_port()
    config = tmp_path / "rosterd.toml"
    config.write_text(f"""
[server]
host = "127.0.0.1"
port = {port}
state_dir = "state"

[intake]
settle_seconds = 0.5
rescan_seconds = 2

[[tenants]]
name = "lakeside"
authorized_keys = ["{key.with_suffix('.pub').read_text().strip()}"]
""")
    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen([str(ROSTERD), "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "daemon.log").read_text())
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield {"port": port, "key": key, "root": tmp_path, "proc": proc, "log": tmp_path / "daemon.log"}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def sftp(d: dict, commands: str, cwd: Path) -> subprocess.CompletedProcess:
    batch = cwd / "batch"
    batch.write_text(commands)
    return subprocess.run(
        ["sftp", "-b", str(batch), "-P", str(d["port"]), "-i", str(d["key"]), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "lakeside@127.0.0.1"],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_upload_with_openssh_and_read_the_receipt_back(daemon: dict, tmp_path: Path) -> None:
    work = tmp_path / "client"
    work.mkdir()
    (work / "day1.zip").write_bytes((SAMPLES / "valid-1.1-bulk.zip").read_bytes())
    put = sftp(daemon, "put day1.zip inbox/day1.zip\n", work)
    assert put.returncode == 0, put.stderr
    deadline = time.monotonic() + 60
    receipt = None
    while time.monotonic() < deadline:
        got = sftp(daemon, "get results/latest.json latest.json\n", work)
        if got.returncode == 0:
            receipt = json.loads((work / "latest.json").read_text())
            if receipt["state"] in ("accepted", "rejected"):
                break
        time.sleep(0.5)
    assert receipt is not None and receipt["state"] == "accepted", daemon["log"].read_text()[-3000:]
    assert receipt["file"] == "day1.zip"
    assert receipt["validation"]["files"]["enrollments.csv"]["rows"] == 196
    listing = sftp(daemon, "ls -1 results\n", work)
    assert f"day1.zip.{receipt['upload_id']}.txt" in listing.stdout
    events = [json.loads(line)["event"] for line in daemon["log"].read_text().splitlines() if line.startswith("{")]
    assert "daemon.started" in events and "upload.received" in events and "upload.accepted" in events


def test_sigterm_stops_the_daemon_cleanly(daemon: dict) -> None:
    daemon["proc"].send_signal(signal.SIGTERM)
    assert daemon["proc"].wait(timeout=20) == 0
    events = [json.loads(line)["event"] for line in daemon["log"].read_text().splitlines() if line.startswith("{")]
    assert "daemon.stopping" in events
