"""What the SFTP servers of several replicas share so that a client meets one server whichever replica it
reaches: the host keys (host_keys: the first replica's keys, taken by every other) and the defender's
evidence (login_failures: each failed login's points, by the replica that saw it; bans: each banned address).

Only a store several replicas share (PostgreSQL) is given these; one daemon on SQLite keeps its host keys in
files and its bans in a file of the state directory, as before. Times here are unix seconds (the defender's
clock), not stamps. Functions take the caller's connection (see daemon/store/uploads.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.store.sql import Db

HOST_KEYS = """
CREATE TABLE IF NOT EXISTS host_keys (  -- the SSH host keys every replica presents (private, OpenSSH format)
    name TEXT PRIMARY KEY,  -- the key's file name: ssh_host_ed25519_key, ssh_host_rsa_key
    private_key TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""
LOGIN_FAILURES = """
CREATE TABLE IF NOT EXISTS login_failures (  -- the defender's scores, as every replica saw them
    ip TEXT NOT NULL,
    at REAL NOT NULL,  -- unix seconds
    points INTEGER NOT NULL,
    replica TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_by_time ON login_failures (at);
"""
BANS = """
CREATE TABLE IF NOT EXISTS bans (  -- addresses the defender banned, on any replica
    ip TEXT PRIMARY KEY,
    until REAL NOT NULL,  -- unix seconds
    seconds REAL NOT NULL,  -- how long this ban lasts
    count INTEGER NOT NULL  -- how many times the address was banned, this ban included
);
"""


@dataclass(frozen=True, slots=True)
class LoginFailure:
    ip: str
    at: float
    points: int
    replica: str


@dataclass(frozen=True, slots=True)
class SharedBan:
    ip: str
    until: float
    seconds: float
    count: int


def host_key(db: Db, name: str, private_key: str, at: str) -> str:
    """The key stored under `name`; `private_key` becomes it when there is none yet (first replica wins)."""
    db.execute("INSERT INTO host_keys (name, private_key, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO "
               "NOTHING", (name, private_key, at))  # fmt: skip
    return db.execute("SELECT private_key FROM host_keys WHERE name = ?", (name,)).fetchone()["private_key"]


def record_failures(db: Db, failures: list[LoginFailure], forget_before: float) -> None:
    db.execute("DELETE FROM login_failures WHERE at < ?", (forget_before,))
    db.executemany("INSERT INTO login_failures (ip, at, points, replica) VALUES (?, ?, ?, ?)",
                   [(f.ip, f.at, f.points, f.replica) for f in failures])  # fmt: skip


def failures_since(db: Db, since: float, not_of: str) -> list[LoginFailure]:
    """Failures other replicas saw at `since` or later, oldest first."""
    rows = db.execute("SELECT ip, at, points, replica FROM login_failures WHERE at >= ? AND replica != ? "
                      "ORDER BY at", (since, not_of)).fetchall()  # fmt: skip
    return [LoginFailure(r["ip"], r["at"], r["points"], r["replica"]) for r in rows]


def record_ban(db: Db, ban: SharedBan) -> None:
    """A ban, kept when it ends later than the one stored for its address."""
    db.execute("INSERT INTO bans (ip, until, seconds, count) VALUES (?, ?, ?, ?) ON CONFLICT (ip) DO UPDATE SET "
               "until = excluded.until, seconds = excluded.seconds, count = excluded.count WHERE "
               "excluded.until > bans.until", (ban.ip, ban.until, ban.seconds, ban.count))  # fmt: skip


def bans(db: Db, ending_after: float) -> list[SharedBan]:
    rows = db.execute("SELECT ip, until, seconds, count FROM bans WHERE until > ?", (ending_after,)).fetchall()
    return [SharedBan(r["ip"], r["until"], r["seconds"], r["count"]) for r in rows]
