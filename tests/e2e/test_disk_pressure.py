"""Disk pressure: on a nearly full filesystem new uploads are refused cleanly and nothing is lost.

The daemon's state directory is put on a small tmpfs mounted for the test. The same refusal is also driven
by a `min_free_bytes` above the real free space, which needs no privileges; where the test may not mount a
tmpfs, that is all it can do, and the part that needs a truly full disk (running out of space in the middle
of an upload) is not exercised: the test says so in its output.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import RunningDaemon, Tenant, copy_sample

MiB = 1024 * 1024


@contextlib.contextmanager
def small_filesystem(where: Path, size_mib: int, allowed: bool = True) -> Iterator[bool]:
    """A tmpfs of `size_mib` at `where`; yields False (and nothing is mounted) when mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = allowed and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(where)],
                             capture_output=True).returncode == 0  # fmt: skip
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path, leave_free: int) -> None:
    """Take the filesystem's space down to about `leave_free` bytes with one filler file."""
    with open(path, "ab") as handle:
        while (free := shutil.disk_usage(path.parent).free) > leave_free:
            handle.write(b"\1" * min(MiB, free - leave_free))
            handle.flush()


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.parametrize("tmpfs", [True, False], ids=["on-a-small-tmpfs", "by-min-free-bytes"])
def test_a_nearly_full_disk_refuses_uploads_cleanly_and_loses_nothing(
    tmpfs: bool, tenants: dict[str, Tenant], host_keys: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with small_filesystem(tmp_path / "small", 48, allowed=tmpfs) as mounted:
        daemon = RunningDaemon(tmp_path / "home", [tenants["north"]], host_keys)
        if mounted:  # only the state directory on the small disk: the client's files and the log stay outside
            shutil.copytree(daemon.state, tmp_path / "small" / "state")
            daemon.state = tmp_path / "small" / "state"
            daemon.write_config()
        guard = 8 * MiB if mounted else shutil.disk_usage(tmp_path).free + 1024 * MiB
        daemon.config.write_text(daemon.config.read_text().replace("min_free_bytes = 0", f"min_free_bytes = {guard}"))
        try:
            _exercise(daemon, mounted)
        finally:
            daemon.close()
    if tmpfs and not mounted:
        with capsys.disabled():
            print("\nno tmpfs could be mounted here: the refusal was driven by min_free_bytes; running out of space "
                  "in the middle of an upload was not exercised")  # fmt: skip


def _exercise(daemon: RunningDaemon, mounted: bool) -> None:
    sample = copy_sample("valid-1.1-bulk.zip", daemon.client_dir)
    if mounted:
        daemon.start()
        sent = daemon.sftp_batch("north", [f"put {sample} inbox/day1.zip"])
        assert sent.returncode == 0, sent.stderr
        first = daemon.wait_for_receipt("north", "day1.zip")
        assert first["state"] == "accepted"
        filler = daemon.state / "filler"
        fill(filler, leave_free=4 * MiB)  # below the 8 MiB guard
    else:  # the guard is above the disk's real free space from the start: take a baseline first without it
        text = daemon.config.read_text()
        daemon.config.write_text(text.replace("min_free_bytes = ", "min_free_bytes = 0\n# ", 1))
        daemon.start()
        sent = daemon.sftp_batch("north", [f"put {sample} inbox/day1.zip"])
        assert sent.returncode == 0, sent.stderr
        first = daemon.wait_for_receipt("north", "day1.zip")
        daemon.config.write_text(text)
        daemon.restart()
    snapshot = daemon.state / "snapshots" / "north" / first["upload_id"]
    before = tree_digest(snapshot)

    refused = daemon.sftp_batch("north", [f"put {sample} inbox/day2.zip"])
    assert refused.returncode != 0 and "day2.zip" not in os.listdir(daemon.inbox("north"))
    assert [e["limit"] for e in daemon.events("sftp.limit_exceeded")] == ["min_free_bytes"]

    if mounted:  # space above the guard, but not enough for the file: the disk fills up mid-upload
        filler.unlink()
        fill(filler, leave_free=12 * MiB)
        big = daemon.client_dir / "big.zip"
        big.write_bytes(os.urandom(20 * MiB))
        cut = daemon.sftp_batch("north", ["put big.zip inbox/big.zip"])
        assert cut.returncode != 0
        assert not [n for n in os.listdir(daemon.inbox("north")) if "big" in n]  # no partial file left behind
        assert any(e["event"] == "upload.aborted" for e in daemon.events())
        filler.unlink()
    else:
        daemon.config.write_text(daemon.config.read_text().replace("min_free_bytes = ", "min_free_bytes = 0\n# ", 1))
        daemon.restart()

    assert tree_digest(snapshot) == before  # the snapshot is whole
    assert daemon.proc.poll() is None and not daemon.events("upload.failed")
    again = daemon.sftp_batch("north", [f"put {copy_sample('valid-1.2-bulk.zip', daemon.client_dir)} inbox/day3.zip"])
    assert again.returncode == 0, again.stderr
    third = daemon.wait_for_receipt("north", "day3.zip")
    assert third["state"] == "accepted" and third["changes"]["against_upload_id"] == first["upload_id"]
