"""`rosterd` as a user runs it: the installed console script, exit codes, text and JSON output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
ROSTERD = Path(sys.executable).parent / "rosterd"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROSTERD), *args], capture_output=True, text=True, timeout=120)


def test_help_explains_the_commands() -> None:
    top = run("--help")
    assert top.returncode == 0
    assert "validate" in top.stdout and "OneRoster" in top.stdout
    sub = run("validate", "--help")
    assert sub.returncode == 0
    for word in ("--strict", "--format", "Exit status", "accepted", "rejected"):
        assert word in sub.stdout


def test_accepted_package_exits_0_with_counts() -> None:
    out = run("validate", str(SAMPLES / "valid-1.1-bulk.zip"))
    assert out.returncode == 0
    assert "ACCEPTED" in out.stdout
    assert "enrollments.csv" in out.stdout


def test_rejected_package_exits_1_and_groups_findings_by_code() -> None:
    out = run("validate", str(SAMPLES / "broken-school-not-a-school.zip"))
    assert out.returncode == 1
    assert "REJECTED" in out.stdout
    assert "reference.target_type_mismatch (1)" in out.stdout
    assert "classes.csv:2 schoolSourcedId = 'dst-0001'" in out.stdout


def test_json_output_has_the_documented_shape() -> None:
    out = run("validate", "--format", "json", str(SAMPLES / "lenient-excel-export.zip"))
    assert out.returncode == 0
    doc = json.loads(out.stdout)
    assert doc["verdict"] == "accepted" and doc["version"] == "1.1"
    assert doc["files"]["users.csv"]["mode"] == "bulk"
    assert set(doc["files"]["users.csv"]) == {"mode", "rows", "dropped"}
    finding = doc["findings"][0]
    assert set(finding) == {"code", "severity", "file", "row", "column", "value", "message"}
    assert sum(doc["counts_by_code"].values()) >= len(doc["findings"])


def test_strict_turns_deviations_into_a_rejection() -> None:
    out = run("validate", "--strict", "--format", "json", str(SAMPLES / "lenient-excel-export.zip"))
    assert out.returncode == 1
    severities = {f["code"]: f["severity"] for f in json.loads(out.stdout)["findings"]}
    assert severities["row.invalid_boolean"] == "error"


def test_unusable_arguments_exit_2(tmp_path: Path) -> None:
    assert run("validate", str(tmp_path / "missing.zip")).returncode == 2
    assert run("validate", str(tmp_path)).returncode == 2
    assert run("validate").returncode == 2
    assert run("validate", "--format", "xml", str(SAMPLES / "valid-1.1-bulk.zip")).returncode == 2


def test_codes_lists_the_catalogue() -> None:
    out = run("codes")
    assert out.returncode == 0
    assert "reference.missing_target_record" in out.stdout


def test_text_report_counts_each_severity_apart_and_lists_causes_first() -> None:
    # Dates written 8/15/2026 drop the sessions; classes must name a term (an error when it was dropped),
    # while a session's parent and a course's school year are optional (lenient mode: warnings).
    out = run("validate", str(SAMPLES / "broken-us-dates.zip"))
    assert out.returncode == 1
    groups = re.findall(r"^  (ERROR|WARNING) +(\S+) \((\d+)\):", out.stdout, re.M)
    errors, warnings = map(int, re.search(r"; (\d+) error\(s\), (\d+) warning\(s\)", out.stdout).groups())
    assert errors == sum(int(n) for severity, _, n in groups if severity == "ERROR")
    assert warnings == sum(int(n) for severity, _, n in groups if severity == "WARNING")
    order = [(severity, code) for severity, code, _ in groups]
    assert order.index(("ERROR", "row.invalid_date")) < order.index(("ERROR", "reference.target_dropped"))
    assert order.index(("ERROR", "reference.target_dropped")) < order.index(("WARNING", "reference.target_dropped"))
    assert order[-1] == ("ERROR", "file.too_many_dropped_rows")


def test_a_reader_that_stops_early_ends_rosterd_quietly_with_status_141() -> None:
    for entry in ([str(ROSTERD)], [sys.executable, "-m", "daemon"]):
        for args in (["codes"], ["validate", str(SAMPLES / "broken-us-dates.zip")]):
            read, write = os.pipe()
            os.close(read)  # a pipe nobody reads any more: rosterd's first write fails, whenever it comes
            try:
                got = subprocess.run([*entry, *args], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
            finally:
                os.close(write)
            assert (got.returncode, got.stderr) == (141, ""), (entry, args)


def test_codes_piped_into_head_prints_one_line_and_nothing_on_stderr() -> None:
    got = subprocess.run(["bash", "-c", f"'{ROSTERD}' codes | head -1"], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0
    assert re.fullmatch(r"[a-z]+\.[a-z0-9_]+ +\S.*\n", got.stdout)  # one line: a code and its meaning
    assert got.stderr == ""


def test_asyncssh_s_dsa_deprecation_is_not_printed_and_other_warnings_are() -> None:
    assert run("codes").stderr == ""
    imported = subprocess.run([sys.executable, "-c", "import daemon.sftp, asyncssh"], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
    assert (imported.returncode, imported.stderr) == (0, "")
    elsewhere = (
        "import warnings, daemon.sftp\n"
        "from cryptography.utils import CryptographyDeprecationWarning as W\n"
        "warnings.warn_explicit('from elsewhere', W, 'elsewhere.py', 1, module='elsewhere')\n"
        "warnings.warn_explicit('another kind', UserWarning, 'misc.py', 2, module='asyncssh.crypto.misc')\n"
    )
    shown = subprocess.run([sys.executable, "-c", elsewhere], capture_output=True, text=True, timeout=120)
    assert "CryptographyDeprecationWarning: from elsewhere" in shown.stderr
    assert "UserWarning: another kind" in shown.stderr
