"""Query parameters (daemon/targets/api/query.py): every rule of the REST digest, each malformed form, and
filters evaluated on a small hand-written frame whose expected sourcedIds are written out in each case."""

from __future__ import annotations

from datetime import date, datetime, timezone

import polars as pl
import pytest

from daemon.targets.api.errors import ApiError
from daemon.targets.api.query import (
    CollectionFields,
    Filter,
    Predicate,
    Query,
    filter_expression,
    parse_collection_query,
    parse_record_query,
)

USERS = CollectionFields(
    names=frozenset({"sourcedId", "status", "dateLastModified", "givenName", "familyName", "email",
                     "grades", "enabledUser", "birthDate", "sortOrder"}),
    sub_fields=frozenset({"role"}),
)


def parse(*params: tuple[str, str], **options) -> Query:
    return parse_collection_query(list(params), USERS, **options)


def refused(minor: str, *params: tuple[str, str], **options) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(*params, **options)
    assert (caught.value.status, caught.value.minor) == (400, minor)
    return caught.value


# paging

def test_no_parameters_give_the_first_page_of_100_in_the_default_order():
    assert parse() == Query(limit=100, offset=0, sort=None, descending=False, filter=None, fields=None)


def test_limit_and_offset_are_read():
    query = parse(("limit", "250"), ("offset", "500"))
    assert (query.limit, query.offset) == (250, 500)


def test_offset_zero_and_leading_zeros_are_fine():
    query = parse(("limit", "007"), ("offset", "0"))
    assert (query.limit, query.offset) == (7, 0)


@pytest.mark.parametrize("asked, served", [("5000", 5000), ("5001", 5000), ("1000000", 5000),
                                           ("99999999999999999999999999", 5000)])
def test_a_large_limit_is_clamped_to_5000(asked, served):
    assert parse(("limit", asked)).limit == served


def test_the_maximum_can_be_raised():
    assert parse(("limit", "8000"), max_limit=10000).limit == 8000
    assert parse(("limit", "20000"), max_limit=10000).limit == 10000


def test_the_maximum_cannot_be_below_5000():
    with pytest.raises(ValueError):
        parse(max_limit=4999)


@pytest.mark.parametrize("name", ["limit", "offset"])
@pytest.mark.parametrize("value", ["-1", "-0", "abc", "", " ", "10 ", "+5", "1.5", "1e3", "0x10", "١٢",
                                   "²", "5,000"])
def test_a_malformed_limit_or_offset_is_invaliddata(name, value):
    refused("invaliddata", (name, value))


def test_a_zero_limit_is_invaliddata():
    refused("invaliddata", ("limit", "0"))
    refused("invaliddata", ("limit", "000"))


@pytest.mark.parametrize("name", ["limit", "offset"])
def test_a_repeated_limit_or_offset_is_invaliddata_even_when_both_agree(name):
    refused("invaliddata", (name, "10"), (name, "10"))


def test_an_absurd_offset_is_refused_rather_than_converted():
    refused("invaliddata", ("offset", "9" * 5000))


# sorting

def test_sort_and_order():
    assert (parse(("sort", "familyName")).sort, parse(("sort", "familyName")).descending) == ("familyName", False)
    query = parse(("sort", "familyName"), ("orderBy", "desc"))
    assert (query.sort, query.descending) == ("familyName", True)
    assert parse(("sort", "familyName"), ("orderBy", "asc")).descending is False


def test_order_without_sort_orders_the_default_key():
    query = parse(("orderBy", "desc"))
    assert (query.sort, query.descending) == (None, True)


@pytest.mark.parametrize("name", ["shoeSize", "", "role", "sourcedid", "givenName,familyName", " familyName"])
def test_sort_on_a_field_the_records_do_not_carry_is_invalid_sort_field(name):
    refused("invalid_sort_field", ("sort", name))


@pytest.mark.parametrize("order", ["ascending", "DESC", "Asc", "", "up", "asc,desc"])
def test_order_is_asc_or_desc_only(order):
    refused("invalid_sort_field", ("sort", "familyName"), ("orderBy", order))


def test_repeated_sort_or_order_is_refused():
    refused("invalid_sort_field", ("sort", "familyName"), ("sort", "givenName"))
    refused("invalid_sort_field", ("orderBy", "asc"), ("orderBy", "asc"))


# fields

def test_fields_lists_what_each_record_keeps_in_the_order_asked_without_repeats():
    assert parse(("fields", "sourcedId,givenName")).fields == ("sourcedId", "givenName")
    assert parse(("fields", "givenName, sourcedId,givenName")).fields == ("givenName", "sourcedId")


