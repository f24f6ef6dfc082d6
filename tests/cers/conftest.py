"""Fixtures for the CERS target's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .moto_cognito import MotoCognito, cognito_pool, moto_server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server for the session; each test's pool is its own (see `cognito`)."""
    with moto_server() as endpoint_url:
        yield endpoint_url


@pytest.fixture
def cognito(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoCognito]:
    """A fresh Cognito pool, app client and user on moto (see moto_cognito.py); the secret is in a file (mode 600)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with cognito_pool(moto_endpoint, tmp_path / "cognito") as pool:
        yield pool
