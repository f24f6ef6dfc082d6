"""Reload (SIGHUP) and stop (SIGTERM) as systemd sends them: tenants and targets change without dropping a
session; a broken config changes nothing; a stop in the middle of a validation loses nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import time

import asyncssh
import pytest

from daemon.generator.generate import DistrictSpec, generate, write_zip

from .conftest import RunningDaemon, Tenant, copy_sample


def wait_for(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never held"
        time.sleep(0.1)


def reload(daemon: RunningDaemon) -> dict:
    seen = len(daemon.events("config.reloaded")) + len(daemon.events("config.reload_failed"))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(daemon.events("config.reloaded")) + len(daemon.events("config.reload_failed")) > seen,
             what="the reload")  # fmt: skip
    outcomes = daemon.events("config.reloaded") + daemon.events("config.reload_failed")
    return max(outcomes, key=lambda e: e["timestamp"])


async def test_sighup_adds_a_tenant_and_a_target_without_dropping_a_session(
    rosterd, tenants: dict[str, Tenant]
) -> None:
    daemon = rosterd(tenants["north"])
    async with daemon.connect("north", tenants["north"].password) as conn, conn.start_sftp_client() as sftp:
        assert await sftp.listdir("/results") is not None
        assert await daemon.login_refusal("south", tenants["south"].password) is not None  # not a tenant yet

        daemon.tenants["south"] = tenants["south"]
        daemon.tenants["north"] = dataclasses.replace(tenants["north"],
                                                      extra='[[tenants.targets]]\ntype = "cers"\ndry_run = true')  # fmt: skip
        daemon.write_config()
        event = await asyncio.to_thread(reload, daemon)
        assert event["event"] == "config.reloaded" and event["tenants"] == ["north", "south"]
        assert event["targets"] == ["north/cers"]

        # the session opened before the reload goes on working
        await sftp.put(str(copy_sample("valid-1.1-bulk.zip", daemon.client_dir)), "inbox/day1.zip")
    receipt = await asyncio.to_thread(daemon.wait_for_receipt, "north", "day1.zip")
    assert receipt["state"] == "accepted"
    wait_for(lambda: any(p.suffix == ".csv" for p in (daemon.results("north") / "cers").glob("*")),
             what="the dry-run CERS file")  # fmt: skip
    assert await daemon.login_refusal("south", tenants["south"].password) is None  # south exists now
    sent = await asyncio.to_thread(daemon.sftp_batch, "south", ["put valid-1.1-bulk.zip inbox/s.zip"])
    assert sent.returncode == 0, sent.stderr
    assert (await asyncio.to_thread(daemon.wait_for_receipt, "south", "s.zip"))["state"] == "accepted"


def test_a_broken_config_on_sighup_changes_nothing(rosterd, tenants: dict[str, Tenant]) -> None:
    daemon = rosterd(tenants["north"])
    good = daemon.config.read_text()
    daemon.config.write_text(good + "\n[server]\nport = 'not a number'\n")
    event = reload(daemon)
    assert event["event"] == "config.reload_failed" and event["level"] == "error"
    assert any("TOML" in p or "port" in p for p in event["problems"])
    daemon.config.write_text(good.replace("settle_seconds = 0.5", "settle_seconds = 0.7"))
    event = reload(daemon)
    assert event["event"] == "config.reloaded"
    (needed,) = daemon.events("config.restart_needed")
    assert needed["sections"] == ["intake"]
    sent = daemon.sftp_batch("north", [f"put {copy_sample('valid-1.1-bulk.zip', daemon.client_dir)} inbox/a.zip"])
    assert sent.returncode == 0 and daemon.wait_for_receipt("north", "a.zip")["state"] == "accepted"
    assert daemon.proc.poll() is None


@pytest.mark.slow
def test_sigterm_during_a_validation_loses_nothing(rosterd, tenants: dict[str, Tenant]) -> None:
    daemon = rosterd(tenants["north"], start=False)
    daemon.config.write_text(daemon.config.read_text().replace("min_free_bytes = 0\n",
                                                               "min_free_bytes = 0\nstop_grace_seconds = 0.5\n"))  # fmt: skip
    daemon.start()
    spec = DistrictSpec(schools=300, students_per_school=450)  # validation takes seconds even on a fast machine
    write_zip(generate(spec), daemon.client_dir / "big.zip", spec.version)
    sent = daemon.sftp_batch("north", ["put big.zip inbox/big.zip"])
    assert sent.returncode == 0, sent.stderr
    started = daemon.wait_for_event("upload.validating")
    stopped_at = time.monotonic()
    code = daemon.stop(timeout=15)
    assert code == 0 and time.monotonic() - stopped_at < 10  # the grace is 0.5 s; no waiting for the validation
    assert not daemon.events("upload.accepted"), "validation finished before the stop: nothing was cut off"

    daemon.start()
    receipt = daemon.wait_for_receipt("north", "big.zip", timeout=120)
    assert receipt["state"] == "accepted" and receipt["upload_id"] == started["upload_id"]  # resumed, not lost
    assert json.loads((daemon.results("north") / "latest.json").read_text())["upload_id"] == started["upload_id"]
