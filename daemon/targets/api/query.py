"""A collection request's query string as a typed `Query`, and its filter as a polars expression.

The caller decodes the URL and passes the parameters as (name, value) pairs in the order they came, so a
repeated parameter can be told apart from a single one, together with the collection's `CollectionFields`:
the names its records carry (which `sort`, `fields` and `filter` accept) and the sub-fields only `filter`
accepts (`role` on users, whose 1.2 records hold it inside `roles`). Every refusal is an `ApiError` (400)
with the spec's minor code; parameter names this module does not know are left alone, since consumers add
their own (cache busters, tracing ids).

Rules, and the choices the spec leaves open:
- `limit` defaults to 100 and is clamped to a maximum of at least 5000 (Microsoft SDS pages by 5000);
  `offset` defaults to 0. Either given empty, zero (limit only), negative, not plain ASCII digits or more
  than once: 400 invaliddata.
- `sort` names one field the records carry, else 400 invalid_sort_field; `orderBy` is `asc` or `desc`
  (lower case, as the spec spells them), else 400 invalid_sort_field. `orderBy` without `sort` orders the
  default key (the caller's stable order, by sourcedId). `sort`, `orderBy`, `filter` and `fields` given
  twice are refused with their own minor code.
- `filter` is `field<op>'value'`, or two of them joined by ` AND ` or ` OR ` (upper case, spaces around);
  ops `=`, `!=`, `>`, `>=`, `<`, `<=`, `~`; spaces are allowed around the op. Values are in single quotes
  and may hold anything, spaces and commas included; a quote inside a value is written twice, as SQL and
  OData write it (`familyName='O''Brien'`); a backslash is an ordinary character. An empty value `''` is
  allowed with `=` and `!=` (an empty or absent field) and refused with the other ops. Anything else
  (no quotes, an unknown op or field, a third predicate, mixed AND/OR, text after the value): 400
  invalid_filter_field.
- `fields` is a comma list of names the records carry. An empty list or entry, or a name the records do not
  carry, is refused with 400 invalid_selection_field by default; with `ignore_unknown_fields=True` unknown
  names are dropped instead and the `Query` carries a warning for the response (the spec allows
  invalid_selection_field as a warning); if no known name is left, every field is served.
- A single record (`parse_record_query`) accepts only `fields`; any of limit, offset, sort, orderBy or
  filter there is 400 invaliddata.

Filter evaluation (`filter_expression`) compares by the column's type, never row by row in Python: strings
as strings, dates and date-times chronologically (a date-time value without a zone is UTC, a bare date is
its midnight UTC), numbers and booleans (`true`/`false`, = and != only) by value, and `~` as a
case-insensitive contains on strings only. An absent value satisfies `!=` and nothing else, and in a string
column it is the empty string (so `email=''` finds records without e-mail). A value the column's type cannot
read is 400 invalid_filter_field. On a list
column (`grades`, `subjects`) a predicate holds when any element matches, except `!=`, which holds when no
element equals the value (so `grades!='09'` is every record whose grades leave out 09).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Literal

import polars as pl

from daemon.targets.api.errors import ApiError, bad_query
from daemon.targets.settings import MAX_LIMIT

DEFAULT_LIMIT = 100
MAX_DIGITS = 15  # past any roster; keeps a megabyte of digits from reaching int()

OPS = ("!=", ">=", "<=", "=", ">", "<", "~")  # two-character ops first, so `>=` is not read as `>`
ORDERING_OPS = frozenset({">", ">=", "<", "<="})
Op = Literal["=", "!=", ">", ">=", "<", "<=", "~"]
Join = Literal["AND", "OR"]

COLLECTION_PARAMETERS = ("limit", "offset", "sort", "orderBy", "filter", "fields")
DIGITS = re.compile(r"[0-9]+")
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
JOIN = re.compile(r" +(AND|OR) +")
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass(frozen=True)
class CollectionFields:
    """What one collection's records carry: `names` for sort, fields and filter; `sub_fields` for filter only."""

    names: frozenset[str]
    sub_fields: frozenset[str] = frozenset()

    def filterable(self) -> frozenset[str]:
        return self.names | self.sub_fields


