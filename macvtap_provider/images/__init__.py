"""Locally built images: the Debian rootfs, the libvirt container image and the guest disk."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

# Loaded on first use (PEP 562): the providers import images.guest_image for the default
# image's cache path on every preview, and that must not pull in docker.
_EXPORTS = {
    "LIBVIRT_IMAGE_REPO": "macvtap_provider.images.libvirt_image",
    "ensure_base_image": "macvtap_provider.images.base",
    "ensure_guest_image": "macvtap_provider.images.guest_image",
    "ensure_libvirt_image": "macvtap_provider.images.libvirt_image",
    "ensure_rootfs": "macvtap_provider.images.base",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "LIBVIRT_IMAGE_REPO",
    "ensure_all",
    "ensure_base_image",
    "ensure_guest_image",
    "ensure_libvirt_image",
    "ensure_rootfs",
]


def ensure_all(force: bool = False) -> dict[str, str]:
    """Build whatever a lab needs that is missing: the libvirt image and the guest disk.

    Args:
        force: rebuild both (the shared rootfs and base image are reused).

    Returns:
        {"libvirt_image": tag, "guest_image": path of the default guest qcow2}.

    Raises:
        ImageBuildError: a build failed.
    """
    from macvtap_provider.images.guest_image import ensure_guest_image
    from macvtap_provider.images.libvirt_image import ensure_libvirt_image

    tag = ensure_libvirt_image(force=force)
    guest: Path = ensure_guest_image(force=force)
    return {"libvirt_image": tag, "guest_image": str(guest)}
