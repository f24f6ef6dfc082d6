"""`rosterd serve` as an operator runs it: start, stop with SIGTERM, start again on the same state.

The demo tenant of the default config is checked as `make run` would use it: the key the daemon makes
at first start logs in with OpenSSH, and a second start keeps both that key and the host keys.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .conftest import ROSTERD, RunningDaemon, Tenant, copy_sample


def test_sigterm_stops_the_daemon_with_status_0_and_takes_its_workers_along(daemon: RunningDaemon) -> None:
    copy_sample("valid-1.1-bulk.zip", daemon.inbox("north") / "day1.zip")
    assert daemon.wait_for_receipt("north", "day1.zip")["state"] == "accepted"  # the validation pool is up

    assert daemon.stop() == 0
    names = [event["event"] for event in daemon.events(run=-1)]
    assert names.index("daemon.stopping") < names.index("daemon.stopped") == len(names) - 1  # the last word
    (stopped,) = daemon.events("daemon.stopped", run=-1)
    assert isinstance(stopped["elapsed_ms"], int) and stopped["elapsed_ms"] >= 0
    assert stopped["left_behind"] == []
    deadline = time.monotonic() + 5
    while _group_alive(daemon.proc.pid):
        assert time.monotonic() < deadline, "a process of the daemon's group outlived it"
        time.sleep(0.05)


def test_a_refused_second_start_logs_only_why_and_exits_1(daemon: RunningDaemon) -> None:
    same_state = _serve(daemon.config)
    assert same_state.returncode == 1
    reason = f"another rosterd is running with the state directory {daemon.state}"
    assert _events(same_state.stdout) == [("daemon.start_failed", reason)]
    assert same_state.stderr == f"rosterd serve: {reason}\n"  # and no warnings from the libraries

    other = daemon.home / "other.toml"  # its own state directory, the first one's port
    other.write_text(daemon.config.read_text().replace(str(daemon.state), str(daemon.home / "other-state")))
    shutil.copytree(daemon.state / "hostkeys", daemon.home / "other-state" / "hostkeys")
    same_port = _serve(other)
    assert same_port.returncode == 1
    events = _events(same_port.stdout)
    assert events[-1][0] == "daemon.start_failed" and f"cannot listen on 127.0.0.1:{daemon.port}" in events[-1][1]
    assert not {"daemon.started", "daemon.stopping", "daemon.stopped"} & {name for name, _ in events}
    assert daemon.proc.poll() is None  # the first one serves on


def _serve(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROSTERD), "serve", "--config", str(config)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def _events(stdout: str) -> list[tuple[str, str | None]]:
    """(event, reason) of each JSON line."""
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [(line["event"], line.get("reason")) for line in lines]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_zip_left_in_the_inbox_while_the_daemon_was_down_is_taken_at_start(daemon: RunningDaemon) -> None:
    assert daemon.stop() == 0
    copy_sample("valid-1.2-bulk.zip", daemon.inbox("south") / "overnight.zip")
    daemon.start()

    receipt = daemon.wait_for_receipt("south", "overnight.zip")
    assert receipt["state"] == "accepted" and receipt["validation"]["version"] == "1.2"
    assert daemon.events("upload.received", run=-1, tenant="south", file="overnight.zip")
    assert list(daemon.inbox("south").iterdir()) == []


def test_the_demo_tenant_logs_in_with_its_generated_key_and_restarts_keep_every_key(
    rosterd: Callable[..., RunningDaemon],
) -> None:
    daemon = rosterd(Tenant("demo", demo=True), fresh_host_keys=True)
    key = daemon.state / "demo_id_ed25519"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert daemon.events("config.insecure_demo_tenant", run=-1)
    (started,) = daemon.events("sftp.server_started", run=-1)
    assert len(started["host_keys"]) == 2

    known_hosts = daemon.client_dir / "known_hosts"  # the client remembers the host key, as a real one does
    remembering = ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=accept-new"]
    copy_sample("valid-1.1-bulk.zip", daemon.client_dir)
    got = daemon.sftp_batch("demo", ["put valid-1.1-bulk.zip inbox/"], key=key, options=remembering)
    assert got.returncode == 0, got.stderr
    assert daemon.wait_for_receipt("demo", "valid-1.1-bulk.zip", key=key)["state"] == "accepted"
    assert known_hosts.read_text().strip()

    key_bytes = key.read_bytes()
    daemon.restart()
    (restarted,) = daemon.events("sftp.server_started", run=-1)
    assert restarted["host_keys"] == started["host_keys"]
    assert key.read_bytes() == key_bytes
    assert daemon.events("config.insecure_demo_tenant", run=-1)  # warned at every start, not just the first
    strict = ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    got = daemon.sftp_batch("demo", ["ls -1 results"], key=key, options=strict)
    assert got.returncode == 0, got.stderr
    assert "results/latest.json" in got.stdout
