"""References between files: every sourcedId a row points at must exist, have the right type and survive.

Files are walked in dependency order (orgs before classes before enrollments), so when a file's references
are checked, the rows it points at already know whether they were dropped; a row that depends on a
dropped row is dropped too (the cascade). A reference is only checked against a bulk file, which holds the
complete set; targets in delta files or absent from a mixed package are resolved later against the
tenant's snapshot.

Only root causes are reported on a row: a row already dropped for its own errors (a bad value, a reference
to no row) gets no `reference.target_dropped` as well, and the rules that look across files do not judge
rows that were dropped, nor blame a row for another row's errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from daemon.oneroster.findings import Findings, Mode, Severity
from daemon.oneroster.rows import EXT_TOKEN, Context, id_form_issues, in_vocabulary, report
from daemon.oneroster.schema import DEPENDENCY_ORDER, Column, Kind, Table, Version


@dataclass(slots=True)
class FileState:
    table: Table
    mode: str  # bulk or delta
    frame: pl.DataFrame  # typed rows with `_row` and `_ok`
    data_rows: int
    text_dropped: int
    text_dropped_ids: pl.Series  # sourcedIds of rows the text layer dropped (not in `frame`)

    @property
    def dropped(self) -> int:
        return self.text_dropped + int((~self.frame["_ok"]).sum())


def check_references(
    states: dict[str, FileState], version: Version, all_bulk: bool, findings: Findings, mode: Mode
) -> None:
    order = [e for e in DEPENDENCY_ORDER if e in states] + sorted(e for e in states if e not in DEPENDENCY_ORDER)
    for entity in order:
        state = states[entity]
        checked: list[tuple[Column, FileState, pl.Series]] = []
        for col in state.table.columns:
            if col.ref is None or col.name not in state.frame.columns:
                continue
            target = states.get(col.ref.entity)
            if target is None and all_bulk:
                _missing_file(state, col, findings)
            elif target is not None and target.mode == "bulk":
                checked.append((col, target, _resolvable(col, target, version)))
            else:  # resolved later against the snapshot: check the form of every value now
                _check_id_form(state, col, None, version, findings, mode)
        # Common case first: one parallel pass of membership tests over all of the file's references; only
        # the references with a row that fails it are looked at further.
        unresolved = state.frame.select(
            points_outside(col, ids).alias(col.name) for col, _, ids in checked
        ) if checked else None  # fmt: skip
        cascades = []
        for col, target, _ in checked:
            mask = unresolved[col.name]
            if mask.any():
                cascades += _check_column(state, col, target, mask, version, findings, mode)
        _cascade(state, cascades, findings)
        for col in _parent_columns(state):
            _check_cycles(state, col, findings)
        if entity == "roles" and "userProfiles" in states and states["userProfiles"].mode == "bulk":
            _check_profile_owner(state, states["userProfiles"], findings)
        if entity == "roles" and state.mode == "bulk" and "users" in states:
            _check_primary_org_roles(states["users"], state, findings)


def _missing_file(state: FileState, col: Column, findings: Findings) -> None:
    used = state.frame.filter(pl.col(col.name).is_not_null())
    if used.height == 0:
        return
    target = f"{col.ref.entity}.csv"
    findings.add(
        "reference.missing_target_file",
        Severity.ERROR,
        f"{state.table.file}: {used.height} rows refer through {col.name} to {target}, which this bulk package "
        f"does not hold",
        file=state.table.file,
        row=int(used["_row"][0]),
        column=col.name,
        value=target,
        scope="file",
    )


def _resolvable(col: Column, target: FileState, version: Version) -> pl.Series:
    """The sourcedIds a reference may point at: surviving rows of the target, of the right type."""
    keep = pl.col("_ok") & (of_target_type(col, version) if col.ref.target_types else True)
    return target.frame.select(pl.col("sourcedId").filter(keep)).to_series()  # no copy of the other columns


def points_outside(col: Column, ids: pl.Series) -> pl.Expr:
    """Whether a row's reference in `col` (any item of a list) points outside `ids`; false where it is blank.
    Also used to resolve references against the tenant's merged snapshot (snapshots/merge.py)."""
    good = ids.implode()
    if col.kind is Kind.REF_LIST:
        return pl.col(col.name).list.eval(~pl.element().is_in(good)).list.any().fill_null(False)
    return (~pl.col(col.name).is_in(good)).fill_null(False)


@dataclass(slots=True)
class _Cascade:
    """Rows of a file whose reference points at a dropped row; reported once the file's own errors are known."""

    col: Column
    severity: Severity
    hits: pl.DataFrame  # _row, value
    message: str


