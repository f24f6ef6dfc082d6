"""`rosterd api-client add | revoke | list`: the secret is printed once and only its argon2 hash is kept; only a
tenant's api targets get clients; a listing never shows a secret."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from daemon.cli import main

CONFIG = """[server]
state_dir = "state"
[[tenants]]
name = "north"
demo = true
[[tenants.targets]]
type = "api"
name = "mathco"
[[tenants.targets]]
type = "webhook"
name = "hook"
url = "https://vendor.example/hook"
signing.secret_env = "HOOK"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "rosterd.toml"
    path.write_text(CONFIG)
    return path


def add(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    assert main(["api-client", "add", "north", "mathco", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    found = re.fullmatch(r"client_id: ([0-9a-f]{32})\nclient_secret: (\S+)\n", out)  # an id never starts with '-'
    assert found, out
    return found[1], found[2]


def test_add_prints_the_id_and_secret_once_and_keeps_only_an_argon2_hash(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client_id, secret = add(config, capsys)
    assert len(secret) >= 43  # 32 random bytes
    with sqlite3.connect(config.parent / "state" / "rosterd.db") as db:
        dumped = "\n".join(db.iterdump())
        (row,) = db.execute("SELECT client_id, tenant, target, secret_hash FROM api_clients").fetchall()
    assert secret not in dumped
    assert row[:3] == (client_id, "north", "mathco")
    assert row[3].startswith("$argon2id$") and PasswordHasher().verify(row[3], secret)
    other_id, other_secret = add(config, capsys)
    assert (other_id, other_secret) != (client_id, secret)


def test_add_refuses_an_unknown_tenant_or_target_and_a_target_that_is_not_an_api(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as unknown:  # as every admin command says an unknown tenant
        main(["api-client", "add", "south", "mathco", "--config", str(config)])
    assert unknown.value.code == 2 and "no tenant 'south'" in capsys.readouterr().err
    assert main(["api-client", "add", "north", "nothing", "--config", str(config)]) == 2
    assert "has no target 'nothing'" in capsys.readouterr().err
    assert main(["api-client", "add", "north", "hook", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert "is a webhook target" in captured.err and captured.out == ""


def test_list_never_shows_a_secret_and_revoke_marks_the_client(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client_id, secret = add(config, capsys)
    assert main(["api-client", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert client_id in out and "north/mathco" in out and "last used never" in out and secret not in out
    assert main(["api-client", "revoke", client_id, "--config", str(config)]) == 0
    assert f"{client_id} (north/mathco) revoked at" in capsys.readouterr().out
    assert main(["api-client", "revoke", client_id, "--config", str(config)]) == 1
    assert "revoked already" in capsys.readouterr().err
    assert main(["api-client", "list", "north", "--format", "json", "--config", str(config)]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["client_id"] == client_id and listed["revoked_at"] is not None
    assert set(listed) == {"client_id", "tenant", "target", "created_at", "last_used_at", "revoked_at"}
    assert main(["api-client", "revoke", "nobody", "--config", str(config)]) == 1


def test_status_shows_each_api_targets_clients_and_their_last_use(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client_id, _secret = add(config, capsys)  # makes the database too (status needs one)
    other_id, _ = add(config, capsys)
    assert main(["api-client", "revoke", other_id, "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert f"api client {client_id}: last used never" in text
    assert re.search(rf"api client {other_id}: revoked \d{{4}}-", text)
    assert main(["status", "--format", "json", "--config", str(config)]) == 0
    (tenant,) = json.loads(capsys.readouterr().out)
    targets = {t["target"]: t for t in tenant["targets"]}
    assert "clients" not in targets["hook"]  # a webhook target has none
    shown = {c["client_id"]: c for c in targets["mathco"]["clients"]}
    assert set(shown) == {client_id, other_id}
    assert shown[client_id]["last_used_at"] is None and shown[other_id]["revoked_at"] is not None
