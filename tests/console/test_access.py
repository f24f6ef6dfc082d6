"""Who sees and does what (daemon/console/access.py), as the issue lists it: an admin everything, a viewer
everything read-only, a district account its own tenant only, deciding its holds only when the tenant says so."""

from __future__ import annotations

from pathlib import Path

from daemon.config import parse_settings
from daemon.console.access import Access

CONFIG = """
[[tenants]]
name = "north"
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5Kn+MW6e9DFyeijzpRau2cuO627da9N925FJu7XDdS a@b"]
district_decides_holds = true
[[tenants]]
name = "south"
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB5Kn+MW6e9DFyeijzpRau2cuO627da9N925FJu7XDdS a@b"]
"""


def test_each_role_sees_and_decides_what_the_issue_says(tmp_path: Path) -> None:
    settings = parse_settings(CONFIG, tmp_path / "rosterd.toml")
    admin, viewer = Access("ana", "admin", None), Access("vic", "viewer", None)
    north, south = Access("d.n", "district", "north"), Access("d.s", "district", "south")
    assert admin.tenants(settings) == viewer.tenants(settings) == ["north", "south"]
    assert north.tenants(settings) == ["north"] and south.tenants(settings) == ["south"]
    assert not north.sees("south") and not south.sees("north") and not north.sees("")
    assert [admin.decides_holds(settings, t) for t in ("north", "south")] == [True, True]
    assert [viewer.decides_holds(settings, t) for t in ("north", "south")] == [False, False]
    assert [north.decides_holds(settings, t) for t in ("north", "south")] == [True, False]
    assert [south.decides_holds(settings, t) for t in ("north", "south")] == [False, False]  # south says no
    assert admin.admin and not viewer.admin and viewer.operator and not north.operator
