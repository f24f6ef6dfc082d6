"""The PostgreSQL store's schema as numbered migrations: `rosterd migrate` applies the ones a database lacks,
each in its own transaction, under an advisory lock so that replicas starting together apply each once.

The tables and columns are SQLite's (daemon/store/*.py), so one module per table reads both. What differs:
    - `rowid`, which SQLite gives every table, is a generated identity column here: arrival order of uploads,
      writing order of transitions, queuing order of deliveries, snapshots within a millisecond;
    - text compares byte by byte (COLLATE "C"), as SQLite's does: times and ids sort as they are written,
      whatever locale the database was created with;
    - sizes are BIGINT (an upload may pass 2 GiB).

A migration is never edited once released: a change is a new one at the end.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def _c(sql: str) -> str:
    """Every TEXT column compares as bytes (see the module docstring)."""
    return sql.replace("TEXT", 'TEXT COLLATE "C"')


_INITIAL = _c("""
CREATE TABLE uploads (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    received_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    answered_at TEXT
);
CREATE INDEX uploads_by_tenant ON uploads (tenant, received_at);
CREATE INDEX uploads_by_hash ON uploads (tenant, sha256);
CREATE INDEX uploads_by_state ON uploads (state, received_at);

CREATE TABLE transitions (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    upload_id TEXT NOT NULL REFERENCES uploads (id),
    state TEXT NOT NULL,
    at TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX transitions_by_upload ON transitions (upload_id);

CREATE TABLE validations (
    upload_id TEXT PRIMARY KEY REFERENCES uploads (id),
    result TEXT NOT NULL
);

CREATE TABLE snapshots (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    upload_id TEXT PRIMARY KEY REFERENCES uploads (id),
    tenant TEXT NOT NULL,
    version TEXT NOT NULL,
    path TEXT NOT NULL,
    base_upload_id TEXT,
    rows TEXT NOT NULL,
    changes TEXT NOT NULL,
    holds TEXT NOT NULL,
    created_at TEXT NOT NULL,
    pruned_at TEXT,
    samples TEXT
);
CREATE INDEX snapshots_by_tenant ON snapshots (tenant, created_at);

CREATE TABLE rebaselines (
    tenant TEXT PRIMARY KEY,
    requested_at TEXT NOT NULL,
    requested_by TEXT NOT NULL
);

CREATE TABLE deliveries (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    target TEXT NOT NULL,
    upload_id TEXT NOT NULL REFERENCES uploads (id),
    idempotency_key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    delivered_at TEXT,
    base_upload_id TEXT,
    last_error TEXT,
    result TEXT
);
CREATE INDEX deliveries_by_target ON deliveries (tenant, target, state);

CREATE TABLE disabled_targets (
    tenant TEXT NOT NULL,
    target TEXT NOT NULL,
    disabled_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (tenant, target)
);

CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at TEXT NOT NULL
);

CREATE TABLE decisions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action TEXT NOT NULL,
    tenant TEXT NOT NULL,
    upload_id TEXT,
    delivery_id TEXT,
    target TEXT,
    operator TEXT NOT NULL,
    at TEXT NOT NULL,
    logged_at TEXT
);
CREATE INDEX decisions_by_upload ON decisions (upload_id);
CREATE INDEX decisions_unlogged ON decisions (id) WHERE logged_at IS NULL;

CREATE TABLE api_clients (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    client_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    target TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    last_used_at TEXT
);
CREATE INDEX api_clients_by_target ON api_clients (tenant, target);

CREATE TABLE api_tokens (
    token_sha256 TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES api_clients (client_id),
    scopes TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX api_tokens_by_expiry ON api_tokens (expires_at);

CREATE TABLE admin_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('admin', 'viewer', 'district')),
    tenant TEXT,
    password_hash TEXT NOT NULL,
    totp_secret TEXT,
    created_at TEXT NOT NULL,
    disabled_at TEXT,
    CHECK ((role = 'district') = (tenant IS NOT NULL))
);
""")

_DELIVERY_LEASES = _c("""
ALTER TABLE deliveries ADD COLUMN claimed_by TEXT;
ALTER TABLE deliveries ADD COLUMN lease_until TEXT;
""")

_UPLOAD_LEASES = _c("""
ALTER TABLE uploads ADD COLUMN claimed_by TEXT;
ALTER TABLE uploads ADD COLUMN lease_until TEXT;
""")

_SFTP_STATE = _c("""
CREATE TABLE host_keys (
    name TEXT PRIMARY KEY,
    private_key TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE login_failures (
    ip TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    points INTEGER NOT NULL,
    replica TEXT NOT NULL
);
CREATE INDEX login_failures_by_time ON login_failures (at);
CREATE TABLE bans (
    ip TEXT PRIMARY KEY,
    until DOUBLE PRECISION NOT NULL,
    seconds DOUBLE PRECISION NOT NULL,
    count INTEGER NOT NULL
);
""")

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the tables of the SQLite store as of issue 16", _INITIAL),
    Migration(2, "a replica's lease on the delivery it sends", _DELIVERY_LEASES),
    Migration(3, "a replica's lease on the upload it processes", _UPLOAD_LEASES),
    Migration(4, "host keys and the defender's evidence, shared by the replicas' SFTP servers", _SFTP_STATE),
)
LATEST = MIGRATIONS[-1].version

# Where a database records which migrations it has had.
APPLIED = _c("""
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
""")
