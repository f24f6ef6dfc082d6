"""What only the local storage has to get right: it is a folder on disk, and keys must stay inside it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from daemon.objects import LocalStorage


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the storage's root that no key may reach."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("not an object")
    return folder


@pytest.mark.parametrize("key", ["../outside/secret.txt", "a/../../outside/secret.txt", "objects/../../x"])
def test_dot_dot_cannot_leave_the_root(local: LocalStorage, outside: Path, key: str) -> None:
    with pytest.raises(ValueError):
        local.get_bytes(key)
    with pytest.raises(ValueError):
        local.put_bytes(key, b"planted")
    assert (outside / "secret.txt").read_text() == "not an object"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_a_linked_folder_that_leads_outside_is_refused(local: LocalStorage, outside: Path) -> None:
    (local.root / "out").symlink_to(outside, target_is_directory=True)
    for call in (
        lambda: local.get_bytes("out/secret.txt"),
        lambda: local.get_range("out/secret.txt", 0, 3),
        lambda: local.info("out/secret.txt"),
        lambda: local.put_bytes("out/planted", b"x"),
        lambda: local.delete("out/secret.txt"),
        lambda: local.polars_source("out/secret.txt"),
    ):
        with pytest.raises(ValueError, match="leads outside"):
            call()
    assert local.list("out/") == []
    assert local.list() == []
    assert local.delete_prefix("out/") == 0
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_a_linked_file_that_leads_outside_is_refused(local: LocalStorage, outside: Path) -> None:
    (local.root / "leak").symlink_to(outside / "secret.txt")
    with pytest.raises(ValueError, match="leads outside"):
        local.get_bytes("leak")
    with pytest.raises(ValueError, match="leads outside"):
        local.put_bytes("leak", b"overwritten?")
    assert (outside / "secret.txt").read_text() == "not an object"
    assert local.list() == []


def test_folders_are_made_as_needed_and_removed_when_emptied(local: LocalStorage) -> None:
    local.put_bytes("snapshots/north/u-1/users.parquet", b"1")
    local.put_bytes("snapshots/north/u-1/changes/users.parquet", b"2")
    local.put_bytes("snapshots/south/u-2/users.parquet", b"3")
    assert (local.root / "snapshots/north/u-1/changes/users.parquet").read_bytes() == b"2"

    assert local.delete_prefix("snapshots/north/") == 2
    assert not (local.root / "snapshots/north").exists()
    assert (local.root / "snapshots/south/u-2/users.parquet").exists()

    local.delete("snapshots/south/u-2/users.parquet")
    assert list(local.root.iterdir()) == []  # the root itself stays
    assert local.root.is_dir()


def test_partial_files_are_not_objects(local: LocalStorage) -> None:
    local.put_bytes("a/b", b"whole")
    (local.root / "a" / ".partial-0123abcd").write_bytes(b"half")  # what a crash mid-write leaves
    assert [info.key for info in local.list()] == ["a/b"]
    assert sorted(p.name for p in (local.root / "a").iterdir()) == [".partial-0123abcd", "b"]


def test_objects_are_readable_by_the_daemon_alone(local: LocalStorage, tmp_path: Path) -> None:
    local.put_bytes("a", b"roster rows")
    source = tmp_path / "upload.zip"
    source.write_bytes(b"PK")
    source.chmod(0o644)
    local.put_file("b", source)
    assert os.stat(local.root / "a").st_mode & 0o777 == 0o600
    assert os.stat(local.root / "b").st_mode & 0o777 == 0o600


def test_a_missing_source_file_makes_no_folders(local: LocalStorage, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        local.put_file("uploads/north/x.zip", tmp_path / "no-such-file")
    assert list(local.root.iterdir()) == []


def test_puts_survive_a_delete_prefix_emptying_their_folder(local: LocalStorage) -> None:
    """delete_prefix removes a folder it empties; a put on another thread into that folder makes it again."""
    failures: list[BaseException] = []

    def put_many() -> None:
        try:
            for n in range(30):
                local.put_bytes(f"changes/north/{n}", b"x")
        except BaseException as error:  # noqa: BLE001 (reported by the test below)
            failures.append(error)

    putter = threading.Thread(target=put_many)
    putter.start()
    while putter.is_alive():
        local.delete_prefix("changes/")
    putter.join()
    assert failures == []
    local.delete_prefix("changes/")
    assert list(local.root.iterdir()) == []
