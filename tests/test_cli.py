"""`rosterd` as a user runs it: the installed console script, exit codes, text and JSON output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.store import SnapshotRecord, State, Store
from tests.test_snapshot_store import RESULT, upload

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


# -- the admin commands on a state directory made by hand -------------------------------------------

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5Kn+MW6e9DFyeijzpRau2cuO627da9N925FJu7XDdS north@sis"
TARGETS = """
[[tenants.targets]]
type = "cers"
dry_run = true

[[tenants.targets]]
type = "webhook"
name = "lms-vendor"
url = "https://lms.example/rosterd"
signing = { secret_env = "LMS_VENDOR_SECRET" }

[[tenants.targets]]
type = "sftp"
name = "nightly"
host = "sftp.readingco.example"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5Kn+MW6e9DFyeijzpRau2cuO627da9N925FJu7XDdS"
auth = { username = "north", secret_env = "READINGCO_PASSWORD" }
"""


@pytest.fixture
def state(tmp_path: Path) -> tuple[Path, Store]:
    """A config with one tenant and three targets, and its (empty) database."""
    config = tmp_path / "rosterd.toml"
    config.write_text(f'[server]\nstate_dir = "{tmp_path / "state"}"\n\n[[tenants]]\nname = "north"\n'
                      f'authorized_keys = ["{KEY}"]\n{TARGETS}')  # fmt: skip
    store = Store(tmp_path / "state" / "rosterd.db", {"north": ["cers", "lms-vendor", "nightly"]})
    yield config, store
    store.close()


def record(store: Store, upload_id: str, held: bool = False) -> None:
    """A snapshot of north diffed against its current one, as intake records it; a held one crossed a threshold."""
    current = store.current_snapshot("north")
    holds = [{"threshold": "users_deleted_share", "detail": "3 of 10 users deleted (30.0%, more than 10%)"}]
    snapshot = SnapshotRecord(tenant="north", version="1.1", path=f"/state/snapshots/north/{upload_id}",
                              base_upload_id=current.upload_id if current else None, rows={"users": 10},
                              changes={"users": {"added": 0, "updated": 0, "deleted": 3}}, holds=holds if held else [])
    store.record_snapshot(upload_id, snapshot, State.HELD if held else State.ACCEPTED, RESULT)


def test_status_names_each_target_by_its_kind_and_name(state) -> None:
    config, _store = state
    text = run("status", "--config", str(config))
    assert text.returncode == 0, text.stderr
    assert "\n  target cers                 backlog 0; last success never\n" in text.stdout
    assert "\n  target webhook lms-vendor   backlog 0; last success never\n" in text.stdout
    assert "\n  target sftp nightly         backlog 0; last success never\n" in text.stdout
    doc = json.loads(run("status", "--format", "json", "--config", str(config)).stdout)
    assert [t["label"] for t in doc[0]["targets"]] == ["cers", "webhook lms-vendor", "sftp nightly"]


def test_snapshots_marks_the_current_one(state) -> None:
    config, store = state
    first, second, held = upload(store, 1), upload(store, 2), upload(store, 3)
    record(store, first)
    record(store, second)
    record(store, held, held=True)  # newer, but held: the current roster is still the second one

    text = run("snapshots", "north", "--config", str(config))
    assert text.returncode == 0, text.stderr
    marks = {line.split()[-1]: line[:2] for line in text.stdout.splitlines()[1:] if line.strip().endswith(".zip")}
    assert marks == {"day3.zip": "  ", "day2.zip": "* ", "day1.zip": "  "}
    assert "* current: the roster in use, which the next upload is compared with" in text.stdout
    doc = json.loads(run("snapshots", "north", "--format", "json", "--config", str(config)).stdout)
    assert [(row["upload_id"], row["current"]) for row in doc] == [(held, False), (second, True), (first, False)]


def test_approve_records_the_operator_and_the_time_in_the_receipt(state) -> None:
    config, store = state
    first, held = upload(store, 1), upload(store, 2)
    record(store, first)
    record(store, held, held=True)
    done = subprocess.run([str(ROSTERD), "approve", held, "--config", str(config)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "SUDO_USER": "ops-alice"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    (event,) = [e for e in logged if e["event"] == "upload.approved"]
    assert (event["tenant"], event["upload_id"], event["operator"]) == ("north", held, "ops-alice")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["at"])  # ISO-8601, UTC
    assert done.stdout.strip().endswith(f"is now accepted, by ops-alice at {event['at']}")
    results = config.parent / "state" / "tenants" / "north" / "results"
    receipt = json.loads((results / f"day2.zip.{held}.json").read_text())
    assert receipt["decisions"] == [{"decision": "approved", "operator": "ops-alice", "at": event["at"]}]
    assert f"  decided   {event['at']}  approved by ops-alice" in (results / f"day2.zip.{held}.txt").read_text()
