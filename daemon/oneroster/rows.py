"""Row values: check every cell of a file against its column's type and normalise it, column by column.

Each check is a polars operation over a whole column. The exact (spec) form is checked first; the slower
lenient readings run only when some value fails it, so a clean file pays for one pass per column.
Errors drop their row; lenient-mode deviations keep the row with a warning and a normalised value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from daemon.oneroster.findings import Findings, Mode, Severity
from daemon.oneroster.header import HeaderMap
from daemon.oneroster.schema import CEDS_GRADES, STATUS_VALUES, Column, Kind, Table, Version
from daemon.oneroster.text import RawTable

GUID = r"^[0-9A-Za-z._/@-]{1,255}$"
NOT_GUID_CHAR = r"[^0-9A-Za-z._/@-]"  # cheaper than matching GUID whole
USABLE_ID = r"^[^\s\x00-\x1f,\"]{1,255}$"  # lenient: a key we can still store and match on
EXT_TOKEN = r"^ext:[A-Za-z0-9._-]+$"
DATE = r"^\d{4}-\d{2}-\d{2}$"
DATETIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
YEAR = r"^\d{4}$"
USER_ID = r"^\{[^{}:,]+:[^{}]+\}$"
FLOAT = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
PAIR = r"^\{[^{}:,]+:[^{}:,]+\}$"  # a scoreScaleValue item, {lhs:rhs}
# A CASE learning objective id: a UUID as a URN (RFC 4122; hex digits in either case).
CASE_ID = r"(?i)^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
LIST_NEEDS_CLEANING = r"(^|,)\s*(,|$)|\s,|,\s|^\s|\s$"
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
Message = str | Callable[[dict], str]


@dataclass(slots=True)
class Issue:
    code: str
    severity: Severity
    mask: pl.Series  # true on rows that have the problem (nulls count as false)
    message: Message
    column: str | None = None
    value: pl.Series | None = None  # what to show; defaults to the column's original text


@dataclass(slots=True)
class Context:
    table: Table
    version: Version
    file_mode: str  # "bulk" or "delta"
    mode: Mode

    @property
    def file(self) -> str:
        return self.table.file


Checked = tuple[pl.Series, list[Issue]]


def check_rows(raw: RawTable, hmap: HeaderMap, ctx: Context, findings: Findings) -> pl.DataFrame:
    """Typed, normalised frame of the file's rows with `_row` and `_ok` (false where an error drops the row).

    First one parallel pass over all columns checks the exact (spec) form and types the values; only a
    column where that pass finds something is looked at again, cell by cell, for findings and lenient fixes.
    """
    src = raw.frame
    height = src.height
    text = {
        c.name: src[f"c{pos}"].alias(c.name) if (pos := hmap.positions.get(c.name)) is not None
        else pl.repeat(None, height, dtype=pl.String, eager=True).alias(c.name)
        for c in ctx.table.columns
    }  # fmt: skip
    exact = pl.DataFrame(list(text.values())).select(
        *(expr for col in ctx.table.columns for expr in _exact(col, ctx))
    )
    issues: list[Issue] = []
    columns: list[pl.Series] = []
    for col in ctx.table.columns:
        bad = exact.get_column(f"__bad_{col.name}", default=None)
        if bad is not None and bad.any() and col.name in hmap.positions:
            typed, found = _check_column(text[col.name], col, ctx)
            issues.extend(_with_values(found, text[col.name]))
        else:  # a missing column is one header finding, not one per row
            typed = exact[col.name]
        columns.append(typed.alias(col.name))
    typed = pl.DataFrame([*columns, src["_row"]])
    present = {c.name for c in ctx.table.columns if c.name in hmap.positions}
    issues.extend(_row_rules(typed, present, ctx))
    ok = report(src["_row"], issues, ctx, findings)
    extensions = [src[f"c{pos}"].alias(name) for name, pos in hmap.extensions.items()]
    # One chunk per column: a frame whose columns are chunked alike is never silently rechunked (copied) later.
    return typed.with_columns(*extensions, ok).rechunk()


def _with_values(issues: list[Issue], text: pl.Series) -> list[Issue]:
    for issue in issues:
        if issue.value is None:
            issue.value = text
    return issues


def report(rows: pl.Series, issues: list[Issue], ctx: Context, findings: Findings) -> pl.Series:
    """Record the issues' findings; return `_ok`, false on rows that an error drops."""
    ok = pl.repeat(True, rows.len(), dtype=pl.Boolean, eager=True)
    for issue in issues:
        mask = issue.mask.fill_null(False)
        if not mask.any():
            continue
        secret = issue.column is not None and ctx.table.column(issue.column).kind is Kind.SECRET
        value = issue.value if issue.value is not None else pl.repeat(None, rows.len(), dtype=pl.String, eager=True)
        hits = pl.DataFrame({"_row": rows, "value": value.cast(pl.String)}).filter(mask)
        findings.add_rows(issue.code, issue.severity, hits, issue.message, file=ctx.file, column=issue.column,
                          secret=secret)  # fmt: skip
        if issue.severity is Severity.ERROR:
            ok = ok & ~mask
    return ok.alias("_ok")


