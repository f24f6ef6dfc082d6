"""What a worker process does with one upload: validate it, and if it is accepted, build its snapshot.

Runs in the daemon's process pool, so it takes and returns plain data. Given the upload's file and the
folder of the snapshot to diff against (None for a first upload or a rebaseline), it validates the package,
merges it onto that snapshot (a bulk file replaces its entity, a delta file upserts and deletes rows),
checks the merged roster's references, diffs it against the old snapshot and tests the hold thresholds. The
new snapshot and its change set are written to a staging folder; the daemon publishes and records them.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from daemon.snapshots import storage
from daemon.snapshots.holds import HoldThresholds, crossed

SAMPLES_PER_ACTION = 3


def process_upload(path: str, options: dict) -> dict:
    """`options`: the tenant's validation settings plus `staging` (folder to write), `base` (folder of the
    snapshot to diff against, or None), `holds` (HoldThresholds fields). Returns {"validation": ...,
    "snapshot": ... (only when accepted)}."""
    from daemon.snapshots.diff import DeltaWithoutSnapshot, dangling_references, diff_snapshots, merge_package
    from daemon.oneroster.validate import validate_package

    started = time.monotonic()
    result = validate_package(Path(path), validation_options(options))
    validation = result.to_dict()
    timings = {"validation": time.monotonic() - started}
    if not result.accepted:
        return {"validation": validation, "timings": timings}
    base = Path(options["base"]) if options.get("base") else None
    # Scanned, not read: only what the merge and the diff need is read, so memory stays near one snapshot.
    previous, previous_files = storage.scan_frames(base) if base is not None else (None, {})
    try:
        frames = merge_package(previous, result.roster)
    except DeltaWithoutSnapshot as exc:
        return {"validation": _with_findings(validation, [exc.finding().to_dict()], rejected=True)}
    found = dangling_references(frames, result.roster.version, result.roster, mode=result.mode)
    if any(finding["severity"] == "error" for finding in found):
        return {"validation": _with_findings(validation, found, rejected=True)}
    validation = _with_findings(validation, found, rejected=False)  # warnings: optional references
    diffed = time.monotonic()
    changes = diff_snapshots(previous, frames)
    timings["diff"] = time.monotonic() - diffed
    counts = changes.counts()
    previous_rows = {e: storage.row_count(f) for e, f in previous.items()} if previous is not None else None
    orgs = changes.entities.get("orgs")
    holds = crossed(HoldThresholds(**options.get("holds", {})), previous_rows, counts,
                    orgs.deleted if orgs is not None else None)  # fmt: skip
    carried = {e: previous_files[e] for e, frame in frames.items() if previous and frame is previous.get(e)}
    rows = {e: previous_rows[e] if e in carried and previous_rows else storage.row_count(f)
            for e, f in frames.items()}  # fmt: skip
    staging = Path(options["staging"])
    storage.clear(staging)
    storage.write_frames(staging, frames, carried)
    changes.write(staging / storage.CHANGES_FOLDER)
    meta = {"version": result.roster.version, "rows": rows, "changes": counts, "holds": holds,
            "base": base.name if base is not None else None}  # fmt: skip
    storage.write_meta(staging, meta)
    return {"validation": validation, "snapshot": {**meta, "samples": changes.samples(SAMPLES_PER_ACTION)},
            "timings": timings}


def validation_options(options: dict):
    """A tenant's validation settings (plain data, as sent to a worker process) as ValidateOptions."""
    from daemon.oneroster.findings import Mode
    from daemon.oneroster.validate import ValidateOptions
    from daemon.oneroster.zipread import ZipLimits

    limits = {k: options[k] for k in ("max_entries", "max_total_bytes", "max_ratio") if k in options}
    return ValidateOptions(
        mode=Mode(options.get("mode", "lenient")),
        limits=ZipLimits(**limits),
        max_dropped_share=options.get("max_dropped_share", 0.01),
    )


def _with_findings(validation: dict, findings: list[dict], rejected: bool) -> dict:
    """The validation result with the findings made against the snapshot added (first: they are news)."""
    if not findings:
        return validation
    counts = dict(validation["counts_by_code"])
    for finding in findings:
        counts[finding["code"]] = counts.get(finding["code"], 0) + 1
    verdict = "rejected" if rejected else validation["verdict"]
    return {**validation, "verdict": verdict, "findings": [*findings, *validation["findings"]],
            "counts_by_code": dict(sorted(counts.items()))}  # fmt: skip


def thresholds_dict(thresholds: HoldThresholds) -> dict:
    return asdict(thresholds)