@pytest.mark.parametrize("value", ["", ",", "sourcedId,", ",sourcedId", "sourcedId,,givenName", " "])
def test_an_empty_name_in_fields_is_invalid_selection_field(value):
    refused("invalid_selection_field", ("fields", value))


def test_an_unknown_name_in_fields_is_refused_by_default():
    error = refused("invalid_selection_field", ("fields", "sourcedId,nickname"))
    assert "nickname" in error.description


def test_a_sub_field_is_not_a_field_to_select():
    refused("invalid_selection_field", ("fields", "role"))


def test_an_unknown_name_in_fields_can_be_ignored_with_a_warning():
    query = parse(("fields", "sourcedId,nickname,givenName"), ignore_unknown_fields=True)
    assert query.fields == ("sourcedId", "givenName")
    assert query.warnings == ("unknown field 'nickname' in fields was ignored",)


def test_when_every_name_is_ignored_every_field_is_served():
    query = parse(("fields", "nickname"), ignore_unknown_fields=True)
    assert query.fields is None
    assert len(query.warnings) == 1


def test_ignoring_does_not_excuse_an_empty_name():
    refused("invalid_selection_field", ("fields", "sourcedId,,"), ignore_unknown_fields=True)


def test_repeated_fields_is_refused():
    refused("invalid_selection_field", ("fields", "sourcedId"), ("fields", "givenName"))


def test_a_long_unknown_name_is_not_echoed_whole():
    error = refused("invalid_selection_field", ("fields", "x" * 10000))
    assert len(error.description) < 200


# filter: what is read

def one(field: str, op: str, value: str) -> Filter:
    return Filter((Predicate(field, op, value),))


@pytest.mark.parametrize("text, expected", [
    ("status='active'", one("status", "=", "active")),
    ("status!='tobedeleted'", one("status", "!=", "tobedeleted")),
    ("dateLastModified>'2026-12-01T00:00:00Z'", one("dateLastModified", ">", "2026-12-01T00:00:00Z")),
    ("dateLastModified>='2026-12-01'", one("dateLastModified", ">=", "2026-12-01")),
    ("sortOrder<'3'", one("sortOrder", "<", "3")),
    ("sortOrder<='3'", one("sortOrder", "<=", "3")),
    ("familyName~'smi'", one("familyName", "~", "smi")),
    ("role='student'", one("role", "=", "student")),
    ("status = 'active'", one("status", "=", "active")),
    ("  status='active'  ", one("status", "=", "active")),
    ("givenName='Mary Ann'", one("givenName", "=", "Mary Ann")),
    ("familyName='Smith, Jr.'", one("familyName", "=", "Smith, Jr.")),
    ("familyName='O''Brien'", one("familyName", "=", "O'Brien")),
    ("familyName=''''", one("familyName", "=", "'")),
    ("familyName='a\\b'", one("familyName", "=", "a\\b")),
    ("givenName='Tom AND Jerry'", one("givenName", "=", "Tom AND Jerry")),
    ("givenName='x=''y'' OR z'", one("givenName", "=", "x='y' OR z")),
    ("email=''", one("email", "=", "")),
    ("email!=''", one("email", "!=", "")),
    ("givenName='Zoë'", one("givenName", "=", "Zoë")),
])
def test_one_predicate(text, expected):
    assert parse(("filter", text)).filter == expected


def test_two_predicates_joined_by_and_or_or():
    assert parse(("filter", "role='student' AND status='active'")).filter == Filter(
        (Predicate("role", "=", "student"), Predicate("status", "=", "active")), "AND")
    assert parse(("filter", "givenName~'an'  OR  familyName~'an'")).filter == Filter(
        (Predicate("givenName", "~", "an"), Predicate("familyName", "~", "an")), "OR")


# filter: what is refused

@pytest.mark.parametrize("text", [
    "",
    " ",
    "status",
    "status=",
    "status=active",
    'status="active"',
    "status='active",
    "status=active'",
    "status=='active'",
    "status=>'active'",
    "status<>'active'",
    "status=~'active'",
    "status eq 'active'",
    "status:'active'",
    "'active'=status",
    "status='active' status='active'",
    "status='active'x",
    "status='active''",
    "status='active' AND",
    "status='active' AND ",
    "status='active' and role='student'",
    "status='active' And role='student'",
    "status='active'AND role='student'",
    "status='active' AND role='student' AND givenName='A'",
    "status='active' AND role='student' OR givenName='A'",
    "status='active' OR role='student' OR givenName='A'",
    "status='active' AND AND role='student'",
    "status='active' NOT role='student'",
    "status='active' && role='student'",
    "status='active',role='student'",
    "status='active' AND role='student' x",
    "(status='active')",
    "familyName~''",
    "sortOrder>''",
    "sortOrder>=''",
    "sortOrder<''",
    "sortOrder<=''",
    "shoeSize='9'",
    "Status='active'",
    "metadata.colour='blue'",
    "status='active' AND shoeSize='9'",
])
def test_a_malformed_filter_is_invalid_filter_field(text):
    refused("invalid_filter_field", ("filter", text))


