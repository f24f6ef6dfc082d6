"""The tenant's next snapshot: an accepted package applied to the previous one, then its references resolved.

A bulk file replaces its entity; a delta file upserts and deletes rows; what the package does not hold is
carried over. The validator could only resolve references into the package's bulk files, so references into
delta files or into entities the package left alone are resolved here, against the merged snapshot: a
delta that deletes a class but not its enrollments leaves them dangling, and that is a finding.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from daemon.snapshots.changes import ROW_COLUMN, entity_order, without_row
from daemon.oneroster.findings import Finding, Findings, Mode, Severity
from daemon.oneroster.references import endless_chains, of_target_type, points_outside
from daemon.oneroster.schema import VERSIONS, Column, Kind
from daemon.oneroster.validate import Roster

Frame = pl.DataFrame | pl.LazyFrame
Frames = Mapping[str, Frame]


class DeltaWithoutSnapshot(Exception):
    """A package with delta files, and no earlier snapshot of the tenant to apply them to."""

    code = "snapshot.delta_without_baseline"

    def __init__(self, entities: list[str]) -> None:
        self.entities = entities
        files = ", ".join(f"{e}.csv" for e in entities)
        super().__init__(f"the package holds delta files ({files}) but there is no earlier snapshot to apply them "
                         "to; send a bulk package first")  # fmt: skip

    def finding(self) -> Finding:
        """The error that rejects the upload, about the package as a whole."""
        return Finding(self.code, Severity.ERROR, str(self))


def merge_package(previous: Frames | None, roster: Roster) -> dict[str, Frame]:
    """The snapshot after `roster`: a bulk file replaces its entity; a delta file upserts its rows into the
    previous entity and removes those whose status is tobedeleted (the validator reads lenient `inactive` as
    tobedeleted); entities the package does not hold are carried over, as the very same objects. Frames come
    back without `_row`. `previous` may hold LazyFrames (a stored snapshot scanned, not read): only the
    entities a delta changes are read, and carried-over entities stay lazy.

    Raises DeltaWithoutSnapshot when the package has a delta file and `previous` is None."""
    deltas = sorted(e for e, mode in roster.modes.items() if mode == "delta")
    if previous is None and deltas:
        raise DeltaWithoutSnapshot(deltas)
    merged = {entity: without_row(frame) for entity, frame in (previous or {}).items()}
    for entity, frame in roster.frames.items():
        frame = without_row(frame)
        if roster.modes.get(entity) == "delta":
            merged[entity] = apply_delta(merged.get(entity), frame)
        else:
            merged[entity] = frame
    return {entity: merged[entity] for entity in entity_order(merged)}


def apply_delta(base: Frame | None, delta: pl.DataFrame) -> pl.DataFrame:
    """`base` with the delta's rows upserted (those not tobedeleted) and its tobedeleted rows removed.

    Rows the delta leaves alone keep their order; upserted rows follow them."""
    upserts = delta.filter(pl.col("status").fill_null("active") != "tobedeleted")
    if base is None:
        return upserts
    base = base.collect() if isinstance(base, pl.LazyFrame) else base
    touched = base["sourcedId"].is_in(delta["sourcedId"].implode())
    kept = base.filter(~touched) if touched.any() else base
    return pl.concat([kept, upserts], how="diagonal_relaxed")


# --- references after the merge -----------------------------------------------------------------------------


def dangling_references(
    frames: Frames, version: str, package: Roster | None = None, *, mode: Mode = Mode.LENIENT, keep: int = 1000
) -> list[dict]:
    """References of the merged snapshot that resolve to nothing, as finding dicts (code, severity, message,
    file, row, column, value), at most `keep` per code and file; see check_snapshot_references."""
    return [f.to_dict() for f in check_snapshot_references(frames, version, package, mode=mode, keep=keep).sorted()]


def check_snapshot_references(
    frames: Frames, version: str, package: Roster | None = None, *, mode: Mode = Mode.LENIENT, keep: int = 1000
) -> Findings:
    """Resolve every reference of the snapshot `frames` against the snapshot itself.

    `reference.missing_target_record` where no row has the sourcedId, `reference.target_type_mismatch`
    where the row has the wrong type (a class's school that is a district). Severity as in the validator:
    an error for a required reference, a deviation (a warning in lenient mode) for an optional one. Counts
    are complete, examples capped at `keep` per code and file.

    With `package` (the roster merged to make `frames`), rows from it carry their row number in the upload,
    and only references the validator could not resolve are checked: those whose target was not a bulk file
    of the package, except between two entities the package left alone (already resolved in the previous
    snapshot). Without it, every reference is checked."""
    tables = VERSIONS[version].tables
    findings = Findings(keep)
    for entity in entity_order(frames):
        table = tables.get(entity)
        if table is None:
            continue
        for col in table.columns:
            if col.ref is not None and col.name in _names(frames[entity]) and _open(entity, col, package):
                _check_reference(frames, entity, col, package, version, findings, mode)
                if col.ref.entity == entity and package is not None and package.modes.get(entity) == "delta":
                    _check_cycle(frames, entity, col, package, findings)  # a delta may close a loop with old rows
    return findings


def _check_cycle(frames: Frames, entity: str, col: Column, package: Roster | None, findings: Findings) -> None:
    """Rows of the merged snapshot whose parents go round in a circle (orgs, academicSessions)."""
    links = _columns(frames[entity], "sourcedId", col.name).filter(pl.col(col.name).is_not_null())
    looping = endless_chains(links.select(child="sourcedId", parent=col.name))
    if looping.len() == 0:
        return
    rows = links.filter(pl.col("sourcedId").is_in(looping.implode())).select("sourcedId", value=pl.col(col.name))
    message = f"{col.name} leads round in a circle: following the parents from this row never reaches the top"
    findings.add_rows("reference.parent_cycle", Severity.ERROR, _with_rows(rows, entity, package),
                      _in_snapshot(message), file=f"{entity}.csv", column=col.name)  # fmt: skip


def _open(entity: str, col: Column, package: Roster | None) -> bool:
    """Whether a reference column may hold references nobody has resolved yet: not the package's own rows
    pointing into one of its bulk files (the validator resolved those), nor carried-over rows pointing into a
    carried-over entity (resolved when the previous snapshot was made)."""
    if package is None:
        return True
    source, target = package.modes.get(entity), package.modes.get(col.ref.entity)
    if source is not None and target == "bulk":
        return False
    return source is not None or target is not None


def _check_reference(
    frames: Frames, entity: str, col: Column, package: Roster | None, version: str, findings: Findings, mode: Mode
) -> None:
    frame = _columns(frames[entity], "sourcedId", col.name)
    target = frames.get(col.ref.entity)
    typed = bool(col.ref.target_types) and target is not None and "type" in _names(target)
    target = _columns(target, "sourcedId", *(["type"] if typed else [])) if target is not None else None
    present = target["sourcedId"] if target is not None else pl.Series("sourcedId", [], pl.String)
    resolvable = present
    if typed:
        resolvable = target.filter(of_target_type(col, VERSIONS[version]))["sourcedId"]
    mask = frame.select(points_outside(col, resolvable)).to_series()
    if not mask.any():
        return
    values = frame.filter(mask).select("sourcedId", value=pl.col(col.name))
    if col.kind is Kind.REF_LIST:
        values = values.explode("value")
    values = values.filter(pl.col("value").is_not_null() & ~pl.col("value").is_in(resolvable.implode()))
    values = _with_rows(values, entity, package)
    severity = Severity.ERROR if col.required or col.kind is Kind.GUID else mode.deviation()
    target_file = f"{col.ref.entity}.csv"
    missing = ~pl.col("value").is_in(present.implode())
    checks = [("reference.missing_target_record", missing, f"{col.name} points at no row of {target_file}")]
    if typed:
        kinds = " or ".join(col.ref.target_types)
        checks.append(("reference.target_type_mismatch", ~missing,
                       f"{col.name} must point at a row of {target_file} whose type is {kinds}"))  # fmt: skip
    for code, condition, message in checks:
        hits = values.filter(condition)
        findings.add_rows(code, severity, hits, _in_snapshot(message), file=f"{entity}.csv", column=col.name)


def _names(frame: Frame) -> list[str]:
    return frame.collect_schema().names() if isinstance(frame, pl.LazyFrame) else frame.columns


def _columns(frame: Frame, *names: str) -> pl.DataFrame:
    """Just these columns; a lazy frame is read for them only."""
    names = list(dict.fromkeys(names))
    return frame.select(names).collect() if isinstance(frame, pl.LazyFrame) else frame.select(names)


def _with_rows(values: pl.DataFrame, entity: str, package: Roster | None) -> pl.DataFrame:
    """`values` with `_row`: the row number in the upload for rows that came from it, else blank."""
    source = package.frames.get(entity) if package is not None else None
    if source is None or ROW_COLUMN not in source.columns:
        return values.with_columns(pl.lit(None, pl.UInt32).alias(ROW_COLUMN))
    return values.join(source.select("sourcedId", ROW_COLUMN), on="sourcedId", how="left", maintain_order="left")


def _in_snapshot(message: str):
    def render(rec: dict) -> str:
        where = "" if rec.get(ROW_COLUMN) is not None else f" (row {rec['sourcedId']} of the previous snapshot)"
        return f"{message} after the merge with the previous snapshot{where}"

    return render
