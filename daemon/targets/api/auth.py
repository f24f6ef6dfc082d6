"""OAuth 2.0 client credentials (RFC 6749 section 4.4) for the OneRoster API: client ids and secrets, the token
endpoint's work, and the check of a bearer token.

A client is made by `rosterd api-client add`: its id and secret are random, shown once, and only an argon2id
hash of the secret is stored. The token endpoint takes the id and secret in HTTP Basic (`client_secret_basic`,
as Microsoft SDS sends them) or in the form body (`client_secret_post`), never both; it hands out a random
bearer token that the store keeps only as its sha256. Errors are the RFC's (section 5.2): `invalid_request`,
`invalid_client`, `unsupported_grant_type`, `invalid_scope`, with a description that never repeats a secret.

Scopes are full URIs, per OneRoster version (`https://purl.imsglobal.org/spec/or/v1p2/scope/roster.readonly`;
1.1 has the same names under `v1p1`). A request that names no scope gets every scope of its version (RFC 6749
section 3.3 lets the server pick a default; SDS asks for none). Requested scopes rosterd does not serve
(gradebook, resources, the other version's) are left out of the grant, which the answer's `scope` lists; only
when nothing requested is served is the request refused with `invalid_scope`.

Every function here blocks (argon2 takes tens of milliseconds and much memory on purpose; the store commits):
the API server calls them in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import unquote_plus

from daemon.passwords import verify
from daemon.store import StoreInterface, TokenGrant, stamp
from daemon.targets.settings import ApiTarget

SCOPE_PREFIX = "https://purl.imsglobal.org/spec/or/{path}/scope/"
VERSION_PATHS = {"1.1": "v1p1", "1.2": "v1p2"}
SCOPE_NAMES = ("roster-core.readonly", "roster.readonly", "roster-demographics.readonly")
GRANT_TYPE = "client_credentials"
LAST_USED_EVERY_SECONDS = 60  # a client's last use is written at most this often by `check_bearer`


def scope_uri(version: str, name: str) -> str:
    """The full URI of a scope name in a OneRoster version ("1.1" or "1.2")."""
    return SCOPE_PREFIX.format(path=VERSION_PATHS[version]) + name


def version_scopes(version: str) -> list[str]:
    """Every scope the API serves in a version, in the order the spec lists them."""
    return [scope_uri(version, name) for name in SCOPE_NAMES]


@dataclass(frozen=True, slots=True)
class TokenIssued:
    """The token endpoint's answer (RFC 6749 section 5.1)."""

    access_token: str
    expires_in: int  # seconds
    scopes: tuple[str, ...]

    def body(self) -> dict:
        return {"access_token": self.access_token, "token_type": "bearer", "expires_in": self.expires_in,
                "scope": " ".join(self.scopes)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuthError:
    """A refused token request (RFC 6749 section 5.2): `error` is the RFC's name for it."""

    error: str
    description: str
    basic: bool = False  # the client tried HTTP Basic: a 401 then names the scheme (WWW-Authenticate)
    status: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", 401 if self.error == "invalid_client" else 400)

    def body(self) -> dict:
        return {"error": self.error, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        if self.status == 401 and self.basic:
            return {"WWW-Authenticate": 'Basic realm="rosterd", charset="UTF-8"'}
        return {}


@dataclass(frozen=True, slots=True)
class Credentials:
    client_id: str
    secret: str
    basic: bool  # given in HTTP Basic, not in the form


# -- clients ---------------------------------------------------------------------------------------------------


def new_client() -> tuple[str, str]:
    """A fresh (client id, secret): the id is 128 random bits in hex (so it never starts with '-', which a
    command line would take for an option), the secret 256 bits, URL-safe (so no ':' that HTTP Basic would
    split on, and nothing form encoding changes)."""
    return secrets.token_hex(16), secrets.token_urlsafe(32)


# -- the token endpoint ----------------------------------------------------------------------------------------


def credentials_from(authorization: str | None, form: Mapping[str, str]) -> Credentials | AuthError:
    """The client's id and secret, from the Authorization header (Basic) or the form's `client_id` and
    `client_secret`. Using both ways at once is refused, as RFC 6749 section 2.3 requires."""
    in_form = "client_id" in form or "client_secret" in form
    if authorization is not None and authorization.strip():
        scheme, _, encoded = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return AuthError("invalid_client", "client authentication is HTTP Basic or the form's client_id and "
                             "client_secret", basic=True)  # fmt: skip
        if in_form:
            return AuthError("invalid_request", "the client authenticated twice (HTTP Basic and the form): use one")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return AuthError("invalid_client", "the Basic credentials are not base64 of id:secret", basic=True)
        client_id, colon, secret = decoded.partition(":")
        if not colon or not client_id:
            return AuthError("invalid_client", "the Basic credentials are not base64 of id:secret", basic=True)
        # RFC 6749 section 2.3.1: both parts are form-encoded before Basic encoding
        return Credentials(unquote_plus(client_id), unquote_plus(secret), basic=True)
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    if not client_id or not secret:
        return AuthError("invalid_client", "no client credentials: send the client id and secret in HTTP Basic or "
                         "as client_id and client_secret in the form")  # fmt: skip
    return Credentials(client_id, secret, basic=False)


def token_request(
    store: StoreInterface,
    authorization: str | None,
    form: Mapping[str, str],
    version: str | None,
    now: datetime,
    targets: Mapping[tuple[str, str], ApiTarget],
) -> TokenIssued | AuthError:
    """The whole of a POST to the token endpoint of `version`: the grant type, the client's credentials, the
    requested scopes; `targets` are the configured api targets by (tenant, name)."""
    grant_type = form.get("grant_type")
    if not grant_type:
        return AuthError("invalid_request", "grant_type is missing (rosterd takes client_credentials)")
    if grant_type != GRANT_TYPE:
        return AuthError("unsupported_grant_type", "rosterd takes grant_type=client_credentials only")
    found = credentials_from(authorization, form)
    if isinstance(found, AuthError):
        return found
    answer = issue_token(store, found.client_id, found.secret, form.get("scope"), version, now, targets)
    if isinstance(answer, AuthError) and found.basic:
        return AuthError(answer.error, answer.description, basic=True)
    return answer


def issue_token(
    store: StoreInterface,
    client_id: str,
    secret: str,
    requested_scopes: str | None,
    version: str | None,
    now: datetime,
    targets: Mapping[tuple[str, str], ApiTarget],
) -> TokenIssued | AuthError:
    """A bearer token for a client whose secret matches, not revoked, whose api target is still configured and
    serves `version` (None: for every version the target serves); `requested_scopes` is the request's
    space-separated `scope` (None or blank: all of those versions' scopes). The token lasts the target's
    `token_seconds` from `now`."""
    found = store.api_credentials(client_id)
    if not verify(found.secret_hash if found else None, secret) or found is None:
        return AuthError("invalid_client", "unknown client or wrong secret")
    client = found.client
    target = targets.get((client.tenant, client.target))
    if client.revoked_at is not None or target is None:
        return AuthError("invalid_client", "this client is no longer allowed")  # revoked, or its target removed
    if version is not None and version not in target.versions:
        return AuthError("invalid_scope", f"this client's API serves OneRoster {' and '.join(target.versions)} "
                         f"only, not {version}")  # fmt: skip
    versions = list(target.versions) if version is None else [version]
    granted = [scope for v in versions for scope in grant_scopes(requested_scopes, v)]
    if not granted:
        return AuthError("invalid_scope", "none of the requested scopes is served; the scopes served are "
                         + " ".join(scope for v in versions for scope in version_scopes(v)))  # fmt: skip
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=target.token_seconds)
    store.record_token(token_digest(token), client.client_id, granted, stamp(expires), stamp(now))
    return TokenIssued(token, target.token_seconds, tuple(granted))


def grant_scopes(requested: str | None, version: str) -> list[str]:
    """The scopes granted for a request's `scope`: all of the version's when it names none, else those it names
    that the version serves (in the spec's order); empty when it names only others."""
    served = version_scopes(version)
    if requested is None or not requested.strip():
        return served
    asked = set(requested.split())
    return [scope for scope in served if scope in asked]


# -- bearer tokens ---------------------------------------------------------------------------------------------


def token_digest(token: str) -> str:
    """The hex sha256 the store keeps in place of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header (None: missing or another scheme)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def check_bearer(store: StoreInterface, authorization: str | None, now: datetime) -> TokenGrant | None:
    """What the request's bearer token grants at `now` (None: missing, unknown, expired, or of a revoked
    client); the client's last use is recorded at most once a minute."""
    token = bearer_token(authorization)
    if token is None:
        return None
    grant = store.token_lookup(token_digest(token), stamp(now))
    if grant is not None:
        store.touch_last_used(grant.client_id, stamp(now), stamp(now - timedelta(seconds=LAST_USED_EVERY_SECONDS)))
    return grant


def api_targets(tenants: Iterable) -> dict[tuple[str, str], ApiTarget]:
    """The api targets of configured tenants (each with `name` and `targets`), by (tenant, target name)."""
    return {(tenant.name, target.name): target for tenant in tenants for target in tenant.targets
            if isinstance(target, ApiTarget)}  # fmt: skip