def test_repeated_filter_is_refused():
    refused("invalid_filter_field", ("filter", "status='active'"), ("filter", "role='student'"))


def test_filter_descriptions_name_no_internals():
    error = refused("invalid_filter_field", ("filter", "shoeSize='9'"))
    assert error.description == "cannot filter on 'shoeSize'"


# parameters together, and what is left alone

def test_every_parameter_at_once():
    query = parse(("limit", "5000"), ("offset", "10000"), ("sort", "familyName"), ("orderBy", "desc"),
                  ("filter", "status='active'"), ("fields", "sourcedId,familyName"))
    assert query == Query(limit=5000, offset=10000, sort="familyName", descending=True,
                          filter=one("status", "=", "active"), fields=("sourcedId", "familyName"))


def test_parameters_this_module_does_not_know_are_left_alone():
    assert parse(("_", "1712345678"), ("access_token", "x")) == Query()


def test_query_is_frozen():
    with pytest.raises(AttributeError):
        parse().limit = 5  # type: ignore[misc]


# single records

def test_a_single_record_takes_fields():
    assert parse_record_query([("fields", "sourcedId,email")], USERS) == Query(fields=("sourcedId", "email"))
    assert parse_record_query([], USERS) == Query()


@pytest.mark.parametrize("name, value", [("limit", "10"), ("offset", "0"), ("sort", "familyName"),
                                         ("orderBy", "asc"), ("filter", "status='active'")])
def test_a_single_record_refuses_the_collection_parameters(name, value):
    with pytest.raises(ApiError) as caught:
        parse_record_query([(name, value)], USERS)
    assert (caught.value.status, caught.value.minor) == (400, "invaliddata")


def test_a_single_record_refuses_unknown_fields_unless_told_to_ignore_them():
    with pytest.raises(ApiError) as caught:
        parse_record_query([("fields", "nickname")], USERS)
    assert caught.value.minor == "invalid_selection_field"
    query = parse_record_query([("fields", "email,nickname")], USERS, ignore_unknown_fields=True)
    assert (query.fields, len(query.warnings)) == (("email",), 1)


# filter evaluation

def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


PEOPLE = pl.DataFrame(
    {
        "sourcedId": ["u1", "u2", "u3", "u4", "u5"],
        "status": ["active", "active", "tobedeleted", "active", None],
        "role": ["student", "teacher", "student", "student", "administrator"],
        "givenName": ["Mary Ann", "Sean", "Zoë", "maryanne", "Bob"],
        "familyName": ["O'Brien", "Smith, Jr.", "obrien", "Ng", "Brown"],
        "email": ["mo@x.org", None, "", "mn@x.org", "bb@x.org"],
        "dateLastModified": [utc(2026, 11, 30, 23, 59, 59), utc(2026, 12, 1, 0, 0, 0),
                             utc(2026, 12, 1, 0, 0, 0, 1000), utc(2026, 12, 2, 8, 30), None],
        "birthDate": [date(2012, 5, 1), date(2011, 12, 31), None, date(2012, 1, 1), date(1980, 2, 29)],
        "grades": [["06", "07"], [], ["07"], None, ["10", "11", "12"]],
        "enabledUser": [True, True, False, None, True],
        "sortOrder": [1, 2, 3, None, 10],
    },
    schema_overrides={"dateLastModified": pl.Datetime("ms", "UTC")},
)


def matching(text: str, frame: pl.DataFrame = PEOPLE) -> list[str]:
    query = parse(("filter", text))
    return frame.filter(filter_expression(query.filter, frame.schema))["sourcedId"].to_list()


