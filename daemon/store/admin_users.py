"""The admin console's accounts: admin_users (operators, admin or viewer, and district accounts bound to one
tenant), each with an argon2id hash of its password and, when TOTP is on, the authenticator's base32 secret.

No password reaches this table in clear: daemon/console/accounts.py hashes it first. A disabled account stays
(its name stays taken, so the records that name it as `operator` keep meaning one person). Functions take the
caller's connection and time (see daemon/store/uploads.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.store.sql import Db, Row

ROLES = ("admin", "viewer", "district")

ADMIN_USERS = """
CREATE TABLE IF NOT EXISTS admin_users (  -- who may log in to the admin console: `rosterd admin-user add`
    name TEXT PRIMARY KEY,  -- the login (daemon/names.py: ACCOUNT_NAME)
    role TEXT NOT NULL CHECK (role IN ('admin', 'viewer', 'district')),
    tenant TEXT,  -- the one tenant a district account sees; NULL for operators
    password_hash TEXT NOT NULL,  -- argon2id of the password
    totp_secret TEXT,  -- base32, NULL: no second factor
    created_at TEXT NOT NULL,
    disabled_at TEXT,  -- NULL: may log in
    CHECK ((role = 'district') = (tenant IS NOT NULL))
);
"""


@dataclass(frozen=True, slots=True)
class AdminUser:
    """An account as listings show it: never its password hash or TOTP secret, only whether TOTP is on."""

    name: str
    role: str
    tenant: str | None
    totp: bool
    created_at: str
    disabled_at: str | None = None


@dataclass(frozen=True, slots=True)
class AdminCredentials:
    """An account with what its login is checked against (for daemon/console/accounts.py only)."""

    user: AdminUser
    password_hash: str
    totp_secret: str | None


def insert(db: Db, name: str, role: str, tenant: str | None, password_hash: str,
           totp_secret: str | None, at: str) -> None:  # fmt: skip
    db.execute("INSERT INTO admin_users (name, role, tenant, password_hash, totp_secret, created_at) VALUES "
               "(?, ?, ?, ?, ?, ?)", (name, role, tenant, password_hash, totp_secret, at))  # fmt: skip


def get(db: Db, name: str) -> AdminUser | None:
    row = db.execute("SELECT * FROM admin_users WHERE name = ?", (name,)).fetchone()
    return None if row is None else as_user(row)


def credentials(db: Db, name: str) -> AdminCredentials | None:
    row = db.execute("SELECT * FROM admin_users WHERE name = ?", (name,)).fetchone()
    return None if row is None else AdminCredentials(as_user(row), row["password_hash"], row["totp_secret"])


def listed(db: Db) -> list[AdminUser]:
    """Accounts by name."""
    return [as_user(r) for r in db.execute("SELECT * FROM admin_users ORDER BY name").fetchall()]


def set_password(db: Db, name: str, password_hash: str) -> None:
    db.execute("UPDATE admin_users SET password_hash = ? WHERE name = ?", (password_hash, name))


def set_totp(db: Db, name: str, totp_secret: str | None) -> None:
    db.execute("UPDATE admin_users SET totp_secret = ? WHERE name = ?", (totp_secret, name))


def disable(db: Db, name: str, at: str) -> None:
    db.execute("UPDATE admin_users SET disabled_at = ? WHERE name = ? AND disabled_at IS NULL", (at, name))


def as_user(row: Row) -> AdminUser:
    return AdminUser(row["name"], row["role"], row["tenant"], row["totp_secret"] is not None, row["created_at"],
                     row["disabled_at"])  # fmt: skip
