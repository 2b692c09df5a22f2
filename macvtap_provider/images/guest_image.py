"""The default lab guest: a small bootable Debian bookworm qcow2 built offline.

Packages are installed in a throw-away container FROM the base image (so no chroot mounts
can leak); its filesystem is exported and laid onto a fresh disk in one libguestfs session,
which also writes the guest's configuration and installs extlinux.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import docker.errors

from macvtap_provider.adapters.docker_api import docker_client
from macvtap_provider.errors import GuestfsError, ImageBuildError
from macvtap_provider.images.base import (
    RECIPE_LABEL,
    base_image_digest,
    build_lock,
    ensure_base_image,
    recipe_hash,
    remove_tree,
    run_logged,
)
from macvtap_provider.paths import default_guest_image

log = logging.getLogger(__name__)

GUEST_RECIPE_VERSION = 1
GUEST_PACKAGES = (
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "openssh-server",
    "iproute2",
    "iputils-ping",
    "ifupdown",
)
DISK_SIZE = 2 * 1024**3
ROOT_LABEL = "lab-root"
HOSTNAME = "lab-guest"
KERNEL_CMDLINE = f"root=LABEL={ROOT_LABEL} ro console=ttyS0,115200n8 net.ifnames=0"
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
SIDECAR_SUFFIX = ".recipe.json"
HOSTKEYS_UNIT = "macvtap-lab-ssh-hostkeys.service"
#: Marks the throw-away build container (value: the build lock's name).
BUILD_LABEL = "org.macvtap-lab.guest-build"

# Runs as the throw-away container's command; stdout/stderr go to the build log.
INSTALL_SCRIPT = f"""\
set -eu
export DEBIAN_FRONTEND=noninteractive
# No service may start inside the build container.
printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d
apt-get update
# INITRD=No: the kernel's own hook skips the initramfs, and initramfs-tools' trigger then
# builds it once at the end of the run instead of twice.
INITRD=No apt-get install -y --no-install-recommends {" ".join(GUEST_PACKAGES)}
ls /boot/initrd.img-* >/dev/null 2>&1 || update-initramfs -c -k all
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
"""

FSTAB = f"""\
# macvtap-lab guest: one ext4 partition, found by its label. No fsck pass: the image has
# no e2fsprogs; the kernel replays the ext4 journal after an unclean stop.
LABEL={ROOT_LABEL}  /  ext4  errors=remount-ro  0  0
"""
HOSTS = f"""\
127.0.0.1\tlocalhost
127.0.1.1\t{HOSTNAME}
::1\tlocalhost ip6-localhost ip6-loopback
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""
# Never a public resolver: the lab writes its own gateway here when it customises a clone.
RESOLV_CONF = "# macvtap-lab: no resolver configured; the lab sets one per guest.\n"
INTERFACES = """\
# macvtap-lab guest: the lab writes one file per interface to /etc/network/interfaces.d/.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback
"""
# ssh.service refuses to start without host keys; each clone makes its own at first boot.
# `ssh-keygen -A` only creates the key types that are missing.
HOSTKEYS_UNIT_TEXT = """\
[Unit]
Description=Generate missing SSH host keys (macvtap-lab)
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target ssh.service
"""


def extlinux_conf(kernel: str, initrd: str, cmdline: str = KERNEL_CMDLINE) -> str:
    """extlinux.conf booting `kernel` + `initrd` (paths on the root partition) at once."""
    return (
        "# macvtap-lab guest: boot straight into Debian; consoles on the first serial port.\n"
        "SERIAL 0 115200\n"
        "DEFAULT debian\n"
        "PROMPT 0\n"
        "TIMEOUT 0\n"
        "LABEL debian\n"
        f"  LINUX {kernel}\n"
        f"  INITRD {initrd}\n"
        f"  APPEND {cmdline}\n"
    )


def guest_files() -> dict[str, str]:
    """Files written into the guest (absolute path -> text)."""
    return {
        "/etc/hostname": f"{HOSTNAME}\n",
        "/etc/hosts": HOSTS,
        "/etc/resolv.conf": RESOLV_CONF,
        "/etc/fstab": FSTAB,
        "/etc/network/interfaces": INTERFACES,
        f"/etc/systemd/system/{HOSTKEYS_UNIT}": HOSTKEYS_UNIT_TEXT,
    }


