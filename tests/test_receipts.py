"""Receipts: both forms written whole, latest.json mirrors the newest, old ones pruned, long names cut."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from daemon import receipts
from daemon.receipts import writer
from daemon.store import Action, Decision, Delivery, DeliveryState, SnapshotRecord, State, Store, Upload


def upload(name: str = "day1.zip", state: State = State.REJECTED, upload_id: str = "u-20261201T000000Z-abcdef") -> Upload:
    return Upload(upload_id, "lakeside", name, "a" * 64, 1234, "/state/x", state, "2026-12-01T00:00:00.000Z",
                  "2026-12-01T00:00:01.000Z")  # fmt: skip


def validation(findings: int) -> dict:
    finding = {"code": "row.invalid_enum", "severity": "error", "message": "not one of the allowed values",
               "file": "users.csv", "row": 2, "column": "role", "value": "pupil"}  # fmt: skip
    return {"verdict": "rejected", "version": "1.1", "mode": "lenient", "findings_truncated": False,
            "files": {"users.csv": {"mode": "bulk", "rows": findings, "dropped": findings}},
            "counts_by_code": {"row.invalid_enum": findings}, "findings": [finding] * findings}  # fmt: skip


def test_json_text_and_latest_are_written(tmp_path: Path) -> None:
    receipt = receipts.build(upload(), validation(3))
    path = receipts.write(tmp_path, receipt)

    assert path.name == "day1.zip.u-20261201T000000Z-abcdef.json"
    assert json.loads(path.read_text()) == receipt == json.loads((tmp_path / "latest.json").read_text())
    text = path.with_suffix(".txt").read_text()
    assert "REJECTED" in text and "users.csv:2 role = 'pupil'" in text and "row.invalid_enum" in text
    assert receipt["next"].startswith("Nothing was taken from this upload")
    assert sorted(os.listdir(tmp_path)) == ["day1.zip.u-20261201T000000Z-abcdef.json",
                                            "day1.zip.u-20261201T000000Z-abcdef.txt", "latest.json"]  # fmt: skip


def test_a_reader_who_sees_the_new_json_finds_the_text_in_the_same_state(tmp_path: Path, monkeypatch) -> None:
    receipts.write(tmp_path, receipts.build(upload(state=State.RECEIVED)))
    seen: list[tuple[str, str]] = []  # what a poller reading both files finds after each file is replaced
    publish = writer._publish

    def publish_and_look(path: Path, text: str, mirror) -> None:
        publish(path, text, mirror)
        stem = "day1.zip.u-20261201T000000Z-abcdef"
        seen.append((json.loads((tmp_path / f"{stem}.json").read_text())["state"],
                     (tmp_path / f"{stem}.txt").read_text().splitlines()[0].rsplit(" ", 1)[1]))  # fmt: skip

    monkeypatch.setattr(writer, "_publish", publish_and_look)
    receipts.write(tmp_path, receipts.build(upload(state=State.ACCEPTED), validation(0)))
    assert ("accepted", "RECEIVED") not in seen  # the JSON never runs ahead of the text
    assert seen[-1] == ("accepted", "ACCEPTED")


def test_findings_are_cut_to_the_first_thousand_with_complete_counts() -> None:
    trimmed = receipts.trim(validation(1500))
    receipt = receipts.build(upload(), trimmed)
    assert len(receipt["validation"]["findings"]) == 1000
    assert receipt["validation"]["findings_truncated"] is True
    assert receipt["validation"]["counts_by_code"] == {"row.invalid_enum": 1500}
    assert "only 1000 are listed" in receipts.render_text(receipt)
    assert receipts.trim(validation(10))["findings_truncated"] is False


def test_a_flood_of_one_code_does_not_hide_another_codes_examples() -> None:
    flood = validation(5000)
    other = {"code": "row.invalid_date", "severity": "error", "message": "not a date", "file": "users.csv",
             "row": 9000 + 1, "column": "birthDate", "value": "13/13/2020"}  # fmt: skip
    flood["findings"] = flood["findings"] + [dict(other, row=r) for r in range(6000, 6050)]
    kept = receipts.trim(flood)["findings"]
    assert len(kept) == 1000
    assert [f["row"] for f in kept if f["code"] == "row.invalid_date"] == list(range(6000, 6020))
    assert kept[-1]["code"] == "row.invalid_date"  # the order of the findings is kept


def test_only_the_newest_receipts_are_kept(tmp_path: Path) -> None:
    for number in range(5):
        receipts.write(tmp_path, receipts.build(upload(upload_id=f"u-{number}"), validation(1)), keep=3)
        os.utime(tmp_path / f"day1.zip.u-{number}.json", ns=(number * 10**9, number * 10**9))
    receipts.write(tmp_path, receipts.build(upload(upload_id="u-5"), validation(1)), keep=3)
    kept = sorted(p.name for p in tmp_path.glob("*.json") if p.name != "latest.json")
    assert kept == ["day1.zip.u-3.json", "day1.zip.u-4.json", "day1.zip.u-5.json"]
    assert len(list(tmp_path.glob("*.txt"))) == 3
    assert json.loads((tmp_path / "latest.json").read_text())["upload_id"] == "u-5"


def test_a_very_long_upload_name_still_gets_its_receipt(tmp_path: Path) -> None:
    name = "é" * 120 + ".zip"  # 244 bytes: a legal file name, too long with the upload id after it
    path = receipts.write(tmp_path, receipts.build(upload(name=name), validation(1)))
    assert len(path.name.encode()) <= 255 and path.name.endswith(".u-20261201T000000Z-abcdef.json")
    assert json.loads(path.read_text())["file"] == name


def test_a_duplicate_names_the_earlier_upload(tmp_path: Path) -> None:
    receipt = receipts.build(upload(state=State.DUPLICATE), None, detail="same content as u-1")
    assert receipt["state"] == "duplicate" and receipt["detail"] == "same content as u-1"
    assert "validation" not in receipt
    assert "identical to the upload the current roster came from" in receipts.render_text(receipt)


def test_a_held_receipt_names_its_thresholds_and_changes(tmp_path: Path) -> None:
    holds = [{"threshold": "users_deleted_share", "limit": 0.1, "value": 20, "of": 100,
              "detail": "20 of 100 users deleted (20.0%, more than 10%)"}]  # fmt: skip
    snapshot = SnapshotRecord(tenant="lakeside", version="1.1", path="/state/snapshots/held", base_upload_id="u-1",
                              rows={"users": 80}, changes={"users": {"added": 0, "updated": 1, "deleted": 20}},
                              holds=holds)  # fmt: skip
    receipt = receipts.build(upload(state=State.HELD), validation(0), snapshot=snapshot)
    assert receipt["holds"] == holds
    assert receipt["changes"]["against_upload_id"] == "u-1" and receipt["changes"]["rows_after"] == {"users": 80}
    text = receipts.render_text(receipt)
    assert "HOLD  users_deleted_share: 20 of 100 users deleted" in text and "rosterd approve" in text
    assert "Changes against u-1:" in text


def test_deliveries_are_shown_with_their_state_error_files_and_findings(tmp_path: Path) -> None:
    from daemon.store import Delivery, DeliveryState

    finding = {"code": "cers.school_without_id", "severity": "warning", "file": "orgs.csv", "sourcedId": "sch-9",
               "column": "identifier", "value": None, "message": "school sch-9 has no identifier: its 4 groups are skipped"}  # fmt: skip
    dead = Delivery("d-1", "lakeside", "cers", "u-1", "lakeside.cers.u-1", DeliveryState.DEAD, 1, "t0", "t0", "t1",
                    None, None, "CERS answered BAD_DATA for rosterd-lakeside-u-1-1.csv (import 7): Row: 3 Failure: "
                    "Invalid subject: Art",
                    {"counts": {"groups": 4, "sent": 4}, "files": [{"name": "rosterd-lakeside-u-1-1.csv", "rows": 9,
                     "id": 7, "status": "BAD_DATA"}], "findings": [finding], "dry_run": False})  # fmt: skip
    pending = Delivery("d-2", "lakeside", "vendor", "u-1", "lakeside.vendor.u-1", DeliveryState.PENDING, 0, "t0",
                       "t0", "t0", None, None, None, None)  # fmt: skip
    receipt = receipts.build(upload(state=State.ACCEPTED), deliveries=[dead, pending])
    shown = {d["target"]: d for d in receipt["deliveries"]}
    assert shown["cers"]["state"] == "dead" and "Row: 3 Failure: Invalid subject: Art" in shown["cers"]["error"]
    assert shown["cers"]["findings"] == [finding] and shown["cers"]["files"][0]["status"] == "BAD_DATA"
    assert shown["vendor"] == {"delivery_id": "d-2", "target": "vendor", "state": "pending", "attempts": 0,
                               "against_upload_id": None}  # fmt: skip
    text = receipts.render_text(receipt)
    assert "Delivery to cers (d-1): DEAD, 1 attempt(s)" in text and "import 7 BAD_DATA" in text
    assert "cers.school_without_id" in text and "Delivery to vendor (d-2): PENDING" in text


def test_a_receipt_that_vanishes_while_pruning_is_skipped(tmp_path: Path) -> None:
    """Another writer pruned a receipt between our listing and our look at it (a link to nowhere stands in
    for it: listed, but gone when looked at): the receipt being written is still written."""
    for number in range(3):
        receipts.write(tmp_path, receipts.build(upload(upload_id=f"u-{number}"), validation(1)), keep=3)
    (tmp_path / "gone.u-x.json").symlink_to(tmp_path / "nowhere.json")
    path = receipts.write(tmp_path, receipts.build(upload(upload_id="u-3"), validation(1)), keep=3)
    assert json.loads(path.read_text())["upload_id"] == "u-3"
    assert json.loads((tmp_path / "latest.json").read_text())["upload_id"] == "u-3"


def test_many_writers_at_once_leave_the_newest_receipts_and_never_fail(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def write(number: int) -> None:
        receipts.write(tmp_path, receipts.build(upload(upload_id=f"u-{number:03}"), validation(1)), keep=3)

    with ThreadPoolExecutor(8) as threads:
        list(threads.map(write, range(300)))  # re-raises the first writer's exception, if any
    kept = [p for p in tmp_path.glob("*.json") if p.name != "latest.json"]
    assert 3 <= len(kept) <= 3 + 8  # writers that listed before the others wrote may keep a few more
    assert all(p.with_suffix(".txt").exists() for p in kept)


def test_a_failed_upload_tells_the_district_it_did_nothing_wrong(tmp_path: Path) -> None:
    detail = "The worker process validating it died twice (killed by SIGKILL)."
    receipt = receipts.build(upload(state=State.FAILED), None, detail=detail)
    assert receipt["state"] == "failed" and receipt["detail"] == detail
    assert "did nothing wrong" in receipt["next"] and "upload" in receipt["next"] and "operator" in receipt["next"]
    text = receipts.render_text(receipt)
    assert "FAILED" in text and detail in text


def accepted(dropped: int) -> dict:
    """An accepted validation of two files; `dropped` rows of users.csv had errors and were left out."""
    return {"verdict": "accepted", "version": "1.1", "mode": "lenient", "findings_truncated": False,
            "files": {"orgs.csv": {"mode": "bulk", "rows": 3, "dropped": 0},
                      "users.csv": {"mode": "bulk", "rows": 46, "dropped": dropped}},
            "counts_by_code": {"row.invalid_enum": dropped} if dropped else {},
            "findings": [{"code": "row.invalid_enum", "severity": "error", "message": "not one of the allowed values",
                          "file": "users.csv", "row": 2, "column": "role", "value": "pupil"}] * dropped}  # fmt: skip


def test_an_accepted_receipt_with_nothing_dropped_says_nothing_of_dropped_rows() -> None:
    receipt = receipts.build(upload(state=State.ACCEPTED), accepted(dropped=0))
    text = receipts.render_text(receipt)
    assert "dropped" not in text.lower() and "left out" not in text
    assert receipt["next"] == "The upload was accepted and is now the current roster."
    assert "  users.csv                         bulk           46\n" in text  # file, mode, rows: no zero column


def test_an_accepted_receipt_with_dropped_rows_counts_them_and_says_why() -> None:
    receipt = receipts.build(upload(state=State.ACCEPTED), accepted(dropped=2))
    text = receipts.render_text(receipt)
    assert "Rows with errors were left out" in receipt["next"] and "Rows with errors were left out" in text
    assert "  file                              mode         rows   dropped" in text
    assert "  users.csv                         bulk           46         2" in text
    assert "  orgs.csv                          bulk            3         0" in text


def cers_dry_run(files: list[dict]) -> Delivery:
    result = {"counts": {"groups": len(files), "sent": 0}, "findings": [], "dry_run": True,
              "against_upload_id": "u-1", "files": files}  # fmt: skip
    return Delivery("d-1", "lakeside", "cers", "u-2", "lakeside.cers.u-2", DeliveryState.DELIVERED, 1, "t0", "t0",
                    "t1", "t1", "u-1", None, result)  # fmt: skip


def test_a_dry_run_without_files_does_not_point_at_the_cers_folder() -> None:
    text = receipts.render_text(receipts.build(upload(state=State.ACCEPTED), deliveries=[cers_dry_run([])]))
    assert "results/cers" not in text
    assert "Delivery to cers (d-1): DELIVERED (dry run: nothing to send, no files written), 1 attempt(s)" in text


def test_a_dry_run_with_files_points_at_the_cers_folder() -> None:
    files = [{"name": "rosterd-lakeside-u-2-1.csv", "rows": 12}]
    text = receipts.render_text(receipts.build(upload(state=State.ACCEPTED), deliveries=[cers_dry_run(files)]))
    assert "Delivery to cers (d-1): DELIVERED (dry run: files in results/cers/), 1 attempt(s)" in text
    assert "file rosterd-lakeside-u-2-1.csv (12 rows)" in text


def test_decisions_are_shown_with_their_operator_and_time() -> None:
    decisions = [
        Decision(1, Action.APPROVED, "lakeside", "u-2", None, None, "alice", "2026-12-02T08:00:00.000Z", None),
        Decision(2, Action.REPLAYED, "lakeside", "u-2", "d-7", "cers", "bob", "2026-12-02T09:30:00.000Z", None),
        Decision(3, Action.TARGET_ENABLED, "lakeside", None, None, "vendor", "carol", "2026-12-02T10:00:00.000Z", None),
    ]  # fmt: skip
    receipt = receipts.build(upload(state=State.ACCEPTED), decisions=decisions)
    assert receipt["decisions"] == [
        {"decision": "approved", "operator": "alice", "at": "2026-12-02T08:00:00.000Z"},
        {"decision": "replayed", "operator": "bob", "at": "2026-12-02T09:30:00.000Z", "delivery_id": "d-7",
         "target": "cers"},
        {"decision": "target_enabled", "operator": "carol", "at": "2026-12-02T10:00:00.000Z", "target": "vendor"},
    ]  # fmt: skip
    text = receipts.render_text(receipt)
    assert "  decided   2026-12-02T08:00:00.000Z  approved by alice\n" in text
    assert "  decided   2026-12-02T09:30:00.000Z  delivery d-7 to cers replayed by bob\n" in text
    assert "  decided   2026-12-02T10:00:00.000Z  target vendor enabled again by carol\n" in text


def test_an_upload_with_the_bytes_of_an_earlier_one_names_it() -> None:
    earlier = upload(name="monday.zip", state=State.ACCEPTED, upload_id="u-20261130T000000Z-000001")
    receipt = receipts.build(upload(name="thursday.zip", state=State.ACCEPTED), earlier=earlier)
    assert receipt["matches_earlier_upload"] == {"upload_id": "u-20261130T000000Z-000001", "file": "monday.zip",
                                                 "received_at": "2026-12-01T00:00:00.000Z"}  # fmt: skip
    assert ("  same as   u-20261130T000000Z-000001 (monday.zip, received 2026-12-01T00:00:00.000Z)"
            in receipts.render_text(receipt))  # fmt: skip


SAMPLES_BY_HAND = {"users": {"updated": [{"sourcedId": "t-1", "changed": [
    {"field": "email", "old": "t1@old.example", "new": "t1@new.example"}]}],
    "deleted": [{"sourcedId": "s-9", "role": "student", "givenName": "Ana"}]}}  # fmt: skip


def held_in_store(tmp_path: Path) -> tuple[Store, str]:
    """A store with a tenant's first upload accepted and a second one held, its change set's examples kept."""
    store = Store(tmp_path / "rosterd.db", {"lakeside": ["cers"]})
    for number, held in ((1, False), (2, True)):
        upload_id = f"u-2026120{number}T000000Z-00000{number}"
        store.add(upload_id, "lakeside", f"day{number}.zip", f"{number}" * 64, 100, f"/state/{upload_id}")
        store.set_state(upload_id, State.VALIDATING)
        current = store.current_snapshot("lakeside")
        record = SnapshotRecord(tenant="lakeside", version="1.1", path=f"/state/snapshots/{upload_id}",
                                base_upload_id=current.upload_id if current else None, rows={"users": 9},
                                changes={"users": {"added": 0, "updated": 1, "deleted": 1}},
                                holds=[{"threshold": "users_deleted_share", "detail": "1 of 10 users deleted"}] if held
                                else [], samples=SAMPLES_BY_HAND if held else None)  # fmt: skip
        store.record_snapshot(upload_id, record, State.HELD if held else State.ACCEPTED, accepted(dropped=0))
    return store, "u-20261202T000000Z-000002"


def test_a_receipt_rewritten_after_an_approval_and_a_delivery_keeps_every_section(tmp_path: Path) -> None:
    store, held = held_in_store(tmp_path)
    first = receipts.from_store(store, store.get(held))
    assert first["state"] == "held" and first["changes"]["samples"] == SAMPLES_BY_HAND

    store.decide(held, approve=True, operator="alice")
    approved = receipts.from_store(store, store.get(held))
    (delivery,) = store.deliveries(upload_id=held)
    store.claim_delivery(delivery.id)
    store.finish_delivery(delivery.id, DeliveryState.DELIVERED, result={"dry_run": True, "files": []})
    delivered = receipts.from_store(store, store.get(held))
    store.close()

    for rewritten in (approved, delivered):
        assert rewritten["state"] == "accepted"
        assert set(first) - set(rewritten) == set()  # no section of the first version is missing
        assert rewritten["changes"] == first["changes"]  # counts, rows and the examples
        assert rewritten["validation"] == first["validation"] and rewritten["holds"] == first["holds"]
        (decision,) = rewritten["decisions"]
        assert decision["decision"] == "approved" and decision["operator"] == "alice"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", decision["at"])  # ISO-8601, UTC
    assert delivered["deliveries"][0]["state"] == "delivered"


def test_a_target_enabled_shows_in_the_receipts_of_uploads_that_waited_for_it(tmp_path: Path) -> None:
    store, held = held_in_store(tmp_path)
    (before,) = store.deliveries(upload_id="u-20261201T000000Z-000001")
    store.claim_delivery(before.id)
    store.finish_delivery(before.id, DeliveryState.DELIVERED)  # delivered before the target was disabled
    store.decide(held, approve=True, operator="alice")  # its delivery waits while the target is disabled
    store.disable_target("lakeside", "cers", "410 Gone")
    enabled_at = store.enable_target("lakeside", "cers", "carol")
    waited = receipts.from_store(store, store.get(held))
    earlier = receipts.from_store(store, store.get("u-20261201T000000Z-000001"))
    store.close()
    assert [d["decision"] for d in waited["decisions"]] == ["approved", "target_enabled"]
    assert waited["decisions"][1] == {"decision": "target_enabled", "operator": "carol", "at": enabled_at,
                                      "target": "cers"}  # fmt: skip
    assert "decisions" not in earlier


def test_the_upload_taken_as_a_fresh_baseline_names_the_rebaseline(tmp_path: Path) -> None:
    store, _held = held_in_store(tmp_path)
    requested_at = store.request_rebaseline("lakeside", "dana")
    fresh = "u-20261203T000000Z-000003"
    store.add(fresh, "lakeside", "new-sis.zip", "3" * 64, 100, f"/state/{fresh}")
    store.set_state(fresh, State.VALIDATING)
    record = SnapshotRecord(tenant="lakeside", version="1.1", path="/state/snapshots/fresh", base_upload_id=None,
                            rows={"users": 5}, changes={"users": {"added": 5, "updated": 0, "deleted": 0}},
                            holds=[])  # fmt: skip
    store.record_snapshot(fresh, record, State.ACCEPTED, accepted(dropped=0), check_base=False)
    receipt = receipts.from_store(store, store.get(fresh))
    store.close()
    assert receipt["decisions"] == [{"decision": "rebaseline", "operator": "dana", "at": requested_at}]
    assert receipt["changes"]["against_upload_id"] is None
    assert (f"  decided   {requested_at}  rebaseline requested by dana: this upload was taken as a fresh baseline"
            in receipts.render_text(receipt))  # fmt: skip


def test_a_scoped_delivery_lists_only_the_reasons_that_left_rows_out() -> None:
    result = {"counts": {"users": {"added": 3, "updated": 0, "deleted": 0}},
              "left_out": {"classes_out_of_scope": 4, "classes_ended": 0, "users_not_in_kept_classes": 10}}  # fmt: skip
    sent = Delivery("d-3", "lakeside", "mathco", "u-2", "lakeside.mathco.u-2", DeliveryState.DELIVERED, 1, "t0",
                    "t0", "t1", "t1", "u-1", None, result)  # fmt: skip
    text = receipts.render_text(receipts.build(upload(state=State.ACCEPTED), deliveries=[sent]))
    assert "  left out by the target's scope: classes_out_of_scope 4, users_not_in_kept_classes 10\n" in text
