"""argon2id hashes of what clients and people log in with (API client secrets, admin console passwords), and the
check against them that costs the same whether or not the one logging in exists.

An unknown name is checked against a decoy hash, so that timing does not tell which names exist. Both
functions block for tens of milliseconds and take much memory, on purpose: servers call them in a worker
thread. This module imports nothing of rosterd's, so any layer may use it.
"""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


def hash_secret(secret: str) -> str:
    """The argon2id hash kept in place of the secret or password."""
    return _hasher().hash(secret)


def matches(secret_hash: str | None, secret: str) -> bool:
    """Whether `secret` is the one `secret_hash` was made from; with None (no such client or account) a decoy
    hash is checked instead, and the answer is False."""
    checked = _decoy_hash() if secret_hash is None else secret_hash
    try:
        return _hasher().verify(checked, secret) and secret_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _decoy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(32))