def guest_recipe(base_digest: str) -> dict[str, Any]:
    """Everything that decides the guest image."""
    return {
        "kind": "guest-image",
        "version": GUEST_RECIPE_VERSION,
        "base": base_digest,
        "install": INSTALL_SCRIPT,
        "files": guest_files(),
        "cmdline": KERNEL_CMDLINE,
        "extlinux": extlinux_conf("KERNEL", "INITRD"),
        "disk_size": DISK_SIZE,
        "label": ROOT_LABEL,
    }


def sidecar_path(image: Path) -> Path:
    """The file next to the image that records which recipe built it."""
    return image.with_name(image.name + SIDECAR_SUFFIX)


def sidecar_matches(image: Path, digest: str) -> bool:
    """True when `image` exists and its sidecar names recipe `digest`."""
    try:
        recorded = json.loads(sidecar_path(image).read_text()).get("recipe")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == digest and image.is_file()


def ensure_guest_image(path: Path | None = None, force: bool = False) -> Path:
    """Build the default lab guest disk when it is missing or its recipe changed.

    Debian bookworm with the cloud kernel, systemd, openssh-server, iproute2, ping and
    ifupdown; no cloud-init. Hostname lab-guest, root locked, no resolver, only `lo`
    configured (plus whatever the lab puts in /etc/network/interfaces.d/), no SSH host keys
    (a oneshot unit makes them at first boot), serial console on ttyS0 and NICs named ethN.
    2 GiB virtual, MBR + one ext4 partition labelled lab-root, extlinux.

    Args:
        path: where to put the qcow2 (default: paths.default_guest_image()).
        force: rebuild even when the sidecar says the image is current (the rootfs and
            base image are reused).

    Returns:
        The path of the qcow2 image.

    Raises:
        ImageBuildError: a build step failed; the message says which and what to do.
    """
    target = Path(path) if path is not None else default_guest_image()
    digest = recipe_hash(guest_recipe(base_image_digest()))
    if not force and sidecar_matches(target, digest):
        log.debug("guest image %s is current", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = "guest-image-" + hashlib.sha256(str(target.resolve()).encode()).hexdigest()[:12]
    with build_lock(lock):
        if not force and sidecar_matches(target, digest):
            return target
        for stale in target.parent.glob(f".work-{target.name}-*"):
            log.info("removing %s left by an interrupted build", stale)
            remove_tree(stale)
        started = time.monotonic()
        log.info("building guest image %s (one to two minutes)", target)
        base_tag = ensure_base_image()
        work = Path(tempfile.mkdtemp(prefix=f".work-{target.name}-", dir=target.parent))
        try:
            rootfs = work / "rootfs.tar"
            _install_packages(base_tag, digest, lock, rootfs)
            raw = work / "disk.raw"
            kernel = _make_disk(rootfs, raw)
            rootfs.unlink()
            partial = work / target.name
            log.info("compressing the guest disk to qcow2")
            run_logged(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw),
                        str(partial)],
                       f"guest image {target}: qemu-img convert",
                       f"check free space under {target.parent}")
            os.replace(partial, target)
            _write_sidecar(target, digest, kernel, work)
        finally:
            remove_tree(work)
        log.info("guest image %s ready (%.0f MB, %.0f s)", target,
                 target.stat().st_size / 1e6, time.monotonic() - started)
    return target


def _write_sidecar(target: Path, digest: str, kernel: str, work: Path) -> None:
    record = {"recipe": digest, "kernel": kernel,
              "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    partial = work / "sidecar.json"
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, sidecar_path(target))


def _install_packages(base_tag: str, digest: str, lock: str, rootfs: Path) -> None:
    """apt-get install the guest packages in a throw-away container; export its files."""
    log.info("installing %s in a build container FROM %s", ", ".join(GUEST_PACKAGES), base_tag)
    tail: deque[str] = deque(maxlen=15)
    with docker_client() as client:
        try:
            # We hold the lock: a container with our label was left by a killed build.
            leftovers = client.containers.list(
                all=True, filters={"label": [f"{BUILD_LABEL}={lock}"]})
            for stale in leftovers:
                log.info("removing build container %s left by an interrupted build", stale.name)
                stale.remove(force=True)
            container = client.containers.create(
                base_tag, command=["/bin/sh", "-c", INSTALL_SCRIPT],
                labels={RECIPE_LABEL: digest, BUILD_LABEL: lock})
        except docker.errors.DockerException as exc:
            raise ImageBuildError(
                f"guest image: cannot create the build container from {base_tag} ({exc}): "
                "check dockerd") from exc
        try:
            container.start()
            for chunk in container.logs(stream=True, follow=True):
                for line in chunk.decode(errors="replace").splitlines():
                    log.debug("guest build: %s", line)
                    tail.append(line)
            status = container.wait().get("StatusCode", -1)
            if status != 0:
                output = "\n  ".join(tail)
                raise ImageBuildError(
                    f"guest image: apt-get install in the build container exited with "
                    f"{status}: check that the Debian mirror is reachable from containers; "
                    f"output:\n  {output}")
            with open(rootfs, "wb") as out:
                # types-docker says str; the SDK yields bytes chunks.
                for data in cast("Iterator[bytes]", container.export()):
                    out.write(data)
        except docker.errors.DockerException as exc:
            raise ImageBuildError(
                f"guest image: the build container failed ({exc}): check dockerd and free "
                f"space under {rootfs.parent}") from exc
        finally:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)


