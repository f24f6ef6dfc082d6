"""`rosterd` as a user runs it: the installed console script, exit codes, text and JSON output."""

from __future__ import annotations

import json
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
