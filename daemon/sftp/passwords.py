"""Password checks: argon2id or bcrypt hashes, at the same cost whether or not the user exists.

Checks are blocking and deliberately slow; callers run `verify` in a worker thread.
"""

from __future__ import annotations

import functools
import secrets

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_ARGON2 = PasswordHasher()
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
MAX_PASSWORD_CHARS = 1024  # longer input is refused before hashing: no one types that, an attacker might


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random secret with the same cost as a tenant's, for users that do not exist."""
    return _ARGON2.hash(secrets.token_urlsafe(24))


def verify(stored_hash: str | None, password: str) -> bool:
    """True when `password` matches `stored_hash`; a missing or unknown hash still costs one check."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    if stored_hash is not None and stored_hash.startswith("$argon2id$"):
        return _argon2_matches(stored_hash, password)
    if stored_hash is not None and stored_hash.startswith(_BCRYPT_PREFIXES):
        return _bcrypt_matches(stored_hash, password)
    _argon2_matches(_dummy_hash(), password)
    return False


def warm_up() -> None:
    """Compute the dummy hash now, so the first unknown user does not pay for it (and show it)."""
    _dummy_hash()


def _argon2_matches(stored_hash: str, password: str) -> bool:
    try:
        return _ARGON2.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _bcrypt_matches(stored_hash: str, password: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), stored_hash.encode())
    except ValueError:  # malformed hash, or a password over bcrypt's 72-byte limit
        return False
