"""A target's name, whatever its kind, follows the one rule of daemon/names.py, with the same message: 1 to 63
of a-z, 0-9, '_' and '-', starting with a letter or digit (the rule of tenant names, config/rosterd.example.toml),
as the cases written here by hand show."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from daemon.targets.cers.settings import CersTarget
from daemon.targets.settings import WebhookTarget

GOOD = ("cers", "lms-vendor_2", "9" * 63)
BAD = ("Vendor", "../x", "-x", "a b", "", "9" * 64, "vendor\n")  # a final newline too (a `$` anchor let it in)


def kinds(tmp_path: Path) -> dict:
    secret = tmp_path / "webhook.secret"
    secret.write_text("s" * 32)
    webhook = {"type": "webhook", "url": "https://vendor.example/hook", "signing": {"secret_file": str(secret)}}
    return {CersTarget: {"type": "cers", "dry_run": True}, WebhookTarget: webhook}


@pytest.mark.parametrize("name", GOOD)
def test_a_good_name_is_taken_by_every_kind(tmp_path: Path, name: str) -> None:
    for model, fields in kinds(tmp_path).items():
        assert model.model_validate({**fields, "name": name}).name == name


@pytest.mark.parametrize("name", BAD)
def test_a_bad_name_is_refused_by_every_kind_with_the_rule(tmp_path: Path, name: str) -> None:
    for model, fields in kinds(tmp_path).items():
        with pytest.raises(ValidationError, match=r"a target name is 1 to 63 of a-z, 0-9, '_' and '-' \(got "):
            model.model_validate({**fields, "name": name})


@pytest.mark.parametrize("name", ["demo\n", "demo/../x", "Demo", ""])
def test_a_tenant_name_is_whole_or_refused(name: str) -> None:
    from daemon.names import TENANT_NAME, check_tenant_name

    assert TENANT_NAME.match(name) is None and TENANT_NAME.fullmatch(name) is None
    with pytest.raises(ValueError, match="a tenant name is 1 to 63 of a-z"):
        check_tenant_name(name)
