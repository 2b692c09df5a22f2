"""Build the base-image fixtures with the product's image machinery, cached by recipe hash.

Like the default guest: packages installed in a throw-away container FROM the local Debian
base image, its files exported and laid onto a fresh disk in one libguestfs session. Unlike
it, each fixture boots through its own grub (installed by the guest's own grub-install and
update-grub, run inside the guest by libguestfs), from the layout a vendor image has.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from macvtap_provider.adapters.kvm import kvm_usable
from macvtap_provider.errors import ImageBuildError
from macvtap_provider.images.base import (
    RECIPE_LABEL,
    base_image_digest,
    build_lock,
    ensure_base_image,
    export_build_container,
    recipe_hash,
    remove_tree,
    run_logged,
)
from macvtap_provider.images.guest_image import (
    BUILD_LABEL,
    ensure_guest_image,
    sidecar_matches,
    sidecar_path,
)
from macvtap_provider.paths import cache_dir
from tests.images.recipes import (
    FILE_CONTEXTS,
    FIXTURES,
    GPT_BIOS_BOOT,
    GPT_ESP,
    GPT_LINUX_ROOT_X86_64,
    LVM_LV,
    LVM_VG,
    Fixture,
    grub_defaults,
    install_script,
)

log = logging.getLogger(__name__)

DISK = "/dev/sda"
MIB = 1024 * 1024 // 512  # sectors per MiB
GRUB_DEFAULTS = "/etc/default/grub.d/50-image.cfg"
#: (device, mount point, mount options) in mount order.
Mounts = list[tuple[str, str, str]]


def fixture_digest(name: str) -> str:
    """The recipe hash of fixture `name` (its cache file carries the first 12 digits)."""
    return recipe_hash(FIXTURES[name].recipe(base_image_digest()))


def fixture_path(name: str) -> Path:
    """Where fixture `name` lives in the cache (it may not exist yet)."""
    if name == "default":
        from macvtap_provider.paths import default_guest_image

        return default_guest_image()
    return cache_dir() / "images" / "fixtures" / f"{name}-{fixture_digest(name)[:12]}.qcow2"


def ensure_fixture(name: str, force: bool = False) -> Path:
    """Build fixture `name` when its cached image is missing or its recipe changed.

    Args:
        name: one of ALL_NAMES ("default" is the product's own guest image).
        force: rebuild even when the cached image is current.

    Returns:
        The path of the compressed qcow2.

    Raises:
        KeyError: unknown fixture name.
        ImageBuildError: a build step failed; the message says which.
    """
    if name == "default":
        return ensure_guest_image(force=force)
    fixture = FIXTURES[name]
    digest = fixture_digest(name)
    target = fixture_path(name)
    if not force and sidecar_matches(target, digest):
        log.debug("fixture %s is current: %s", name, target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = f"fixture-{name}-{digest[:12]}"
    with build_lock(lock):
        if not force and sidecar_matches(target, digest):
            return target
        for stale in target.parent.glob(f".work-{target.name}-*"):
            log.info("removing %s left by an interrupted build", stale)
            remove_tree(stale)
        started = time.monotonic()
        log.info("building fixture %s: %s", name, fixture.summary)
        base_tag = ensure_base_image()
        work = Path(tempfile.mkdtemp(prefix=f".work-{target.name}-", dir=target.parent))
        try:
            rootfs = work / "rootfs.tar"
            export_build_container(base_tag, install_script(fixture),
                                   {RECIPE_LABEL: digest}, (BUILD_LABEL, lock), rootfs,
                                   f"fixture {name}")
            installed = time.monotonic()
            raw = work / "disk.raw"
            kernel = _make_disk(fixture, rootfs, raw)
            laid_out = time.monotonic()
            rootfs.unlink()
            partial = work / target.name
            run_logged(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw),
                        str(partial)],
                       f"fixture {name}: qemu-img convert", f"check free space under {work}")
            os.replace(partial, target)
            done = time.monotonic()
            record = {"recipe": digest, "fixture": name, "kernel": kernel,
                      "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "seconds": {"install": round(installed - started, 1),
                                  "disk": round(laid_out - installed, 1),
                                  "compress": round(done - laid_out, 1),
                                  "total": round(done - started, 1)}}
            sidecar = work / "sidecar.json"
            sidecar.write_text(json.dumps(record, indent=2) + "\n")
            os.replace(sidecar, sidecar_path(target))
        finally:
            remove_tree(work)
        log.info("fixture %s ready: %s (%.0f MB, %.0f s)", name, target,
                 target.stat().st_size / 1e6, time.monotonic() - started)
    return target


def build_record(name: str) -> dict[str, Any]:
    """The sidecar of a built fixture (recipe, kernel, build time and its phases)."""
    record: dict[str, Any] = json.loads(sidecar_path(fixture_path(name)).read_text())
    return record


# ---- the disk, in one libguestfs session --------------------------------------------------


def _make_disk(fixture: Fixture, rootfs: Path, raw: Path) -> str:
    """Lay out `raw`, unpack `rootfs`, configure, install grub; return the kernel version."""
    import guestfs  # Debian's python3-guestfs

    with open(raw, "wb") as disk:
        disk.truncate(fixture.disk_size)
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.set_backend("direct")
        if not kvm_usable():
            g.set_backend_setting("force_tcg", "1")
        g.add_drive_opts(str(raw), format="raw", readonly=False)
        log.info("fixture %s: launching libguestfs to lay out the disk", fixture.name)
        g.launch()
        mounts, fstab = LAYOUTS[fixture.layout](g)
        for device, point, options in mounts:
            if point != "/":
                g.mkdir_p(point)
            g.mount_options(options, device, point)
        log.debug("guestfs: unpacking the rootfs")
        g.tar_in(str(rootfs), "/", xattrs=True)
        _configure(g, fixture, fstab)
        version = _kernel_version(g, fixture)
        _install_grub(g, fixture)
        for leftover in g.glob_expand("/tmp/*"):  # grub's and lvm's, from the steps above
            g.rm_rf(leftover)
        if fixture.selinux:
            log.info("fixture %s: labelling every file with the guest's policy", fixture.name)
            # setfiles stays on one filesystem: name each mount point.
            g.command(["setfiles", "-F", "-e", "/proc", "-e", "/sys", "-e", "/dev",
                       FILE_CONTEXTS, *(point for _, point, _ in mounts)])
        g.umount_all()
        g.shutdown()
    except RuntimeError as exc:  # the bindings raise RuntimeError for every guestfs failure
        raise ImageBuildError(
            f"fixture {fixture.name}: libguestfs failed while building {raw.name}: {exc}") from exc
    finally:
        g.close()
    return version


def _gpt_bios_esp_ext4(g: Any) -> tuple[Mounts, str]:
    """GPT: 1 MiB BIOS boot partition, 128 MiB ESP (FAT32), ext4 root on the rest."""
    g.part_init(DISK, "gpt")
    g.part_add(DISK, "p", 2048, 2048 + MIB - 1)
    g.part_add(DISK, "p", 2048 + MIB, 2048 + 129 * MIB - 1)
    g.part_add(DISK, "p", 2048 + 129 * MIB, -34)
    for number, (kind, label) in enumerate(((GPT_BIOS_BOOT, "BIOS boot"),
                                            (GPT_ESP, "EFI system"),
                                            (GPT_LINUX_ROOT_X86_64, "root")), start=1):
        g.part_set_gpt_type(DISK, number, kind)
        g.part_set_name(DISK, number, label)
    g.mkfs("vfat", f"{DISK}2", label="UEFI")
    g.mkfs("ext4", f"{DISK}3", label="cloudimg-rootfs")
    fstab = ("LABEL=cloudimg-rootfs\t/\text4\tdiscard,errors=remount-ro\t0 1\n"
             "LABEL=UEFI\t/boot/efi\tvfat\tumask=0077\t0 1\n")
    return [(f"{DISK}3", "/", ""), (f"{DISK}2", "/boot/efi", "")], fstab


def _boot_lvm_xfs(g: Any) -> tuple[Mounts, str]:
    """MBR: 512 MiB ext4 /boot, then an LVM PV whose VG holds one LV with an XFS root."""
    g.part_init(DISK, "mbr")
    g.part_add(DISK, "p", 2048, 2048 + 512 * MIB - 1)
    g.part_add(DISK, "p", 2048 + 512 * MIB, -1)
    g.part_set_mbr_id(DISK, 2, 0x8E)
    g.mkfs("ext4", f"{DISK}1")
    g.pvcreate(f"{DISK}2")
    g.vgcreate(LVM_VG, [f"{DISK}2"])
    g.lvcreate_free(LVM_LV, LVM_VG, 100)
    root = f"/dev/{LVM_VG}/{LVM_LV}"
    g.mkfs("xfs", root)
    boot_uuid = g.vfs_uuid(f"{DISK}1")
    fstab = (f"/dev/mapper/{LVM_VG}-{LVM_LV}\t/\txfs\tdefaults\t0 0\n"
             f"UUID={boot_uuid}\t/boot\text4\tdefaults\t1 2\n")
    return [(root, "/", ""), (f"{DISK}1", "/boot", "")], fstab


def _btrfs_subvol(g: Any) -> tuple[Mounts, str]:
    """MBR, one btrfs partition; the root in subvolume @, /home in @home."""
    g.part_init(DISK, "mbr")
    g.part_add(DISK, "p", 2048, -1)  # 1 MiB before it: room for grub's core.img with btrfs
    device = f"{DISK}1"
    g.mkfs_btrfs([device], label="root")
    g.mount(device, "/")
    g.btrfs_subvolume_create("/@")
    g.btrfs_subvolume_create("/@home")
    g.umount("/")
    uuid = g.vfs_uuid(device)
    fstab = (f"UUID={uuid}\t/\tbtrfs\tdefaults,subvol=@\t0 0\n"
             f"UUID={uuid}\t/home\tbtrfs\tdefaults,subvol=@home\t0 0\n")
    return [(device, "/", "subvol=@"), (device, "/home", "subvol=@home")], fstab


LAYOUTS: dict[str, Callable[[Any], tuple[Mounts, str]]] = {
    "gpt-bios-esp-ext4": _gpt_bios_esp_ext4,
    "boot-lvm-xfs": _boot_lvm_xfs,
    "btrfs-subvol": _btrfs_subvol,
}


def _configure(g: Any, fixture: Fixture, fstab: str) -> None:
    files = {**fixture.files, "/etc/fstab": fstab, GRUB_DEFAULTS: grub_defaults(fixture),
             "/etc/machine-id": fixture.machine_id and fixture.machine_id + "\n"}
    for path, text in files.items():
        g.mkdir_p(posixpath.dirname(path))
        if g.is_symlink(path):
            g.rm(path)
        g.write(path, text.encode())
        g.chmod(fixture.modes.get(path, 0o644), path)
    for link, target in fixture.symlinks.items():
        g.mkdir_p(posixpath.dirname(link))
        g.rm_f(link)
        g.ln_s(target, link)
    # Vendor images ship no host keys: cloud-init or a keygen unit makes each clone's own.
    for key in g.glob_expand("/etc/ssh/ssh_host_*"):
        g.rm(key)
    g.rm_f("/.dockerenv")


def _kernel_version(g: Any, fixture: Fixture) -> str:
    kernels = sorted(g.glob_expand("/boot/vmlinuz-*"))
    if len(kernels) != 1 or not g.glob_expand("/boot/initrd.img-*"):
        raise ImageBuildError(
            f"fixture {fixture.name}: expected one kernel and its initrd in /boot, found "
            f"{g.ls('/boot')}: see the build output (log level DEBUG)")
    return str(kernels[0]).removeprefix("/boot/vmlinuz-")


def _install_grub(g: Any, fixture: Fixture) -> None:
    """The guest's own grub-install and update-grub, run inside it by libguestfs."""
    log.info("fixture %s: installing grub", fixture.name)
    g.command(["grub-install", "--target=i386-pc", DISK])
    if fixture.layout == "gpt-bios-esp-ext4":
        g.command(["grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi",
                   "--removable", "--no-nvram", "--no-uefi-secure-boot"])
    g.command(["update-grub"])
