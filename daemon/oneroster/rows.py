"""Row values: check every cell of a file against its column's type and normalise it, column by column.

Each check is a polars expression over a whole column; a Python loop only walks the (few) findings.
Errors drop their row; lenient-mode deviations keep the row with a warning and a normalised value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from .findings import Findings, Mode, Severity
from .header import HeaderMap
from .schema import CEDS_GRADES, Column, Kind, Table, Version
from .text import RawTable

GUID = r"^[0-9A-Za-z._/@-]{1,255}$"
USABLE_ID = r"^[^\s\x00-\x1f,\"]{1,255}$"  # lenient: a key we can still store and match on
EXT_TOKEN = r"^ext:[A-Za-z0-9._-]+$"
DATE = r"^\d{4}-\d{2}-\d{2}$"
DATETIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
YEAR = r"^\d{4}$"
USER_ID = r"^\{[^{}:,]+:[^{}]+\}$"
# Other ISO 8601 shapes lenient mode accepts for dateLastModified (converted to UTC milliseconds).
LENIENT_DATETIMES = (
    ("%Y-%m-%dT%H:%M:%S%.fZ", False),
    ("%Y-%m-%dT%H:%M:%SZ", False),
    ("%Y-%m-%dT%H:%M:%S%.f%:z", True),
    ("%Y-%m-%dT%H:%M:%S%:z", True),
    ("%Y-%m-%dT%H:%M:%S%.f", False),
    ("%Y-%m-%dT%H:%M:%S", False),
    ("%Y-%m-%d %H:%M:%S", False),
    ("%Y-%m-%d", False),
)
UTC_MS = pl.Datetime("ms", "UTC")


@dataclass(slots=True)
class Issue:
    code: str
    severity: Severity
    mask: pl.Expr  # true on rows that have the problem
    message: str | Callable[[dict], str]
    column: str | None = None
    value: pl.Expr | None = None


@dataclass(slots=True)
class Context:
    table: Table
    version: Version
    file_mode: str  # "bulk" or "delta"
    mode: Mode

    @property
    def file(self) -> str:
        return self.table.file


def check_rows(raw: RawTable, hmap: HeaderMap, ctx: Context, findings: Findings) -> pl.DataFrame:
    """Typed, normalised frame of the file's rows with `_row` and `_ok` (false where an error drops the row)."""
    frame = raw.frame.select(
        *(
            pl.col(f"c{hmap.positions[c.name]}").alias(c.name) if c.name in hmap.positions
            else pl.lit(None, pl.String).alias(c.name)
            for c in ctx.table.columns
        ),
        *(pl.col(f"c{pos}").alias(name) for name, pos in hmap.extensions.items()),
        "_row",
    )  # fmt: skip
    issues: list[Issue] = []
    normalised: list[pl.Expr] = []
    for col in ctx.table.columns:
        expr, found = _check_column(frame[col.name], col, ctx)
        normalised.append(expr.alias(col.name))
        if col.name in hmap.positions:  # a missing column is one header finding, not one per row
            issues.extend(found)
    issues.extend(_row_rules(frame, ctx))
    ok = _report(frame, issues, ctx, findings)
    return frame.with_columns(*normalised, _ok=ok)


def _report(frame: pl.DataFrame, issues: list[Issue], ctx: Context, findings: Findings) -> pl.Series:
    if not issues:
        return pl.Series("_ok", [True] * frame.height, dtype=pl.Boolean)
    masks = frame.select(*(i.mask.fill_null(False).alias(f"m{k}") for k, i in enumerate(issues)))
    ok = pl.Series("_ok", [True] * frame.height, dtype=pl.Boolean)
    for k, issue in enumerate(issues):
        mask = masks[f"m{k}"]
        if not mask.any():
            continue
        value = issue.value if issue.value is not None else (pl.col(issue.column) if issue.column else pl.lit(None))
        secret = issue.column is not None and ctx.table.column(issue.column).kind is Kind.SECRET
        hits = frame.filter(mask).select("_row", value=value.cast(pl.String))
        findings.add_rows(issue.code, issue.severity, hits, issue.message, file=ctx.file, column=issue.column,
                          secret=secret)  # fmt: skip
        if issue.severity is Severity.ERROR:
            ok = ok & ~mask
    return ok


def _check_column(values: pl.Series, col: Column, ctx: Context) -> tuple[pl.Expr, list[Issue]]:
    """Issues of one column and the expression that gives its normalised value."""
    c = pl.col(col.name)
    issues: list[Issue] = []
    if col.required and col.kind not in (Kind.STATUS, Kind.MODIFIED):
        issues.append(Issue("row.missing_required_value", Severity.ERROR, c.is_null(),
                            f"{col.name} is required", col.name))  # fmt: skip
    handler = _HANDLERS.get(col.kind)
    if handler is None:
        return c, issues
    expr, more = handler(values, col, ctx)
    return expr, issues + more


