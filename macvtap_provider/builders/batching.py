"""Pure rules for sharing work between processes: how a batch is dealt into groups."""

from __future__ import annotations


def split_batch(count: int, slots: int) -> list[list[int]]:
    """Indexes 0..count-1 dealt round-robin into at most `slots` non-empty groups."""
    groups = max(1, min(count, slots))
    return [list(range(start, count, groups)) for start in range(groups)]
