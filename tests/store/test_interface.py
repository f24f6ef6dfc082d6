"""The interface a second store (PostgreSQL, issue 17) implements: it lists every public method of the SQLite
Store, with the same signature, and Store implements each (none is left to the interface's empty body)."""

from __future__ import annotations

import inspect

from daemon.store import Store, StoreInterface


def interface_methods() -> dict[str, object]:
    return {name: value for name, value in vars(StoreInterface).items() if inspect.isfunction(value)
            and not name.startswith("_")}  # fmt: skip


def test_the_interface_lists_every_public_method_of_the_store() -> None:
    public = {name for name, value in vars(Store).items() if inspect.isfunction(value) and not name.startswith("_")}
    assert public == set(interface_methods())
    assert "targets" in StoreInterface.__annotations__  # a reload replaces the targets callers read and set


def test_the_store_implements_each_method_with_the_interface_signature() -> None:
    for name, declared in interface_methods().items():
        implemented = vars(Store)[name]
        assert implemented is not declared, name
        assert str(inspect.signature(implemented)) == str(inspect.signature(declared)), name
        assert inspect.getdoc(getattr(Store, name)), f"{name}: the interface says why it exists"


def test_an_open_store_is_a_store_interface(store: StoreInterface) -> None:
    assert isinstance(store, StoreInterface) and store.targets == {"north": ["cers", "vendor"]}
