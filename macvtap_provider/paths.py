"""Where macvtap-lab keeps caches, state and lab work files."""

from __future__ import annotations

import os
import re
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
    """The locally built Debian guest image used when no base image is configured (its
    name carries its recipe's hash; it may not be built yet)."""
    from macvtap_provider.images.guest_image import default_image_path

    return default_image_path()


def is_default_guest_image(path: str | Path) -> bool:
    """Whether `path` names a default guest image in this cache, of any recipe (the name
    carries the recipe's hash; `debian-guest.qcow2` was the name before it did)."""
    path = Path(path)
    return (path.parent == cache_dir() / "images"
            and re.fullmatch(r"debian-guest(-[0-9a-f]{12})?\.qcow2", path.name) is not None)


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