_CEDS = "|".join(CEDS_GRADES)
CEDS_LIST = rf"^(?:{_CEDS})(?:,(?:{_CEDS}))*$"
_USER_ID_ITEM = r"\{[^{}:,]+:[^{},]+\}"
USER_ID_LIST = rf"^{_USER_ID_ITEM}(?:,{_USER_ID_ITEM})*$"
_PAIR_ITEM = PAIR[1:-1]
PAIR_LIST = rf"^{_PAIR_ITEM}(?:,{_PAIR_ITEM})*$"


def _exact(col: Column, ctx: Context) -> list[pl.Expr]:
    """The column typed as if every value had its exact form, and `__bad_<name>`: rows where one has not.

    Where `__bad_` is false everywhere, the typed column equals what the detailed handler would give.
    """
    c = pl.col(col.name)
    kind, name = col.kind, col.name
    typed: pl.Expr = c
    bad: pl.Expr | None = None
    if kind is Kind.GUID:
        bad = c.str.contains(NOT_GUID_CHAR) | (c.str.len_bytes() > 255) | (c == "")
    elif kind in (Kind.REF_LIST, Kind.LIST, Kind.GRADES, Kind.USER_IDS, Kind.ENUM_LIST, Kind.PAIRS):
        typed = c.str.split(",")
        bad = c.str.contains(LIST_NEEDS_CLEANING)
        if kind is Kind.USER_IDS:
            bad = bad | ~c.str.contains(USER_ID_LIST)
        elif kind is Kind.PAIRS:
            bad = bad | ~c.str.contains(PAIR_LIST)
        elif kind is Kind.ENUM_LIST:
            bad = bad | typed.list.eval(~in_vocabulary(pl.element(), col, ctx.version)).list.any()
        elif kind is Kind.GRADES and not ctx.version.extensible:
            bad = bad | ~c.str.contains(CEDS_LIST)
    elif kind is Kind.ENUM:
        bad = c.is_not_null() & ~in_vocabulary(c, col, ctx.version)
    elif kind is Kind.BOOL:
        typed = pl.when(c.is_not_null()).then(c == "true")
        bad = c.is_not_null() & ~c.is_in(["true", "false"])
    elif kind is Kind.DATE:
        typed = c.str.to_date("%Y-%m-%d", strict=False)
        bad = c.is_not_null() & (typed.is_null() | ~c.str.contains(DATE))
    elif kind is Kind.DATE_OR_DATETIME:
        typed = _date_or_datetime_value(c)
        bad = c.is_not_null() & typed.is_null()
    elif kind is Kind.YEAR:
        typed = c.cast(pl.Int16, strict=False)
        bad = c.is_not_null() & ~c.str.contains(YEAR)
    elif kind is Kind.FLOAT:
        typed = c.cast(pl.Float64, strict=False)
        bad = c.is_not_null() & (typed.is_null() | ~c.str.contains(FLOAT))
    elif kind in (Kind.STATUS, Kind.MODIFIED) and ctx.file_mode == "bulk":
        typed = pl.lit(None, UTC_MS if kind is Kind.MODIFIED else pl.String)
        bad = c.is_not_null()
    elif kind is Kind.STATUS:
        bad = c.is_null() | ~c.is_in(list(STATUS_VALUES))
    elif kind is Kind.MODIFIED:
        typed = c.str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", strict=False, time_unit="ms", time_zone="UTC")
        bad = c.is_null() | typed.is_null() | ~c.str.contains(DATETIME)
    if col.required and kind not in (Kind.STATUS, Kind.MODIFIED):
        bad = c.is_null() if bad is None else (bad | c.is_null())
    exprs = [typed.alias(name)]
    if bad is not None:
        exprs.append(bad.fill_null(False).alias(f"__bad_{name}"))
    return exprs