def _id_issues(item: pl.Expr, col: Column, ctx: Context, any_of: Callable[[pl.Expr], pl.Expr]) -> list[Issue]:
    c = pl.col(col.name)
    bad = any_of(~item.str.contains(GUID))
    unusable = any_of(~item.str.contains(USABLE_ID))
    message = f"{col.name} must be 1-255 characters from 0-9 A-Z a-z . - _ / @"
    if ctx.mode is Mode.STRICT:
        return [Issue("row.invalid_sourced_id", Severity.ERROR, bad, message, col.name)]
    return [
        Issue("row.invalid_sourced_id", Severity.ERROR, unusable, message, col.name),
        Issue("row.invalid_sourced_id", Severity.WARNING, bad & ~unusable, message + " (accepted as is)", col.name),
    ]


def _guid(values: pl.Series, col: Column, ctx: Context) -> tuple[pl.Expr, list[Issue]]:
    return pl.col(col.name), _id_issues(pl.col(col.name), col, ctx, lambda e: e)


def _split(col: Column, ctx: Context, values: pl.Series) -> tuple[pl.Expr, list[Issue]]:
    """A comma list: empty items and spaces around items are deviations; returns the cleaned list."""
    c = pl.col(col.name)
    items = c.str.split(",")
    issues: list[Issue] = []
    needs_cleaning = values.str.contains(r"(^|,)\s*(,|$)|\s,|,\s|^\s|\s$").any()
    if not needs_cleaning:
        return items, issues
    empty = items.list.eval(pl.element().str.strip_chars() == "").list.any()
    spaced = items.list.eval(pl.element() != pl.element().str.strip_chars()).list.any()
    issues.append(Issue("row.invalid_list", ctx.mode.deviation(), empty,
                        f"{col.name} has an empty item (two commas in a row?)", col.name))  # fmt: skip
    issues.append(Issue("row.invalid_list", ctx.mode.deviation(), spaced & ~empty,
                        f"{col.name} has spaces around an item", col.name))  # fmt: skip
    cleaned = items.list.eval(pl.element().str.strip_chars()).list.filter(pl.element() != "")
    return cleaned, issues


def _ref_list(values: pl.Series, col: Column, ctx: Context) -> tuple[pl.Expr, list[Issue]]:
    items, issues = _split(col, ctx, values)
    issues += _id_issues(pl.element(), col, ctx, lambda e: items.list.eval(e).list.any())
    if col.required:
        issues.append(Issue("row.missing_required_value", Severity.ERROR,
                            pl.col(col.name).is_not_null() & (items.list.len() == 0),
                            f"{col.name} needs at least one item", col.name))  # fmt: skip
    return items, issues


def _list(values: pl.Series, col: Column, ctx: Context) -> tuple[pl.Expr, list[Issue]]:
    return _split(col, ctx, values)


def _grades(values: pl.Series, col: Column, ctx: Context) -> tuple[pl.Expr, list[Issue]]:
    items, issues = _split(col, ctx, values)
    if ctx.version.extensible:  # 1.2 treats grades as free strings
        return items, issues
    # Excel drops the leading zero of 09; lenient mode puts it back.
    padded = items.list.eval(
        pl.when(pl.element().str.contains(r"^[1-9]$")).then("0" + pl.element()).otherwise(pl.element())
    )
    unpadded = items.list.eval(pl.element().str.contains(r"^[1-9]$")).list.any()
    not_ceds = padded.list.eval(~pl.element().is_in(list(CEDS_GRADES))).list.any()
    issues.append(Issue("row.invalid_grade", ctx.mode.deviation(), unpadded & ~not_ceds,
                        f"{col.name}: grade codes have two digits (09, not 9)", col.name))  # fmt: skip
    issues.append(Issue("row.invalid_grade", ctx.mode.deviation(), not_ceds,
                        f"{col.name}: not a CEDS grade code (IT PR PK TK KG 01-13 PS UG Other)", col.name))  # fmt: skip
    return (padded if ctx.mode is Mode.LENIENT else items), issues


def _user_ids(values: pl.Series, col: Column, ctx: Context) -> tuple[pl.Expr, list[Issue]]:
    items, issues = _split(col, ctx, values)
    bad = items.list.eval(~pl.element().str.contains(USER_ID)).list.any()
    issues.append(Issue("row.invalid_user_ids", Severity.ERROR, bad,
                        f"{col.name} items must look like {{type:id}}", col.name))  # fmt: skip
    return items, issues


