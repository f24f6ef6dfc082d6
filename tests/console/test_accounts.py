"""The admin console's login check: the password against its argon2id hash, a disabled account refused, an
unknown name refused after the same work, and TOTP codes (computed here with pyotp, RFC 6238) good for the
current and the previous 30 s step only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from argon2 import PasswordHasher

from daemon.console import accounts
from daemon.console.accounts import check_login, new_totp_secret, provisioning_uri
from daemon.passwords import hash_secret as hash_password
from daemon.store import Store

NOW = datetime(2026, 12, 7, 12, 0, 15, tzinfo=UTC)  # 15 s into a 30 s step
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "rosterd.db")
    opened.add_admin_user("ana", "admin", None, hash_password("correct horse"))
    opened.add_admin_user("tom", "viewer", None, hash_password("battery staple"), SECRET)
    opened.add_admin_user("d.north", "district", "north", hash_password("north pw"))
    yield opened
    opened.close()


def code(at: datetime) -> str:
    return pyotp.TOTP(SECRET).at(at)


def test_the_right_password_logs_in_and_a_district_account_carries_its_tenant(store: Store) -> None:
    assert check_login(store, "ana", "correct horse", None, NOW).role == "admin"
    north = check_login(store, "d.north", "north pw", None, NOW)
    assert (north.role, north.tenant) == ("district", "north")


def test_a_wrong_password_an_unknown_name_and_a_disabled_account_fail(store: Store) -> None:
    assert check_login(store, "ana", "correct horse ", None, NOW) is None
    assert check_login(store, "ana", "", None, NOW) is None
    assert check_login(store, "bob", "correct horse", None, NOW) is None
    store.disable_admin_user("ana")
    assert check_login(store, "ana", "correct horse", None, NOW) is None


def test_an_unknown_name_is_checked_against_a_decoy_hash(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str | None] = []
    real = accounts.verify
    monkeypatch.setattr(accounts, "verify", lambda h, p: checked.append(h) or real(h, p))
    assert check_login(store, "bob", "x", None, NOW) is None
    assert checked == [None]  # daemon.passwords.verify checks None against its decoy hash


def test_totp_takes_the_current_and_previous_step_only(store: Store) -> None:
    assert check_login(store, "tom", "battery staple", code(NOW), NOW) is not None
    assert check_login(store, "tom", "battery staple", code(NOW - timedelta(seconds=30)), NOW) is not None
    assert check_login(store, "tom", "battery staple", code(NOW - timedelta(seconds=60)), NOW) is None
    assert check_login(store, "tom", "battery staple", code(NOW + timedelta(seconds=30)), NOW) is None
    assert check_login(store, "tom", "battery staple", None, NOW) is None
    assert check_login(store, "tom", "battery staple", "", NOW) is None
    assert check_login(store, "tom", "wrong", code(NOW), NOW) is None


def test_a_known_rfc_6238_code_is_accepted(tmp_path: Path) -> None:
    # RFC 6238 appendix B, SHA-1: secret "12345678901234567890" (base32 below), T = 59 s -> 94287082 (8 digits);
    # the 6-digit code is its last six digits, 287082.
    store = Store(tmp_path / "rosterd.db")
    store.add_admin_user("ana", "admin", None, hash_password("pw"), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ")
    at = datetime.fromtimestamp(59, UTC)
    assert check_login(store, "ana", "pw", "287082", at) is not None
    assert check_login(store, "ana", "pw", "287083", at) is None
    store.close()


def test_hashes_are_argon2id_and_secrets_fresh_base32() -> None:
    hashed = hash_password("pw")
    assert hashed.startswith("$argon2id$") and PasswordHasher().verify(hashed, "pw")
    first, second = new_totp_secret(), new_totp_secret()
    assert first != second and len(first) == 32 and set(first) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def test_the_provisioning_uri_names_rosterd_and_the_account() -> None:
    uri = urlsplit(provisioning_uri("ana", SECRET))
    assert (uri.scheme, uri.netloc, uri.path) == ("otpauth", "totp", "/rosterd:ana")
    assert parse_qs(uri.query) == {"secret": [SECRET], "issuer": ["rosterd"]}
