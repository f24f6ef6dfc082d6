"""Admin console accounts: password hashing and the login check, with an optional TOTP second factor (RFC 6238:
SHA-1, 6 digits, 30 s steps, what every authenticator app uses).

`check_login` does the same argon2 work whether or not the name exists (daemon/passwords.py checks an unknown
name against a decoy hash), so timing does not tell which names exist. A
code is good in the current 30 s step and the one before (a code typed as the step turns). Every function
blocks (argon2 takes tens of milliseconds on purpose): the console calls them in a worker thread.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import pyotp

from daemon.passwords import verify
from daemon.store import AdminUser, StoreInterface

ISSUER = "rosterd"
TOTP_STEP = timedelta(seconds=30)

def check_login(store: StoreInterface, name: str, password: str, totp_code: str | None, now: datetime
                ) -> AdminUser | None:  # fmt: skip
    """The account when the password is its own, it is not disabled and, when it has TOTP, `totp_code` is the
    code of `now`'s 30 s step or the one before; None otherwise (which of them failed is not said)."""
    found = store.admin_credentials(name)
    if not verify(found.password_hash if found else None, password) or found is None:
        return None
    if found.user.disabled_at is not None:
        return None
    if found.totp_secret is not None and not _code_matches(found.totp_secret, totp_code, now):
        return None
    return found.user


def new_totp_secret() -> str:
    """A fresh base32 secret (160 bits, as RFC 4226 recommends) for an authenticator app."""
    return pyotp.random_base32(32)


def provisioning_uri(name: str, secret: str) -> str:
    """The otpauth:// URI an authenticator app reads (as a QR code or typed): issuer rosterd, label the name."""
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=ISSUER)


def _code_matches(secret: str, code: str | None, now: datetime) -> bool:
    if not code:
        return False
    totp = pyotp.TOTP(secret)
    return any(secrets.compare_digest(totp.at(now - back), code.strip()) for back in (timedelta(0), TOTP_STEP))
