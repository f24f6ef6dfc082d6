"""Replicas serve an api target's publications from the shared storage (a real SeaweedFS bucket): the one
another replica made, from its moment on and not before, and never one the storage no longer holds.

Two state directories stand for two replicas. A publication here is a staged folder as publish_target leaves
it (published.json and a collection's file); which one a replica serves is what these tests look at."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.objects.mirror import Mirror
from daemon.objects.s3 import S3Storage
from daemon.targets.api.publish import META, VISIBLE, make_visible, visible_at
from daemon.targets.api.target import LOOK_SECONDS, Publications, _switch
from daemon.targets.views import staging, target_folder
from tests.objects.seaweed import Seaweed

LEAD = LOOK_SECONDS + 0.5  # shorter than a replica's default, still longer than a replica's look


@pytest.fixture
def bucket(seaweed: Seaweed, tmp_path: Path) -> Iterator[S3Storage]:
    opened = S3Storage(seaweed.bucket, f"publications-{secrets.token_hex(6)}", "us-east-1", seaweed.endpoint,
                       seaweed.access_key_id, seaweed.secret)  # fmt: skip
    yield opened
    opened.close()


def replica(tmp_path: Path, name: str, bucket: S3Storage) -> Publications:
    state = tmp_path / name
    return Publications(state, Mirror(bucket, state), lead=LEAD)


def stage(publications: Publications, upload_id: str, users: bytes) -> Path:
    folder = staging(target_folder(publications.state_dir, "north", "vendor"), upload_id)
    (folder / "1.2").mkdir(parents=True)
    (folder / "1.2" / "users.parquet").write_bytes(users)
    (folder / META).write_text(json.dumps({"upload_id": upload_id}))
    return folder


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def switch(publications: Publications, upload_id: str) -> datetime:
    moment = _switch(target_folder(publications.state_dir, "north", "vendor"), upload_id, publications)
    assert moment is not None
    return moment


def test_a_replica_serves_the_publication_another_made_whole_from_its_moment(tmp_path: Path, bucket) -> None:
    alpha, beta = replica(tmp_path, "alpha", bucket), replica(tmp_path, "beta", bucket)
    assert beta.current("north", "vendor") is None  # nothing published yet
    stage(alpha, "u-1", b"first roster")
    moment = switch(alpha, "u-1")  # returns once its moment has come

    served = beta.current("north", "vendor")
    mine = alpha.current("north", "vendor")
    assert served is not None and mine is not None and served.name == mine.name
    assert served.is_relative_to(beta.state_dir)  # beta's own copy
    assert files(served) == files(mine)
    assert files(served)["1.2/users.parquet"] == b"first roster"
    assert visible_at(served) == moment


def test_a_publication_is_not_served_before_its_moment_and_the_last_one_goes_once_replaced(
    tmp_path: Path, bucket
) -> None:
    alpha, beta = replica(tmp_path, "alpha", bucket), replica(tmp_path, "beta", bucket)
    stage(alpha, "u-1", b"first")
    switch(alpha, "u-1")
    first = beta.current("north", "vendor")
    assert first is not None

    # a publication whose moment is an hour away (put there as _switch does, visible.json last)
    later = stage(alpha, "u-2", b"second")
    make_visible(later, datetime.now(UTC) + timedelta(hours=1))
    folder = target_folder(alpha.state_dir, "north", "vendor")
    alpha.mirror.push_folder(later, VISIBLE, as_folder=folder / "u-2@later")
    beta.forget(target_folder(beta.state_dir, "north", "vendor"))
    assert beta.current("north", "vendor") == first  # known, not yet due

    stage(alpha, "u-3", b"third")
    switch(alpha, "u-3")  # due now: it replaces both, here and in the storage
    third = beta.current("north", "vendor")
    assert third is not None and third.name.startswith("u-3@") and files(third)["1.2/users.parquet"] == b"third"
    assert not first.exists()  # beta's copy of the one it no longer serves is gone
    kept = {info.key.split("/")[3] for info in bucket.list("targets/north/vendor/")}
    assert kept == {third.name}


def test_a_publication_not_whole_in_the_storage_is_never_served(tmp_path: Path, bucket) -> None:
    alpha, beta = replica(tmp_path, "alpha", bucket), replica(tmp_path, "beta", bucket)
    cut = stage(alpha, "u-1", b"cut short")
    folder = target_folder(alpha.state_dir, "north", "vendor")
    alpha.mirror.push_folder(cut, META, as_folder=folder / "u-1@cut")  # the writer died before visible.json
    assert beta.current("north", "vendor") is None
    assert alpha.current("north", "vendor") is None
