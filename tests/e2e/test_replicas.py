"""Two replicas sharing PostgreSQL and a real S3-compatible bucket (SeaweedFS), each in its own state directory,
reached by the real OpenSSH client: what one takes, the other shows and builds on.

A district uploads its roster through replica alpha and reads the receipt through replica beta. It then sends
a delta through beta, which processes it against the snapshot alpha made, read in place from the bucket
(beta's disk never gets a copy of it): the
receipt, read back through alpha, counts the changes the delta makes. The district's api target serves the same
roster through either replica's OneRoster API after each upload, whichever replica published it. An upload
that is held is approved with
`rosterd approve` on beta's config, and alpha serves the receipt that says so. The bucket holds each upload's bytes
and each snapshot whole, its snapshot.json written last."""

from __future__ import annotations

import csv
import dataclasses
import io
import secrets
import subprocess
import zipfile
from pathlib import Path

import boto3

from daemon.generator.generate import DistrictSpec, generate, write_zip
from tests.objects.seaweed import Seaweed
from tests.postgres import Database

from .conftest import ROSTERD, SAMPLES, RunningDaemon, Tenant, cluster_config, copy_sample
from .test_api_daemon import API_TARGET, Api, api_client, published


def bucket_keys(seaweed: Seaweed, prefix: str) -> set[str]:
    client = boto3.client("s3", endpoint_url=seaweed.endpoint, aws_access_key_id=seaweed.access_key_id,
                          aws_secret_access_key=seaweed.secret, region_name="us-east-1")  # fmt: skip
    found: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=seaweed.bucket, Prefix=f"{prefix}/"):
        found |= {item["Key"][len(prefix) + 1 :] for item in page.get("Contents", [])}
    return found


def put(daemon: RunningDaemon, sample: str, name: str) -> None:
    copy_sample(sample, daemon.client_dir / name)
    got = daemon.sftp_batch("north", [f"put {name} inbox/{name}"])
    assert got.returncode == 0, got.stdout + got.stderr


def sample_users(sample: str) -> dict[str, str]:
    """sourcedId -> status of a sample's users.csv, read straight from the zip."""
    with zipfile.ZipFile(SAMPLES / sample) as package:
        rows = csv.DictReader(io.TextIOWrapper(package.open("users.csv"), encoding="utf-8-sig"))
        return {row["sourcedId"]: row["status"] or "active" for row in rows}


def test_what_one_replica_takes_the_other_shows_and_builds_on(
    postgres_database: Database, seaweed: Seaweed, rosterd, tenants: dict[str, Tenant], tmp_path: Path
) -> None:
    prefix = f"cluster-{secrets.token_hex(4)}"
    config = cluster_config(postgres_database, seaweed, tmp_path, prefix)
    north = dataclasses.replace(tenants["north"], extra=API_TARGET)
    alpha = rosterd(north, extra_config=config + "[api]\nport = 0\n")
    beta = rosterd(north, extra_config=config + "[api]\nport = 0\n")
    assert alpha.state != beta.state

    put(alpha, "valid-1.1-bulk.zip", "day1.zip")
    first = alpha.wait_for_receipt("north", "day1.zip")
    assert first["state"] == "accepted"
    assert beta.wait_for_receipt("north", "day1.zip") == first  # read through the other replica
    published(alpha, first["upload_id"])
    apis = [Api(daemon, *api_client(alpha, "north", "vendor")) for daemon in (alpha, beta)]  # one client for both
    day1 = {sourced_id: "active" for sourced_id in sample_users("valid-1.1-bulk.zip")}
    assert [api.users() for api in apis] == [day1, day1]

    put(beta, "valid-1.1-delta.zip", "day2.zip")
    second = beta.wait_for_receipt("north", "day2.zip")
    assert second["state"] == "accepted", second
    assert second["changes"]["against_upload_id"] == first["upload_id"]  # diffed against alpha's snapshot
    assert alpha.wait_for_receipt("north", "day2.zip") == second
    assert beta.events("upload.accepted", upload_id=second["upload_id"])  # beta did the work, on alpha's base
    assert not alpha.events("upload.accepted", upload_id=second["upload_id"])
    assert not (beta.state / "snapshots" / "north" / first["upload_id"]).exists()  # read in place, not copied
    published(beta, second["upload_id"])
    day2 = {**day1, **sample_users("valid-1.1-delta.zip")}  # a delta's tobedeleted rows are served as such
    assert [api.users() for api in apis] == [day2, day2]

    # a roster with none of the district's users deletes them all: held ([holds] users_deleted_share, 10%); an
    # operator approves it on beta's machine, and the receipt that says so is what alpha serves
    write_zip(generate(DistrictSpec(schools=1, students_per_school=5, teachers_per_school=1)),
              alpha.client_dir / "day3.zip", "1.1")  # fmt: skip
    assert alpha.sftp_batch("north", ["put day3.zip inbox/day3.zip"]).returncode == 0
    held = alpha.wait_for_receipt("north", "day3.zip")
    assert held["state"] == "held", held
    approved = subprocess.run([str(ROSTERD), "approve", held["upload_id"], "--config", str(beta.config)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    assert alpha.wait_for_receipt("north", receipt=f"day3.zip.{held['upload_id']}.json")["state"] == "accepted"

    keys = bucket_keys(seaweed, prefix)
    for receipt in (first, second):
        snapshot = f"snapshots/north/{receipt['upload_id']}/"
        assert f"{snapshot}snapshot.json" in keys and f"{snapshot}users.parquet" in keys
        assert f"tenants/north/results/day1.zip.{first['upload_id']}.json" in keys
