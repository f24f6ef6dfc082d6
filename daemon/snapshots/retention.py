"""Retention: what is kept of a tenant's uploads once they are processed.

Owns two rules. Of a validation result, the store keeps at most MAX_FINDINGS findings (`trim`: the first
PER_CODE of each code, then the rest in order) and every count, so a receipt built from it stays small
whatever the upload held. Of a tenant's snapshots, the newest `keep` are kept (`prune`), and always the
current one, every held one (an administrator may still approve it) and every one the outbox still needs.

Given the store, a tenant and the number to keep (from [snapshots] keep, through daemon/snapshots/process.py's
options) and the log; hands back nothing: pruned snapshot folders are cleared and marked pruned in the store,
each logged as `snapshot.pruned`. daemon/receipts reads MAX_FINDINGS and PER_CODE from here to say what a
receipt lists.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from daemon.objects.mirror import NO_MIRROR, Mirror
from daemon.snapshots import storage
from daemon.store import State, Store

MAX_FINDINGS = 1000
PER_CODE = 20  # findings of each code a result keeps before the rest fill up to MAX_FINDINGS


def trim(validation: dict) -> dict:
    """The validation result as it is kept: at most MAX_FINDINGS findings, every count.

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


def prune(store: Store, tenant: str, keep: int, log: Callable[..., None], mirror: Mirror = NO_MIRROR) -> None:
    """Keep the newest `keep` snapshots of a tenant, always its current one, every held one and every one the
    outbox still needs; clear the others' folders (and their shared copies) and mark them pruned. Blocking."""
    current = store.current_snapshot(tenant)
    for_outbox = store.snapshots_for_deliveries(tenant)
    kept = 0
    for record, upload in store.snapshots(tenant):
        if record.pruned_at is not None:
            continue
        kept += 1
        needed = (upload.state is State.HELD or (current is not None and record.upload_id == current.upload_id)
                  or record.upload_id in for_outbox)  # fmt: skip
        if kept > keep and not needed:
            storage.clear(mirror.here(Path(record.path)))
            mirror.drop_folder(Path(record.path))
            store.mark_pruned(record.upload_id)
            log("snapshot.pruned", tenant=tenant, upload_id=record.upload_id)
