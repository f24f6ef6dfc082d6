"""`rosterd validate` as README describes two of its options: `--max-total-size` (the limit on the total
uncompressed size of the package) and the progress line shown when stderr is a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import zipfile
from pathlib import Path

ROSTERD = Path(sys.executable).parent / "rosterd"
SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "valid-1.1-bulk.zip"


def validate(*args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROSTERD), "validate", *args], capture_output=True, text=True, timeout=120, **options)


def test_max_total_size_rejects_a_package_larger_than_it_when_decompressed() -> None:
    with zipfile.ZipFile(SAMPLE) as package:
        total = sum(entry.file_size for entry in package.infolist())  # what the files take once decompressed

    at_the_limit = validate(str(SAMPLE), "--max-total-size", str(total), "--format", "json")
    assert at_the_limit.returncode == 0, at_the_limit.stdout
    assert json.loads(at_the_limit.stdout)["verdict"] == "accepted"

    over = validate(str(SAMPLE), "--max-total-size", str(total - 1), "--format", "json")
    assert over.returncode == 1
    result = json.loads(over.stdout)
    assert result["verdict"] == "rejected" and list(result["counts_by_code"]) == ["zip.too_large"]


def read_terminal(fd: int) -> bytes:
    """All a child wrote to the terminal whose controlling side is `fd`, until it closed its end."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer of the other side has closed it
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_progress_line_names_each_file_while_stderr_is_a_terminal() -> None:
    controller, terminal = pty.openpty()
    try:
        child = subprocess.Popen([str(ROSTERD), "validate", str(SAMPLE), "--format", "json"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=terminal)  # fmt: skip
        os.close(terminal)
        shown = read_terminal(controller).decode("utf-8", errors="replace")
        out, _ = child.communicate(timeout=120)
    finally:
        os.close(controller)
    assert child.returncode == 0 and json.loads(out)["verdict"] == "accepted"  # stdout carries only the result
    for name in ("orgs.csv", "academicSessions.csv", "courses.csv", "classes.csv", "users.csv", "enrollments.csv"):
        assert name in shown, (name, shown)

    piped = validate(str(SAMPLE), "--format", "json")
    assert piped.returncode == 0 and piped.stderr == ""  # no progress line in a pipe or a log file
