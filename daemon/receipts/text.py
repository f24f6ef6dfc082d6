"""A receipt as text: the `.txt` twin of each JSON receipt, rendered from the same dict.

Given a receipt built by daemon/receipts/receipt.py; hands back the text that daemon/receipts/writer.py
writes beside the JSON. Only wording lives here: every figure comes from the receipt's fields.
"""

from __future__ import annotations

from daemon.receipts.layout import DRY_RUN_FOLDER
from daemon.receipts.receipt import MAX_FINDINGS, PER_CODE, dropped_rows
from daemon.store import Action

DECIDED = {  # how a receipt's text tells each decision; filled in with the decision's fields
    Action.APPROVED: "approved by {operator}",
    Action.DISCARDED: "discarded by {operator}",
    Action.REBASELINE: "rebaseline requested by {operator}: this upload was taken as a fresh baseline",
    Action.REPLAYED: "delivery {delivery_id} to {target} replayed by {operator}",
    Action.TARGET_ENABLED: "target {target} enabled again by {operator}",
    Action.TARGET_PAUSED: "target {target} paused by {operator}",
}


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
        dropped = dropped_rows(validation) > 0  # a dropped column of zeros would only raise the question
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
        return f" (dry run: files in results/{DRY_RUN_FOLDER}/)"
    return " (dry run: nothing to send, no files written)"

