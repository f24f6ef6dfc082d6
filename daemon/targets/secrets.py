"""Where a target's secret comes from: never the TOML itself, but a systemd credential, an environment
variable or a file, named in the TOML and read at the time of use (so a rotated secret needs no restart).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator


class SecretMissing(Exception):
    """The configured secret could not be read; the message names the source, never a value."""


class SecretSource(BaseModel):
    """Mixed into a settings section: `secret_credential`, `secret_env` or `secret_file`, at most one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_credential: str | None = None  # a systemd credential name ($CREDENTIALS_DIRECTORY/<name>)
    secret_env: str | None = None  # an environment variable's name
    secret_file: Path | None = None  # a file holding only the secret (mode 600 or stricter)

    @model_validator(mode="after")
    def _one_secret_source(self):
        named = [s for s in (self.secret_credential, self.secret_env, self.secret_file) if s is not None]
        if len(named) > 1:
            raise ValueError("name only one of secret_credential, secret_env and secret_file")
        return self

    @property
    def secret_source(self) -> str | None:
        """Where the secret is read from, for messages (never the secret)."""
        if self.secret_credential:
            return f"systemd credential {self.secret_credential!r}"
        if self.secret_env:
            return f"environment variable {self.secret_env}"
        if self.secret_file:
            return f"file {self.secret_file}"
        return None

    def read_secret(self) -> str:
        """The secret, read now. SecretMissing says which source failed (never what it held)."""
        if self.secret_credential:
            folder = os.environ.get("CREDENTIALS_DIRECTORY")
            if not folder:
                raise SecretMissing(f"{self.secret_source}: $CREDENTIALS_DIRECTORY is not set (LoadCredential=)")
            return _read_secret_file(Path(folder) / self.secret_credential, self.secret_source)
        if self.secret_env:
            value = os.environ.get(self.secret_env, "").strip()
            if not value:
                raise SecretMissing(f"{self.secret_source} is not set or empty")
            return value
        if self.secret_file:
            return _read_secret_file(self.secret_file, self.secret_source)
        raise SecretMissing("no secret source configured (secret_credential, secret_env or secret_file)")


def _read_secret_file(path: Path, source: str | None) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise SecretMissing(f"{source}: cannot read {path}: {err.strerror}") from None
    if not value:
        raise SecretMissing(f"{source}: {path} is empty")
    return value
