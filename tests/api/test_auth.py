"""OAuth 2.0 client credentials for the OneRoster API (RFC 6749 sections 2.3, 4.4 and 5): credentials in HTTP
Basic or the form, the token endpoint's answers and errors, scopes, and bearer tokens that end with their
expiry or their client's revocation. The clock is passed in; nothing sleeps."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.passwords import hash_secret
from daemon.store import Store
from daemon.targets.api.auth import (
    AuthError,
    Credentials,
    TokenIssued,
    check_bearer,
    credentials_from,
    issue_token,
    token_request,
)
from daemon.targets.settings import ApiTarget

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
V12 = "https://purl.imsglobal.org/spec/or/v1p2/scope/"
V11 = "https://purl.imsglobal.org/spec/or/v1p1/scope/"
ALL_V12 = [V12 + "roster-core.readonly", V12 + "roster.readonly", V12 + "roster-demographics.readonly"]
BASIC = "Basic Y2xpZW50LTE6czNjcmV0"  # base64 of "client-1:s3cret"
GRANT = {"grant_type": "client_credentials"}
TARGETS = {("north", "mathco"): ApiTarget(type="api", name="mathco"),
           ("north", "old-only"): ApiTarget(type="api", name="old-only", versions=["1.1"], token_seconds=600)}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "rosterd.db")
    opened.add_api_client("client-1", "north", "mathco", hash_secret("s3cret"))
    yield opened
    opened.close()


def error(answer: object) -> tuple[str, int]:
    assert isinstance(answer, AuthError), answer
    return answer.error, answer.status


# -- credentials --------------------------------------------------------------------------------------------


def test_credentials_come_from_http_basic_or_the_form() -> None:
    assert credentials_from(BASIC, GRANT) == Credentials("client-1", "s3cret", basic=True)
    form = GRANT | {"client_id": "client-1", "client_secret": "s3cret"}
    assert credentials_from(None, form) == Credentials("client-1", "s3cret", basic=False)
    assert credentials_from("basic  Y2xpZW50LTE6czNjcmV0 ", GRANT) == Credentials("client-1", "s3cret", basic=True)


def test_basic_credentials_are_form_decoded_after_base64() -> None:
    assert credentials_from("Basic bXklM0FpZDpwJTJCdw==", {}) == Credentials("my:id", "p+w", basic=True)


def test_two_ways_at_once_or_none_or_a_broken_header_are_refused() -> None:
    both = credentials_from(BASIC, {"client_id": "client-1", "client_secret": "s3cret"})
    assert error(both) == ("invalid_request", 400)
    assert error(credentials_from(None, GRANT)) == ("invalid_client", 401)
    assert error(credentials_from(None, {"client_id": "client-1"})) == ("invalid_client", 401)
    for header in ("Basic not-base64!", "Basic bm9jb2xvbg==", "Bearer abc"):  # the second is "nocolon"
        refused = credentials_from(header, {})
        assert error(refused) == ("invalid_client", 401)
        assert refused.headers() == {"WWW-Authenticate": 'Basic realm="rosterd", charset="UTF-8"'}
    assert credentials_from(None, GRANT).headers() == {}  # no Basic tried: no challenge


# -- the token endpoint --------------------------------------------------------------------------------------


def test_a_good_request_gets_a_bearer_token_with_every_scope_of_its_version(store: Store) -> None:
    issued = token_request(store, BASIC, GRANT, "1.2", NOW, TARGETS)
    assert isinstance(issued, TokenIssued)
    body = issued.body()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    assert body["scope"].split(" ") == ALL_V12
    assert len(body["access_token"]) >= 43  # 32 random bytes, URL-safe base64
    form = GRANT | {"client_id": "client-1", "client_secret": "s3cret", "scope": V11 + "roster.readonly"}
    assert token_request(store, None, form, "1.1", NOW, TARGETS).scopes == (V11 + "roster.readonly",)


def test_the_grant_type_is_checked_first(store: Store) -> None:
    assert error(token_request(store, BASIC, {}, "1.2", NOW, TARGETS)) == ("invalid_request", 400)
    assert error(token_request(store, BASIC, {"grant_type": "password"}, "1.2", NOW, TARGETS)) == \
        ("unsupported_grant_type", 400)  # fmt: skip


def test_a_wrong_secret_or_an_unknown_client_is_invalid_client_and_says_no_more(store: Store) -> None:
    wrong = issue_token(store, "client-1", "guess", None, "1.2", NOW, TARGETS)
    unknown = issue_token(store, "nobody", "s3cret", None, "1.2", NOW, TARGETS)
    assert error(wrong) == error(unknown) == ("invalid_client", 401)
    assert wrong.body() == unknown.body() == {"error": "invalid_client",
                                              "error_description": "unknown client or wrong secret"}  # fmt: skip
    basic_wrong = token_request(store, "Basic Y2xpZW50LTE6Z3Vlc3M=", GRANT, "1.2", NOW, TARGETS)  # client-1:guess
    assert basic_wrong.headers()["WWW-Authenticate"].startswith("Basic")


def test_a_revoked_client_gets_no_token_and_its_tokens_stop_at_once(store: Store) -> None:
    issued = issue_token(store, "client-1", "s3cret", None, "1.2", NOW, TARGETS)
    assert check_bearer(store, f"Bearer {issued.access_token}", NOW) is not None
    store.revoke_api_client("client-1")
    assert check_bearer(store, f"Bearer {issued.access_token}", NOW) is None
    assert error(issue_token(store, "client-1", "s3cret", None, "1.2", NOW, TARGETS)) == ("invalid_client", 401)


def test_a_client_whose_target_left_the_config_gets_no_token(store: Store) -> None:
    assert error(issue_token(store, "client-1", "s3cret", None, "1.2", NOW, {})) == ("invalid_client", 401)


def test_a_token_ends_at_its_expiry_and_lasts_the_targets_token_seconds(store: Store) -> None:
    store.add_api_client("client-2", "north", "old-only", hash_secret("other"))
    issued = issue_token(store, "client-2", "other", None, "1.1", NOW, TARGETS)
    assert issued.expires_in == 600
    header = f"Bearer {issued.access_token}"
    grant = check_bearer(store, header, NOW + timedelta(seconds=599))
    assert (grant.client_id, grant.tenant, grant.target, grant.expires_at) == \
        ("client-2", "north", "old-only", "2026-12-01T10:10:00.000Z")  # fmt: skip
    assert check_bearer(store, header, NOW + timedelta(seconds=600)) is None
    assert check_bearer(store, None, NOW) is None and check_bearer(store, "Basic abc", NOW) is None
    assert check_bearer(store, "Bearer " + issued.access_token[:-1], NOW) is None


def test_tokens_and_secrets_are_kept_only_as_hashes(tmp_path: Path, store: Store) -> None:
    issued = issue_token(store, "client-1", "s3cret", None, "1.2", NOW, TARGETS)
    with sqlite3.connect(tmp_path / "rosterd.db") as db:
        dumped = "\n".join(db.iterdump())
        (kept,) = db.execute("SELECT token_sha256 FROM api_tokens").fetchone()
        (secret_hash,) = db.execute("SELECT secret_hash FROM api_clients").fetchone()
    assert issued.access_token not in dumped and "s3cret" not in dumped
    assert kept == hashlib.sha256(issued.access_token.encode()).hexdigest()
    assert secret_hash.startswith("$argon2id$")


# -- scopes -------------------------------------------------------------------------------------------------


def test_requested_scopes_are_granted_when_served_and_others_left_out(store: Store) -> None:
    asked = f"{V12}roster-demographics.readonly {V12}gradebook.readonly {V12}roster-core.readonly"
    issued = issue_token(store, "client-1", "s3cret", asked, "1.2", NOW, TARGETS)
    assert issued.body()["scope"] == f"{V12}roster-core.readonly {V12}roster-demographics.readonly"
    assert issue_token(store, "client-1", "s3cret", "  ", "1.2", NOW, TARGETS).scopes == tuple(ALL_V12)


def test_only_scopes_rosterd_does_not_serve_is_invalid_scope(store: Store) -> None:
    other_version = issue_token(store, "client-1", "s3cret", V11 + "roster.readonly", "1.2", NOW, TARGETS)
    assert error(other_version) == ("invalid_scope", 400)
    bare = issue_token(store, "client-1", "s3cret", "roster.readonly", "1.2", NOW, TARGETS)
    assert error(bare) == ("invalid_scope", 400)


def test_a_version_the_target_does_not_serve_is_invalid_scope(store: Store) -> None:
    store.add_api_client("client-2", "north", "old-only", hash_secret("other"))
    assert error(issue_token(store, "client-2", "other", None, "1.2", NOW, TARGETS)) == ("invalid_scope", 400)