def _vocabulary(values: pl.Series, col: Column, ctx: Context, extensible: bool) -> tuple[pl.Expr, list[Issue]]:
    """Exact vocabulary match; lenient mode maps a letter-case variant to the defined token."""
    c = pl.col(col.name)
    exact = c.is_in(list(col.vocabulary))
    if extensible:
        exact = exact | c.str.contains(EXT_TOKEN)
    lowered = {v.lower(): v for v in col.vocabulary}
    mapped = c.str.to_lowercase().replace_strict(lowered, default=None, return_dtype=pl.String)
    near = ~exact & mapped.is_not_null()
    allowed = ", ".join(col.vocabulary) + (", ext:<name>" if extensible else "")
    code = "row.invalid_boolean" if col.kind is Kind.BOOL else "row.invalid_enum"
    issues = [
        Issue(code, Severity.ERROR, c.is_not_null() & ~exact & ~near, f"{col.name} must be one of {allowed}", col.name),
        Issue(code, ctx.mode.deviation(), near, f"{col.name} is case-sensitive: one of {allowed}", col.name),
    ]
    fixed = pl.when(near).then(mapped).otherwise(c) if ctx.mode is Mode.LENIENT else c
    return fixed, issues


def _enum(values: pl.Series, col: Column, ctx: Context) -> tuple[pl.Expr, list[Issue]]:
    return _vocabulary(values, col, ctx, col.extensible and ctx.version.extensible)


def _bool(values: pl.Series, col: Column, ctx: Context) -> tuple[pl.Expr, list[Issue]]:
    fixed, issues = _vocabulary(values, col, ctx, False)
    return pl.when(fixed == "true").then(True).when(fixed == "false").then(False).otherwise(None), issues


def _date(values: pl.Series, col: Column, ctx: Context) -> tuple[pl.Expr, list[Issue]]:
    c = pl.col(col.name)
    parsed = c.str.to_date("%Y-%m-%d", strict=False)
    bad = c.is_not_null() & (~c.str.contains(DATE) | parsed.is_null())
    issue = Issue("row.invalid_date", Severity.ERROR, bad,
                  f"{col.name} must be a real date written YYYY-MM-DD", col.name)  # fmt: skip
    return parsed, [issue]


def _year(values: pl.Series, col: Column, ctx: Context) -> tuple[pl.Expr, list[Issue]]:
    c = pl.col(col.name)
    bad = c.is_not_null() & ~c.str.contains(YEAR)
    issue = Issue("row.invalid_year", Severity.ERROR, bad, f"{col.name} must be a four-digit year", col.name)
    return pl.when(bad).then(None).otherwise(c).cast(pl.Int16, strict=False), [issue]


def _datetime(values: pl.Series, col: Column, ctx: Context) -> tuple[pl.Expr, list[Issue]]:
    c = pl.col(col.name)
    strict = c.str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", strict=False, time_unit="ms", time_zone="UTC")
    exact = c.str.contains(DATETIME) & strict.is_not_null()
    message = f"{col.name} must be a UTC date-time written YYYY-MM-DDTHH:MM:SS.sssZ"
    if ctx.mode is Mode.STRICT or values.str.contains(DATETIME).all():
        return strict, [Issue("row.invalid_datetime", Severity.ERROR, c.is_not_null() & ~exact, message, col.name)]
    candidates = [strict]
    for fmt, aware in LENIENT_DATETIMES:
        if aware:
            parsed = c.str.to_datetime(fmt, strict=False, time_unit="ms").dt.convert_time_zone("UTC")
        else:
            parsed = c.str.to_datetime(fmt, strict=False, time_unit="ms").dt.replace_time_zone("UTC")
        candidates.append(parsed.cast(UTC_MS))
    lenient = pl.coalesce(candidates)
    issues = [
        Issue("row.invalid_datetime", Severity.ERROR, c.is_not_null() & lenient.is_null(), message, col.name),
        Issue("row.invalid_datetime", Severity.WARNING, ~exact & lenient.is_not_null(),
              message + " (read as ISO 8601)", col.name),  # fmt: skip
    ]
    return lenient, issues


