"""`scp` from OpenSSH 9 and later speaks SFTP: it uploads and fetches receipts like any SFTP client."""

from __future__ import annotations

import json
import subprocess

from .conftest import SAMPLES, RunningDaemon


def scp(daemon: RunningDaemon, *paths: str, legacy: bool = False) -> subprocess.CompletedProcess:
    key = daemon.tenants["north"].key
    return subprocess.run(
        ["scp", *(["-O"] if legacy else []), "-F", "/dev/null", "-P", str(daemon.port), "-i", str(key),
         "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", *paths],
        capture_output=True, text=True, timeout=60, cwd=daemon.client_dir,
    )  # fmt: skip


def test_scp_uploads_and_fetches_the_receipt(daemon: RunningDaemon) -> None:
    sent = scp(daemon, str(SAMPLES / "valid-1.1-bulk.zip"), "north@127.0.0.1:inbox/by-scp.zip")
    assert sent.returncode == 0, sent.stderr  # needs the exit status an SFTP session ends with

    receipt = daemon.wait_for_receipt("north", "by-scp.zip")
    assert receipt["state"] == "accepted"
    fetched = scp(daemon, "north@127.0.0.1:results/latest.json", "latest.json")
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads((daemon.client_dir / "latest.json").read_text())["upload_id"] == receipt["upload_id"]


def test_legacy_scp_is_refused_and_leaves_nothing(daemon: RunningDaemon) -> None:
    legacy = scp(daemon, str(SAMPLES / "valid-1.1-bulk.zip"), "north@127.0.0.1:inbox/legacy.zip", legacy=True)
    assert legacy.returncode != 0
    assert list(daemon.inbox("north").iterdir()) == []
