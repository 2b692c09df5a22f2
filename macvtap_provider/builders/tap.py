"""Pure rules for macvtap links made by the provider: host-wide unique ifindex and name."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

# /dev/tapN is named by the link's ifindex in the one /dev all containers share, while
# every netns numbers its own links from 1: indexes from this range keep clear of both.
INDEX_RANGE = (20000, 60000)
_TAP_RE = re.compile(r"^tap(\d+)$")


def taps_in_dev(names: Iterable[str]) -> set[int]:
    """The N of every `tapN` among /dev entries."""
    return {int(m.group(1)) for n in names if (m := _TAP_RE.match(n))}


def pick_tap_index(seed: str, taken: set[int], attempt: int = 0) -> int:
    """A stable index for `seed` outside `taken` (linear probing from its hash)."""
    lo, hi = INDEX_RANGE
    span = hi - lo
    start = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % span
    for step in range(span):
        index = lo + (start + step + attempt) % span
        if index not in taken:
            return index
    raise RuntimeError("no free macvtap index left")  # 40000 links: not reachable in practice


def macvtap_name(index: int) -> str:
    """The link name for an index (at most 15 characters)."""
    return f"mvt{index}"
