"""What one tenant can reach, and what the log keeps: checked from outside, with real clients.

A tenant tries every way an SFTP client offers to reach another tenant's files (`..`, absolute host
paths, links); each attempt must fail and leave the disk as it was. Logins, good and bad, by password
and by key, must leave no password, hash or private key material in the daemon's output.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import asyncssh

from .conftest import RunningDaemon, Tenant, copy_sample

REFUSED = re.compile(r"Permission denied|not found")  # the server's answers, as OpenSSH sftp words them


def snapshot(root: Path, leave_out: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """Every file under root (but not under `leave_out`) with its size and mtime."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and not any(p.is_relative_to(skip) for skip in leave_out)
    }


def test_a_tenant_cannot_list_read_or_write_another_tenants_files(daemon: RunningDaemon) -> None:
    copy_sample("valid-1.1-bulk.zip", daemon.client_dir / "south.zip")
    got = daemon.sftp_batch("south", ["put south.zip inbox/south.zip"])
    assert got.returncode == 0, got.stderr
    south_receipt = daemon.wait_for_receipt("south", "south.zip")
    south_stem = f"south.zip.{south_receipt['upload_id']}"

    state = daemon.state
    north_areas = tuple(state / area / "north" for area in ("tenants", "uploads", "quarantine", "snapshots",
                                                            "findings"))  # fmt: skip
    untouchable = (*north_areas, *state.glob("rosterd.db*"))
    before = snapshot(state, untouchable)

    south_inbox, south_results = daemon.inbox("south"), daemon.results("south")
    copy_sample("valid-1.2-bulk.zip", daemon.client_dir / "north.zip")
    attempts = [
        "ls /../south",
        "ls ../south/results",
        "ls /../../south/results",
        f"ls {south_results}",
        f"ls {state}/tenants",
        "cd ..",
        "cd /../south",
        "get ../../south/results/latest.json stolen.json",
        "get /../south/results/latest.json stolen.json",
        f"get ../south/results/{south_stem}.json stolen.json",
        f"get {south_results}/latest.json stolen.json",
        f"get {south_results}/{south_stem}.json stolen.json",
        f"get results/{south_stem}.json stolen.json",
        "get /etc/passwd stolen.json",
        "put north.zip ../south/inbox/north.zip",
        "put north.zip /../south/inbox/north.zip",
        "put north.zip /inbox/../../south/inbox/north.zip",
        f"put north.zip {south_inbox}/north.zip",
        f"put north.zip {south_results}/latest.json",
        f"ln -s {south_results} inbox/south-results",
        f"ln {south_results}/latest.json inbox/stolen.json",
    ]
    for command in attempts:
        got = daemon.sftp_batch("north", [command])
        assert got.returncode != 0, f"north could run {command!r}:\n{got.stdout}{got.stderr}"
        assert REFUSED.search(got.stderr), f"{command!r} failed for another reason:\n{got.stderr}"
    assert not (daemon.client_dir / "stolen.json").exists()

    got = daemon.sftp_batch("north", ["put north.zip inbox/north.zip"])  # what north may do: its own inbox
    assert got.returncode == 0, got.stderr
    north_receipt = daemon.wait_for_receipt("north", "north.zip")
    assert north_receipt["tenant"] == "north" and north_receipt["state"] == "accepted"

    assert snapshot(state, untouchable) == before  # nothing outside north's own folders changed
    listing = daemon.sftp_batch("north", ["ls -1 /", "ls -1 results"])
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split("sftp> ")[1].split() == ["ls", "-1", "/", "/inbox", "/results"]
    assert "south" not in listing.stdout and south_receipt["upload_id"] not in listing.stdout
    assert daemon.wait_for_receipt("south", "south.zip") == south_receipt  # south's latest is still its own

    refused = daemon.events("sftp.operation_refused")
    assert refused and {e["tenant"] for e in refused} == {"north"}
    assert {"path_escape", "link"} <= {e["reason"] for e in refused}
    assert {e["tenant"] for e in daemon.events("upload.received")} == {"north", "south"}
    assert len(daemon.events("upload.received", tenant="south")) == 1


def private_key_body(key: Path) -> list[str]:
    """The base64 lines of an OpenSSH private key file (what must never be logged)."""
    return [line for line in key.read_text().splitlines() if line and not line.startswith("-----")]


async def test_no_password_hash_or_private_key_reaches_the_log(
    daemon: RunningDaemon, tenants: dict[str, Tenant]
) -> None:
    north, south = tenants["north"], tenants["south"]
    wrong = "x" + north.password[::-1]  # a near miss, as secret as the real one

    async with daemon.connect("north", north.password) as conn, conn.start_sftp_client() as sftp:
        assert await sftp.listdir("/") is not None
    refusals = await asyncio.gather(  # at once: each failed password costs a second
        *(daemon.login_refusal(user, password)
          for user, password in (("north", wrong), ("north", south.password), ("nobody", north.password)))
    )  # fmt: skip
    assert all(isinstance(r, asyncssh.PermissionDenied) for r in refusals), refusals
    good = await asyncio.to_thread(daemon.sftp_batch, "north", ["ls -1 results"])
    assert good.returncode == 0, good.stderr
    bad = await asyncio.to_thread(daemon.sftp_batch, "north", ["ls -1 results"], key=south.key)
    assert bad.returncode != 0

    await asyncio.to_thread(daemon.wait_for_event, "sftp.login_failed", username="north", method="publickey")
    assert len(daemon.events("sftp.login_failed")) >= 4
    assert len(daemon.events("sftp.login_succeeded", tenant="north")) == 2
    log = daemon.output()
    secrets = {
        "north's password": north.password,
        "the wrong password": wrong,
        "south's password": south.password,
        "north's password hash": north.password_hash,
        "south's password hash": south.password_hash,
    }
    for owner in (north, south):
        for number, line in enumerate(private_key_body(owner.key), start=1):
            secrets[f"line {number} of {owner.name}'s private key"] = line
    leaked = [what for what, secret in secrets.items() if secret in log]
    assert not leaked, f"found in the log: {', '.join(leaked)}"
