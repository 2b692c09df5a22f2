"""Scale: 4 guests in one stack (stacks/multi) vs 4 single-guest labs (stacks/lab) one after
another, each timed from `pulumi up` to ssh ready on every guest (destroys not counted).
The runs are interleaved (2 labs, the 4-guest stack, 2 labs) so load drift hits both sides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import CachedImages, free_subnet, say
from bench.lab import PulumiLab
from bench.timeline import Timeline

GUESTS = 4
MEMORY_MIB = 384  # stacks/multi's default, used for the single-guest labs too


def _one(tmp: Path, images: CachedImages, project: str, guests: int,
         label: str) -> tuple[Timeline, dict[str, Any]]:
    lab = PulumiLab.create(tmp, project, free_subnet(), prefix=f"bench-{label[0]}",
                           guests=guests, memory_mib=MEMORY_MIB)
    try:
        timeline = lab.up_to_ssh(images, label, watch_console=False,
                                 sample_rss=project == "multi")
        rss = lab.traced.rss if lab.traced else {}
    finally:
        lab.destroy()
    return timeline, rss


def measure(tmp: Path, images: CachedImages) -> dict[str, Any]:
    singles: list[Timeline] = []
    multi: Timeline | None = None
    rss: dict[str, Any] = {}
    for step in ("single", "single", "multi", "single", "single"):
        if step == "single":
            timeline, _ = _one(tmp, images, "lab", 1, f"single{len(singles) + 1}")
            singles.append(timeline)
        else:
            multi, rss = _one(tmp, images, "multi", GUESTS, "multi")
    assert multi is not None and multi.total is not None
    sequential = sum(t.total or 0.0 for t in singles)
    result = {
        "guests": GUESTS, "memory_mib": MEMORY_MIB,
        "multi_s": multi.total, "multi_timeline": multi.as_dict(),
        "singles_s": [t.total for t in singles], "sequential_s": round(sequential, 2),
        "ratio": round(multi.total / sequential, 3),
        "multi_rss": rss,
    }
    say(f"scale: {GUESTS} guests in one stack {multi.total:.1f}s vs {GUESTS} labs in sequence "
        f"{sequential:.1f}s")
    return result
