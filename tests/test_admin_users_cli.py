"""`rosterd admin-user add | list | disable | passwd | totp`: passwords kept only as argon2id hashes, district
accounts bound to a configured tenant, TOTP secrets shown once, listings without hashes or secrets."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pyotp
import pytest
from argon2 import PasswordHasher

from daemon.cli import main
from daemon.console.accounts import check_login
from daemon.store import Store

CONFIG = """[server]
state_dir = "state"
[[tenants]]
name = "north"
demo = true
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "rosterd.toml"
    path.write_text(CONFIG)
    return path


def run(config: Path, monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["admin-user", *argv, "--config", str(config)])


def rows(config: Path) -> list[tuple]:
    with sqlite3.connect(config.parent / "state" / "rosterd.db") as db:
        return db.execute("SELECT name, role, tenant, password_hash, totp_secret FROM admin_users ORDER BY name"
                          ).fetchall()  # fmt: skip


def test_add_keeps_only_an_argon2id_hash_and_defaults_to_admin(config: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert run(config, monkeypatch, "add", "ana", "--password-stdin", stdin="s3cret pw\n") == 0
    assert run(config, monkeypatch, "add", "vic", "--role", "viewer", "--password-stdin", stdin="other\n") == 0
    (ana, vic) = rows(config)
    assert ana[:3] == ("ana", "admin", None) and ana[4] is None
    assert ana[3].startswith("$argon2id$") and PasswordHasher().verify(ana[3], "s3cret pw")
    assert vic[:3] == ("vic", "viewer", None)
    assert "s3cret pw" not in capsys.readouterr().out


def test_a_district_account_needs_a_configured_tenant_and_no_role(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, monkeypatch, "add", "d.north", "--tenant", "north", "--password-stdin", stdin="pw\n") == 0
    assert rows(config)[0][:3] == ("d.north", "district", "north")
    with pytest.raises(SystemExit) as unknown:
        run(config, monkeypatch, "add", "d.south", "--tenant", "south", "--password-stdin", stdin="pw\n")
    assert unknown.value.code == 2 and "no tenant 'south'" in capsys.readouterr().err
    assert run(config, monkeypatch, "add", "x", "--tenant", "north", "--role", "admin", "--password-stdin",
               stdin="pw\n") == 2  # fmt: skip
    assert "no --role" in capsys.readouterr().err
    assert [r[0] for r in rows(config)] == ["d.north"]


@pytest.mark.parametrize("name", ["Ana", "ana smith", "ana/x", "", "a" * 65, "ana\n"])
def test_a_bad_name_is_refused(config: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    assert run(config, monkeypatch, "add", name, "--password-stdin", stdin="pw\n") == 2


def test_a_taken_name_an_empty_password_and_differing_prompts_are_refused(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, monkeypatch, "add", "ana", "--password-stdin", stdin="pw\n") == 0
    assert run(config, monkeypatch, "add", "ana", "--password-stdin", stdin="pw\n") == 1
    assert "exists already" in capsys.readouterr().err
    assert run(config, monkeypatch, "add", "bob", "--password-stdin", stdin="\n") == 1
    typed = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(typed))
    assert run(config, monkeypatch, "add", "bob") == 1
    assert "differ" in capsys.readouterr().err
    typed = iter(["same", "same"])
    assert run(config, monkeypatch, "add", "bob") == 0
    assert PasswordHasher().verify(rows(config)[1][3], "same")


def test_totp_is_printed_once_and_then_required(config: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert run(config, monkeypatch, "add", "ana", "--totp", "--password-stdin", stdin="pw\n") == 0
    out = capsys.readouterr().out
    found = re.fullmatch(r"totp_uri: (otpauth://totp/rosterd:ana\?secret=([A-Z2-7]+)&issuer=rosterd)\n"
                         r"totp_secret: ([A-Z2-7]+)\n", out)  # fmt: skip
    assert found and found[2] == found[3], out
    assert rows(config)[0][4] == found[3]
    at = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
    store = Store(config.parent / "state" / "rosterd.db")
    try:
        assert check_login(store, "ana", "pw", pyotp.TOTP(found[3]).at(at), at) is not None
        assert check_login(store, "ana", "pw", None, at) is None
    finally:
        store.close()
    assert run(config, monkeypatch, "totp", "ana", "--off") == 0
    assert rows(config)[0][4] is None
    assert run(config, monkeypatch, "totp", "ana", "--on") == 0
    renewed = re.search(r"totp_secret: ([A-Z2-7]+)\n", capsys.readouterr().out)[1]
    assert rows(config)[0][4] == renewed != found[3]
    assert run(config, monkeypatch, "totp", "bob", "--on") == 1


def test_list_never_shows_a_hash_or_secret_and_disable_marks_the_account(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, monkeypatch, "add", "ana", "--totp", "--password-stdin", stdin="pw\n") == 0
    assert run(config, monkeypatch, "add", "d.north", "--tenant", "north", "--password-stdin", stdin="pw\n") == 0
    capsys.readouterr()
    ((_, _, _, ana_hash, ana_secret), (_, _, _, north_hash, _)) = rows(config)
    assert run(config, monkeypatch, "list", "--format", "json") == 0
    listed = capsys.readouterr().out
    assert [(u["name"], u["role"], u["tenant"], u["totp"], u["disabled_at"]) for u in json.loads(listed)] == \
        [("ana", "admin", None, True, None), ("d.north", "district", "north", False, None)]  # fmt: skip
    assert run(config, monkeypatch, "disable", "ana") == 0
    assert run(config, monkeypatch, "disable", "ana") == 1
    assert run(config, monkeypatch, "disable", "bob") == 1
    capsys.readouterr()
    assert run(config, monkeypatch, "list") == 0
    text = capsys.readouterr().out
    assert "ana" in text and "disabled" in text and "district of north" in text
    for shown in (listed, text):
        assert ana_hash not in shown and north_hash not in shown and ana_secret not in shown
        assert "argon2" not in shown


def test_passwd_replaces_the_hash(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(config, monkeypatch, "add", "ana", "--password-stdin", stdin="old\n") == 0
    assert run(config, monkeypatch, "passwd", "ana", "--password-stdin", stdin="new\n") == 0
    assert PasswordHasher().verify(rows(config)[0][3], "new")
    assert run(config, monkeypatch, "passwd", "bob", "--password-stdin", stdin="new\n") == 1
