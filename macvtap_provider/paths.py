"""Where macvtap-lab keeps caches, state and lab work files."""

from __future__ import annotations

import os
from pathlib import Path


def checkout_tools() -> Path | None:
    """`.tools/bin` of the source checkout this package runs from (`make setup` builds
    Pulumi there), or None when the package is installed (from a wheel): nothing else in
    the package depends on the checkout."""
    root = Path(__file__).resolve().parent.parent
    return root / ".tools" / "bin" if (root / "pyproject.toml").is_file() else None


def cache_dir() -> Path:
    """Cache outside the clone (pulumi build, rootfs, guest image), shared by all clones."""
    env = os.environ.get("MACVTAP_LAB_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "macvtap-lab"


def work_root() -> Path:
    """Host directory under which each lab container gets its work directory."""
    env = os.environ.get("MACVTAP_LAB_WORK")
    return Path(env) if env else Path("/var/lib/macvtap-lab")


def default_guest_image() -> Path:
    """The locally built Debian guest image used when no base image is configured."""
    return cache_dir() / "images" / "debian-guest.qcow2"


def prune_empty_dirs(start: Path, levels: int) -> None:
    """Remove `start` and up to `levels - 1` of its parents while they are empty.

    Never the work root itself. Resources sharing a lab's work directory each call
    this after removing their own files, so whichever goes last leaves nothing behind.
    """
    stop = work_root().resolve()
    current = start.resolve()
    for _ in range(levels):
        if current == stop or current == current.parent:
            return
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent
