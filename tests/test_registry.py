"""The generic name-keyed registry: order kept, duplicates refused, unknown names answered with the nearest."""

from __future__ import annotations

import pytest

from medtransfer.errors import UserError
from medtransfer.registry import Registry


def test_entries_come_back_by_name_in_registration_order() -> None:
    reg: Registry[int] = Registry("metric")
    names = ["zeta", "alpha", "mid"]
    for i, name in enumerate(names):
        assert reg.register(name, i) == i
    assert reg.names() == tuple(names)
    assert list(reg) == names
    assert [reg.get(n) for n in names] == [0, 1, 2]
    assert "alpha" in reg and "beta" not in reg
    assert len(reg) == 3


def test_a_duplicate_name_is_refused_and_the_first_entry_kept() -> None:
    reg: Registry[str] = Registry("source")
    reg.register("npz", "first")
    with pytest.raises(ValueError, match="npz"):
        reg.register("npz", "second")
    assert reg.get("npz") == "first"


def test_an_unknown_name_suggests_the_nearest() -> None:
    reg: Registry[int] = Registry("metric")
    reg.register("balanced_accuracy", 1)
    reg.register("accuracy", 2)
    with pytest.raises(UserError) as info:
        reg.get("balanced_acuracy")
    line = info.value.line()
    assert "metric" in line and "balanced_acuracy" in line
    assert "did you mean 'balanced_accuracy'" in line


def test_an_unknown_name_with_nothing_close_lists_the_known_ones() -> None:
    reg: Registry[int] = Registry("head")
    reg.register("linear", 1)
    reg.register("mlp", 2)
    with pytest.raises(UserError, match="known: linear, mlp"):
        reg.get("xgboost")
    with pytest.raises(UserError, match="no widget is registered"):
        Registry("widget").get("x")
