"""Pages of a publication (daemon/targets/api/reader.py) on a file of several row groups (made small here):
the default order, descending, sorts with ties, filters whose matches lie scattered across row groups, fields
no record carries.

The publication file is built here by hand: 5,000 records in sourcedId order (so three row groups of 2,000),
with family names from a small list so that sorts have many ties. Each expected page is computed in plain
Python from the same rows, by the rule in reader.py's docstring (ties broken by sourcedId)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from daemon.targets.api.errors import ApiError
from daemon.targets.api import reader
from daemon.targets.api.publish import META, NOW_MARK, entity_file, make_visible
from daemon.targets.api.query import CollectionFields, parse_collection_query
from daemon.targets.api.reader import Reader

N = 5000
ROW_GROUP = 2000  # the file's groups, and the reader's reads, small enough that a page spans several
MOMENT = datetime(2026, 12, 1, 2, 0, 0, 123000, tzinfo=UTC)
NAMES = ["Lee", "Park", "Diaz", "Ng", "Ruiz", "Okafor", "Smith"]
ROWS = [{"sourcedId": f"u{i:05d}", "familyName": NAMES[(i * 7919) % len(NAMES)], "grades": [f"{i % 12 + 1:02d}"],
         "rare": "yes" if i % 997 == 0 else "no"} for i in range(N)]  # fmt: skip
FIELDS = CollectionFields(frozenset({"sourcedId", "status", "dateLastModified", "familyName", "grades", "rare",
                                     "middleName"}))  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reader")
    frame = pl.DataFrame(ROWS).with_columns(
        status=pl.lit("active"),
        dateLastModified=pl.lit(None, pl.Datetime("ms", "UTC")),  # this publication's moment
        _json=pl.concat_str(pl.lit('{"sourcedId":"'), "sourcedId", pl.lit(f'","status":"active",{NOW_MARK},'),
                            pl.lit('"familyName":"'), "familyName", pl.lit('"}')),  # fmt: skip
    )
    path = entity_file(root, "1.1", "users")
    path.parent.mkdir(parents=True)
    frame.write_parquet(path, row_group_size=ROW_GROUP)
    make_visible(root, MOMENT)
    (root / META).write_text(json.dumps({"base_url": "https://roster.example"}))
    return root


@pytest.fixture(autouse=True)
def small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "ROW_GROUP", ROW_GROUP)


def page(folder: Path, *params: tuple[str, str]) -> tuple[int, list[str]]:
    found = Reader().collection(folder, "1.1", "users", parse_collection_query(list(params), FIELDS), None, "all")
    return found.total, [json.loads(text)["sourcedId"] for text in found.texts]


def ids(rows: list[dict]) -> list[str]:
    return [row["sourcedId"] for row in rows]


def test_default_order_pages_at_any_offset(folder: Path) -> None:
    assert page(folder, ("limit", "50"), ("offset", "4100")) == (N, ids(ROWS[4100:4150]))
    assert page(folder, ("limit", "5000"), ("offset", "1999")) == (N, ids(ROWS[1999:]))
    assert page(folder, ("offset", "5000")) == (N, [])


def test_descending_default_order(folder: Path) -> None:
    backwards = ids(ROWS)[::-1]
    assert page(folder, ("orderBy", "desc"), ("limit", "3")) == (N, backwards[:3])
    assert page(folder, ("orderBy", "desc"), ("limit", "10"), ("offset", "4995")) == (N, backwards[4995:])


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_a_sort_with_ties_pages_through_every_record_once(folder: Path, direction: str) -> None:
    expected = sorted(ROWS, key=lambda r: (r["familyName"], r["sourcedId"]), reverse=direction == "desc")
    crawled = []
    for offset in range(0, N, 700):
        total, got = page(folder, ("sort", "familyName"), ("orderBy", direction), ("limit", "700"),
                          ("offset", str(offset)))  # fmt: skip
        assert total == N
        crawled += got
    assert crawled == ids(expected)


@pytest.mark.parametrize("gather", [True, False], ids=["gathered-at-once", "read-by-row-group"])
def test_a_filter_whose_matches_lie_in_every_row_group(folder: Path, gather: bool, monkeypatch) -> None:
    if not gather:  # as a filter matching more than GATHER_ROWS records is read
        monkeypatch.setattr(reader, "GATHER_ROWS", 0)
    expected = [row for row in ROWS if row["rare"] == "yes"]
    assert len({int(r["sourcedId"][1:]) // ROW_GROUP for r in expected}) == 3
    assert page(folder, ("filter", "rare='yes'")) == (len(expected), ids(expected))
    assert page(folder, ("filter", "rare='yes'"), ("orderBy", "desc"), ("limit", "2")) == (
        len(expected), ids(expected)[::-1][:2])  # fmt: skip


def test_a_list_field_matches_any_element_and_cannot_be_sorted(folder: Path) -> None:
    expected = [row for row in ROWS if "07" in row["grades"]]
    assert page(folder, ("filter", "grades='07'"), ("limit", "5000")) == (len(expected), ids(expected))
    with pytest.raises(ApiError) as refused:
        page(folder, ("sort", "grades"))
    assert (refused.value.status, refused.value.minor) == (400, "invalid_sort_field")


def test_a_field_no_record_carries_reads_as_absent(folder: Path) -> None:
    assert page(folder, ("filter", "middleName=''"), ("limit", "1")) == (N, ids(ROWS[:1]))
    assert page(folder, ("filter", "middleName='Jo'")) == (0, [])
    assert page(folder, ("sort", "middleName"), ("limit", "2")) == (N, ids(ROWS[:2]))


def test_dates_set_by_the_publication_are_its_moment(folder: Path) -> None:
    reader = Reader()
    assert reader.publication(folder).moment_text == "2026-12-01T02:00:00.123Z"
    assert reader.publication(folder).base_url == "https://roster.example"
    assert page(folder, ("filter", "dateLastModified>'2026-12-01T02:00:00.122Z'"), ("limit", "1"))[0] == N
    assert page(folder, ("filter", "dateLastModified>'2026-12-01T02:00:00.123Z'")) == (0, [])
    # a sort by date reads the filled-in dates too: all the same here, so the order is by sourcedId
    assert page(folder, ("sort", "dateLastModified"), ("orderBy", "desc"), ("limit", "2")) == (N, ids(ROWS)[::-1][:2])
