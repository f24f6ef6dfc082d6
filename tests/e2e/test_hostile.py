"""Every hostile and broken upload of tests/hostile.py against one running daemon, as an SIS would send them.

One daemon, one tenant (north). A valid baseline goes first and becomes the current snapshot; then every
case is put over SFTP with OpenSSH's client (several puts per session), each under its own name
`NN-<case>.zip`, and every receipt is read back from results/ on the host. Each case must end in the state
it names, with its codes, and its findings must say where; the daemon must still serve, must have failed
no upload, and the baseline must be untouched and still current. Rejected files wait in quarantine.

The few cases lenient mode accepts by design (tests/hostile.py marks them) go last, after the baseline has
been checked, since an accepted upload becomes the tenant's current snapshot by definition.

It runs on SQLite and the state directory, and in a reduced form on PostgreSQL and an S3 bucket (`backend`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

from tests.hostile import MIB, Case, build_cases, valid_zip

from .conftest import ROSTERD, Backend, RunningDaemon, Tenant, is_final

PUTS_PER_SESSION = 20
DEADLINE = 90.0  # for all receipts of one phase
RECEIPTS_KEPT = 100  # the daemon's default: every receipt of this test must survive pruning
# What each accepted (tolerated) case changes, entity -> rows updated; nothing else may change.
TOLERATED = {
    "only-manifest-no-changes": {},
    "odd-case-file-name": {},
    "ref-session-parent": {"academicSessions": 1},  # the dangling optional parent is cleared
}
# Codes whose findings name a file and a row (row 1: the header) ...
ROW_LEVEL = ("row.", "reference.", "header.", "csv.line_break", "csv.unescaped_quote", "csv.invalid_utf8",
             "csv.bare_carriage_return", "csv.blank_line", "manifest.invalid_header", "manifest.duplicate_property",
             "manifest.unsupported_version", "manifest.invalid_file_mode", "manifest.row_width_mismatch")  # fmt: skip
# ... and of those, the ones about one cell also name its column.
CELL_LEVEL = ("row.", "reference.")
WHOLE_ROW = ("row.width_mismatch",)
# Codes about one named file (no row): the file, or the zip entry, is named.
FILE_LEVEL = ("csv.utf16", "csv.nul_byte", "csv.empty_file", "csv.no_data_rows", "file.", "manifest.file_",
              "package.required_file_missing", "package.oneroster_1_0")  # fmt: skip
ENTRY_LEVEL = ("zip.unsafe_name", "zip.symlink_entry", "zip.encrypted_entry", "zip.unsupported_compression",
               "zip.duplicate_entry", "zip.nested_zip", "zip.corrupt_entry", "zip.ratio_exceeded",
               "zip.file_name_case")  # fmt: skip


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under a snapshot folder with the sha256 of its bytes."""
    return {str(p.relative_to(folder)): sha256(p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def put_all(daemon: RunningDaemon, names: list[str]) -> None:
    """Upload the named files from the client folder, PUTS_PER_SESSION to one OpenSSH sftp session."""
    for start in range(0, len(names), PUTS_PER_SESSION):
        batch = [f"put {name} inbox/{name}" for name in names[start : start + PUTS_PER_SESSION]]
        sent = daemon.sftp_batch("north", batch, timeout=120)
        assert sent.returncode == 0, f"sftp failed at {batch}:\n{sent.stdout}\n{sent.stderr}"


def wait_for_receipts(daemon: RunningDaemon, names: list[str], timeout: float = DEADLINE) -> dict[str, dict]:
    """The final receipt of each named upload, read from results/<name>.<upload_id>.json on the host."""
    results = daemon.results("north")
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(names):
        for name in names:
            if name in found:
                continue
            for path in results.glob(f"{name}.u-*.json"):
                receipt = json.loads(path.read_text())  # receipts are renamed into place: never half written
                if is_final(receipt, name):
                    found[name] = receipt
        if len(found) < len(names):
            if time.monotonic() > deadline:
                missing = sorted(set(names) - set(found))
                raise AssertionError(f"no final receipt within {timeout}s for {missing}\n{daemon.diagnosis()}")
            assert daemon.proc.poll() is None, f"rosterd died:\n{daemon.output()[-6000:]}"
            time.sleep(0.1)
    return found


def problems_with(case: Case, receipt: dict) -> list[str]:
    """What is wrong with one case's receipt, as lines for the failure message (empty: all is well)."""
    want = "accepted" if case.accepted else "rejected"
    validation = receipt.get("validation") or {}
    counts = validation.get("counts_by_code", {})
    findings = validation.get("findings", [])
    found = []
    if receipt["state"] != want:
        found.append(f"state {receipt['state']}, expected {want} ({receipt.get('detail', '')})")
    if not case.expect:
        found.append("the case names no expected code")
    elif missing := case.expect - set(counts):
        found.append(f"codes {sorted(missing)} missing from {counts}")
    for code, where in case.where.items():
        places = [(f["file"], f["row"], f["column"]) for f in findings if f["code"] == code]
        if (where.file, where.row, where.column) not in places:
            found.append(f"{code}: no finding at {where}; found at {places[:5]}")
    for f in findings:
        found += [f"{f['code']} {lack}: {f}" for lack in missing_location(f)]
    if sum(counts.values()) < len(findings) or (findings == [] and counts):
        found.append(f"the findings ({len(findings)}) and their counts ({counts}) disagree")
    return found


def missing_location(finding: dict) -> list[str]:
    code = finding["code"]
    lacking = []
    if code.startswith(ROW_LEVEL):
        if finding["file"] is None or finding["row"] is None:
            lacking.append("has no file and row")
        if code.startswith(CELL_LEVEL) and code not in WHOLE_ROW and finding["column"] is None:
            lacking.append("has no column")
    elif code.startswith(FILE_LEVEL) and finding["file"] is None:
        lacking.append("has no file")
    elif code.startswith(ENTRY_LEVEL) and finding["file"] is None and not finding["value"]:
        lacking.append("names no entry")
    return lacking


def snapshots_of(daemon: RunningDaemon) -> list[dict]:
    got = subprocess.run([str(ROSTERD), "snapshots", "north", "--format", "json", "--config", str(daemon.config)],
                         check=False, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert got.returncode == 0, got.stderr
    return json.loads(got.stdout)


def assert_still_serving(daemon: RunningDaemon) -> None:
    assert daemon.proc.poll() is None, f"rosterd exited with {daemon.proc.returncode}"
    listing = daemon.sftp_batch("north", ["ls -1 results"])  # a fresh login
    assert listing.returncode == 0 and "latest.json" in listing.stdout, listing.stderr
    failed = daemon.events("upload.failed")
    crashed = [e for e in daemon.events("upload.rejected") if "error" in e]  # the validator itself raised
    assert failed == [] and crashed == [], f"uploads failed inside rosterd: {failed + crashed}"


def test_every_hostile_upload_is_answered_and_the_current_roster_stays(
    backend: Backend, rosterd, tenants: dict[str, Tenant]
) -> None:
    """On PostgreSQL and S3 (backend `shared`) in a reduced form: every sixth hostile case, and all tolerated."""
    cases = build_cases()
    if backend.shared:
        cases = [case for number, case in enumerate(cases) if case.accepted or number % 6 == 0]
    assert len(cases) + 1 <= RECEIPTS_KEPT, "more uploads than receipts kept: early receipts would be pruned"
    assert sum(len(c.data) for c in cases) < 4 * MIB, "the suite's cases are meant to stay small"
    assert len({sha256(c.data) for c in cases} | {sha256(valid_zip())}) == len(cases) + 1, "equal bytes: duplicates"
    assert {c.name for c in cases if c.accepted} == set(TOLERATED)
    daemon = rosterd(tenants["north"], extra_config=backend.config)

    (daemon.client_dir / "00-baseline.zip").write_bytes(valid_zip())
    put_all(daemon, ["00-baseline.zip"])
    baseline = wait_for_receipts(daemon, ["00-baseline.zip"])["00-baseline.zip"]
    assert baseline["state"] == "accepted", baseline
    snapshot = daemon.state / "snapshots" / "north" / baseline["upload_id"]
    before = fingerprint(snapshot)
    assert before, f"no snapshot files in {snapshot}"

    names = {c.name: f"{n:02d}-{c.name}.zip" for n, c in enumerate(cases, start=1)}
    for case in cases:
        (daemon.client_dir / names[case.name]).write_bytes(case.data)
    hostile = [c for c in cases if not c.accepted]
    tolerated = sorted((c for c in cases if c.accepted), key=lambda c: list(TOLERATED).index(c.name))

    put_all(daemon, [names[c.name] for c in hostile])
    receipts = wait_for_receipts(daemon, [names[c.name] for c in hostile])
    problems = {c.name: p for c in hostile if (p := problems_with(c, receipts[names[c.name]]))}
    assert problems == {}, "\n".join(f"{name}:\n  " + "\n  ".join(lines) for name, lines in problems.items())

    assert_still_serving(daemon)
    assert fingerprint(snapshot) == before
    history = snapshots_of(daemon)
    accepted = [row["upload_id"] for row in history if row["state"] == "accepted"]
    assert accepted == [baseline["upload_id"]], history  # still the current one, and the newest accepted

    quarantine = daemon.quarantine("north")
    for case in hostile:
        receipt = receipts[names[case.name]]
        kept = quarantine / f"{receipt['upload_id']}.zip"
        assert kept.is_file(), f"{case.name}: {kept.name} not in quarantine"
        assert sha256(kept.read_bytes()) == receipt["sha256"] == sha256(case.data)

    # The documented tolerances, one after the other: each is accepted against the one before.
    base_id = baseline["upload_id"]
    for case in tolerated:
        put_all(daemon, [names[case.name]])
        receipt = wait_for_receipts(daemon, [names[case.name]])[names[case.name]]
        assert problems_with(case, receipt) == [], (case.name, receipt)
        changes = receipt["changes"]
        assert changes["against_upload_id"] == base_id
        updated = {e: c["updated"] for e, c in changes["counts"].items() if c["updated"]}
        assert updated == TOLERATED[case.name], (case.name, changes["counts"])
        assert not any(c["added"] or c["deleted"] for c in changes["counts"].values()), (case.name, changes)
        base_id = receipt["upload_id"]

    assert_still_serving(daemon)
    assert fingerprint(snapshot) == before  # later snapshots link unchanged files; none was written through
    states = {row["upload_id"]: row["state"] for row in snapshots_of(daemon)}
    assert states[baseline["upload_id"]] == "accepted"
    assert list(daemon.inbox("north").iterdir()) == []