def in_vocabulary(value: pl.Expr, col: Column, version: Version) -> pl.Expr:
    """Whether `value` is a token of the column's vocabulary (or an ext: token, where the version allows one)."""
    ok = value.is_in(list(col.vocabulary))
    if col.extensible and version.extensible:
        ok = ok | value.str.contains(EXT_TOKEN)
    return ok


def _date_or_datetime_value(c: pl.Expr) -> pl.Expr:
    """A date (read as midnight UTC) or a UTC date-time, each in its exact form; null for anything else."""
    date = c.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")
    moment = c.str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", strict=False, time_unit="ms", time_zone="UTC")
    return pl.when(c.str.contains(DATE)).then(date).when(c.str.contains(DATETIME)).then(moment)


def _check_column(text: pl.Series, col: Column, ctx: Context) -> Checked:
    issues: list[Issue] = []
    if col.required and col.kind not in (Kind.STATUS, Kind.MODIFIED):
        issues.append(Issue("row.missing_required_value", Severity.ERROR, text.is_null(),
                            f"{col.name} is required", col.name))  # fmt: skip
    handler = _HANDLERS.get(col.kind)
    if handler is None:
        return text, issues
    typed, more = handler(text, col, ctx)
    return typed, issues + more


def _any(lists: pl.Series, predicate: pl.Expr) -> pl.Series:
    """Per row: does any item of the list satisfy the predicate (written over pl.element())?"""
    return lists.list.eval(predicate).list.any()


def _id_issues(bad: pl.Series, unusable: Callable[[], pl.Series], col: Column, ctx: Context) -> list[Issue]:
    if not bad.fill_null(False).any():
        return []
    message = f"{col.name} must be 1-255 characters from 0-9 A-Z a-z . - _ / @"
    if ctx.mode is Mode.STRICT:
        return [Issue("row.invalid_sourced_id", Severity.ERROR, bad, message, col.name)]
    hard = unusable()
    return [
        Issue("row.invalid_sourced_id", Severity.ERROR, hard, message, col.name),
        Issue("row.invalid_sourced_id", Severity.WARNING, bad & ~hard, message + " (accepted as is)", col.name),
    ]


def _guid(text: pl.Series, col: Column, ctx: Context) -> Checked:
    return text, id_form_issues(text, col, ctx)


def _split(text: pl.Series, col: Column, ctx: Context) -> Checked:
    """A comma list: empty items and spaces around items are deviations; returns the cleaned list."""
    items = text.str.split(",")
    if not text.str.contains(LIST_NEEDS_CLEANING).any():
        return items, []
    empty = _any(items, pl.element().str.strip_chars() == "")
    spaced = _any(items, pl.element() != pl.element().str.strip_chars())
    issues = [
        Issue("row.invalid_list", ctx.mode.deviation(), empty, f"{col.name} has an empty item (two commas?)",
              col.name),  # fmt: skip
        Issue("row.invalid_list", ctx.mode.deviation(), spaced & ~empty, f"{col.name} has spaces around an item",
              col.name),  # fmt: skip
    ]
    cleaned = items.list.eval(pl.element().str.strip_chars()).list.filter(pl.element() != "")
    return cleaned, issues


def id_form_issues(values: pl.Series, col: Column, ctx: Context) -> list[Issue]:
    """The form of the sourcedIds in a reference column (typed: a string, or a list for REF_LIST).

    The reference stage calls this, and only where it must: a value that resolves to a row of the target
    has the form of that row's own, already checked, sourcedId.
    """
    if col.kind is Kind.REF_LIST:
        bad = _any(values, ~pl.element().str.contains(GUID))
        issues = _id_issues(bad, lambda: _any(values, ~pl.element().str.contains(USABLE_ID)), col, ctx)
        shown = values.list.join(",")
    else:
        bad = values.str.contains(NOT_GUID_CHAR) | (values.str.len_bytes() > 255)
        issues = _id_issues(bad, lambda: values.is_not_null() & ~values.str.contains(USABLE_ID), col, ctx)
        shown = values
    return _with_values(issues, shown)


