"""Toolchains: the 4-guest stack (stacks/multi) brought up under macvtap-lab's plugin and
under the official CLI's launch contract (stock mode: the SDK's own `python -m
pulumi.dynamic` server, whose 4 worker threads the library widens once a lab provider is
loaded), and under stock mode with the pool left at the SDK's 4 (MACVTAP_LAB_WORKERS=4),
each timed from `pulumi up` to ssh ready on every guest, one after another in one run.

What held threads cost shows in the phases more than in the total: with 4 threads the four
image customisations (batched, ~25 s) hold every thread and the container's create, which
takes ~2 s alone, ends only after them. `queued` says that happened (the container ready no
earlier than the images); the totals are dominated by guest boots under TCG and by load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import CachedImages, free_subnet, say
from bench.lab import PulumiLab
from bench.timeline import Timeline

GUESTS = 4
MEMORY_MIB = 384
STOCK = {"MACVTAP_LAB_STOCK": "1", "PULUMI_PYTHON_CMD": None}
#: label -> environment overrides. The SDK's pool first, so that load drift over the run
#: does not favour the case the guarantee is about.
VARIANTS: dict[str, dict[str, str | None]] = {
    "stock_sdk_4_threads": {**STOCK, "MACVTAP_LAB_WORKERS": "4"},
    "ours": {},
    "stock": STOCK,
}


def measure(tmp: Path, images: CachedImages) -> dict[str, Any]:
    timelines: dict[str, Timeline] = {}
    for label, env in VARIANTS.items():
        lab = PulumiLab.create(tmp, "multi", free_subnet(), prefix=f"bench-t{len(timelines)}",
                               guests=GUESTS, memory_mib=MEMORY_MIB, env=env)
        try:
            timelines[label] = lab.up_to_ssh(images, label, watch_console=False,
                                             sample_rss=False)
        finally:
            lab.destroy()
    totals = {label: t.total for label, t in timelines.items()}
    ours = totals["ours"] or 0.0
    phases = {label: {"container_ready_s": t.get("container_ready"),
                      "images_customized_s": t.get("image_customized")}
              for label, t in timelines.items()}
    for p in phases.values():
        c, i = p["container_ready_s"], p["images_customized_s"]
        p["queued"] = c is not None and i is not None and c >= i
    result: dict[str, Any] = {
        "guests": GUESTS, "memory_mib": MEMORY_MIB, "totals_s": totals, "phases": phases,
        "stock_vs_ours": round((totals["stock"] or 0.0) / ours, 3) if ours else None,
        "sdk_4_threads_vs_ours":
            round((totals["stock_sdk_4_threads"] or 0.0) / ours, 3) if ours else None,
        "timelines": {label: t.as_dict() for label, t in timelines.items()},
    }
    say(f"toolchains: {GUESTS} guests up to ssh: " + ", ".join(
        f"{label} {total:.1f}s" for label, total in totals.items() if total is not None))
    return result
