"""A receipt as data: what an uploader reads back about one upload, built from what the store holds.

Owns the receipt's fields and their stable names (`upload_id`, `state`, `next`, `changes`, `holds`,
`deliveries`, `decisions`, `validation`). Given an upload and its stored results (or the store itself,
`from_store`), their findings already cut by daemon/snapshots/retention.py (`trim`, re-exported here);
hands a plain dict on to daemon/receipts/text.py (the text twin) and daemon/receipts/writer.py (the files
in results/). Nothing here touches the disk.
"""

from __future__ import annotations

from daemon.snapshots.retention import MAX_FINDINGS, PER_CODE, trim
from daemon.store import Decision, Delivery, DeliveryState, SnapshotRecord, State, Store, Upload

__all__ = ["MAX_FINDINGS", "NEXT_STEP", "PER_CODE", "build", "dropped_rows", "from_store", "trim"]

NEXT_STEP = {
    State.RECEIVED: "The upload was received and waits for validation.",
    State.VALIDATING: "The upload is being validated.",
    State.REJECTED: "Nothing was taken from this upload; the last accepted roster stays in use. Fix the errors "
    "listed here (every error is listed, in one pass) and upload again.",
    State.ACCEPTED: "The upload was accepted and is now the current roster.",
    State.HELD: "The upload is valid but would change more than this tenant's limits allow (see holds), so it is "
    "held and nothing was applied; the current roster stays in use. An administrator approves it "
    "(`rosterd approve UPLOAD_ID`) or discards it (`rosterd discard UPLOAD_ID`). If the export was wrong, fix "
    "it and upload again: a newer accepted upload supersedes this one.",
    State.SUPERSEDED: "This held upload was superseded by a newer accepted upload of the tenant; it will not be "
    "applied.",
    State.DISCARDED: "An administrator discarded this held upload; it will not be applied.",
    State.DUPLICATE: "This file is identical to the upload the current roster came from; nothing else happens.",
    State.FAILED: "rosterd could not finish this upload because of a problem on its side (see detail); as far as "
    "rosterd can tell, the district did nothing wrong, nothing was taken from it and the last accepted roster "
    "stays in use. An operator was told and may retry it; you may also upload the same file again (it is not "
    "counted as a duplicate of this one).",
}
DROPPED_NOTE = "Rows with errors were left out: the dropped column counts them, and the findings say why."


def build(
    upload: Upload,
    validation: dict | None = None,
    detail: str | None = None,
    snapshot: SnapshotRecord | None = None,
    deliveries: list[Delivery] | None = None,
    decisions: list[Decision] | None = None,
    earlier: Upload | None = None,
) -> dict:
    """The receipt as data: the upload, its state, and (once validated) counts and findings; for an accepted
    or held upload also the changes against the current roster and the hold thresholds crossed (from its
    SnapshotRecord, whose base_upload_id the receipt calls against_upload_id); the operators' decisions on it,
    with their time; the earlier upload of the same bytes, if there is one."""
    receipt = {
        "upload_id": upload.id,
        "tenant": upload.tenant,
        "file": upload.name,
        "sha256": upload.sha256,
        "bytes": upload.size,
        "received_at": upload.received_at,
        "state": str(upload.state),
        "next": NEXT_STEP[upload.state],
    }
    if upload.state is State.ACCEPTED and validation is not None and dropped_rows(validation):
        receipt["next"] += " " + DROPPED_NOTE
    if detail:
        receipt["detail"] = detail
    if earlier is not None:
        receipt["matches_earlier_upload"] = {"upload_id": earlier.id, "file": earlier.name,
                                             "received_at": earlier.received_at}  # fmt: skip
    if decisions:
        receipt["decisions"] = [_decision(d) for d in decisions]
    if snapshot is not None:
        receipt["changes"] = {
            "against_upload_id": snapshot.base_upload_id,  # None: a first upload or a rebaseline, all additions
            "counts": snapshot.changes,
            "rows_after": snapshot.rows,
        }
        receipt["holds"] = snapshot.holds
        if snapshot.samples:
            receipt["changes"]["samples"] = snapshot.samples
    if deliveries:
        receipt["deliveries"] = [_delivery(d) for d in deliveries]
    if validation is not None:
        findings = validation["findings"]
        receipt["validation"] = {
            "verdict": validation["verdict"],
            "version": validation["version"],
            "mode": validation["mode"],
            "files": validation["files"],
            "counts_by_code": validation["counts_by_code"],
            "findings": findings[:MAX_FINDINGS],
            "findings_truncated": validation["findings_truncated"] or len(findings) > MAX_FINDINGS,
        }
    return receipt


def dropped_rows(validation: dict) -> int:
    return sum(counts["dropped"] for counts in validation["files"].values())


def _decision(decision: Decision) -> dict:
    shown = {"decision": str(decision.action), "operator": decision.operator, "at": decision.at}
    shown.update({k: getattr(decision, k) for k in ("delivery_id", "target") if getattr(decision, k)})
    return shown


def _delivery(delivery: Delivery) -> dict:
    """A delivery as the uploader sees it: where the changes went, how it ended, what the target answered."""
    shown = {
        "delivery_id": delivery.id,
        "target": delivery.target,
        "state": str(delivery.state),
        "attempts": delivery.attempts,
        "against_upload_id": delivery.base_upload_id,
    }
    if delivery.delivered_at:
        shown["delivered_at"] = delivery.delivered_at
    if delivery.state.open and delivery.attempts:
        shown["next_attempt_at"] = delivery.next_attempt_at
    if delivery.last_error and delivery.state is not DeliveryState.DELIVERED:
        shown["error"] = delivery.last_error
    result = delivery.result or {}
    shown.update({k: v for k, v in result.items() if k not in ("findings", "base_upload_id")})
    findings = result.get("findings") or []
    if findings:
        shown["findings"] = findings[:MAX_FINDINGS]
    return shown


def from_store(store: Store, upload: Upload) -> dict:
    """The receipt of an upload as recorded: its stored validation result, snapshot (change-set examples
    included), deliveries and the decisions on it. Every receipt is built here, the first and each rewrite, so
    a rewrite has every section the first one had. Blocking."""
    return build(upload, store.result(upload.id), detail=store.last_detail(upload.id),
                 snapshot=store.snapshot(upload.id), deliveries=store.deliveries(upload_id=upload.id),
                 decisions=store.decisions(upload.id), earlier=store.earlier_with_same_bytes(upload))  # fmt: skip