def _ref(text: pl.Series, col: Column, ctx: Context) -> Checked:
    return text, []  # the form of a reference is checked with its target, in references.py


def _ref_list(text: pl.Series, col: Column, ctx: Context) -> Checked:
    items, issues = _split(text, col, ctx)
    if col.required:
        issues.append(Issue("row.missing_required_value", Severity.ERROR, text.is_not_null() & (items.list.len() == 0),
                            f"{col.name} needs at least one item", col.name))  # fmt: skip
    return items, issues


def _list(text: pl.Series, col: Column, ctx: Context) -> Checked:
    return _split(text, col, ctx)


def _grades(text: pl.Series, col: Column, ctx: Context) -> Checked:
    items, issues = _split(text, col, ctx)
    if ctx.version.extensible:  # 1.2 treats grades as free strings
        return items, issues
    not_ceds = _any(items, ~pl.element().is_in(list(CEDS_GRADES)))
    if not not_ceds.fill_null(False).any():
        return items, issues
    # Excel drops the leading zero of 09; lenient mode puts it back.
    padded = items.list.eval(
        pl.when(pl.element().str.contains(r"^[1-9]$")).then("0" + pl.element()).otherwise(pl.element())
    )
    still_bad = _any(padded, ~pl.element().is_in(list(CEDS_GRADES)))
    issues.append(Issue("row.invalid_grade", ctx.mode.deviation(), not_ceds & ~still_bad,
                        f"{col.name}: grade codes have two digits (09, not 9)", col.name))  # fmt: skip
    issues.append(Issue("row.invalid_grade", ctx.mode.deviation(), still_bad,
                        f"{col.name}: not a CEDS grade code (IT PR PK TK KG 01-13 PS UG Other)", col.name))  # fmt: skip
    return (padded if ctx.mode is Mode.LENIENT else items), issues


def _braced_items(code: str, pattern: str, form: str) -> Callable[[pl.Series, Column, Context], Checked]:
    """The handler of a comma list whose items all have one braced form: userIds {type:id}, scoreScaleValue
    {lhs:rhs}."""

    def check(text: pl.Series, col: Column, ctx: Context) -> Checked:
        items, issues = _split(text, col, ctx)
        bad = _any(items, ~pl.element().str.contains(pattern))
        issues.append(Issue(code, Severity.ERROR, bad, f"{col.name} items must look like {form}", col.name))
        return items, issues

    return check


def _enum_list(text: pl.Series, col: Column, ctx: Context) -> Checked:
    """A comma list of vocabulary tokens; lenient mode maps an item's letter-case variant to the token."""
    items, issues = _split(text, col, ctx)
    exact = in_vocabulary(pl.element(), col, ctx.version)
    off = _any(items, ~exact).fill_null(False)
    if not off.any():
        return items, issues
    lowered = {v.lower(): v for v in col.vocabulary}
    mapped = items.list.eval(pl.when(exact).then(pl.element()).otherwise(
        pl.element().str.to_lowercase().replace_strict(lowered, default=None, return_dtype=pl.String)))  # fmt: skip
    near = off & ~_any(mapped, pl.element().is_null()).fill_null(False)
    allowed = ", ".join(col.vocabulary) + (", ext:<name>" if col.extensible and ctx.version.extensible else "")
    issues += [
        Issue("row.invalid_enum", Severity.ERROR, off & ~near, f"{col.name} items must be among {allowed}", col.name),
        Issue("row.invalid_enum", ctx.mode.deviation(), near,
              f"{col.name} is case-sensitive: items among {allowed}", col.name),  # fmt: skip
    ]
    if ctx.mode is Mode.STRICT:
        return items, issues
    return pl.select(pl.when(near).then(mapped).otherwise(items)).to_series(), issues


