"""API clients and their tokens in the store: made, listed, revoked; a token is good until its expiry and only
while its client is not revoked. Times are passed in (the caller's clock), so nothing sleeps."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from daemon.store import ApiClient, Refused, StoreInterface, TokenGrant

SCOPE = "https://purl.imsglobal.org/spec/or/v1p2/scope/roster-core.readonly"
T0, BEFORE_EXPIRY, AT_EXPIRY = "2026-12-01T10:00:00.000Z", "2026-12-01T10:59:59.999Z", "2026-12-01T11:00:00.000Z"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def test_a_client_is_listed_without_its_hash_and_per_tenant(store: StoreInterface) -> None:
    made = store.add_api_client("id-1", "north", "mathco", "$argon2id$fake")
    store.add_api_client("id-2", "south", "readco", "$argon2id$other")
    assert (made.client_id, made.tenant, made.target, made.revoked_at, made.last_used_at) == \
        ("id-1", "north", "mathco", None, None)  # fmt: skip
    assert made.created_at.endswith("Z")
    assert store.api_clients("north") == [made]
    assert {c.client_id for c in store.api_clients()} == {"id-1", "id-2"}
    assert not hasattr(made, "secret_hash")
    assert store.api_credentials("id-1").secret_hash == "$argon2id$fake"
    assert store.api_credentials("nobody") is None


def test_a_client_id_is_made_once(store: StoreInterface) -> None:
    store.add_api_client("id-1", "north", "mathco", "h")
    with pytest.raises(Refused, match="exists already"):
        store.add_api_client("id-1", "north", "mathco", "h2")


def test_a_token_is_good_until_it_expires(store: StoreInterface) -> None:
    store.add_api_client("id-1", "north", "mathco", "h")
    store.record_token(digest("tok"), "id-1", [SCOPE], AT_EXPIRY, T0)
    assert store.token_lookup(digest("tok"), BEFORE_EXPIRY) == TokenGrant("id-1", "north", "mathco", (SCOPE,),
                                                                          AT_EXPIRY)  # fmt: skip
    assert store.token_lookup(digest("tok"), AT_EXPIRY) is None
    assert store.token_lookup(digest("other"), T0) is None
    assert store.api_clients()[0].last_used_at == T0  # a token issued is a use


def test_revoking_ends_every_token_of_the_client_at_once_and_only_its_own(store: StoreInterface) -> None:
    store.add_api_client("id-1", "north", "mathco", "h")
    store.add_api_client("id-2", "north", "mathco", "h")
    for token, client in (("a", "id-1"), ("b", "id-1"), ("c", "id-2")):
        store.record_token(digest(token), client, [SCOPE], AT_EXPIRY, T0)
    revoked = store.revoke_api_client("id-1")
    assert revoked.revoked_at is not None and revoked.client_id == "id-1"
    assert store.token_lookup(digest("a"), T0) is None and store.token_lookup(digest("b"), T0) is None
    assert store.token_lookup(digest("c"), T0) is not None
    with pytest.raises(Refused, match="revoked already"):
        store.revoke_api_client("id-1")
    with pytest.raises(Refused, match="no api client"):
        store.revoke_api_client("nobody")
    assert [c.revoked_at is not None for c in store.api_clients("north")] == [True, False]


def test_expired_tokens_are_deleted_when_a_new_one_is_recorded(tmp_path: Path) -> None:
    from daemon.store import Store

    store = Store(tmp_path / "rosterd.db")
    store.add_api_client("id-1", "north", "mathco", "h")
    store.record_token(digest("old"), "id-1", [SCOPE], BEFORE_EXPIRY, T0)
    store.record_token(digest("new"), "id-1", [SCOPE], "2026-12-01T12:00:00.000Z", AT_EXPIRY)
    store.close()
    with sqlite3.connect(tmp_path / "rosterd.db") as db:
        kept = [row[0] for row in db.execute("SELECT token_sha256 FROM api_tokens")]
    assert kept == [digest("new")]  # and never a token in clear


def test_last_use_is_written_at_most_once_per_interval(store: StoreInterface) -> None:
    store.add_api_client("id-1", "north", "mathco", "h")
    store.touch_last_used("id-1", "2026-12-01T10:00:00.000Z")
    store.touch_last_used("id-1", "2026-12-01T10:00:30.000Z", unless_since="2026-12-01T09:59:30.000Z")
    assert store.api_clients()[0].last_used_at == "2026-12-01T10:00:00.000Z"
    store.touch_last_used("id-1", "2026-12-01T10:01:01.000Z", unless_since="2026-12-01T10:00:01.000Z")
    assert store.api_clients()[0].last_used_at == "2026-12-01T10:01:01.000Z"


def test_the_listing_record_is_the_documented_one() -> None:
    assert list(ApiClient.__dataclass_fields__) == ["client_id", "tenant", "target", "created_at", "revoked_at",
                                                    "last_used_at"]  # fmt: skip
