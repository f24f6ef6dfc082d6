"""The health port of a running daemon: liveness, readiness and metrics as Prometheus scrapes them."""

from __future__ import annotations

import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from .conftest import RunningDaemon, copy_sample


def get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return answer.status, answer.read().decode()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_health_readiness_and_metrics_of_a_running_daemon(daemon: RunningDaemon) -> None:
    (started,) = daemon.events("daemon.started")
    port = started["health_port"]
    assert get(port, "/healthz") == (200, '{"status": "ok"}\n')
    assert get(port, "/readyz")[0] == 200

    sent = daemon.sftp_batch("north", [f"put {copy_sample('valid-1.1-bulk.zip', daemon.client_dir)} inbox/a.zip"])
    assert sent.returncode == 0 and daemon.wait_for_receipt("north", "a.zip")["state"] == "accepted"
    found = samples(get(port, "/metrics")[1])
    assert found[("rosterd_uploads", (("state", "accepted"), ("tenant", "north")))] == 1
    assert found[("rosterd_uploads_total", (("outcome", "accepted"), ("tenant", "north")))] == 1
    assert found[("rosterd_validation_seconds_count", ())] == 1 and found[("rosterd_diff_seconds_count", ())] == 1
    assert found[("rosterd_sftp_sessions", ())] == 0 and found[("rosterd_defender_bans", ())] == 0


def test_status_shows_each_tenant_while_the_daemon_runs(rosterd, tenants) -> None:
    import dataclasses
    import json
    import subprocess
    import time

    from .conftest import ROSTERD

    north = dataclasses.replace(tenants["north"], extra='[[tenants.targets]]\ntype = "cers"\ndry_run = true')
    daemon = rosterd(north, tenants["south"])
    sent = daemon.sftp_batch("north", [f"put {copy_sample('valid-1.1-bulk.zip', daemon.client_dir)} inbox/a.zip"])
    assert sent.returncode == 0 and daemon.wait_for_receipt("north", "a.zip")["state"] == "accepted"

    def status(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ROSTERD), "status", *args, "--config", str(daemon.config)], capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    deadline = time.monotonic() + 20
    while True:
        report = {t["tenant"]: t for t in json.loads(status("--format", "json").stdout)}
        if report["north"]["targets"][0]["last_success"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert report["north"]["last_upload"]["state"] == "accepted" and report["north"]["held"] == []
    (cers,) = report["north"]["targets"]
    assert cers["target"] == "cers" and cers["backlog"] == 0 and cers["last_success"] and cers["last_error"] is None
    assert report["south"]["last_upload"] is None and report["south"]["targets"] == []
    text = status("north").stdout
    assert text.startswith("north\n  last upload   u-") and "target cers" in text and "backlog 0" in text
    assert status("nobody").returncode == 2


def get_any(port: int, path: str) -> tuple[int, dict]:
    """An answer whatever its status (urllib raises for 503)."""
    import urllib.error

    try:
        status, body = get(port, path)
    except urllib.error.HTTPError as refused:
        status, body = refused.code, refused.read().decode()
    return status, json.loads(body)


def wait_for_readyz(port: int, status: int, deadline: float = 30.0) -> dict:
    import time

    until = time.monotonic() + deadline
    while True:
        code, body = get_any(port, "/readyz")
        if code == status or time.monotonic() > until:
            assert code == status, body
            return body
        time.sleep(0.2)


def test_readyz_says_not_ready_while_the_state_disk_is_under_min_free_bytes(rosterd, tenants) -> None:
    daemon = rosterd(tenants["north"], settings={"server": {"min_free_bytes": 10**18}})
    port = daemon.events("daemon.started")[0]["health_port"]
    code, body = get_any(port, "/readyz")
    assert code == 503 and body["status"] == "not_ready" and list(body["reasons"]) == ["state_disk"]
    assert "under min_free_bytes" in body["reasons"]["state_disk"]
    found = samples(get(port, "/metrics")[1])
    assert found[("rosterd_ready", ())] == 0
    assert found[("rosterd_not_ready", (("reason", "state_disk"),))] == 1
    assert found[("rosterd_not_ready", (("reason", "database"),))] == 0
    (logged,) = daemon.events("daemon.not_ready")
    assert logged["level"] == "error" and list(logged["reasons"]) == ["state_disk"]


def test_readyz_follows_the_database_taking_writes_or_not(rosterd, tenants) -> None:
    import sqlite3

    daemon = rosterd(tenants["north"], settings={"health": {"check_seconds": 0.5}})
    port = daemon.events("daemon.started")[0]["health_port"]
    wait_for_readyz(port, 200)
    holder = sqlite3.connect(daemon.state / "rosterd.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # what a stuck writer or a failing disk looks like to the daemon
    try:
        body = wait_for_readyz(port, 503)
        assert list(body["reasons"]) == ["database"] and "takes no writes" in body["reasons"]["database"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    wait_for_readyz(port, 200)
    assert daemon.wait_for_event("daemon.ready_again")
