"""plan_diff: which inputs changed, which replace, how unknowns and noise are treated."""

from __future__ import annotations

import pytest

from macvtap_provider.builders.diff import UNKNOWN, DiffPlan, plan_diff

pytestmark = pytest.mark.unit

INPUTS = ("name", "mode", "memory_mib", "nameservers", "network", "tags")
REPLACE_ON = frozenset({"name", "mode", "network"})
OLDS = {"name": "g1", "mode": "bridge", "memory_mib": 512, "nameservers": ["10.0.0.1"],
        "network": {"address": "10.0.0.5", "prefix": 24}, "tags": None, "uuid": "u-1"}


def plan(news: dict[str, object], olds: dict[str, object] = OLDS) -> DiffPlan:
    return plan_diff(olds, news, inputs=INPUTS, replace_on=REPLACE_ON)


def test_no_change() -> None:
    result = plan(dict(OLDS))
    assert result == DiffPlan()
    assert not result.has_changes


def test_outputs_outside_inputs_are_ignored() -> None:
    assert not plan({**OLDS, "uuid": "u-2", "state": "running"}).has_changes


def test_replacing_change() -> None:
    result = plan({**OLDS, "mode": "vepa"})
    assert result.changed == ("mode",)
    assert result.replaces == ("mode",)
    assert result.has_changes


def test_in_place_change() -> None:
    result = plan({**OLDS, "memory_mib": 1024})
    assert result.changed == ("memory_mib",)
    assert result.replaces == ()
    assert result.has_changes


def test_several_changes_keep_input_order() -> None:
    result = plan({**OLDS, "network": {"address": "10.0.0.6", "prefix": 24}, "memory_mib": 1024,
                   "name": "g2"})
    assert result.changed == ("name", "memory_mib", "network")
    assert result.replaces == ("name", "network")


@pytest.mark.parametrize(("key", "value", "replaces"), [
    ("mode", UNKNOWN, ("mode",)),
    ("memory_mib", UNKNOWN, ()),
    ("nameservers", ["10.0.0.1", UNKNOWN], ()),
    ("network", {"address": UNKNOWN, "prefix": 24}, ("network",)),
    ("tags", [{"k": UNKNOWN}], ()),
])
def test_unknown_counts_as_changed(key: str, value: object, replaces: tuple[str, ...]) -> None:
    result = plan({**OLDS, key: value})
    assert result.changed == (key,)
    assert result.unknown == (key,)
    assert result.replaces == replaces


def test_unknown_even_when_old_was_the_placeholder() -> None:
    result = plan({**OLDS, "mode": UNKNOWN}, olds={**OLDS, "mode": UNKNOWN})
    assert result.changed == ("mode",)


@pytest.mark.parametrize(("old", "new"), [
    (None, None), (None, []), ([], None), (None, ""), ((), []), ({}, None),
    ("<missing>", None), ("<missing>", []), ("<missing>", {}),
])
def test_none_missing_and_empty_are_equal(old: object, new: object) -> None:
    olds = {k: v for k, v in OLDS.items() if k != "tags"}
    if old != "<missing>":
        olds["tags"] = old
    assert not plan({**OLDS, "tags": new}, olds=olds).has_changes


@pytest.mark.parametrize(("old", "new"), [
    (512, 512.0), (512.0, 512), (["10.0.0.1"], ("10.0.0.1",)),
    ({"address": "10.0.0.5", "prefix": 24}, {"prefix": 24.0, "address": "10.0.0.5"}),
    ([{"a": [1, 2]}], ({"a": (1.0, 2)},)),
])
def test_numeric_and_container_noise_is_equal(old: object, new: object) -> None:
    key = "network" if isinstance(old, dict) else "tags"
    assert not plan({**OLDS, key: new}, olds={**OLDS, key: old}).has_changes


@pytest.mark.parametrize(("old", "new"), [
    (512, 512.5), ("512", 512), (["a", "b"], ["b", "a"]), ({"a": 1}, {"a": 1, "b": 2}),
    ([{"a": [1, 2]}], [{"a": [1, 3]}]), ({"a": {"b": 1}}, {"a": {"b": 2}}), (0, None),
])
def test_nested_differences_are_changes(old: object, new: object) -> None:
    result = plan({**OLDS, "tags": new}, olds={**OLDS, "tags": old})
    assert result.changed == ("tags",)
    assert result.unknown == ()
