"""Thin adapter around `qemu-img`: overlays, copies, info, and the in-use check."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from macvtap_provider.errors import GuestfsError

log = logging.getLogger(__name__)


def _run(args: list[str]) -> str:
    log.debug("%s", " ".join(args))
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GuestfsError(f"`{' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def info(path: Path, force_share: bool = True) -> dict[str, Any]:
    """`qemu-img info` as a dict (format, virtual-size, backing-filename...)."""
    args = ["qemu-img", "info", "--output=json"]
    if force_share:
        args.append("-U")
    result: dict[str, Any] = json.loads(_run([*args, str(path)]))
    return result


def in_use(path: Path) -> bool:
    """True when a running qemu holds the image's write lock (e.g. an attached domain)."""
    proc = subprocess.run(["qemu-img", "info", str(path)], capture_output=True, text=True,
                          check=False)
    return proc.returncode != 0 and "lock" in proc.stderr.lower()


def create_overlay(base: Path, out: Path, base_format: str = "qcow2") -> None:
    """A qcow2 overlay on `base`, with a backing path relative to `out`'s directory.

    Relative, so it resolves both on the host (guestfs) and in the container
    (qemu), where the work directory is mounted at the same path.
    """
    rel = os.path.relpath(base, out.parent)
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", base_format, "-b", rel, str(out)])


def copy(base: Path, out: Path) -> None:
    """A standalone qcow2 copy of `base`."""
    _run(["qemu-img", "convert", "-O", "qcow2", str(base), str(out)])