def _make_disk(rootfs: Path, raw: Path) -> str:
    """Partition, format and fill `raw` from `rootfs` in one libguestfs session; return the
    kernel version it boots."""
    from macvtap_provider.adapters import guestfs_api  # needs Debian's python3-guestfs

    if not SYSLINUX_MBR.is_file():
        raise ImageBuildError(
            f"guest image: {SYSLINUX_MBR} is missing: apt-get install syslinux-common extlinux")
    with open(raw, "wb") as disk:
        disk.truncate(DISK_SIZE)
    try:
        with guestfs_api.launch([guestfs_api.Drive(str(raw), "raw")],
                                what=f"guest image {raw.name}") as g:
            log.debug("guestfs: partitioning")
            g.part_disk("/dev/sda", "mbr")
            g.part_set_bootable("/dev/sda", 1, True)
            g.mkfs("ext4", "/dev/sda1", label=ROOT_LABEL)
            g.mount("/dev/sda1", "/")
            log.debug("guestfs: unpacking the guest filesystem")
            g.tar_in(str(rootfs), "/", xattrs=True)
            kernel, initrd = _kernel_and_initrd(g)
            _configure(g)
            g.mkdir_p("/boot/extlinux")
            g.write("/boot/extlinux/extlinux.conf", extlinux_conf(kernel, initrd).encode())
            log.debug("guestfs: installing extlinux")
            g.extlinux("/boot/extlinux")
            g.umount_all()
            # syslinux's MBR code (440 bytes) leaves the partition table behind it alone.
            g.pwrite_device("/dev/sda", SYSLINUX_MBR.read_bytes(), 0)
    except (RuntimeError, GuestfsError) as exc:  # the bindings raise RuntimeError
        raise ImageBuildError(
            f"guest image: libguestfs failed while building {raw.name}: {exc}: run "
            "`libguestfs-test-tool` (with LIBGUESTFS_BACKEND=direct, and "
            "LIBGUESTFS_BACKEND_SETTINGS=force_tcg when KVM is unusable) to diagnose") from exc
    return kernel.removeprefix("/boot/vmlinuz-")


def _kernel_and_initrd(g: Any) -> tuple[str, str]:
    kernels = sorted(g.glob_expand("/boot/vmlinuz-*"))
    if len(kernels) != 1:
        raise ImageBuildError(
            f"guest image: expected one kernel in /boot, found {kernels or 'none'}: check the "
            "linux-image-cloud-amd64 install in the build output (log level DEBUG)")
    version = kernels[0].removeprefix("/boot/vmlinuz-")
    initrd = f"/boot/initrd.img-{version}"
    if not g.is_file(initrd):
        raise ImageBuildError(
            f"guest image: {initrd} is missing (update-initramfs failed in the build "
            "container): see the build output (log level DEBUG)")
    return kernels[0], initrd


def _configure(g: Any) -> None:
    """Turn the exported container filesystem into a bootable guest's configuration."""
    for path, text in guest_files().items():
        g.write(path, text.encode())
    g.rm_f("/.dockerenv")
    for key in g.glob_expand("/etc/ssh/ssh_host_*"):
        g.rm(key)
    # Empty: systemd makes a fresh machine-id at each clone's first boot.
    g.truncate("/etc/machine-id")
    unit = f"/etc/systemd/system/{HOSTKEYS_UNIT}"
    for wants in ("multi-user.target.wants", "ssh.service.wants"):
        g.mkdir_p(f"/etc/systemd/system/{wants}")
        g.ln_sf(unit, f"/etc/systemd/system/{wants}/{HOSTKEYS_UNIT}")
    if g.exists("/usr/sbin/policy-rc.d"):
        g.rm("/usr/sbin/policy-rc.d")
