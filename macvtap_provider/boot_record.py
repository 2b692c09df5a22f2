"""Boot records: the kernel, initrd and command line a base image can be booted with directly.

An image that macvtap-lab built (the default guest) carries a record in its sidecar file
naming a kernel and an initrd extracted beside it; with it, a domain can skip firmware and
bootloader (libvirt's `<kernel>`, `<initrd>`, `<cmdline>`). Images without a record (the
cloud images users bring) boot their own way, from their disk.

Imported by the CustomizedImage provider on every preview: no docker, no guestfs here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Next to an image: the JSON record of the recipe that built it (and its boot record).
SIDECAR_SUFFIX = ".recipe.json"
#: Suffixes of the files a CustomizedImage places beside its disk for direct kernel boot.
KERNEL_SUFFIX = ".vmlinuz"
INITRD_SUFFIX = ".initrd"


@dataclass(frozen=True)
class BootRecord:
    """Absolute host paths of a kernel and initrd, and the kernel command line."""

    kernel: Path
    initrd: Path | None
    cmdline: str


def sidecar_path(image: Path) -> Path:
    """The file next to the image that records which recipe built it."""
    return image.with_name(image.name + SIDECAR_SUFFIX)


def read_boot_record(image: Path) -> BootRecord | None:
    """The boot record of `image`, or None when it has none or its files are missing.

    The record's file names are relative to the image's directory.
    """
    try:
        record = json.loads(sidecar_path(image).read_text()).get("boot")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(record, dict) or not record.get("kernel"):
        return None
    kernel = image.parent / str(record["kernel"])
    initrd = image.parent / str(record["initrd"]) if record.get("initrd") else None
    if not kernel.is_file() or (initrd is not None and not initrd.is_file()):
        log.warning("image %s names a kernel or initrd that is missing: it boots from its disk",
                    image)
        return None
    return BootRecord(kernel, initrd, str(record.get("cmdline") or ""))


def boot_files_beside(disk: Path) -> tuple[Path, Path]:
    """Where a CustomizedImage keeps the kernel and initrd of `disk` (same directory, so the
    libvirt container, which mounts only the lab's work directory, sees them too)."""
    return (disk.with_name(disk.stem + KERNEL_SUFFIX),
            disk.with_name(disk.stem + INITRD_SUFFIX))


def remove_boot_files(disk: Path) -> None:
    """Remove what place_boot_files() made beside `disk` (missing files are fine)."""
    for path in boot_files_beside(disk):
        path.unlink(missing_ok=True)