@dataclass(frozen=True)
class Predicate:
    field: str
    op: Op
    value: str


@dataclass(frozen=True)
class Filter:
    """One predicate, or two joined by `join` (None with a single predicate)."""

    predicates: tuple[Predicate, ...]
    join: Join | None = None


@dataclass(frozen=True)
class Query:
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    sort: str | None = None  # None: the default stable order
    descending: bool = False
    filter: Filter | None = None
    fields: tuple[str, ...] | None = None  # None: every field
    warnings: tuple[str, ...] = ()  # descriptions for an invalid_selection_field warning


def parse_collection_query(
    params: Iterable[tuple[str, str]],
    fields: CollectionFields,
    *,
    max_limit: int = MAX_LIMIT,
    ignore_unknown_fields: bool = False,
) -> Query:
    if max_limit < MAX_LIMIT:
        raise ValueError(f"the page size maximum must be at least {MAX_LIMIT}")
    given = _by_name(params)
    limit = _count(given, "limit", smallest=1)
    offset = _count(given, "offset", smallest=0)
    selected, warnings = _fields(given, fields, ignore_unknown_fields)
    return Query(
        limit=DEFAULT_LIMIT if limit is None else min(limit, max_limit),
        offset=offset or 0,
        sort=_sort(given, fields),
        descending=_descending(given),
        filter=_filter(given, fields),
        fields=selected,
        warnings=warnings,
    )


def parse_record_query(
    params: Iterable[tuple[str, str]], fields: CollectionFields, *, ignore_unknown_fields: bool = False
) -> Query:
    """A single record's query: `fields` alone; the collection parameters are refused."""
    given = _by_name(params)
    for name in COLLECTION_PARAMETERS:
        if name != "fields" and name in given:
            raise bad_query("invaliddata", f"{name} applies to collections, not to a single record")
    selected, warnings = _fields(given, fields, ignore_unknown_fields)
    return Query(fields=selected, warnings=warnings)


