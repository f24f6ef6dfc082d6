"""How settings become what the stages are given: a tenant's own hold thresholds over the [holds] ones."""

from __future__ import annotations

from pathlib import Path

from daemon.app import tenant_holds
from daemon.config import parse_settings

CONFIG = """
[holds]
users_deleted_share = 0.2
changed_share = 0.4

[[tenants]]
name = "strict"
demo = true
holds = { users_deleted_share = 0.05 }

[[tenants]]
name = "plain"
demo = true
"""


def test_a_tenants_own_thresholds_override_only_the_keys_it_sets() -> None:
    settings = parse_settings(CONFIG, Path("/etc/rosterd/rosterd.toml"))
    strict = tenant_holds(settings, settings.tenant("strict"))
    plain = tenant_holds(settings, settings.tenant("plain"))
    assert strict == {"users_deleted_share": 0.05, "enrollments_deleted_share": 0.10, "school_deleted": True,
                      "changed_share": 0.4}  # fmt: skip
    assert plain == {**strict, "users_deleted_share": 0.2}