def _vocabulary(text: pl.Series, col: Column, ctx: Context, extensible: bool) -> Checked:
    """Exact vocabulary match; lenient mode maps a letter-case variant to the defined token."""
    exact = text.is_in(list(col.vocabulary))
    if extensible:
        exact = exact | text.str.contains(EXT_TOKEN)
    off = text.is_not_null() & ~exact
    if not off.any():
        return text, []
    lowered = {v.lower(): v for v in col.vocabulary}
    mapped = text.str.to_lowercase().replace_strict(lowered, default=None, return_dtype=pl.String)
    near = off & mapped.is_not_null()
    allowed = ", ".join(col.vocabulary) + (", ext:<name>" if extensible else "")
    code = "row.invalid_boolean" if col.kind is Kind.BOOL else "row.invalid_enum"
    issues = [
        Issue(code, Severity.ERROR, off & ~near, f"{col.name} must be one of {allowed}", col.name),
        Issue(code, ctx.mode.deviation(), near, f"{col.name} is case-sensitive: one of {allowed}", col.name),
    ]
    fixed = pl.select(pl.when(near).then(mapped).otherwise(text)).to_series() if ctx.mode is Mode.LENIENT else text
    return fixed, issues


def _enum(text: pl.Series, col: Column, ctx: Context) -> Checked:
    return _vocabulary(text, col, ctx, col.extensible and ctx.version.extensible)


def _bool(text: pl.Series, col: Column, ctx: Context) -> Checked:
    fixed, issues = _vocabulary(text, col, ctx, False)
    typed = (fixed == "true").to_frame().select(pl.when(fixed.is_in(["true", "false"])).then(pl.first()))
    return typed.to_series(), issues


def _date(text: pl.Series, col: Column, ctx: Context) -> Checked:
    parsed = text.str.to_date("%Y-%m-%d", strict=False)
    bad = text.is_not_null() & (parsed.is_null() | ~text.str.contains(DATE))
    issue = Issue("row.invalid_date", Severity.ERROR, bad,
                  f"{col.name} must be a real date written YYYY-MM-DD", col.name)  # fmt: skip
    return parsed, [issue]


def _date_or_datetime(text: pl.Series, col: Column, ctx: Context) -> Checked:
    typed = pl.select(_date_or_datetime_value(pl.lit(text))).to_series()
    issue = Issue("row.invalid_datetime", Severity.ERROR, text.is_not_null() & typed.is_null(),
                  f"{col.name} must be a date written YYYY-MM-DD or a UTC date-time written YYYY-MM-DDTHH:MM:SS.sssZ",
                  col.name)  # fmt: skip
    return typed, [issue]


def _float(text: pl.Series, col: Column, ctx: Context) -> Checked:
    typed = text.cast(pl.Float64, strict=False)
    bad = text.is_not_null() & (typed.is_null() | ~text.str.contains(FLOAT))
    issue = Issue("row.invalid_float", Severity.ERROR, bad, f"{col.name} must be a number such as 7 or 8.5",
                  col.name)  # fmt: skip
    return typed.zip_with(~bad, pl.Series([None], dtype=pl.Float64)), [issue]


def _year(text: pl.Series, col: Column, ctx: Context) -> Checked:
    good = text.str.contains(YEAR)
    bad = text.is_not_null() & ~good
    issue = Issue("row.invalid_year", Severity.ERROR, bad, f"{col.name} must be a four-digit year", col.name)
    return text.zip_with(good.fill_null(False), pl.Series([None], dtype=pl.String)).cast(pl.Int16, strict=False), [issue]


def _datetime(text: pl.Series, col: Column, ctx: Context) -> Checked:
    strict = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", strict=False, time_unit="ms", time_zone="UTC")
    exact = text.str.contains(DATETIME) & strict.is_not_null()
    off = text.is_not_null() & ~exact
    message = f"{col.name} must be a UTC date-time written YYYY-MM-DDTHH:MM:SS.sssZ"
    if not off.any():
        return strict, []
    if ctx.mode is Mode.STRICT:
        return strict, [Issue("row.invalid_datetime", Severity.ERROR, off, message, col.name)]
    candidates = [strict]
    for fmt, aware in LENIENT_DATETIMES:
        parsed = text.str.to_datetime(fmt, strict=False, time_unit="ms")
        parsed = parsed.dt.convert_time_zone("UTC") if aware else parsed.dt.replace_time_zone("UTC")
        candidates.append(parsed.cast(UTC_MS))
    lenient = pl.select(pl.coalesce(candidates)).to_series()
    issues = [
        Issue("row.invalid_datetime", Severity.ERROR, off & lenient.is_null(), message, col.name),
        Issue("row.invalid_datetime", Severity.WARNING, off & lenient.is_not_null(), message + " (read as ISO 8601)",
              col.name),  # fmt: skip
    ]
    return lenient, issues


