"""Receipts: what an uploader reads back in results/ about each upload, as JSON and as text.

`results/<name>.<upload_id>.json` and `.txt` for every upload, `results/latest.json` for the newest one.
Files are written under a hidden temporary name and renamed, so a client never reads half a receipt; the
newest `keep` receipts of a tenant are kept.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from daemon.store import Action, Decision, Delivery, DeliveryState, State, Store, Upload

MAX_FINDINGS = 1000
PER_CODE = 20  # findings of each code a receipt keeps before the rest fill up to MAX_FINDINGS
MAX_NAME_BYTES_IN_RECEIPT = 200  # leaves room for ".<upload_id>.json" within a file name's 255 bytes
TMP_PREFIX = ".rosterd-tmp-"

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
DECIDED = {  # how a receipt's text tells each decision; filled in with the decision's fields
    Action.APPROVED: "approved by {operator}",
    Action.DISCARDED: "discarded by {operator}",
    Action.REBASELINE: "rebaseline requested by {operator}: this upload was taken as a fresh baseline",
    Action.REPLAYED: "delivery {delivery_id} to {target} replayed by {operator}",
    Action.TARGET_ENABLED: "target {target} enabled again by {operator}",
}


def trim(validation: dict) -> dict:
    """The validation result as a receipt keeps it: at most MAX_FINDINGS findings, every count.

    Each code keeps its first PER_CODE findings before the rest fill up to the limit in their order, so a
    flood of one code (100,000 unknown columns) never hides another code's examples. Order is kept."""
    findings = validation["findings"]
    if len(findings) <= MAX_FINDINGS:
        return validation
    kept: set[int] = set()
    seen: dict[str, int] = {}
    for index, finding in enumerate(findings):
        if seen.get(finding["code"], 0) < PER_CODE and len(kept) < MAX_FINDINGS:
            seen[finding["code"]] = seen.get(finding["code"], 0) + 1
            kept.add(index)
    for index in range(len(findings)):
        if len(kept) >= MAX_FINDINGS:
            break
        kept.add(index)
    return {**validation, "findings": [findings[i] for i in sorted(kept)], "findings_truncated": True}


def build(
    upload: Upload,
    validation: dict | None = None,
    detail: str | None = None,
    snapshot: dict | None = None,
    deliveries: list[Delivery] | None = None,
    decisions: list[Decision] | None = None,
    earlier: Upload | None = None,
) -> dict:
    """The receipt as data: the upload, its state, and (once validated) counts and findings; for an accepted
    or held upload also the changes against the current roster and the hold thresholds crossed; the
    operators' decisions on it, with their time; the earlier upload of the same bytes, if there is one."""
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
    if upload.state is State.ACCEPTED and validation is not None and _dropped(validation):
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
            "against_upload_id": snapshot.get("base"),  # None: a first upload or a rebaseline, all additions
            "counts": snapshot["changes"],
            "rows_after": snapshot["rows"],
        }
        receipt["holds"] = snapshot["holds"]
        if snapshot.get("samples"):
            receipt["changes"]["samples"] = snapshot["samples"]
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


def _dropped(validation: dict) -> int:
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
    record = store.snapshot(upload.id)
    snapshot = None
    if record is not None:
        snapshot = {"version": record.version, "rows": record.rows, "changes": record.changes,
                    "holds": record.holds, "base": record.base_upload_id, "samples": record.samples}  # fmt: skip
    return build(upload, store.result(upload.id), detail=store.last_detail(upload.id), snapshot=snapshot,
                 deliveries=store.deliveries(upload_id=upload.id), decisions=store.decisions(upload.id),
                 earlier=store.earlier_with_same_bytes(upload))  # fmt: skip


def write(results: Path, receipt: dict, keep: int = 100, latest: bool = True) -> Path:
    """Write the text and JSON receipts and (unless `latest` is False) latest.json; drop receipts beyond the
    newest `keep`. The text goes first: whoever sees the JSON (what clients poll) in a new state finds the text
    in that state too."""
    results.mkdir(parents=True, exist_ok=True)
    stem = f"{_shortened(receipt['file'])}.{receipt['upload_id']}"
    body = json.dumps(receipt, indent=2, ensure_ascii=False) + "\n"
    path = results / f"{stem}.json"
    _publish(results / f"{stem}.txt", render_text(receipt))
    _publish(path, body)
    if latest:
        _publish(results / "latest.json", body)
    _prune(results, keep)
    return path


def _shortened(name: str, max_bytes: int = MAX_NAME_BYTES_IN_RECEIPT) -> str:
    """The upload's name as the start of a receipt's file name, cut so the whole stays within 255 bytes."""
    encoded = name.encode("utf-8")
    if len(encoded) <= max_bytes:
        return name
    return encoded[:max_bytes].decode("utf-8", errors="ignore") + "~"