def _check_column(
    state: FileState, col: Column, target: FileState, unresolved: pl.Series, version: Version, findings: Findings,
    mode: Mode,
) -> list[_Cascade]:  # fmt: skip
    """Report the reference's own problems (no such row, wrong type) at once; return its rows whose target was
    dropped, for `_cascade`."""
    _check_id_form(state, col, unresolved, version, findings, mode)
    good_ids = _resolvable(col, target, version).implode()
    values = state.frame.filter(unresolved).select("_row", value=pl.col(col.name))
    if col.kind is Kind.REF_LIST:
        values = values.explode("value")
    values = values.filter(pl.col("value").is_not_null() & ~pl.col("value").is_in(good_ids))
    held = target.frame["sourcedId"]
    ids = pl.concat([held, target.text_dropped_ids.alias("sourcedId")])
    dropped_ids = pl.concat([target.frame.filter(~pl.col("_ok"))["sourcedId"], target.text_dropped_ids.alias("sourcedId")])
    missing = ~pl.col("value").is_in(ids.implode())
    dropped = pl.col("value").is_in(dropped_ids.implode()) if dropped_ids.len() else pl.lit(False)
    severity = Severity.ERROR if col.required or col.kind is Kind.GUID else mode.deviation()
    file = target.table.file
    cleared = "" if severity is Severity.ERROR else (
        "; the item was left out of the list" if col.kind is Kind.REF_LIST else "; the reference was cleared"
    )  # fmt: skip
    checks = [("reference.missing_target_record", missing, f"{col.name} points at no row of {file}{cleared}")]
    own = missing
    if col.ref.target_types:
        # Judged only where the target row has a type of its vocabulary: a row the text layer dropped has
        # none, and a row dropped for an invalid type is the root cause itself (reported as target_dropped).
        allowed = target.frame.filter(of_target_type(col, version))["sourcedId"]
        typed_ok = in_vocabulary(pl.col("type"), target.table.column("type"), version)
        typed = target.frame.filter(typed_ok)["sourcedId"]
        wrong = pl.col("value").is_in(typed.implode()) & ~pl.col("value").is_in(allowed.implode())
        kinds = " or ".join(col.ref.target_types)
        checks.append(("reference.target_type_mismatch", wrong,
                       f"{col.name} must point at a row of {file} whose type is {kinds}{cleared}"))  # fmt: skip
        own = own | wrong
    bad: list[pl.DataFrame] = []
    for code, cond, message in checks:
        hits = values.filter(cond)
        if hits.height == 0:
            continue
        per_row = hits.group_by("_row", maintain_order=True).agg(pl.col("value").first())
        findings.add_rows(code, severity, per_row, message, file=state.table.file, column=col.name)
        bad.append(hits)
    if bad:
        _apply(state, col, severity, pl.concat(bad).unique())
    hits = values.filter(~own & dropped)
    if hits.height == 0:
        return []
    if severity is Severity.ERROR:
        message = f"{col.name} points at a row of {file} that was dropped, so this row is dropped too"
    elif col.kind is Kind.REF_LIST:
        message = f"{col.name} points at a row of {file} that was dropped; the item was left out and this row kept"
    else:
        message = f"{col.name} points at a row of {file} that was dropped; the reference was cleared and this row kept"
    return [_Cascade(col, severity, hits, message)]


def _cascade(state: FileState, cascades: list[_Cascade], findings: Findings) -> None:
    """Report and apply the file's dropped targets, except on rows already dropped for their own errors: those
    rows are gone anyway, and their own findings say why."""
    if not cascades:
        return
    alive = state.frame.filter(pl.col("_ok"))["_row"].implode()
    for cascade in cascades:
        shown = cascade.hits.filter(pl.col("_row").is_in(alive))
        per_row = shown.group_by("_row", maintain_order=True).agg(pl.col("value").first())
        findings.add_rows("reference.target_dropped", cascade.severity, per_row, cascade.message,
                          file=state.table.file, column=cascade.col.name)  # fmt: skip
    for cascade in cascades:
        _apply(state, cascade.col, cascade.severity, cascade.hits.unique())


def _apply(state: FileState, col: Column, severity: Severity, unresolved: pl.DataFrame) -> None:
    """Drop the rows of `unresolved` (_row, value) for an error; in lenient mode, for an optional reference,
    clear the reference (or leave the item out of a list) and keep the row."""
    rows = unresolved["_row"].unique().implode()
    if severity is Severity.ERROR:
        state.frame = state.frame.with_columns(_ok=pl.col("_ok") & ~pl.col("_row").is_in(rows))
    elif col.kind is Kind.REF_LIST:
        kept = (
            state.frame.filter(pl.col("_row").is_in(rows))
            .select("_row", value=pl.col(col.name))
            .explode("value")
            .join(unresolved, on=["_row", "value"], how="anti")
            .group_by("_row")
            .agg(kept=pl.col("value").drop_nulls())
        )
        state.frame = (
            state.frame.join(kept, on="_row", how="left", maintain_order="left")
            .with_columns(pl.when(pl.col("_row").is_in(rows)).then("kept").otherwise(col.name).alias(col.name))
            .drop("kept")
        )
    else:
        cleared = pl.lit(None, state.frame.schema[col.name])
        state.frame = state.frame.with_columns(
            pl.when(pl.col("_row").is_in(rows)).then(cleared).otherwise(pl.col(col.name)).alias(col.name)
        )


def _parent_columns(state: FileState) -> list[Column]:
    """References from a file into itself (orgs and academicSessions: parentSourcedId)."""
    return [col for col in state.table.columns
            if col.kind is Kind.REF and col.ref is not None and col.ref.entity == state.table.entity
            and col.name in state.frame.columns]  # fmt: skip