def _lifecycle(text: pl.Series, col: Column, ctx: Context) -> Checked:
    """status and dateLastModified: blank in bulk files, required in delta files."""
    blank = pl.repeat(None, text.len(), dtype=UTC_MS if col.kind is Kind.MODIFIED else pl.String, eager=True)
    if ctx.file_mode == "bulk":
        issue = Issue("row.field_forbidden_in_bulk", ctx.mode.deviation(), text.is_not_null(),
                      f"{col.name} must be blank in a bulk file{ctx.mode.tolerated('ignored')}", col.name)  # fmt: skip
        return blank, [issue]
    required = Issue("row.field_required_in_delta", Severity.ERROR, text.is_null(),
                     f"{col.name} is required in a delta file", col.name)  # fmt: skip
    if col.kind is Kind.MODIFIED:
        typed, issues = _datetime(text, col, ctx)
        return typed, [required, *issues]
    # `inactive` was OneRoster 1.0's word for tobedeleted; lenient mode maps it with a warning.
    inactive = text.str.to_lowercase() == "inactive"
    typed, issues = _vocabulary(text, col, ctx, False)
    issues = [Issue(i.code, i.severity, i.mask & ~inactive, i.message, i.column) for i in issues]
    issues.append(Issue("row.invalid_enum", ctx.mode.deviation(), inactive,
                        "status 'inactive' is from OneRoster 1.0; 1.1 and 1.2 write tobedeleted"
                        f"{ctx.mode.tolerated('read as tobedeleted')}", col.name))  # fmt: skip
    if ctx.mode is Mode.LENIENT and inactive.any():
        typed = typed.zip_with(~inactive.fill_null(False), pl.Series(["tobedeleted"] * text.len()))
    return typed, [required, *issues]


_HANDLERS: dict[Kind, Callable[[pl.Series, Column, Context], Checked]] = {
    Kind.GUID: _guid,
    Kind.REF: _ref,
    Kind.REF_LIST: _ref_list,
    Kind.LIST: _list,
    Kind.GRADES: _grades,
    Kind.USER_IDS: _braced_items("row.invalid_user_ids", USER_ID, "{type:id}"),
    Kind.ENUM: _enum,
    Kind.BOOL: _bool,
    Kind.DATE: _date,
    Kind.DATETIME: _datetime,
    Kind.DATE_OR_DATETIME: _date_or_datetime,
    Kind.FLOAT: _float,
    Kind.ENUM_LIST: _enum_list,
    Kind.PAIRS: _braced_items("row.invalid_score_scale_value", PAIR, "{lhs:rhs}"),
    Kind.MODIFIED: _lifecycle,
    Kind.STATUS: _lifecycle,
    Kind.YEAR: _year,
}


def _has_duplicates(values: pl.Series) -> bool:
    present = values.drop_nulls()
    # Distinct 64-bit hashes prove distinct values; only a hash collision needs the exact (slower) count.
    if present.hash().n_unique() == present.len():
        return False
    return present.n_unique() < present.len()


