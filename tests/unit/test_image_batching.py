"""Pure rules behind faster image customisation: launch groups and the fast root check."""

from __future__ import annotations

import pytest

from macvtap_provider.adapters.guestfs_api import fstab_mounts, writes_elsewhere
from macvtap_provider.builders.batching import split_batch

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("count", "slots", "groups"), [
    (1, 2, [[0]]),
    (4, 2, [[0, 2], [1, 3]]),
    (5, 2, [[0, 2, 4], [1, 3]]),
    (3, 8, [[0], [1], [2]]),
    (2, 0, [[0, 1]]),
])
def test_split_batch_deals_images_round_robin(count: int, slots: int,
                                              groups: list[list[int]]) -> None:
    assert split_batch(count, slots) == groups


def test_every_image_is_in_exactly_one_group() -> None:
    for count in range(1, 10):
        for slots in range(1, 5):
            flat = sorted(i for group in split_batch(count, slots) for i in group)
            assert flat == list(range(count))


def test_fstab_mounts_ignores_comments_swap_and_blank_lines() -> None:
    text = """\
# comment
LABEL=lab-root  /  ext4  errors=remount-ro  0  0
UUID=1234 /boot ext4 defaults 0 2   # trailing comment
/dev/sda2 none swap sw 0 0

tmpfs /tmp/ tmpfs defaults 0 0
"""
    assert fstab_mounts(text) == ["/", "/boot", "/tmp"]


@pytest.mark.parametrize(("points", "elsewhere"), [
    (["/"], False),
    (["/", "/boot", "/var", "/home"], False),
    (["/", "/etc"], True),
    (["/", "/root"], True),
    (["/", "/etc/ssh"], True),
    (["/", "/rootfs"], False),
])
def test_writes_elsewhere_only_for_etc_and_root(points: list[str], elsewhere: bool) -> None:
    assert writes_elsewhere(points) is elsewhere
