"""open_storage: the settings' fields in, the right storage out."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.objects import LocalStorage, open_storage
from daemon.objects.s3 import S3Storage


def test_local_keeps_objects_in_the_state_directory(tmp_path: Path) -> None:
    storage = open_storage("local", tmp_path)
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "objects").resolve()
    assert (tmp_path / "objects").is_dir()


def test_s3_takes_the_bucket_settings(tmp_path: Path) -> None:
    storage = open_storage(
        "s3", tmp_path, bucket="rosterd", prefix="/district-a/", region="eu-west-1",
        endpoint="https://s3.example.org", access_key_id="AKIAEXAMPLE", secret="s3cr3t-value",
    )  # fmt: skip
    try:
        assert isinstance(storage, S3Storage)
        assert (storage.bucket, storage.prefix, storage.region) == ("rosterd", "district-a/", "eu-west-1")
        assert storage.polars_source("snapshots/x.parquet")[0] == "s3://rosterd/district-a/snapshots/x.parquet"
        assert not (tmp_path / "objects").exists()  # nothing local for a bucket
    finally:
        storage.close()


@pytest.mark.parametrize("missing", ["bucket", "access_key_id", "secret"])
def test_s3_without_its_credentials_is_refused(tmp_path: Path, missing: str) -> None:
    fields = {"bucket": "rosterd", "access_key_id": "AKIAEXAMPLE", "secret": "s3cr3t-value"}
    fields[missing] = None
    with pytest.raises(ValueError, match="needs a bucket, an access key id and a secret"):
        open_storage("s3", tmp_path, **fields)


def test_an_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'gcs'"):
        open_storage("gcs", tmp_path)
