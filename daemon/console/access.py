"""Who may see and do what in the console, decided in one place for every page and action.

    admin     every tenant; every action
    viewer    every tenant; no action
    district  its own tenant only (its uploads, findings, change sets, holds, deliveries, targets); approves or
              discards that tenant's held uploads when the tenant's `district_decides_holds` is true; nothing
              else

A page or action about something a district account may not see answers 404, as for something that does not
exist, so ids of other tenants cannot be probed; a viewer's or district account's action it may not take
answers 403. Both are logged as `console.refused`.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.config import Settings

ROLES = ("admin", "viewer", "district")


@dataclass(frozen=True)
class Access:
    name: str
    role: str
    tenant: str | None  # a district account's tenant

    @property
    def operator(self) -> bool:
        return self.role in ("admin", "viewer")

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def sees(self, tenant: str) -> bool:
        return self.operator or tenant == self.tenant

    def tenants(self, settings: Settings) -> list[str]:
        """The configured tenants this account sees, in config order."""
        return [t.name for t in settings.tenants if self.sees(t.name)]

    def decides_holds(self, settings: Settings, tenant: str) -> bool:
        if self.admin:
            return True
        config = settings.tenant(tenant)
        return self.role == "district" and tenant == self.tenant and config is not None and config.district_decides_holds
