"""What the console's pages read (daemon/console/queries.py), on small hand-made states: each tenant's health
on the overview and its order (worst first), findings filtered and paged with the CSV twin, a change set's rows
with secrets hidden, the redacted settings. Expected values are written out by hand from the inputs."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from daemon.config import parse_settings
from daemon.console import queries
from daemon.objects import LocalStorage
from daemon.objects.mirror import Mirror, RemoteFolder
from daemon.snapshots import findings_file
from daemon.snapshots.changes import CHANGED_DTYPE, ChangeSet, EntityChanges
from daemon.store import DeliveryState, SnapshotRecord, State, Store, new_upload_id

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5Kn+MW6e9DFyeijzpRau2cuO627da9N925FJu7XDdS a@b"
HASH = "$argon2id$v=19$m=65536,t=3,p=4$cmVwbGFjZS1tZS1zYWx0$cmVwbGFjZS1tZS13aXRoLXJvc3RlcmQtdGVuYW50LWFkZA"
TENANTS = ("calm", "held", "dead", "fresh", "paused")
CONFIG = "\n".join(
    f'[[tenants]]\nname = "{name}"\npassword_hash = "{HASH}"\n'
    f'[[tenants.targets]]\ntype = "webhook"\nname = "lms"\nurl = "https://lms.example/hook"\n'
    f'signing = {{ secret_env = "HOOK_SECRET" }}\n'
    for name in TENANTS
)
RESULT = {"verdict": "accepted", "version": "1.1", "mode": "lenient", "files": {}, "findings": [],
          "counts_by_code": {}, "findings_truncated": False}  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path):
    return parse_settings(CONFIG, tmp_path / "rosterd.toml")


@pytest.fixture
def store(tmp_path: Path, settings):
    opened = Store(tmp_path / "rosterd.db", settings.target_names())
    yield opened
    opened.close()


def accept(store: Store, tenant: str, state: State = State.ACCEPTED, base: str | None = None) -> str:
    upload_id = new_upload_id()
    store.add(upload_id, tenant, f"{tenant}.zip", upload_id, 10, f"/state/{upload_id}")
    record = SnapshotRecord(tenant=tenant, version="1.1", path=f"/nowhere/{upload_id}", base_upload_id=base,
                            rows={"users": 10}, changes={"users": {"added": 10, "updated": 0, "deleted": 0}},
                            holds=[{"threshold": "users_deleted_share", "detail": "9 of 10 users deleted"}]
                            if state is State.HELD else [])  # fmt: skip
    store.record_snapshot(upload_id, record, state, RESULT)
    return upload_id


def test_the_overview_judges_each_tenant_and_puts_the_worst_first(store: Store, settings) -> None:
    first = accept(store, "calm")
    store.finish_delivery(store.claim_delivery(store.deliveries("calm")[0].id).id, DeliveryState.DELIVERED)
    base = accept(store, "held")
    accept(store, "held", State.HELD, base=base)
    accept(store, "dead")
    store.finish_delivery(store.claim_delivery(store.deliveries("dead")[0].id).id, DeliveryState.DEAD, "HTTP 400")
    accept(store, "paused")
    store.pause_target("paused", "lms", "ana")
    rows = queries.overview(store, settings, list(TENANTS), datetime.now(UTC))
    by_name = {h.tenant: h for h in rows}
    assert [h.tenant for h in rows] == ["dead", "held", "fresh", "paused", "calm"]  # bad, warn, ok; then by name
    assert (by_name["calm"].level_name, by_name["calm"].problems) == ("ok", [])
    assert by_name["calm"].last_upload.id == first and by_name["calm"].backlog == 0
    assert (by_name["held"].level_name, by_name["held"].held, by_name["held"].problems) == ("bad", 1, ["1 held upload"])
    assert (by_name["dead"].level_name, by_name["dead"].dead, by_name["dead"].problems) == \
        ("bad", 1, ["1 dead delivery"])  # fmt: skip
    assert (by_name["fresh"].level_name, by_name["fresh"].problems) == ("warn", ["no accepted upload yet"])
    assert (by_name["paused"].level_name, by_name["paused"].paused) == ("warn", ["lms"])
    assert by_name["paused"].problems == ["paused or disabled: lms"]


def test_a_tenant_without_an_accepted_upload_for_two_days_needs_a_look(store: Store, settings) -> None:
    accept(store, "calm")
    store.finish_delivery(store.claim_delivery(store.deliveries("calm")[0].id).id, DeliveryState.DELIVERED)
    later = datetime.now(UTC) + timedelta(days=3)
    (calm,) = queries.overview(store, settings, ["calm"], later)
    assert (calm.level_name, calm.problems) == ("warn", ["no accepted upload for 3 days"])


def finding(n: int, code: str, file: str | None, value: str) -> dict:
    return {"code": code, "severity": "error", "message": f"message {n}", "file": file, "row": n + 2,
            "column": "email" if file else None, "value": value}  # fmt: skip


def test_findings_are_filtered_and_paged_on_the_server_and_downloaded_whole(tmp_path: Path, store: Store) -> None:
    upload_id = new_upload_id()
    upload = store.add(upload_id, "calm", "calm.zip", "x", 1, "/state/x")
    kept = [finding(n, "row.invalid_email", "users.csv", f"bad{n}@") for n in range(250)]
    kept += [finding(n, "row.invalid_enum", "classes.csv", f"kind{n}") for n in range(30)]
    findings_file.write(findings_file.path_of(tmp_path, "calm", upload_id), kept)
    store.set_state(upload_id, State.REJECTED, result={**RESULT, "verdict": "rejected", "findings": kept[:5],
                    "counts_by_code": {"row.invalid_email": 9000, "row.invalid_enum": 30}})  # fmt: skip
    everything = queries.findings(tmp_path, store, upload)
    assert (everything.total, everything.kept, everything.pages, len(everything.rows)) == (280, 280, 3, 100)
    assert everything.codes == {"row.invalid_email": 9000, "row.invalid_enum": 30}  # counts of all, not kept
    assert everything.files == ["classes.csv", "users.csv"]
    third = queries.findings(tmp_path, store, upload, code="row.invalid_email", page=3)
    assert (third.total, third.page, [r["row"] for r in third.rows][:2]) == (250, 3, [202, 203])
    assert len(third.rows) == 50 and third.rows[-1]["value"] == "bad249@"
    beyond = queries.findings(tmp_path, store, upload, code="row.invalid_email", page=99)
    assert beyond.page == 3  # a page past the end shows the last one
    found = queries.findings(tmp_path, store, upload, text="KIND2")  # case does not matter
    assert [r["value"] for r in found.rows] == ["kind2"] + [f"kind{n}" for n in range(20, 30)]
    text = queries.findings_csv(tmp_path, store, upload, file="classes.csv").decode("utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["code", "severity", "file", "row", "column", "value", "sourcedId", "message"]
    assert len(rows) == 31 and rows[1] == ["row.invalid_enum", "error", "classes.csv", "2", "email", "kind0", "",
                                           "message 0"]  # fmt: skip


def test_an_upload_without_a_findings_file_shows_the_stored_findings(tmp_path: Path, store: Store) -> None:
    upload_id = new_upload_id()
    upload = store.add(upload_id, "calm", "calm.zip", "x", 1, "/state/x")
    store.set_state(upload_id, State.REJECTED, result={**RESULT, "verdict": "rejected",
                    "findings": [finding(0, "manifest.missing", None, "")], "counts_by_code": {"manifest.missing": 1}})
    page = queries.findings(tmp_path, store, upload)
    assert (page.total, page.rows[0]["code"], page.rows[0]["file"]) == (1, "manifest.missing", None)


def test_change_rows_are_paged_searchable_and_never_show_a_password(tmp_path: Path) -> None:
    users = pl.DataFrame({"sourcedId": [f"u{n:03}" for n in range(150)], "givenName": ["Ann"] * 150,
                          "password": ["hunter2"] * 150, "_row": list(range(150))})  # fmt: skip
    updated = pl.DataFrame({"sourcedId": ["u007"], "password": ["new"], "familyName": ["Lee"],
                            "changed": [[{"field": "password", "old": "old", "new": "new"},
                                         {"field": "familyName", "old": "Li", "new": "Lee"}]]},
                           schema_overrides={"changed": CHANGED_DTYPE})  # fmt: skip
    empty = users.head(0)
    ChangeSet({"users": EntityChanges(users, updated, empty)}).write(tmp_path / "snap" / "changes")
    record = SnapshotRecord(tenant="calm", version="1.1", path=str(tmp_path / "snap"), base_upload_id=None,
                            rows={"users": 150}, changes={"users": {"added": 150, "updated": 1, "deleted": 0}},
                            holds=[])  # fmt: skip
    folder = tmp_path / "snap"
    added = queries.change_rows(record, folder, "users", "added", page=2)
    assert (added.total, added.pages, len(added.rows)) == (150, 2, 50)
    assert added.rows[0] == {"sourcedId": "u100", "fields": {"givenName": "Ann", "password": "[redacted]"}}
    assert queries.change_rows(record, folder, "users", "added", sourced_id="u14").total == 10  # u140..u149
    (row,) = queries.change_rows(record, folder, "users", "updated").rows
    assert row == {"sourcedId": "u007", "changed": [{"field": "password", "old": "[redacted]", "new": "[redacted]"},
                                                    {"field": "familyName", "old": "Li", "new": "Lee"}]}
    gone = dataclasses.replace(record, pruned_at="2026-01-01T00:00:00.000Z")
    assert queries.change_rows(gone, folder).available is False

    # the same change set made by another replica, read in place from the shared storage
    bucket = LocalStorage(tmp_path / "bucket")
    alpha, beta = Mirror(bucket, tmp_path / "alpha"), Mirror(bucket, tmp_path / "beta")
    made = shutil.copytree(folder, tmp_path / "alpha" / "snapshots" / "calm" / "u-1")
    (made / "snapshot.json").write_text("{}")
    alpha.push_folder(made, "snapshot.json")
    located = beta.locate_folder(made, "snapshot.json")
    assert isinstance(located, RemoteFolder)
    assert queries.change_rows(record, located, "users", "added", page=2).rows == added.rows
    assert queries.change_rows(record, None).available is False  # whole nowhere


def test_settings_are_shown_with_password_hashes_redacted(settings) -> None:
    shown = json.loads(queries.redacted_settings(settings))
    assert [t["password_hash"] for t in shown["tenants"]] == ["[redacted]"] * len(TENANTS)
    assert HASH not in queries.redacted_settings(settings)
    assert shown["tenants"][0]["targets"][0]["signing"]["secret_env"] == "HOOK_SECRET"  # a source is named
