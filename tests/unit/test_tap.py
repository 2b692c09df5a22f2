"""Host-wide unique macvtap indexes and names."""

from __future__ import annotations

import pytest

from macvtap_provider.builders.tap import INDEX_RANGE, macvtap_name, pick_tap_index, taps_in_dev

pytestmark = pytest.mark.unit

LO, HI = INDEX_RANGE


def test_taps_in_dev() -> None:
    names = ["tap0", "tap12", "tap20001", "tap", "tapx", "tap1a", "macvtap3", "tun", "net",
             "kvm", "vhost-net", "xtap4", "tap007"]
    assert taps_in_dev(names) == {0, 12, 20001, 7}
    assert taps_in_dev([]) == set()


@pytest.mark.parametrize("seed", ["lab-1/guest", "lab-2/guest", "a", ""])
def test_pick_is_stable_and_in_range(seed: str) -> None:
    index = pick_tap_index(seed, set())
    assert index == pick_tap_index(seed, set())
    assert LO <= index < HI


def test_pick_differs_by_seed() -> None:
    assert len({pick_tap_index(f"lab/guest-{i}", set()) for i in range(100)}) > 95


def test_pick_skips_taken() -> None:
    first = pick_tap_index("lab-1/guest", set())
    second = pick_tap_index("lab-1/guest", {first})
    assert second != first and LO <= second < HI
    third = pick_tap_index("lab-1/guest", {first, second})
    assert third not in (first, second)


def test_pick_wraps_around_the_range() -> None:
    seed = next(s for s in (f"s{i}" for i in range(100000)) if pick_tap_index(s, set()) == HI - 1)
    assert pick_tap_index(seed, {HI - 1}) == LO


@pytest.mark.parametrize("attempt", [1, 2, 7])
def test_attempt_shifts_the_pick(attempt: int) -> None:
    base = pick_tap_index("lab-1/guest", set())
    shifted = pick_tap_index("lab-1/guest", set(), attempt)
    assert shifted != base
    assert (shifted - LO) == (base - LO + attempt) % (HI - LO)


def test_no_free_index() -> None:
    with pytest.raises(RuntimeError, match="no free macvtap index"):
        pick_tap_index("x", set(range(LO, HI)))


@pytest.mark.parametrize("index", [0, LO, HI - 1, 99999, 10**11])
def test_macvtap_name_fits_ifnamsiz(index: int) -> None:
    name = macvtap_name(index)
    assert name == f"mvt{index}"
    assert len(name) <= 15
