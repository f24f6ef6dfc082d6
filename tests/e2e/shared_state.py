"""What a test reads back from the state that replicas share, the PostgreSQL database and the S3 bucket, to
check a run from the outside: the rows and objects themselves, never a daemon's answer about them."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import psycopg

from daemon.objects.mirror import Mirror
from daemon.objects.s3 import S3Storage
from daemon.snapshots import storage
from tests.objects.seaweed import Seaweed
from tests.postgres import Database


def query(database: Database, sql: str, *args: object) -> list[tuple]:
    with psycopg.connect(database.url, password=database.password) as db:
        return db.execute(sql, args).fetchall()


def open_bucket(seaweed: Seaweed, prefix: str) -> S3Storage:
    return S3Storage(seaweed.bucket, prefix, "us-east-1", seaweed.endpoint, seaweed.access_key_id, seaweed.secret)


def receipts(bucket: S3Storage, tenant: str) -> dict[str, dict]:
    """The tenant's receipts in the bucket, by key (results/latest.json left out: it repeats one of them)."""
    keys = [info.key for info in bucket.list(f"tenants/{tenant}/results/")
            if info.key.endswith(".json") and not info.key.endswith("/latest.json")]  # fmt: skip
    return {key: json.loads(bucket.get_bytes(key)) for key in keys}


def check_one_final_receipt_each(bucket: S3Storage, tenant: str, uploads: list[tuple[str, str, str]]) -> None:
    """Each (name, upload_id, state) has exactly one receipt in the bucket, which says that state; no other."""
    found = receipts(bucket, tenant)
    for name, upload_id, state in uploads:
        own = [key for key in found if key.endswith(f"/{name}.{upload_id}.json")]
        assert len(own) == 1, (tenant, name, upload_id, sorted(found))
        assert found[own[0]]["state"] == state, (tenant, name, found[own[0]])
    assert len(found) == len(uploads), (tenant, sorted(found))


def fetch_snapshot(bucket: S3Storage, folder: Path, tenant: str, upload_id: str) -> Path:
    """A snapshot copied whole from the bucket into `folder` (snapshots/TENANT/UPLOAD below it)."""
    fetched = Mirror(bucket, folder).fetch_folder(folder / "snapshots" / tenant / upload_id, storage.META_FILE)
    assert fetched is not None, f"no whole snapshot {tenant}/{upload_id} in the bucket"
    return fetched


def check_snapshots_whole(database: Database, bucket: S3Storage) -> None:
    """Every snapshot the catalogue keeps is whole in the bucket: snapshot.json, and each entity's rows as
    catalogued."""
    for tenant, upload_id, rows, pruned in query(database, "SELECT tenant, upload_id, rows, pruned_at FROM "
                                                           "snapshots"):  # fmt: skip
        if pruned is not None:
            continue
        base = f"snapshots/{tenant}/{upload_id}/"
        assert bucket.info(base + storage.META_FILE) is not None, base
        for entity, count in json.loads(rows).items():
            source, options = bucket.polars_source(f"{base}{entity}.parquet")
            height = pl.scan_parquet(source, storage_options=options, glob=False).select(pl.len()).collect().item()
            assert height == count, (base, entity)