def _by_name(params: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    given: dict[str, list[str]] = {}
    for name, value in params:
        given.setdefault(name, []).append(value)
    return given


def _single(given: dict[str, list[str]], name: str, minor: str) -> str | None:
    values = given.get(name)
    if values is None:
        return None
    if len(values) > 1:
        raise bad_query(minor, f"{name} may be given once")
    return values[0]


def _count(given: dict[str, list[str]], name: str, *, smallest: int) -> int | None:
    text = _single(given, name, "invaliddata")
    if text is None:
        return None
    if not DIGITS.fullmatch(text):
        raise bad_query("invaliddata", f"{name} must be a whole number of at least {smallest}")
    digits = text.lstrip("0") or "0"
    if len(digits) > MAX_DIGITS:
        if name == "limit":
            return 10**MAX_DIGITS  # clamped by the caller like any other large limit
        raise bad_query("invaliddata", f"{name} is too large")
    number = int(digits)
    if number < smallest:
        raise bad_query("invaliddata", f"{name} must be a whole number of at least {smallest}")
    return number


def _sort(given: dict[str, list[str]], fields: CollectionFields) -> str | None:
    name = _single(given, "sort", "invalid_sort_field")
    if name is not None and name not in fields.names:
        raise bad_query("invalid_sort_field", f"cannot sort on {_shown(name)}")
    return name


def _descending(given: dict[str, list[str]]) -> bool:
    order = _single(given, "orderBy", "invalid_sort_field")
    if order not in (None, "asc", "desc"):
        raise bad_query("invalid_sort_field", "orderBy must be asc or desc")
    return order == "desc"


def _fields(
    given: dict[str, list[str]], fields: CollectionFields, ignore_unknown: bool
) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    text = _single(given, "fields", "invalid_selection_field")
    if text is None:
        return None, ()
    names = [name.strip() for name in text.split(",")]
    if "" in names:
        raise bad_query("invalid_selection_field", "fields must not hold an empty name")
    unknown = [name for name in names if name not in fields.names]
    if unknown and not ignore_unknown:
        raise bad_query("invalid_selection_field", f"unknown field {_shown(unknown[0])} in fields")
    known = tuple(dict.fromkeys(name for name in names if name in fields.names))
    warnings = tuple(f"unknown field {_shown(name)} in fields was ignored" for name in unknown)
    return (known or None), warnings


def _filter(given: dict[str, list[str]], fields: CollectionFields) -> Filter | None:
    text = _single(given, "filter", "invalid_filter_field")
    if text is None:
        return None
    first, end = _predicate(text, 0, fields)
    if not text[end:].strip(" "):
        return Filter((first,))
    joined = JOIN.match(text, end)
    if joined is None:
        raise _malformed("expected AND or OR after a value")
    second, end = _predicate(text, joined.end(), fields)
    if text[end:].strip(" "):
        raise _malformed("at most two conditions joined by one AND or OR")
    return Filter((first, second), joined.group(1))  # type: ignore[arg-type]


def _predicate(text: str, at: int, fields: CollectionFields) -> tuple[Predicate, int]:
    """The predicate starting at `at` (after optional spaces), and the index just after its closing quote."""
    at = _skip_spaces(text, at)
    name = FIELD_NAME.match(text, at)
    if name is None:
        raise _malformed("expected a field name")
    if name.group() not in fields.filterable():
        raise bad_query("invalid_filter_field", f"cannot filter on {_shown(name.group())}")
    at = _skip_spaces(text, name.end())
    op = next((op for op in OPS if text.startswith(op, at)), None)
    if op is None:
        raise _malformed(f"expected one of {' '.join(OPS)} after {name.group()}")
    value, at = _quoted(text, _skip_spaces(text, at + len(op)))
    if value == "" and op not in ("=", "!="):
        raise _malformed(f"an empty value only goes with = or !=, not {op}")
    return Predicate(name.group(), op, value), at  # type: ignore[arg-type]


def _quoted(text: str, at: int) -> tuple[str, int]:
    """The value in single quotes at `at` (a doubled quote stands for one), and the index after it."""
    if not text.startswith("'", at):
        raise _malformed("values must be in single quotes")
    parts = []
    at += 1
    while True:
        close = text.find("'", at)
        if close < 0:
            raise _malformed("a value's closing quote is missing")
        parts.append(text[at:close])
        if text.startswith("'", close + 1):
            parts.append("'")
            at = close + 2
            continue
        return "".join(parts), close + 1


def _skip_spaces(text: str, at: int) -> int:
    while at < len(text) and text[at] == " ":
        at += 1
    return at


def _malformed(reason: str) -> ApiError:
    return bad_query("invalid_filter_field", f"malformed filter: {reason}")


def _shown(name: str) -> str:
    """A name from the request, cut short so a description never echoes a long input back."""
    return repr(name if len(name) <= 64 else name[:64] + "...")


def filter_expression(
    query_filter: Filter | None, column_types: Mapping[str, pl.DataType], columns: Mapping[str, pl.Expr] | None = None
) -> pl.Expr:
    """The filter as one boolean expression over columns named as the filter's fields (all rows if None);
    `columns` may give a field's value as an expression of its own instead (a column with defaults filled in).

    A value that cannot be read as its column's type (a date that is not one, a number that is not one) is a
    400 invalid_filter_field; a field the caller has no column for is the caller's mistake (ValueError).
    """
    if query_filter is None:
        return pl.lit(True)
    parts = [_predicate_expr(predicate, column_types, columns or {}) for predicate in query_filter.predicates]
    if len(parts) == 1:
        return parts[0]
    return parts[0] & parts[1] if query_filter.join == "AND" else parts[0] | parts[1]


def _predicate_expr(
    predicate: Predicate, column_types: Mapping[str, pl.DataType], columns: Mapping[str, pl.Expr]
) -> pl.Expr:
    if predicate.field not in column_types:
        raise ValueError(f"no column for filter field {predicate.field!r}")
    dtype = column_types[predicate.field]
    column = columns.get(predicate.field, pl.col(predicate.field))
    if isinstance(dtype, pl.List):
        inner = dtype.inner
        if predicate.op == "!=":
            equal = _compare(pl.element(), inner, "=", predicate)
            return ~column.list.eval(equal).list.any().fill_null(False)
        matched = _compare(pl.element(), inner, predicate.op, predicate)
        return column.list.eval(matched).list.any().fill_null(False)
    return _compare(column, dtype, predicate.op, predicate)


def _compare(expr: pl.Expr, dtype: pl.DataType, op: Op, predicate: Predicate) -> pl.Expr:
    """`expr <op> value` by the column's type; the result is never null (a null row fails the predicate)."""
    if dtype == pl.String or dtype == pl.Null or isinstance(dtype, (pl.Categorical, pl.Enum)):
        text = expr.cast(pl.String).fill_null("")
        if op == "~":
            return text.str.to_lowercase().str.contains(predicate.value.lower(), literal=True)
        return _apply(text, op, pl.lit(predicate.value))
    if op == "~":
        raise bad_query("invalid_filter_field", f"~ applies to text, not to {predicate.field}")
    if isinstance(dtype, pl.Datetime):
        literal = pl.lit(_moment(predicate)).dt.convert_time_zone("UTC")
        if dtype.time_zone is None:
            literal = literal.dt.replace_time_zone(None)
        else:
            literal = literal.dt.convert_time_zone(dtype.time_zone)
    elif dtype == pl.Date:
        literal = pl.lit(_day(predicate))
    elif dtype == pl.Boolean:
        if op in ORDERING_OPS:
            raise _unreadable(predicate, "compared with = or !=")
        literal = pl.lit(_boolean(predicate))
    elif dtype.is_numeric():
        literal = pl.lit(_number(predicate))
    else:
        raise bad_query("invalid_filter_field", f"cannot filter on {predicate.field}")
    # an absent value satisfies != and nothing else, as an empty string does
    return _apply(expr, op, literal).fill_null(op == "!=")


def _apply(left: pl.Expr, op: Op, right: pl.Expr) -> pl.Expr:
    match op:
        case "=":
            return left == right
        case "!=":
            return left != right
        case ">":
            return left > right
        case ">=":
            return left >= right
        case "<":
            return left < right
        case "<=":
            return left <= right
    raise ValueError(f"no comparison for {op!r}")


def _moment(predicate: Predicate) -> datetime:
    try:
        moment = datetime.fromisoformat(predicate.value)
    except ValueError:
        raise _unreadable(predicate, "a date-time such as 2026-12-01T00:00:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _day(predicate: Predicate) -> date:
    try:
        if DAY.fullmatch(predicate.value):
            return date.fromisoformat(predicate.value)
    except ValueError:
        pass
    raise _unreadable(predicate, "a date such as 2026-12-01")


def _boolean(predicate: Predicate) -> bool:
    word = predicate.value.lower()
    if word not in ("true", "false"):
        raise _unreadable(predicate, "true or false")
    return word == "true"


def _number(predicate: Predicate) -> float:
    if not NUMBER.fullmatch(predicate.value):
        raise _unreadable(predicate, "a number")
    return float(predicate.value)


def _unreadable(predicate: Predicate, wanted: str) -> ApiError:
    return bad_query("invalid_filter_field", f"the value for {predicate.field} must be {wanted}")
