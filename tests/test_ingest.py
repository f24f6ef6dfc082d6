"""The worker's whole job on one upload: validate, merge onto the base snapshot, diff, test holds, stage."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.snapshots import storage
from daemon.snapshots.holds import HoldThresholds
from daemon.snapshots.job import JobResult, TenantRules, UploadJob, run_job
from daemon.generator.churn import Churn, churn
from daemon.generator.generate import DistrictSpec, generate, write_zip

SPEC = DistrictSpec(schools=2, students_per_school=30, teachers_per_school=3, enrollments_per_student=3)


def staged(tmp_path: Path, name: str, zip_path: Path, base: Path | None, **holds) -> tuple[JobResult, Path]:
    staging = tmp_path / f".staging-{name}"
    return run_job(UploadJob(zip_path, staging, base, TenantRules(holds=HoldThresholds(**holds)))), staging


def test_a_delta_is_merged_and_unchanged_entities_are_linked_not_rewritten(tmp_path: Path) -> None:
    day1 = generate(SPEC)
    day2 = churn(day1, SPEC.version, Churn(withdrawn=1, arrivals=1, new_emails=1))
    write_zip(day1, tmp_path / "day1.zip", SPEC.version)
    write_zip(day2.delta, tmp_path / "day2.zip", SPEC.version, mode="delta")

    first, base = staged(tmp_path, "1", tmp_path / "day1.zip", None)
    assert first.snapshot.base_upload_id is None and first.snapshot.holds == []
    second, staging = staged(tmp_path, "2", tmp_path / "day2.zip", base)

    snapshot = second.snapshot
    assert second.validation["verdict"] == "accepted"
    assert snapshot.base_upload_id == base.name
    assert {e: c for e, c in snapshot.changes.items() if any(c.values())} == {
        e: c for e, c in day2.expected.items() if any(c.values())
    }
    assert snapshot.rows["users"] == day2.bulk["users"].height
    assert storage.read_meta(staging) == snapshot
    carried = [e for e in day1 if e not in day2.delta]
    assert carried and all(os.path.samefile(base / f"{e}.parquet", staging / f"{e}.parquet") for e in carried)
    written = storage.read_frames(staging)
    assert written["users"].height == day2.bulk["users"].height


def test_a_delta_first_is_rejected_with_its_code(tmp_path: Path) -> None:
    day1 = generate(SPEC)
    write_zip(churn(day1, SPEC.version).delta, tmp_path / "delta.zip", SPEC.version, mode="delta")
    outcome, staging = staged(tmp_path, "1", tmp_path / "delta.zip", None)
    assert outcome.validation["verdict"] == "rejected" and outcome.snapshot is None
    assert outcome.validation["counts_by_code"]["snapshot.delta_without_baseline"] == 1
    assert not staging.exists()


def test_a_mass_deletion_is_staged_with_its_holds(tmp_path: Path) -> None:
    day1 = generate(SPEC)
    write_zip(day1, tmp_path / "day1.zip", SPEC.version)
    _, base = staged(tmp_path, "1", tmp_path / "day1.zip", None)
    gutted = churn(day1, SPEC.version, Churn(withdrawn=20, arrivals=0, new_emails=0))
    write_zip(gutted.bulk, tmp_path / "day2.zip", SPEC.version)
    outcome, _ = staged(tmp_path, "2", tmp_path / "day2.zip", base, users_deleted_share=0.10)
    assert [h["threshold"] for h in outcome.snapshot.holds] == ["users_deleted_share", "enrollments_deleted_share"]


def test_a_delta_that_closes_a_parent_loop_with_the_snapshot_is_rejected(tmp_path: Path) -> None:
    """Each file alone is fine; merged with the snapshot, the district's new parent is one of its schools."""
    import polars as pl

    day1 = generate(SPEC)
    write_zip(day1, tmp_path / "day1.zip", SPEC.version)
    _, base = staged(tmp_path, "1", tmp_path / "day1.zip", None)
    orgs = day1["orgs"]
    district = orgs.filter(pl.col("type") == "district")
    school = orgs.filter(pl.col("type") == "school")["sourcedId"][0]
    looped = district.with_columns(parentSourcedId=pl.lit(school), status=pl.lit("active"),
                                   dateLastModified=pl.lit("2026-12-01T00:00:00.000Z"))  # fmt: skip
    write_zip({"orgs": looped}, tmp_path / "loop.zip", SPEC.version, mode="delta")
    outcome, staging = staged(tmp_path, "2", tmp_path / "loop.zip", base)
    assert outcome.validation["verdict"] == "rejected" and outcome.snapshot is None
    cycle = [f for f in outcome.validation["findings"] if f["code"] == "reference.parent_cycle"]
    assert {f["value"] for f in cycle} >= {school} and all(f["file"] == "orgs.csv" for f in cycle)
    assert any(f["row"] == 2 for f in cycle)  # the delta's own row, where the loop was closed


def test_every_finding_kept_is_written_to_the_upload_s_findings_file(tmp_path: Path) -> None:
    from daemon.snapshots import findings_file

    sample = Path(__file__).resolve().parents[1] / "samples" / "broken-invalid-enum.zip"
    kept = tmp_path / "findings" / "north" / "u-1.parquet"
    outcome = run_job(UploadJob(sample, tmp_path / ".staging-1", None, TenantRules(), findings=kept))
    written = findings_file.scan(kept).collect()
    # samples/README.md: the class cls-0001-t001-p1 has classType `lab`: row.invalid_enum on classes.csv
    enum = written.filter(written["code"] == "row.invalid_enum").to_dicts()
    assert [(f["file"], f["column"], f["value"]) for f in enum] == [("classes.csv", "classType", "lab")]
    assert written.height == len(outcome.validation["findings"]) and list(written["n"]) == list(range(written.height))


def test_only_the_newest_findings_files_of_a_tenant_are_kept(tmp_path: Path) -> None:
    from daemon.snapshots import findings_file

    folder = tmp_path / "findings" / "north"
    for n in range(5):
        findings_file.write(folder / f"u-2026120{n}T000000Z-aaaaaa.parquet", [], keep=3)
    assert sorted(p.name[:11] for p in folder.iterdir()) == ["u-20261202T", "u-20261203T", "u-20261204T"]