def _row_rules(frame: pl.DataFrame, names: set[str], ctx: Context) -> list[Issue]:
    """Rules over several cells of a row (`frame` holds the typed values); one parallel pass finds which fire."""
    rules: list[tuple[str, Severity, pl.Expr, str, str, pl.Expr]] = []
    if {"subjects", "subjectCodes"} <= names:
        rules.append(("row.list_length_mismatch", Severity.ERROR,
                      pl.col("subjects").list.len() != pl.col("subjectCodes").list.len(),
                      "subjects and subjectCodes must have the same number of items", "subjectCodes",
                      pl.col("subjectCodes").list.join(",")))  # fmt: skip
    for start, end in (("startDate", "endDate"), ("beginDate", "endDate")):
        if {start, end} <= names:
            rules.append(("row.date_order", ctx.mode.deviation(), pl.col(start) > pl.col(end),
                          f"{end} is before {start}", end, pl.col(end).cast(pl.String)))  # fmt: skip
    if {"resultValueMin", "resultValueMax"} <= names:
        low, high = pl.col("resultValueMin"), pl.col("resultValueMax")
        rules.append(("row.invalid_score_range", Severity.ERROR, low > high,
                      "resultValueMin is greater than resultValueMax", "resultValueMin",
                      pl.format("{} > {}", low, high)))  # fmt: skip
    if {"source", "learningObjectiveId"} <= names:
        objective = pl.col("learningObjectiveId")
        rules.append(("row.invalid_case_id", Severity.ERROR,
                      (pl.col("source") == "case") & ~objective.fill_null("").str.contains(CASE_ID),
                      "learningObjectiveId must be a CASE id, urn:uuid:<uuid>, when source is case",
                      "learningObjectiveId", objective))  # fmt: skip
    if ctx.table.entity == "enrollments" and {"primary", "role"} <= names:
        rules.append(("row.primary_not_teacher", ctx.mode.deviation(),
                      pl.col("primary") & (pl.col("role") != "teacher"),
                      "primary=true is only for teachers", "primary", pl.col("primary").cast(pl.String)))  # fmt: skip
    if not rules:
        return []
    fired = frame.select(rule[2].fill_null(False).any().alias(str(k)) for k, rule in enumerate(rules)).row(0)
    issues = []
    for (code, severity, mask, message, column, value), hit in zip(rules, fired, strict=True):
        if hit:
            out = frame.select(mask.fill_null(False).alias("mask"), value.alias("value"))
            issues.append(Issue(code, severity, out["mask"], message, column, out["value"]))
    return issues


def check_file_rules(frame: pl.DataFrame, ctx: Context, findings: Findings) -> pl.DataFrame:
    """Rules over all rows of a file (duplicates, one primary role per user and org), after every chunk."""
    names = set(frame.columns)
    issues: list[Issue] = []

    def rule(code: str, severity: Severity, mask: pl.Expr, message: str, column: str, value: pl.Expr | None = None):
        mask_series = frame.select(mask.fill_null(False)).to_series()
        if not mask_series.any():
            return
        shown = frame.select((value if value is not None else pl.col(column).cast(pl.String))).to_series()
        issues.append(Issue(code, severity, mask_series, message, column, shown))

    if "sourcedId" in names and _has_duplicates(frame["sourcedId"]):
        sid = pl.col("sourcedId")
        first = pl.col("_row").min().over("sourcedId").cast(pl.String)
        rule("row.duplicate_sourced_id", Severity.ERROR, sid.is_not_null() & (pl.len().over("sourcedId") > 1),
             "sourcedId appears on more than one row; every copy is dropped", "sourcedId",
             pl.concat_str(sid, pl.lit(" (first on row "), first, pl.lit(")")))  # fmt: skip
    if ctx.table.entity == "users" and "userMasterIdentifier" in names and _has_duplicates(frame["userMasterIdentifier"]):
        umi = pl.col("userMasterIdentifier")
        rule("row.duplicate_identifier", ctx.mode.deviation(), umi.is_not_null() & (pl.len().over(umi) > 1),
             "userMasterIdentifier must be unique across users", "userMasterIdentifier")  # fmt: skip
    if ctx.table.entity == "roles" and {"userSourcedId", "orgSourcedId", "roleType"} <= names:
        primary = pl.col("roleType") == "primary"
        per_pair = primary.cast(pl.UInt32).sum().over("userSourcedId", "orgSourcedId")
        rule("row.multiple_primary_roles", Severity.ERROR, primary & (per_pair > 1),
             "a user has more than one primary role at this org", "roleType")  # fmt: skip
    if not issues:
        return frame
    ok = report(frame["_row"], issues, ctx, findings)
    return frame.with_columns(_ok=pl.col("_ok") & ok)
