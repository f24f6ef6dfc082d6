"""Uploads in given states across tenants (the console's holds page): newest first, only the states and
tenants asked for, at most `limit`."""

from __future__ import annotations

from unittest import mock

from daemon.store import State, StoreInterface


def test_uploads_in_states_are_the_newest_of_the_tenants_asked_for(store: StoreInterface) -> None:
    made = []
    for n, (tenant, state) in enumerate([("north", State.REJECTED), ("south", State.FAILED), ("north", State.FAILED),
                                         ("east", State.FAILED), ("north", State.DUPLICATE)]):  # fmt: skip
        with mock.patch("daemon.store.now", return_value=f"2026-12-0{n + 1}T00:00:00.000Z"):
            store.add(f"u-{n}", tenant, "r.zip", f"sha{n}", 1, f"/x/{n}")
            store.set_state(f"u-{n}", state)
        made.append(f"u-{n}")
    assert [u.id for u in store.uploads_in([State.FAILED])] == ["u-3", "u-2", "u-1"]
    assert [u.id for u in store.uploads_in([State.FAILED, State.REJECTED], ["north", "south"])] == \
        ["u-2", "u-1", "u-0"]  # fmt: skip
    assert [u.id for u in store.uploads_in([State.FAILED], None, limit=2)] == ["u-3", "u-2"]
    assert store.uploads_in([State.HELD]) == [] and store.uploads_in([State.FAILED], []) == []
