"""Password and secret checks for everyone who logs in (SFTP tenants, API clients, admin console accounts):
argon2id hashes (and the bcrypt ones a tenant's config may hold), at the same cost whether or not the one
logging in exists: an unknown name is checked against a decoy hash of the same cost, so timing does not tell
which names exist.

Checks and hashes block for tens of milliseconds and take much memory, on purpose: callers run them in a
worker thread. This module imports nothing of rosterd's, so any layer may use it.
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


def hash_secret(secret: str) -> str:
    """The argon2id hash kept in place of a password or secret."""
    return _ARGON2.hash(secret)


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random secret with the same cost as a real one, for names that do not exist."""
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
    """Compute the dummy hash now, so the first unknown name does not pay for it (and show it)."""
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
