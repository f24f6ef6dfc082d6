"""daemon/files.py, the one writer of small files: the new bytes whole or the old ones, the mode asked for,
nothing left beside the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon import files


def test_text_and_bytes_replace_the_file_with_exactly_the_mode_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    files.write_whole(path, "née\n", mode=0o640)
    assert path.read_bytes() == "née\n".encode() and path.stat().st_mode & 0o777 == 0o640
    files.write_whole(path, b"\x00bytes")  # the default: 0600, rosters and keys are nobody else's
    assert path.read_bytes() == b"\x00bytes" and path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["state.json"]


def test_without_a_mode_the_file_gets_what_a_plain_open_gives(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("x")  # 0666 less the umask
    files.write_whole(tmp_path / "whole", "x", mode=None, sync_dir=True)
    assert (tmp_path / "whole").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_exclusive_never_writes_over_a_file_that_exists(tmp_path: Path) -> None:
    path = tmp_path / "key"
    files.write_whole(path, "first", exclusive=True)
    with pytest.raises(FileExistsError):
        files.write_whole(path, "second", exclusive=True)
    assert path.read_text() == "first" and os.listdir(tmp_path) == ["key"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")

    def refused(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(OSError, match="No space left"):
        files.write_whole(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["state.json"]


def test_the_older_text_writer_is_the_same_writer(tmp_path: Path) -> None:
    files.replace_text(tmp_path / "label", "upload.zip", 0o644)
    assert (tmp_path / "label").read_text() == "upload.zip" and (tmp_path / "label").stat().st_mode & 0o777 == 0o644
