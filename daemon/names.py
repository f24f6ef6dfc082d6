"""The names an operator gives tenants and targets, and the one rule each follows.

A tenant name is an SFTP user name and a folder under the state directory; a target name names a tenant's
deliveries. Both may become path components, so neither may hold '/' or '..'. The settings (config.py and
targets/), the SFTP layer and the CLI check a name here, so that all of them take the same names; this module
imports nothing of rosterd's, so any layer may use it.
"""

from __future__ import annotations

import re

# Anchored with \Z, not $ (which lets one final newline through: "demo\n"), so that .match and .fullmatch
# alike take only whole names.
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
# An admin console account's login: never a path component, but shown in logs and receipts as `operator`.
ACCOUNT_NAME = re.compile(r"^[a-z0-9._-]{1,64}\Z")


def check_tenant_name(value: str) -> str:
    """`value` when it is a tenant name; ValueError says the rule otherwise."""
    if not TENANT_NAME.fullmatch(value):
        raise ValueError(
            f"a tenant name is 1 to 63 of a-z, 0-9, '_' and '-', starting with a letter or digit (got {value!r})"
        )
    return value


def check_target_name(value: str) -> str:
    """`value` when it is a target name; ValueError says the rule otherwise."""
    if not TARGET_NAME.fullmatch(value):
        raise ValueError(f"a target name is 1 to 63 of a-z, 0-9, '_' and '-' (got {value!r})")
    return value


def check_account_name(value: str) -> str:
    """`value` when it is an admin console account name; ValueError says the rule otherwise."""
    if not ACCOUNT_NAME.fullmatch(value):
        raise ValueError(f"an account name is 1 to 64 of a-z, 0-9, '.', '_' and '-' (got {value!r})")
    return value
