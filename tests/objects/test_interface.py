"""The key rule and the records every storage shares (daemon/objects/interface.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from daemon.objects import LocalStorage, ObjectMissing, ObjectStorage, check_key
from daemon.objects.interface import check_prefix, utc_text
from daemon.objects.s3 import S3Storage

GOOD_KEYS = [
    "users.parquet",
    "snapshots/north/u-20261207T101500Z-a1b2c3/users.parquet",
    "uploads/north/roster 2026.zip",  # spaces are fine: a key is not a shell word
    ".hidden/x",  # a leading dot is fine, just not '.' or '..' alone
    "a..b/c..",  # dots inside a segment are not '..'
]

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "a/../../b",
    "a/..",
    "..",
    ".",
    "./a",
    "a/./b",
    "a\\b",
    "..\\windows",
    "a\0b",
    "a//b",
    "a/",
    "/",
    ".partial-0123/x",  # the local storage's half-written files
    "a/.partial-x",
]


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_good_keys_pass_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused_by_name(key: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_key(key)
    assert repr(key) in str(refused.value)


@pytest.mark.parametrize("prefix", ["", "snapshots/", "snapshots/north", "snapshots/no"])
def test_prefixes_may_end_anywhere_in_a_key(prefix: str) -> None:
    assert check_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "/snapshots", "../", "a//", "a/../"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        check_prefix(prefix)


def test_times_are_shown_in_utc_with_milliseconds() -> None:
    moment = datetime(2026, 12, 7, 17, 45, 30, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert utc_text(moment) == "2026-12-07T16:45:30.123Z"


def test_a_missing_object_is_a_key_error_that_names_the_key() -> None:
    missing = ObjectMissing("uploads/north/x.zip")
    assert isinstance(missing, KeyError)
    assert missing.key == "uploads/north/x.zip"
    assert str(missing) == "no object 'uploads/north/x.zip'"


def test_both_implementations_are_object_storages(tmp_path) -> None:
    assert isinstance(LocalStorage(tmp_path), ObjectStorage)
    s3 = S3Storage("bucket", "", "us-east-1", "http://127.0.0.1:9", "key", "secret")
    assert isinstance(s3, ObjectStorage)
    s3.close()
