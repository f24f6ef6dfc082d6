"""Pausing a target from the console: held like a target that answered 410 (its deliveries wait), recorded as
a decision with the operator, undone by enable_target; a target held already is not paused again."""

from __future__ import annotations

from daemon.store import Action, StoreInterface


def test_a_pause_holds_the_target_until_it_is_enabled(store: StoreInterface) -> None:
    at = store.pause_target("north", "vendor", "ana (console, 127.0.0.1)")
    assert at is not None and at.endswith("Z")
    assert store.disabled_targets() == {("north", "vendor"): (at, "paused by ana (console, 127.0.0.1)")}
    assert store.pause_target("north", "vendor", "bob") is None  # held already: nothing more recorded
    assert store.enable_target("north", "vendor", "ana") is not None
    assert store.disabled_targets() == {}
    actions = [(d.action, d.tenant, d.target, d.operator) for d in store.unlogged_decisions()]
    assert actions == [(Action.TARGET_PAUSED, "north", "vendor", "ana (console, 127.0.0.1)"),
                       (Action.TARGET_ENABLED, "north", "vendor", "ana")]  # fmt: skip


def test_a_target_a_receiver_disabled_is_not_paused_over(store: StoreInterface) -> None:
    store.disable_target("north", "vendor", "HTTP 410 Gone")
    assert store.pause_target("north", "vendor", "ana") is None
    assert store.disabled_targets()[("north", "vendor")][1] == "HTTP 410 Gone"
