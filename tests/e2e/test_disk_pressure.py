"""Disk pressure: on a nearly full filesystem new uploads are refused cleanly and nothing is lost.

The daemon's state directory is put on a small tmpfs. So that this needs no root and mounts nothing on the
host, the tmpfs lives in a user and mount namespace of its own (`unshare --user --map-root-user --mount`),
held open by a keeper process; the daemon is started inside it with `nsenter`, and the test reads and fills
the state directory through /proc/<keeper>/root. Where namespaces cannot be made the test fails, saying why:
it never passes without having filled a disk. The same refusal is also driven by a `min_free_bytes` above the
real free space, which needs no namespace.

The small-disk test also runs on PostgreSQL and an S3 bucket (`backend` `shared`), as a replica would. Its
premise holds there: a replica still has a state directory of its own on local disk, with the inbox in it
(where a file is written while it arrives, and where min_free_bytes is checked), the uploads it takes (kept
there before they go to the bucket) and its copies of snapshots and receipts; only the database and the
shared copies live elsewhere. There the database and the bucket are checked too: no record and no object
of the refused or cut-off files, and the snapshot's bytes in the bucket those it had before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import conftest as harness
from .conftest import Backend, RunningDaemon, Tenant, copy_sample
from .shared_state import check_snapshots_whole, open_bucket, query

MiB = 1024 * 1024


@contextlib.contextmanager
def small_filesystem(where: Path, size_mib: int) -> Iterator[tuple[Path, list[str]]]:
    """A tmpfs of `size_mib` at `where`, seen only inside a new user and mount namespace. Yields the tmpfs as
    the host sees it (through /proc/<keeper>/root) and the command prefix that runs a command inside."""
    where.mkdir(parents=True, exist_ok=True)
    mount = 'mount -t tmpfs -o "size=$2m,mode=0755" tmpfs "$1" && echo mounted && exec cat'
    try:
        keeper = subprocess.Popen(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount, "sh",
                                   str(where), str(size_mib)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    except FileNotFoundError:
        pytest.fail("unshare (util-linux) is missing: this test needs it to put the state on a small tmpfs")
    try:
        if keeper.stdout.readline().strip() != "mounted":  # an error ends the shell: end of file
            keeper.kill()
            pytest.fail("no tmpfs could be mounted in a user and mount namespace (unshare --user "
                        f"--map-root-user --mount): {keeper.communicate(timeout=10)[1].strip()}")  # fmt: skip
        enter = ["nsenter", "--target", str(keeper.pid), "--user", "--mount", "--preserve-credentials", "--"]
        yield Path(f"/proc/{keeper.pid}/root") / where.relative_to("/"), enter
    finally:
        keeper.stdin.close()  # cat ends, and with it the namespace once the daemon has gone too
        keeper.wait(10)


class DaemonOnSmallDisk(RunningDaemon):
    """A daemon whose state directory is `inner` inside the namespace, and `self.state` for the test."""

    inner: Path | None = None

    def write_config(self) -> None:
        super().write_config()
        if self.inner is not None:
            text = self.config.read_text()
            self.config.write_text(text.replace(json.dumps(str(self.state)), json.dumps(str(self.inner))))


def fill(path: Path, leave_free: int) -> None:
    """Take the filesystem's space down to about `leave_free` bytes with one filler file."""
    with open(path, "ab") as handle:
        while (free := shutil.disk_usage(path.parent).free) > leave_free:
            handle.write(b"\1" * min(MiB, free - leave_free))
            handle.flush()


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def test_a_nearly_full_disk_refuses_uploads_cleanly_and_loses_nothing(
    backend: Backend, tenants: dict[str, Tenant], host_keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with small_filesystem(tmp_path / "small", 48) as (seen, enter):
        daemon = DaemonOnSmallDisk(tmp_path / "home", [tenants["north"]], host_keys, backend.config)
        shutil.copytree(daemon.state, seen / "state")  # the host keys, placed as the harness places them
        daemon.state, daemon.inner = seen / "state", tmp_path / "small" / "state"
        daemon.write_config()
        text = daemon.config.read_text()
        daemon.config.write_text(text.replace("min_free_bytes = 0", f"min_free_bytes = {8 * MiB}"))
        wrapper = tmp_path / "rosterd-on-the-small-disk"  # what the harness starts as `rosterd`
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.join([*enter, str(harness.ROSTERD)])} "$@"\n')
        wrapper.chmod(0o755)
        monkeypatch.setattr(harness, "ROSTERD", wrapper)
        try:
            assert shutil.disk_usage(daemon.state).total <= 48 * MiB  # the test really sees the small disk
            first, third = _exercise(daemon, on_small_disk=True)
            if backend.shared:
                _check_shared(backend, daemon.state / "snapshots" / "north" / first["upload_id"], [first, third])
        finally:
            daemon.close()


def test_min_free_bytes_above_the_free_space_refuses_uploads_cleanly(
    tenants: dict[str, Tenant], host_keys: Path, tmp_path: Path
) -> None:
    daemon = RunningDaemon(tmp_path / "home", [tenants["north"]], host_keys)
    guard = shutil.disk_usage(tmp_path).free + 1024 * MiB
    daemon.config.write_text(daemon.config.read_text().replace("min_free_bytes = 0", f"min_free_bytes = {guard}"))
    try:
        _exercise(daemon, on_small_disk=False)
    finally:
        daemon.close()


def _exercise(daemon: RunningDaemon, on_small_disk: bool) -> tuple[dict, dict]:
    """The refusals, then a last upload accepted against the first: both receipts."""
    sample = copy_sample("valid-1.1-bulk.zip", daemon.client_dir)
    if on_small_disk:
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

    if on_small_disk:  # space above the guard, but not enough for the file: the disk fills up mid-upload
        filler.unlink()
        fill(filler, leave_free=12 * MiB)
        big = daemon.client_dir / "big.zip"
        big.write_bytes(os.urandom(20 * MiB))
        cut = daemon.sftp_batch("north", ["put big.zip inbox/big.zip"])
        assert cut.returncode != 0
        assert os.listdir(daemon.inbox("north")) == []  # no partial file left behind, hidden or not
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
    return first, third


def _check_shared(backend: Backend, snapshot: Path, accepted: list[dict]) -> None:
    """The database records the accepted uploads only; the bucket holds no bytes of any other upload, and the
    first snapshot there as it is on the replica's disk."""
    ids = [receipt["upload_id"] for receipt in accepted]
    assert query(backend.database, "SELECT id, state FROM uploads ORDER BY rowid") == [(i, "accepted") for i in ids]
    bucket = open_bucket(backend.seaweed, backend.prefix)
    try:
        stored = {info.key.removeprefix("uploads/north/").split(".")[0] for info in bucket.list("uploads/north/")}
        assert stored <= set(ids), stored
        prefix = f"snapshots/north/{ids[0]}/"
        copied = {info.key.removeprefix(prefix): hashlib.sha256(bucket.get_bytes(info.key)).hexdigest()
                  for info in bucket.list(prefix)}  # fmt: skip
        assert copied == tree_digest(snapshot)
        check_snapshots_whole(backend.database, bucket)
    finally:
        bucket.close()
