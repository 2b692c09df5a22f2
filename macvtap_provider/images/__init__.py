"""Locally built images: the Debian rootfs, the libvirt container image and the guest disk."""

from __future__ import annotations

from pathlib import Path

from macvtap_provider.images.base import ensure_base_image, ensure_rootfs
from macvtap_provider.images.guest_image import ensure_guest_image
from macvtap_provider.images.libvirt_image import LIBVIRT_IMAGE_REPO, ensure_libvirt_image

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
    tag = ensure_libvirt_image(force=force)
    guest: Path = ensure_guest_image(force=force)
    return {"libvirt_image": tag, "guest_image": str(guest)}
