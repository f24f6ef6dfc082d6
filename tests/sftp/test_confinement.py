"""What a tenant sees: `/inbox` and `/results`, nothing above, beside or behind them."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh
import pytest

from daemon.receipts import RESULT_FOLDERS as FOLDERS
from daemon.sftp.paths import Kind, PathRefused, parse

from .conftest import ACME_PASSWORD, Harness, needs_openssh


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(directory)): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
    }


@pytest.mark.parametrize(
    ("raw", "kind", "text"),
    [
        (b"/", Kind.ROOT, "/"),
        (b".", Kind.ROOT, "/"),
        (b"inbox", Kind.AREA, "/inbox"),
        (b"/inbox/../results/./r.json", Kind.ENTRY, "/results/r.json"),
        (b"//etc/passwd", Kind.ELSEWHERE, "/etc/passwd"),
        (b"/inbox/a/b", Kind.ELSEWHERE, "/inbox/a/b"),
        (b"/inbox//x.zip", Kind.ENTRY, "/inbox/x.zip"),
        (b"/results/cers", Kind.AREA, "/results/cers"),
        (b"results/cers/g.csv", Kind.ENTRY, "/results/cers/g.csv"),
        (b"/results/cers/a/b.csv", Kind.ELSEWHERE, "/results/cers/a/b.csv"),
        (b"/results/other/g.csv", Kind.ELSEWHERE, "/results/other/g.csv"),
        (b"/inbox/cers/g.csv", Kind.ELSEWHERE, "/inbox/cers/g.csv"),
    ],
)
def test_paths_are_read_lexically_inside_the_tenant_tree(raw: bytes, kind: Kind, text: str) -> None:
    parsed = parse(raw, FOLDERS)
    assert (parsed.kind, parsed.text) == (kind, text)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"..", "path_escape"),
        (b"/inbox/../../etc", "path_escape"),
        (b"/inbox/a\x00.zip", "control_character"),
        (b"/inbox/a\nb", "control_character"),
        (b"/inbox/\xff.zip", "undecodable"),
        (b"/inbox/" + b"a" * 256, "name_too_long"),
    ],
)
def test_paths_that_cannot_be_meant_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(PathRefused) as refused:
        parse(raw)
    assert refused.value.reason == reason


@needs_openssh
async def test_escape_attempts_with_the_openssh_client_all_fail(server: Harness, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not for tenants")
    (server.workdir / "x.zip").write_bytes(b"payload")
    (server.root("acme") / "inbox" / "mine.zip").write_bytes(b"mine")
    (server.root("acme") / "results" / "r.json").write_text("{}")
    before = snapshot(tmp_path / "tenants") | snapshot(outside)
    attempts = [
        "cd ..",
        "cd /..",
        "get /etc/passwd",
        "get //etc/passwd",
        "get ../../../../etc/passwd",
        f"get {outside}/secret.txt",
        "ls //etc",
        "ls /inbox/../..",
        "put x.zip ../x.zip",
        "put x.zip /../x.zip",
        "put x.zip //tmp/x.zip",
        f"put x.zip {outside}/x.zip",
        "put x.zip /x.zip",
        "put x.zip /results/x.zip",
        "mkdir /inbox/sub",
        "rmdir /inbox",
        "ln -s /etc/passwd /inbox/link",
        "symlink /etc/passwd /inbox/link",
        "ln /inbox/mine.zip /inbox/hard.zip",
        "rename /inbox/mine.zip /results/mine.zip",
        "rename /inbox/mine.zip /mine.zip",
        "rename /results/r.json /inbox/r.json",
        "rm /results/r.json",
        "chmod 777 /inbox/mine.zip",
        "get /inbox/mine.zip",
    ]
    for command in attempts:
        result = await server.sftp("acme", [command])
        assert result.returncode != 0, f"{command!r} succeeded: {result.output}"

    assert snapshot(tmp_path / "tenants") | snapshot(outside) == before
    assert {p.name for p in server.workdir.iterdir() if not p.name.startswith("batch-")} == {"x.zip"}  # nothing fetched
    assert server.uploads == []
    reasons = {event["reason"] for event in server.named("sftp.operation_refused")}
    assert {"path_escape", "link", "not_permitted"} <= reasons


async def test_raw_paths_from_a_library_client_cannot_escape(server: Harness) -> None:
    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        for path in (b"//etc/passwd", b"/results/../../etc/passwd", b"/results/r\x00/../../etc/passwd"):
            with pytest.raises((asyncssh.SFTPNoSuchFile, asyncssh.SFTPPermissionDenied)):
                await sftp.open(path, "rb")
        for path in (b"/etc", b"//etc", b"/inbox/../../"):
            with pytest.raises((asyncssh.SFTPNoSuchFile, asyncssh.SFTPPermissionDenied)):
                await sftp.listdir(path)
        assert sorted(await sftp.listdir("/")) == ["inbox", "results"]
        assert await sftp.realpath(".") == "/"
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.realpath("/..")


async def test_links_already_on_disk_are_refused_not_followed(server: Harness, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host file")
    results = server.root("acme") / "results"
    (results / "leak.json").symlink_to(secret)
    (server.root("acme") / "inbox" / "trap.zip").symlink_to(secret)
    (server.root("globex") / "results").rename(server.root("globex") / "results-real")
    (server.root("globex") / "results").symlink_to(tmp_path)  # a whole area swapped for a link

    async with server.connect("acme", ACME_PASSWORD) as conn, conn.start_sftp_client() as sftp:
        assert await sftp.listdir("/results") == []
        assert await sftp.listdir("/inbox") == []
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.open("/results/leak.json", "rb")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.open("/inbox/trap.zip", "wb")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.remove("/inbox/trap.zip")
    async with server.connect("globex", client_keys=[server.keys["globex"].private]) as conn:
        async with conn.start_sftp_client() as sftp:
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.listdir("/results")
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.open("/results/secret.txt", "rb")

    assert secret.read_text() == "host file"
    assert {e["reason"] for e in server.named("sftp.operation_refused")} >= {"not_a_regular_file", "symlink_on_disk"}


@needs_openssh
async def test_two_tenants_cannot_reach_each_others_files(server: Harness) -> None:
    (server.workdir / "g.zip").write_bytes(b"globex data")
    (server.root("globex") / "results" / "g.json").write_text("{}")
    assert (await server.sftp("globex", ["put g.zip /inbox/g.zip"])).returncode == 0

    listing = await server.sftp("acme", ["ls /inbox", "ls /results"])
    assert listing.returncode == 0
    assert "g.zip" not in listing.stdout and "g.json" not in listing.stdout
    for command in (
        "get /inbox/g.zip",
        "get /results/g.json",
        "get ../globex/inbox/g.zip",
        "get /inbox/../../globex/inbox/g.zip",
        "ls ../globex",
        "rm /inbox/g.zip",
        "put g.zip ../globex/inbox/evil.zip",
    ):
        result = await server.sftp("acme", [command])
        assert result.returncode != 0, f"{command!r} succeeded: {result.output}"
    assert sorted(os.listdir(server.root("globex") / "inbox")) == ["g.zip"]
    assert not (server.workdir / "g.json").exists()
    assert [(u.tenant, u.name) for u in server.uploads] == [("globex", "g.zip")]


@needs_openssh
async def test_results_can_be_listed_and_read_but_not_changed(server: Harness) -> None:
    receipt = server.root("acme") / "results" / "roster.zip.u1.json"
    receipt.write_text('{"state": "accepted"}')

    result = await server.sftp("acme", ["ls -l /results", "get /results/roster.zip.u1.json"])

    assert result.returncode == 0, result.output
    assert "roster.zip.u1.json" in result.stdout
    assert (server.workdir / "roster.zip.u1.json").read_text() == '{"state": "accepted"}'
    for command in (
        "put roster.zip.u1.json /results/roster.zip.u1.json",
        "rm /results/roster.zip.u1.json",
        "rename /results/roster.zip.u1.json /results/other.json",
    ):
        assert (await server.sftp("acme", [command])).returncode != 0, command
    assert receipt.read_text() == '{"state": "accepted"}'


@needs_openssh
async def test_the_cers_folder_of_results_can_be_read_but_not_changed(server: Harness) -> None:
    folder = server.root("acme") / "results" / "cers"
    folder.mkdir()
    (folder / "rosterd-acme-u1-1.csv").write_text("group_name,school_natural_id\n")

    result = await server.sftp("acme", ["ls -l /results", "ls /results/cers", "get /results/cers/rosterd-acme-u1-1.csv"])

    assert result.returncode == 0, result.output
    assert "dr-xr-xr-x" in result.stdout and "rosterd-acme-u1-1.csv" in result.stdout
    assert (server.workdir / "rosterd-acme-u1-1.csv").read_text() == "group_name,school_natural_id\n"
    for command in ("put rosterd-acme-u1-1.csv /results/cers/x.csv", "rm /results/cers/rosterd-acme-u1-1.csv",
                    "mkdir /results/cers/sub", "rmdir /results/cers"):  # fmt: skip
        assert (await server.sftp("acme", [command])).returncode != 0, command
    assert os.listdir(folder) == ["rosterd-acme-u1-1.csv"]


@needs_openssh
async def test_a_cers_folder_that_is_a_link_is_refused(server: Harness, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.csv").write_text("not yours")
    (server.root("acme") / "results" / "cers").symlink_to(outside)

    result = await server.sftp("acme", ["get /results/cers/secret.csv"])

    assert result.returncode != 0
    assert not (server.workdir / "secret.csv").exists()
    listing = await server.sftp("acme", ["ls /results"])
    assert "cers" not in listing.stdout


@needs_openssh
async def test_inbox_files_can_be_renamed_and_removed_but_not_read(server: Harness) -> None:
    (server.root("acme") / "inbox" / "a.zip").write_bytes(b"a")

    result = await server.sftp("acme", ["rename /inbox/a.zip /inbox/b.zip", "rm /inbox/b.zip"])

    assert result.returncode == 0, result.output
    assert os.listdir(server.root("acme") / "inbox") == []
    (server.root("acme") / "inbox" / "c.zip").write_bytes(b"c")
    assert (await server.sftp("acme", ["get /inbox/c.zip"])).returncode != 0