@pytest.mark.parametrize("text, expected", [
    # strings compare as strings; an absent value is the empty string
    ("status='active'", ["u1", "u2", "u4"]),
    ("status!='active'", ["u3", "u5"]),
    ("role='student'", ["u1", "u3", "u4"]),
    ("familyName='O''Brien'", ["u1"]),
    ("familyName='Smith, Jr.'", ["u2"]),
    ("givenName='Mary Ann'", ["u1"]),
    ("givenName='mary ann'", []),
    ("email=''", ["u2", "u3"]),
    ("email!=''", ["u1", "u4", "u5"]),
    ("familyName>'Ng'", ["u1", "u2", "u3"]),
    ("familyName<='Ng'", ["u4", "u5"]),
    # ~ is a case-insensitive contains
    ("givenName~'MARY'", ["u1", "u4"]),
    ("familyName~'brien'", ["u1", "u3"]),
    ("familyName~''''", ["u1"]),
    ("givenName~'ë'", ["u3"]),
    ("familyName~'.'", ["u2"]),
    # date-times compare chronologically, whatever the value's zone or precision
    ("dateLastModified>'2026-12-01T00:00:00Z'", ["u3", "u4"]),
    ("dateLastModified>='2026-12-01T00:00:00Z'", ["u2", "u3", "u4"]),
    ("dateLastModified>'2026-12-01T00:00:00.000Z'", ["u3", "u4"]),
    ("dateLastModified='2026-12-01T00:00:00Z'", ["u2"]),
    ("dateLastModified!='2026-12-01T00:00:00Z'", ["u1", "u3", "u4", "u5"]),
    ("dateLastModified<'2026-12-01T01:00:00+01:00'", ["u1"]),
    ("dateLastModified>'2026-12-01T00:00:00'", ["u3", "u4"]),
    ("dateLastModified>='2026-12-02'", ["u4"]),
    # dates too
    ("birthDate<'2012-01-01'", ["u2", "u5"]),
    ("birthDate>='2012-01-01'", ["u1", "u4"]),
    ("birthDate='2012-05-01'", ["u1"]),
    ("birthDate!='2012-05-01'", ["u2", "u3", "u4", "u5"]),
    # a list holds when any element matches; != when no element equals
    ("grades='07'", ["u1", "u3"]),
    ("grades!='07'", ["u2", "u4", "u5"]),
    ("grades>='10'", ["u5"]),
    ("grades~'1'", ["u5"]),
    # booleans and numbers by value
    ("enabledUser='true'", ["u1", "u2", "u5"]),
    ("enabledUser='FALSE'", ["u3"]),
    ("enabledUser!='true'", ["u3", "u4"]),
    ("sortOrder>'2'", ["u3", "u5"]),
    ("sortOrder<='2.5'", ["u1", "u2"]),
    ("sortOrder='10'", ["u5"]),
    # two predicates
    ("role='student' AND status='active'", ["u1", "u4"]),
    ("role='teacher' OR status='tobedeleted'", ["u2", "u3"]),
    ("dateLastModified>'2026-12-01T00:00:00Z' AND status='active'", ["u4"]),
    ("givenName~'mary' OR grades='11'", ["u1", "u4", "u5"]),
])
def test_filter_selects_the_expected_records(text, expected):
    assert matching(text) == expected


def test_datetime_filters_work_on_a_naive_nanosecond_column_and_one_in_another_zone():
    naive = PEOPLE.with_columns(pl.col("dateLastModified").dt.replace_time_zone(None).dt.cast_time_unit("ns"))
    assert matching("dateLastModified>'2026-12-01T00:00:00Z'", naive) == ["u3", "u4"]
    local = PEOPLE.with_columns(pl.col("dateLastModified").dt.convert_time_zone("America/Chicago"))
    assert matching("dateLastModified>'2026-12-01T00:00:00Z'", local) == ["u3", "u4"]


def test_categorical_columns_compare_as_strings():
    frame = PEOPLE.with_columns(pl.col("status").cast(pl.Categorical))
    assert matching("status='active'", frame) == ["u1", "u2", "u4"]


def test_no_filter_keeps_every_record():
    assert PEOPLE.filter(filter_expression(None, PEOPLE.schema))["sourcedId"].to_list() == [
        "u1", "u2", "u3", "u4", "u5"]


def test_the_filter_runs_lazily_as_one_expression():
    query = parse(("filter", "status='active' AND grades='07'"))
    lazy = PEOPLE.lazy().filter(filter_expression(query.filter, PEOPLE.schema)).select("sourcedId")
    assert lazy.collect()["sourcedId"].to_list() == ["u1"]


@pytest.mark.parametrize("text", [
    "dateLastModified>'yesterday'",
    "dateLastModified>'2026-13-01T00:00:00Z'",
    "dateLastModified~'2026'",
    "birthDate<'2012'",
    "birthDate<'2012-02-30'",
    "birthDate<'2012-01-01T00:00:00Z'",
    "enabledUser='yes'",
    "enabledUser>'false'",
    "sortOrder>'two'",
    "sortOrder>'nan'",
    "sortOrder>'1e3'",
    "sortOrder~'1'",
])
def test_a_value_the_column_cannot_read_is_invalid_filter_field(text):
    query = parse(("filter", text))
    with pytest.raises(ApiError) as caught:
        filter_expression(query.filter, PEOPLE.schema)
    assert (caught.value.status, caught.value.minor) == (400, "invalid_filter_field")


def test_a_field_without_a_column_is_the_callers_mistake():
    query = parse(("filter", "role='student'"))
    with pytest.raises(ValueError):
        filter_expression(query.filter, {"status": pl.String})
