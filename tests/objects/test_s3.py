"""What only the S3 storage has to get right: paging, its prefix, and keeping the secret access key to itself.
These run against the real SeaweedFS of seaweed.py."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import pytest

from daemon.objects import ObjectMissing, StorageError
from daemon.objects.s3 import S3Storage
from tests.objects.conftest import s3_storage
from tests.objects.seaweed import Seaweed, seed

WRONG_SECRET = "wr0ng-s3cret-that-must-not-show"


def test_listing_and_deleting_page_past_a_thousand_keys(s3: S3Storage, seaweed: Seaweed) -> None:
    keys = [f"many/{n:04d}" for n in range(1100)]
    seed(seaweed, [s3.prefix + key for key in keys], b".")  # what the contract tests' puts write, made cheaply

    raw = s3._client.list_objects_v2(Bucket=seaweed.bucket, Prefix=s3.prefix)
    assert (raw["KeyCount"], raw["IsTruncated"]) == (1000, True)  # one page does not hold them all

    listed = s3.list("many/")
    assert [info.key for info in listed] == keys  # zero-padded, so the order written is the order of keys
    assert {info.size for info in listed} == {1}
    assert s3.delete_prefix("many/") == 1100  # DeleteObjects takes 1000 at a time: two requests
    assert s3.list() == []


@pytest.mark.parametrize("given", ["deploy-a", "/deploy-a/", "deploy-a/"])
def test_the_prefix_is_added_to_keys_and_taken_off_listed_ones(seaweed: Seaweed, given: str) -> None:
    storage = s3_storage(seaweed, prefix=f"{given}")
    other = s3_storage(seaweed)
    try:
        storage.delete_prefix("")
        storage.put_bytes("uploads/north/x.zip", b"zip")
        raw = storage._client.list_objects_v2(Bucket=seaweed.bucket, Prefix="deploy-a/")
        assert [item["Key"] for item in raw["Contents"]] == ["deploy-a/uploads/north/x.zip"]
        assert [info.key for info in storage.list()] == ["uploads/north/x.zip"]
        assert storage.polars_source("uploads/north/x.zip")[0] == "s3://rosterd-tests/deploy-a/uploads/north/x.zip"
        assert other.list() == []  # another prefix sees none of it
        with pytest.raises(ObjectMissing):
            other.get_bytes("uploads/north/x.zip")
    finally:
        storage.delete_prefix("")
        storage.close()
        other.close()


def test_a_wrong_secret_is_a_clear_error_without_the_secret(seaweed: Seaweed, tmp_path: Path) -> None:
    storage = s3_storage(seaweed, secret=WRONG_SECRET)
    local = tmp_path / "upload.zip"
    local.write_bytes(b"PK")
    try:
        for call in (
            lambda: storage.put_bytes("a", b"x"),
            lambda: storage.put_file("a", local),  # boto3's transfer manager raises errors of its own
            lambda: storage.download("a", tmp_path / "copy.zip"),
            lambda: storage.get_bytes("a"),
            lambda: storage.info("a"),  # a refusal, not "no such object"
            lambda: storage.list(),
        ):
            with pytest.raises(StorageError) as failed:
                call()
            message = str(failed.value)
            assert "SignatureDoesNotMatch" in message or "403" in message or "AccessDenied" in message, message
            assert "check the access key id, the secret access key" in message
            assert seaweed.bucket in message
            shown = "".join(traceback.format_exception(failed.value))  # the chained boto3 error too
            assert WRONG_SECRET not in shown
            assert seaweed.secret not in shown
    finally:
        storage.close()


def test_an_unknown_access_key_is_a_clear_error(seaweed: Seaweed) -> None:
    storage = S3Storage(seaweed.bucket, "x", "us-east-1", seaweed.endpoint, "NOSUCHKEY", WRONG_SECRET)
    try:
        with pytest.raises(StorageError, match="InvalidAccessKeyId|AccessDenied|403") as failed:
            storage.put_bytes("a", b"x")
        assert WRONG_SECRET not in "".join(traceback.format_exception(failed.value))
    finally:
        storage.close()


def test_the_secret_is_not_in_repr_or_logs(seaweed: Seaweed, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):  # botocore's debug logging shows requests, headers and signing
        storage = s3_storage(seaweed)
        wrong = s3_storage(seaweed, secret=WRONG_SECRET)
        storage.put_bytes("a", b"x")
        storage.get_range("a", 0, 1)
        with pytest.raises(StorageError):
            wrong.get_bytes("a")
        storage.close()
        wrong.close()
    assert caplog.records  # botocore did log
    assert seaweed.secret not in caplog.text
    assert WRONG_SECRET not in caplog.text
    for shown in (repr(storage), str(storage), repr(wrong)):
        assert seaweed.secret not in shown and WRONG_SECRET not in shown
    assert repr(wrong) == (
        f"S3Storage(bucket='rosterd-tests', prefix={wrong.prefix!r}, region='us-east-1', "
        f"endpoint='{seaweed.endpoint}', access_key_id='{seaweed.access_key_id}')"
    )


def test_polars_is_told_the_endpoint_and_path_style(seaweed: Seaweed) -> None:
    storage = s3_storage(seaweed, prefix="p")
    try:
        source, options = storage.polars_source("snapshots/users.parquet")
    finally:
        storage.close()
    assert source == "s3://rosterd-tests/p/snapshots/users.parquet"
    assert options == {
        "aws_endpoint_url": seaweed.endpoint,
        "aws_region": "us-east-1",
        "aws_access_key_id": seaweed.access_key_id,
        "aws_secret_access_key": seaweed.secret,
        "aws_allow_http": "true",
        "aws_virtual_hosted_style_request": "false",
    }


def test_aws_itself_gets_virtual_hosted_names_over_https() -> None:
    storage = S3Storage("rosterd", "", "eu-central-1", None, "AKIAEXAMPLE", "s3cr3t")
    try:
        _, options = storage.polars_source("k")
    finally:
        storage.close()
    assert options == {
        "aws_region": "eu-central-1",
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": "s3cr3t",
        "aws_virtual_hosted_style_request": "true",
    }


def test_a_server_that_does_not_answer_is_a_storage_error() -> None:
    storage = S3Storage("rosterd", "", "us-east-1", "http://127.0.0.1:9", "AKIAEXAMPLE", "s3cr3t-value")
    try:
        with pytest.raises(StorageError, match=r"s3 GetObject of 'k' in bucket 'rosterd' .*Could not connect"):
            storage.get_bytes("k")  # port 9 (discard) is closed on loopback: refused at once, retried, given up
    finally:
        storage.close()
