"""What a worker process does with one upload: validate it, and if it is accepted, build its snapshot.

Runs in the daemon's process pool, so what it takes (UploadJob) and gives back (JobResult) are frozen
dataclasses, which pickle. Given the upload's file, the tenant's rules and the folder of the snapshot to diff
against (None for a first upload or a rebaseline), it validates the package, merges it onto that snapshot
(a bulk file replaces its entity, a delta file upserts and deletes rows), checks the merged roster's
references, diffs it against the old snapshot and tests the hold thresholds. The new snapshot and its change
set are written to a staging folder; the daemon (daemon/snapshots/process.py) publishes and records them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from daemon.oneroster.validate import ValidateOptions, validate_package
from daemon.snapshots import findings_file, storage
from daemon.snapshots.diff import DeltaWithoutSnapshot, dangling_references, diff_snapshots, merge_package
from daemon.snapshots.holds import HoldThresholds, crossed
from daemon.snapshots.storage import SnapshotMeta

SAMPLES_PER_ACTION = 3


@dataclass(frozen=True, slots=True)
class TenantRules:
    """What every upload of one tenant is held to; built once from the settings by daemon/app.py."""

    validate: ValidateOptions = ValidateOptions()
    holds: HoldThresholds = HoldThresholds()


@dataclass(frozen=True, slots=True)
class UploadJob:
    """One upload for a worker process: made by the Processor, taken by run_job."""

    path: Path  # the upload's file
    staging: Path  # the folder to write the snapshot into
    base: storage.Folder | None = None  # the snapshot to diff against (None: first upload, or a rebaseline)
    rules: TenantRules = TenantRules()
    findings: Path | None = None  # where to write every finding kept (daemon/snapshots/findings_file.py)


@dataclass(frozen=True, slots=True)
class JobResult:
    """What run_job found: the validation result as stored and shown in the receipt (the findings made against
    the snapshot included) and, when the upload is accepted, its staged snapshot and the change set's samples."""

    validation: dict
    snapshot: SnapshotMeta | None = None
    samples: dict | None = None  # the change set's example rows per entity and action
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "validation", and "diff" once diffed


def run_job(job: UploadJob) -> JobResult:
    outcome = _run(job)
    if job.findings is not None:
        findings_file.write(job.findings, outcome.validation["findings"])
    return outcome


def _run(job: UploadJob) -> JobResult:
    started = time.monotonic()
    result = validate_package(job.path, job.rules.validate)
    validation = result.to_dict()
    timings = {"validation": time.monotonic() - started}
    if not result.accepted:
        return JobResult(validation, timings=timings)
    base = job.base
    # Scanned, not read: only what the merge and the diff need is read, so memory stays near one snapshot.
    previous, previous_files = storage.scan_frames(base) if base is not None else (None, {})
    try:
        frames = merge_package(previous, result.roster)
    except DeltaWithoutSnapshot as exc:
        return JobResult(_with_findings(validation, [exc.finding().to_dict()], rejected=True))
    found = dangling_references(frames, result.roster.version, result.roster, mode=result.mode)
    if any(finding["severity"] == "error" for finding in found):
        return JobResult(_with_findings(validation, found, rejected=True))
    validation = _with_findings(validation, found, rejected=False)  # warnings: optional references
    diffed = time.monotonic()
    changes = diff_snapshots(previous, frames)
    timings["diff"] = time.monotonic() - diffed
    counts = changes.counts()
    previous_rows = {e: storage.row_count(f) for e, f in previous.items()} if previous is not None else None
    orgs = changes.entities.get("orgs")
    holds = crossed(job.rules.holds, previous_rows, counts, orgs.deleted if orgs is not None else None)
    # An unchanged entity's file is linked from the base; one read in place from the shared storage is
    # streamed from there into the new file instead.
    carried = {e: previous_files[e] for e, frame in frames.items()
               if previous and frame is previous.get(e) and e in previous_files}  # fmt: skip
    rows = {e: previous_rows[e] if previous_rows and f is previous.get(e) else storage.row_count(f)
            for e, f in frames.items()}  # fmt: skip
    storage.clear(job.staging)
    storage.write_frames(job.staging, frames, carried)
    changes.write(job.staging / storage.CHANGES_FOLDER)
    meta = SnapshotMeta(version=result.roster.version, rows=rows, changes=counts, holds=holds,
                        base_upload_id=base.name if base is not None else None)  # fmt: skip
    storage.write_meta(job.staging, meta)
    return JobResult(validation, meta, changes.samples(SAMPLES_PER_ACTION), timings)


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
