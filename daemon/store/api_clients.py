"""The OneRoster API's tables: api_clients (the vendors' client ids, each bound to one tenant's api target, with
an argon2 hash of its secret) and api_tokens (the access tokens handed out, kept only as their sha256).

Neither table holds a secret or a token in clear: daemon/targets/api/auth.py hashes both before they reach
here. A token is good while it has not expired and its client is not revoked; the lookup joins the client's
`revoked_at`, so revoking a client ends all its tokens in the same commit. Expired tokens are deleted whenever
a new one is recorded. Functions take the caller's connection and time (see daemon/store/uploads.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from daemon.store.sql import Db, Row

API_CLIENTS = """
CREATE TABLE IF NOT EXISTS api_clients (  -- who may pull a tenant's api target: `rosterd api-client add`
    client_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    target TEXT NOT NULL,
    secret_hash TEXT NOT NULL,  -- argon2id of the secret; the secret itself is shown once and never kept
    created_at TEXT NOT NULL,
    revoked_at TEXT,  -- NULL: in use; set: its tokens stop working at once
    last_used_at TEXT  -- the last token issued to it, or request made with one (NULL: never)
);
CREATE INDEX IF NOT EXISTS api_clients_by_target ON api_clients (tenant, target);
"""
API_TOKENS = """
CREATE TABLE IF NOT EXISTS api_tokens (  -- bearer tokens handed out by the token endpoint
    token_sha256 TEXT PRIMARY KEY,  -- hex sha256 of the token: a stolen database gives no usable token
    client_id TEXT NOT NULL REFERENCES api_clients (client_id),
    scopes TEXT NOT NULL,  -- JSON list of the granted scope URIs
    expires_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_tokens_by_expiry ON api_tokens (expires_at);
"""


@dataclass(frozen=True, slots=True)
class ApiClient:
    """An API client as listings show it: never its secret or the secret's hash."""

    client_id: str
    tenant: str
    target: str
    created_at: str
    revoked_at: str | None = None
    last_used_at: str | None = None


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """A client with the hash its secret is checked against (for the token endpoint only)."""

    client: ApiClient
    secret_hash: str


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a good bearer token stands for: whose it is, which roster it may read, and until when."""

    client_id: str
    tenant: str
    target: str
    scopes: tuple[str, ...]
    expires_at: str


def insert(db: Db, client_id: str, tenant: str, target: str, secret_hash: str, at: str) -> None:
    db.execute("INSERT INTO api_clients (client_id, tenant, target, secret_hash, created_at) VALUES (?, ?, ?, ?, ?)",
               (client_id, tenant, target, secret_hash, at))  # fmt: skip


def get(db: Db, client_id: str) -> ApiClient | None:
    row = db.execute("SELECT * FROM api_clients WHERE client_id = ?", (client_id,)).fetchone()
    return None if row is None else as_client(row)


def credentials(db: Db, client_id: str) -> ApiCredentials | None:
    row = db.execute("SELECT * FROM api_clients WHERE client_id = ?", (client_id,)).fetchone()
    return None if row is None else ApiCredentials(as_client(row), row["secret_hash"])


def revoke(db: Db, client_id: str, at: str) -> None:
    db.execute("UPDATE api_clients SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL", (at, client_id))


def listed(db: Db, tenant: str | None) -> list[ApiClient]:
    """Clients oldest first, of one tenant or all."""
    rows = db.execute("SELECT * FROM api_clients WHERE ? IS NULL OR tenant = ? ORDER BY tenant, target, rowid",
                      (tenant, tenant)).fetchall()  # fmt: skip
    return [as_client(r) for r in rows]


def touch(db: Db, client_id: str, at: str, unless_since: str) -> None:
    """Record a use at `at`, unless one was recorded at `unless_since` or later (a write per request would
    cost a disk flush each)."""
    db.execute("UPDATE api_clients SET last_used_at = ? WHERE client_id = ? AND (last_used_at IS NULL OR "
               "last_used_at < ?)", (at, client_id, unless_since))  # fmt: skip


def record_token(db: Db, token_sha256: str, client_id: str, scopes: list[str], expires_at: str,
                 at: str) -> None:  # fmt: skip
    db.execute("DELETE FROM api_tokens WHERE expires_at <= ?", (at,))
    db.execute("INSERT INTO api_tokens (token_sha256, client_id, scopes, expires_at) VALUES (?, ?, ?, ?)",
               (token_sha256, client_id, json.dumps(list(scopes)), expires_at))  # fmt: skip


def token(db: Db, token_sha256: str, at: str) -> TokenGrant | None:
    """The grant of a token that is still good at `at`: not expired, of a client not revoked."""
    row = db.execute(
        "SELECT t.client_id, c.tenant, c.target, t.scopes, t.expires_at FROM api_tokens t JOIN api_clients c ON "
        "c.client_id = t.client_id WHERE t.token_sha256 = ? AND t.expires_at > ? AND c.revoked_at IS NULL",
        (token_sha256, at),
    ).fetchone()  # fmt: skip
    if row is None:
        return None
    return TokenGrant(row["client_id"], row["tenant"], row["target"], tuple(json.loads(row["scopes"])),
                      row["expires_at"])  # fmt: skip


def as_client(row: Row) -> ApiClient:
    return ApiClient(row["client_id"], row["tenant"], row["target"], row["created_at"], row["revoked_at"],
                     row["last_used_at"])  # fmt: skip