def _check_cycles(state: FileState, col: Column, findings: Findings) -> None:
    """Rows whose chain of parents (a reference into the same file) never ends: on a cycle or leading into one.

    Such a hierarchy has no top, and which link is wrong cannot be known, so every row on or into the cycle is
    dropped. Found by pointer doubling: `up` maps a row to its ancestor 2**k steps above, keeping only rows
    whose chain is that long; an acyclic chain among n linked rows is at most n steps, so whatever is left once
    the step passes n is cyclic. That is log2(n) joins, never a loop over rows.
    """
    live = pl.col("_ok") & pl.col(col.name).is_not_null()
    if "status" in state.frame.columns:  # a delta's tobedeleted rows leave the hierarchy
        live = live & pl.col("status").ne_missing("tobedeleted")
    links = state.frame.filter(live).select("_row", child="sourcedId", parent=col.name)
    looping = endless_chains(links)
    if looping.len() == 0:
        return
    cyclic = links.filter(pl.col("child").is_in(looping.implode()))
    findings.add_rows(
        "reference.parent_cycle",
        Severity.ERROR,
        cyclic.select("_row", value="parent"),
        f"{col.name} leads round in a circle: following the parents from this row never reaches the top",
        file=state.table.file,
        column=col.name,
    )
    state.frame = state.frame.with_columns(_ok=pl.col("_ok") & ~pl.col("_row").is_in(cyclic["_row"].implode()))


def endless_chains(links: pl.DataFrame) -> pl.Series:
    """The `child` values of `links` (child -> parent, one row per linked row) whose chain of parents never
    ends: on a cycle or leading into one (pointer doubling, see _check_cycles)."""
    up, steps = links.select("child", "parent"), 1
    while up.height and steps <= links.height:
        further = up.select(parent="child", above="parent")
        up = up.join(further, on="parent", how="inner").select("child", parent="above")
        steps *= 2
    return up["child"].unique()


def of_target_type(col: Column, version: Version) -> pl.Expr:
    """Whether a row of the referenced file has a `type` the reference in `col` may point at (an extension
    type too, where the version allows them). Also used by snapshots/merge.py."""
    kind = pl.col("type")
    ok = kind.is_in(list(col.ref.target_types))
    if version.extensible:
        ok = ok | kind.str.contains(EXT_TOKEN)
    return ok


def _check_profile_owner(roles: FileState, profiles: FileState, findings: Findings) -> None:
    """A role's user profile must belong to the role's user."""
    if "userProfileSourcedId" not in roles.frame.columns:
        return
    owners = profiles.frame.select(
        userProfileSourcedId="sourcedId", owner="userSourcedId"
    ).unique("userProfileSourcedId")
    joined = roles.frame.filter(pl.col("userProfileSourcedId").is_not_null()).join(
        owners, on="userProfileSourcedId", how="inner"
    )
    wrong = joined.filter(pl.col("owner") != pl.col("userSourcedId"))
    if wrong.height == 0:
        return
    findings.add_rows(
        "reference.profile_user_mismatch",
        Severity.ERROR,
        wrong.select("_row", value="userProfileSourcedId"),
        "the user profile belongs to another user",
        file=roles.table.file,
        column="userProfileSourcedId",
    )
    roles.frame = roles.frame.with_columns(_ok=pl.col("_ok") & ~pl.col("_row").is_in(wrong["_row"].implode()))


def _check_primary_org_roles(users: FileState, roles: FileState, findings: Findings) -> None:
    """1.2: a user's primary org should be an org where the user has a role (a warning: the spec says should).

    Dropped users are not judged, and a role counts even when it was dropped: its own findings say why, and
    the user is not to blame for them."""
    if "primaryOrgSourcedId" not in users.frame.columns:
        return
    held = roles.frame.select(sourcedId="userSourcedId", primaryOrgSourcedId="orgSourcedId")
    missing = users.frame.filter(pl.col("_ok") & pl.col("primaryOrgSourcedId").is_not_null()).join(
        held.unique(), on=["sourcedId", "primaryOrgSourcedId"], how="anti"
    )
    findings.add_rows(
        "reference.primary_org_without_role",
        Severity.WARNING,
        missing.select("_row", value="primaryOrgSourcedId"),
        "roles.csv has no role for this user at their primaryOrgSourcedId",
        file=users.table.file,
        column="primaryOrgSourcedId",
    )


def _check_id_form(
    state: FileState, col: Column, only: pl.Series | None, version: Version, findings: Findings, mode: Mode
) -> None:
    """Check the sourcedId form of a reference column, on the rows of `only` (a mask) or on all rows."""
    rows = state.frame.select("_row", col.name) if only is None else state.frame.filter(only).select("_row", col.name)
    ctx = Context(state.table, version, state.mode, mode)
    ok = report(rows["_row"], id_form_issues(rows[col.name], col, ctx), ctx, findings)
    if not ok.all():
        dropped = rows["_row"].filter(~ok).implode()
        state.frame = state.frame.with_columns(_ok=pl.col("_ok") & ~pl.col("_row").is_in(dropped))