def _lifecycle(values: pl.Series, col: Column, ctx: Context) -> tuple[pl.Expr, list[Issue]]:
    """status and dateLastModified: blank in bulk files, required in delta files."""
    c = pl.col(col.name)
    if ctx.file_mode == "bulk":
        issue = Issue("row.field_forbidden_in_bulk", ctx.mode.deviation(), c.is_not_null(),
                      f"{col.name} must be blank in a bulk file (ignored)", col.name)  # fmt: skip
        typed = pl.lit(None, UTC_MS if col.kind is Kind.MODIFIED else pl.String)
        return typed, [issue]
    required = Issue("row.field_required_in_delta", Severity.ERROR, c.is_null(),
                     f"{col.name} is required in a delta file", col.name)  # fmt: skip
    if col.kind is Kind.MODIFIED:
        expr, issues = _datetime(values, col, ctx)
        return expr, [required, *issues]
    # `inactive` was OneRoster 1.0's word for tobedeleted; lenient mode maps it with a warning.
    inactive = c.str.to_lowercase() == "inactive"
    expr, issues = _vocabulary(values, col, ctx, False)
    issues = [Issue(i.code, i.severity, i.mask & ~inactive, i.message, i.column) for i in issues]
    issues.append(Issue("row.invalid_enum", ctx.mode.deviation(), inactive,
                        "status 'inactive' is from OneRoster 1.0; read as tobedeleted", col.name))  # fmt: skip
    fixed = pl.when(inactive).then(pl.lit("tobedeleted")).otherwise(expr) if ctx.mode is Mode.LENIENT else expr
    return fixed, [required, *issues]


_HANDLERS = {
    Kind.GUID: _guid,
    Kind.REF: _guid,
    Kind.REF_LIST: _ref_list,
    Kind.LIST: _list,
    Kind.GRADES: _grades,
    Kind.USER_IDS: _user_ids,
    Kind.ENUM: _enum,
    Kind.BOOL: _bool,
    Kind.DATE: _date,
    Kind.DATETIME: _datetime,
    Kind.MODIFIED: _lifecycle,
    Kind.STATUS: _lifecycle,
    Kind.YEAR: _year,
}


def _row_rules(frame: pl.DataFrame, ctx: Context) -> list[Issue]:
    """Rules over several cells of a row, or over all rows of the file."""
    names = set(frame.columns)
    issues: list[Issue] = []
    sid = pl.col("sourcedId")
    if "sourcedId" in names and frame["sourcedId"].drop_nulls().n_unique() < frame["sourcedId"].drop_nulls().len():
        first = pl.col("_row").min().over("sourcedId")
        issues.append(Issue("row.duplicate_sourced_id", Severity.ERROR, sid.is_not_null() & (pl.len().over("sourcedId") > 1),
                            "sourcedId appears on more than one row; every copy is dropped",
                            "sourcedId", value=pl.concat_str(sid, pl.lit(" (first on row "), first.cast(pl.String), pl.lit(")"))))  # fmt: skip
    if {"subjects", "subjectCodes"} <= names:
        a, b = pl.col("subjects").str.split(","), pl.col("subjectCodes").str.split(",")
        issues.append(Issue("row.list_length_mismatch", Severity.ERROR,
                            pl.col("subjects").is_not_null() & pl.col("subjectCodes").is_not_null()
                            & (a.list.len() != b.list.len()),
                            "subjects and subjectCodes must have the same number of items", "subjectCodes"))  # fmt: skip
    for start, end in (("startDate", "endDate"), ("beginDate", "endDate")):
        if {start, end} <= names:
            s, e = (pl.col(x).str.to_date("%Y-%m-%d", strict=False) for x in (start, end))
            issues.append(Issue("row.date_order", ctx.mode.deviation(), s > e,
                                f"{end} is before {start}", end))  # fmt: skip
    if ctx.table.entity == "enrollments" and {"primary", "role"} <= names:
        issues.append(Issue("row.primary_not_teacher", ctx.mode.deviation(),
                            (pl.col("primary").str.to_lowercase() == "true") & (pl.col("role") != "teacher"),
                            "primary=true is only for teachers", "primary"))  # fmt: skip
    if ctx.table.entity == "users" and "userMasterIdentifier" in names:
        umi = pl.col("userMasterIdentifier")
        issues.append(Issue("row.duplicate_identifier", ctx.mode.deviation(),
                            umi.is_not_null() & (pl.len().over("userMasterIdentifier") > 1),
                            "userMasterIdentifier must be unique across users", "userMasterIdentifier"))  # fmt: skip
    if ctx.table.entity == "roles" and {"userSourcedId", "orgSourcedId", "roleType"} <= names:
        primary = pl.col("roleType") == "primary"
        per_pair = primary.cast(pl.UInt32).sum().over("userSourcedId", "orgSourcedId")
        issues.append(Issue("row.multiple_primary_roles", Severity.ERROR, primary & (per_pair > 1),
                            "a user has more than one primary role at this org", "roleType"))  # fmt: skip
    return issues
