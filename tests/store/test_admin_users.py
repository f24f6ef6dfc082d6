"""Admin console accounts in the store: made once per name, read by name, listed without hashes or secrets,
password and TOTP replaced, disabled once; a district account and only it carries a tenant."""

from __future__ import annotations

import pytest

from daemon.store import AdminUser, Refused, StoreInterface


def test_an_account_is_read_and_listed_without_its_hash_or_secret(store: StoreInterface) -> None:
    made = store.add_admin_user("ana", "admin", None, "$argon2id$fake", "JBSWY3DPEHPK3PXP")
    store.add_admin_user("d.north", "district", "north", "$argon2id$other")
    assert (made.name, made.role, made.tenant, made.totp, made.disabled_at) == ("ana", "admin", None, True, None)
    assert made.created_at.endswith("Z")
    assert store.admin_user("ana") == made
    assert store.admin_user("nobody") is None
    assert [(u.name, u.role, u.tenant, u.totp) for u in store.admin_users()] == \
        [("ana", "admin", None, True), ("d.north", "district", "north", False)]  # fmt: skip
    assert not hasattr(made, "password_hash") and not hasattr(made, "totp_secret")
    found = store.admin_credentials("ana")
    assert (found.user, found.password_hash, found.totp_secret) == (made, "$argon2id$fake", "JBSWY3DPEHPK3PXP")
    assert store.admin_credentials("nobody") is None


def test_a_name_is_made_once_even_when_disabled(store: StoreInterface) -> None:
    store.add_admin_user("ana", "viewer", None, "h")
    store.disable_admin_user("ana")
    with pytest.raises(Refused, match="exists already"):
        store.add_admin_user("ana", "admin", None, "h2")


@pytest.mark.parametrize(("role", "tenant"), [("district", None), ("admin", "north"), ("viewer", "north"),
                                              ("root", None)])  # fmt: skip
def test_only_a_district_account_has_a_tenant_and_roles_are_the_three(
    store: StoreInterface, role: str, tenant: str | None
) -> None:
    with pytest.raises(ValueError):
        store.add_admin_user("ana", role, tenant, "h")
    assert store.admin_users() == []


def test_password_and_totp_are_replaced_and_unknown_names_refused(store: StoreInterface) -> None:
    store.add_admin_user("ana", "admin", None, "old")
    store.set_admin_password("ana", "new")
    assert store.admin_credentials("ana").password_hash == "new"
    assert store.set_admin_totp("ana", "JBSWY3DPEHPK3PXP").totp is True
    assert store.admin_credentials("ana").totp_secret == "JBSWY3DPEHPK3PXP"
    assert store.set_admin_totp("ana", None).totp is False
    assert store.admin_credentials("ana").totp_secret is None
    for change in (lambda: store.set_admin_password("bob", "h"), lambda: store.set_admin_totp("bob", None),
                   lambda: store.disable_admin_user("bob")):  # fmt: skip
        with pytest.raises(Refused, match="no admin user bob"):
            change()


def test_disabling_is_kept_and_done_once(store: StoreInterface) -> None:
    store.add_admin_user("ana", "admin", None, "h")
    disabled = store.disable_admin_user("ana")
    assert disabled.disabled_at is not None and store.admin_user("ana").disabled_at == disabled.disabled_at
    with pytest.raises(Refused, match="disabled already"):
        store.disable_admin_user("ana")


def test_the_listing_record_is_the_documented_one() -> None:
    assert list(AdminUser.__dataclass_fields__) == ["name", "role", "tenant", "totp", "created_at", "disabled_at"]
