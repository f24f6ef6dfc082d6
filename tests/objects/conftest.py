"""Every contract test runs on both storages: the state directory's folder and a real S3 server (SeaweedFS,
started once per pytest-xdist worker by seaweed.py, and only when a test asks for S3)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.objects import LocalStorage, ObjectStorage
from daemon.objects.s3 import S3Storage
from tests.objects.seaweed import Seaweed, server_for

_FOLDER = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Launch SeaweedFS as soon as the tests are known, if any will want it, and run this folder's local tests
    before its S3 ones: the server boots (some 3 s) while they run instead of holding up the first S3 test."""
    here = [index for index, item in enumerate(items) if item.path.is_relative_to(_FOLDER)]
    for index, item in zip(here, sorted((items[index] for index in here), key=_wants_s3), strict=True):
        items[index] = item
    if not config.option.collectonly and any(_wants_s3(items[index]) for index in here):
        server_for(config).launch()


def _wants_s3(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    wanted = "seaweed" in getattr(item, "fixturenames", ())
    return wanted or (callspec is not None and callspec.params.get("storage") == "s3")


def s3_storage(seaweed: Seaweed, prefix: str | None = None, secret: str | None = None) -> S3Storage:
    """A storage in the shared bucket, under a prefix of its own unless told one (tests never see each
    other's objects)."""
    return S3Storage(
        seaweed.bucket, f"t-{secrets.token_hex(6)}" if prefix is None else prefix, "us-east-1", seaweed.endpoint,
        seaweed.access_key_id, seaweed.secret if secret is None else secret,
    )


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStorage]:
    if request.param == "local":
        opened: ObjectStorage = LocalStorage(tmp_path / "objects")
    else:
        opened = s3_storage(request.getfixturevalue("seaweed"))
    yield opened
    opened.close()


@pytest.fixture
def s3(seaweed: Seaweed) -> Iterator[S3Storage]:
    opened = s3_storage(seaweed)
    yield opened
    opened.close()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalStorage]:
    opened = LocalStorage(tmp_path / "objects")
    yield opened
    opened.close()