def render_text(receipt: dict) -> str:
    lines = [
        f"Upload {receipt['upload_id']}: {receipt['state'].upper()}",
        f"  file      {receipt['file']} ({receipt['bytes']} bytes)",
        f"  sha256    {receipt['sha256']}",
        f"  received  {receipt['received_at']}",
    ]
    earlier = receipt.get("matches_earlier_upload")
    if earlier:
        lines.append(f"  same as   {earlier['upload_id']} ({earlier['file']}, received {earlier['received_at']}): "
                     "an earlier upload with these very bytes")  # fmt: skip
    for d in receipt.get("decisions") or []:
        lines.append(f"  decided   {d['at']}  " + DECIDED[Action(d["decision"])].format(**d))
    lines += ["", receipt["next"]]
    if receipt.get("detail"):
        lines.append(receipt["detail"])
    for hold in receipt.get("holds") or []:
        lines.append(f"  HOLD  {hold['threshold']}: {hold['detail']}")
    changes = receipt.get("changes")
    if changes:
        base = changes["against_upload_id"] or "nothing (first upload or rebaseline: all additions)"
        heading = f"  {'entity':<20}{'added':>10}{'updated':>10}{'deleted':>10}{'rows now':>10}"
        lines += ["", f"Changes against {base}:", heading]
        for entity, counts in changes["counts"].items():
            lines.append(f"  {entity:<20}{counts['added']:>10}{counts['updated']:>10}{counts['deleted']:>10}"
                         f"{changes['rows_after'].get(entity, 0):>10}")  # fmt: skip
    for d in receipt.get("deliveries") or []:
        lines += ["", f"Delivery to {d['target']} ({d['delivery_id']}): {d['state'].upper()}{_dry_run(d)}, "
                  f"{d['attempts']} attempt(s)"]
        if d.get("error"):
            lines.append(f"  {d['error']}")
        if d.get("counts"):
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in d["counts"].items()))
        left_out = {reason: n for reason, n in (d.get("left_out") or {}).items() if n}
        if left_out:
            lines.append("  left out by the target's scope: " + ", ".join(f"{k} {v}" for k, v in left_out.items()))
        if d.get("batches") is not None:
            lines.append(f"  {d.get('events', 0)} events in {d['batches']} batch(es), {d.get('batches_delivered', 0)} taken")
        if d.get("file") and d.get("mode"):
            lines.append(f"  {d['mode']} zip (OneRoster {d.get('version')}, {d.get('bytes')} bytes) as {d['file']}")
        for f in d.get("files") or []:
            lines.append(f"  file {f['name']} ({f['rows']} rows)" + (f" import {f['id']} {f['status']}" if f.get("id") else ""))
        for f in d.get("findings") or []:
            lines.append(f"  {f['severity'].upper():<8}{f['code']}  {f.get('file') or ''} {f.get('sourcedId') or ''}  {f['message']}")
    validation = receipt.get("validation")
    if validation:
        lines += ["", f"OneRoster {validation['version'] or 'unknown'}, {validation['mode']} mode", ""]
        dropped = _dropped(validation) > 0  # a dropped column of zeros would only raise the question
        lines.append(f"  {'file':<34}{'mode':<7}{'rows':>10}" + (f"{'dropped':>10}" if dropped else ""))
        for name, s in validation["files"].items():
            lines.append(f"  {name:<34}{s['mode']:<7}{s['rows']:>10}" + (f"{s['dropped']:>10}" if dropped else ""))
        if validation["counts_by_code"]:
            lines += ["", "Findings by code:"]
            for code, count in validation["counts_by_code"].items():
                lines.append(f"  {count:>8}  {code}")
            lines += ["", "Findings (file:row column = value):"]
            for f in validation["findings"]:
                place = (f["file"] or "(package)") + (f":{f['row']}" if f["row"] is not None else "")
                place += f" {f['column']}" if f["column"] else ""
                place += f" = {f['value']!r}" if f["value"] is not None else ""
                lines.append(f"  {f['severity'].upper():<8}{f['code']}  {place}  {f['message']}")
            if validation["findings_truncated"]:
                lines.append(f"  … only {MAX_FINDINGS} are listed (the first {PER_CODE} of each code, then in order); "
                             "the counts above are complete")
    return "\n".join(lines) + "\n"


def _dry_run(delivery: dict) -> str:
    """How a dry run is told: where its files are, or that it had none (nothing changed for that target)."""
    if not delivery.get("dry_run"):
        return ""
    if delivery.get("files"):
        return " (dry run: files in results/cers/)"
    return " (dry run: nothing to send, no files written)"


def _publish(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{secrets.token_hex(6)}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _prune(results: Path, keep: int) -> None:
    """Drop all but the newest `keep` receipts. Another writer (the CLI's `approve`, say) may prune at the same
    time: a receipt gone between the listing and its stat was pruned by it, and is passed over."""
    dated = []
    for path in results.glob("*.json"):
        if path.name == "latest.json" or path.name.startswith(TMP_PREFIX):
            continue
        try:
            dated.append((path.stat().st_mtime_ns, path))
        except FileNotFoundError:
            continue
    dated.sort()
    for _mtime, old in dated[: max(0, len(dated) - keep)]:
        old.unlink(missing_ok=True)
        old.with_suffix(".txt").unlink(missing_ok=True)
