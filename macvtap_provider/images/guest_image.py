"""The default lab guest: a small bootable Debian bookworm qcow2 built offline.

Packages are installed in a throw-away container FROM the base image (so no chroot mounts
can leak); its filesystem is exported and laid onto a fresh disk in one libguestfs session,
which also writes the guest's configuration and installs extlinux.

The guest boots fast (README, "Benchmarks"): beside the disk the build leaves its kernel and
a small initramfs (busybox and the virtio drivers only) for direct kernel boot, and the
systemd configuration starts the network and sshd first, defers udev's coldplug until
they are up, and masks what does nothing in a lab guest. extlinux with Debian's own
initramfs still boots the disk for anyone who boots it the usual way.
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

from macvtap_provider.boot_record import INITRD_SUFFIX, KERNEL_SUFFIX, sidecar_path
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
from macvtap_provider.paths import cache_dir

log = logging.getLogger(__name__)

GUEST_RECIPE_VERSION = 2
GUEST_PACKAGES = (
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "openssh-server",
    "iproute2",
    "iputils-ping",
    "ifupdown",
)
#: Installed for the build only (the lab initramfs' shell and tools), then purged.
BUILD_PACKAGES = ("busybox-static",)
DISK_SIZE = 2 * 1024**3
ROOT_LABEL = "lab-root"
HOSTNAME = "lab-guest"
#: Both boot paths. `rw`: the root is mounted read-write at once (systemd-remount-fs is
#: masked); `quiet`: the kernel's log stays off the 115200-baud serial console.
KERNEL_CMDLINE = f"root=LABEL={ROOT_LABEL} rw console=ttyS0,115200n8 net.ifnames=0 quiet"
SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
HOSTKEYS_UNIT = "macvtap-lab-ssh-hostkeys.service"
#: The small initramfs for direct kernel boot (path in the guest) and what it loads: the
#: virtio disk for the root, the virtio NIC so that eth0 exists before ifupdown runs, and
#: the virtio RNG (the domain's host entropy) so that sshd's getrandom() never waits.
LAB_INITRD = "/boot/initrd.img-lab"
LAB_INITRD_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "virtio_rng")
#: Marks the throw-away build container (value: the build lock's name).
BUILD_LABEL = "org.macvtap-lab.guest-build"

# /init of the lab initramfs (busybox sh). Debian's initramfs runs udev and a dozen scripts
# (about 4 s under TCG); this one loads the modules listed in /modules, finds the root
# (root=LABEL=, UUID= or a device), mounts it as the command line says and starts init.
LAB_INIT = """\
#!/bin/busybox sh
# macvtap-lab initramfs: virtio drivers, the root filesystem, then the real init.
bb=/bin/busybox
$bb mount -t devtmpfs devtmpfs /dev
$bb mount -t proc proc /proc
for m in $($bb cat /modules); do $bb insmod "/lib/modules/$m"; done
root= mode=ro init=/sbin/init fstype=ext4
for arg in $($bb cat /proc/cmdline); do
  case "$arg" in
    root=*) root=${arg#root=} ;;
    rootfstype=*) fstype=${arg#rootfstype=} ;;
    init=*) init=${arg#init=} ;;
    rw) mode=rw ;;
    ro) mode=ro ;;
  esac
done
fail() {
  echo "macvtap-lab initramfs: $1; it knows virtio disks only: boot the disk itself" \
       "(MacvtapDomain boot: disk). Starting a shell." > /dev/console
  exec $bb sh
}
tries=0
while :; do
  case "$root" in
    LABEL=*|UUID=*) dev=$($bb findfs "$root" 2>/dev/null) ;;
    *) dev=$root ;;
  esac
  [ -n "$dev" ] && [ -b "$dev" ] && break
  tries=$((tries + 1))
  [ "$tries" -lt 1000 ] || fail "root device '$root' not found after 10 s"
  $bb usleep 10000
done
$bb mount -t "$fstype" -o "$mode" "$dev" /root || fail "mounting $dev failed"
$bb umount /proc
$bb mount --move /dev /root/dev
exec $bb switch_root /root "$init"
"""

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
INITRD=No apt-get install -y --no-install-recommends {" ".join(GUEST_PACKAGES)} \\
  {" ".join(BUILD_PACKAGES)}
ls /boot/initrd.img-* >/dev/null 2>&1 || update-initramfs -c -k all
# The lab initramfs: busybox, the modules in dependency order, /init; uncompressed (qemu
# loads it in one go, and nothing is left for a TCG guest to decompress).
kver=$(ls /lib/modules)
work=$(mktemp -d)
mkdir -p "$work/bin" "$work/dev" "$work/proc" "$work/root" "$work/lib/modules"
cp /bin/busybox "$work/bin/busybox"
mknod -m 600 "$work/dev/console" c 5 1
for m in {" ".join(LAB_INITRD_MODULES)}; do modprobe -S "$kver" --show-depends "$m"; done \\
  | awk '$1 == "insmod" && !seen[$2]++ {{print $2}}' > "$work/order"
while read -r ko; do cp "$ko" "$work/lib/modules/"; basename "$ko"; done \\
  < "$work/order" > "$work/modules"
rm "$work/order"
cat > "$work/init" <<'LAB_INIT_EOF'
{LAB_INIT}LAB_INIT_EOF
chmod 0755 "$work/init"
(cd "$work" && find . | sort | cpio -o -H newc -R 0:0 --quiet) > {LAB_INITRD}
rm -rf "$work"
apt-get purge -y {" ".join(BUILD_PACKAGES)}
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
# The lab writes keys into every clone, so this normally does nothing: its conditions skip
# it without a process, and it waits for nothing but the root filesystem.
HOSTKEYS_UNIT_TEXT = """\
[Unit]
Description=Generate missing SSH host keys (macvtap-lab)
DefaultDependencies=no
After=local-fs.target
Before=ssh.service shutdown.target
Conflicts=shutdown.target
ConditionPathExists=|!/etc/ssh/ssh_host_ed25519_key
ConditionPathExists=|!/etc/ssh/ssh_host_ecdsa_key
ConditionPathExists=|!/etc/ssh/ssh_host_rsa_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target ssh.service
"""

# ---- boot order: the network and sshd first --------------------------------------------
# Under TCG a 1-vCPU guest is CPU-bound from the kernel to the login prompt, so what runs
# beside the critical path (udev's coldplug of ~250 devices, for one) delays it as much as
# what runs on it. These start sshd once eth0 is up without waiting for sysinit.target,
# and let udev coldplug after sshd and the serial getty.
SSH_DROPIN = """\
# macvtap-lab: start once the network is up, not after sysinit.target (udev's coldplug);
# sshd binds the wildcard address and needs no device. No `sshd -t` on every boot.
[Unit]
DefaultDependencies=no
Conflicts=shutdown.target
Before=shutdown.target

[Service]
ExecStartPre=
"""
AFTER_SSH_DROPIN = """\
# macvtap-lab: start once sshd and the serial getty run. On one TCG vCPU whatever runs
# beside them delays them; nothing here is needed to log in (the initramfs already
# loaded the disk and NIC drivers; the kernel queues uevents until udevd reads them).
[Unit]
After=ssh.service serial-getty@ttyS0.service
"""
#: Units of sysinit.target that sshd and the getty do not need, started after them: udev
#: and its coldplug, tmpfiles (static device nodes, /tmp, utmp), the journal's move to
#: disk, module-backed device nodes, the utmp boot record.
AFTER_SSH_UNITS = (
    "systemd-udevd.service", "systemd-udev-trigger.service", "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service", "systemd-journal-flush.service",
    "kmod-static-nodes.service", "modprobe@.service", "systemd-update-utmp.service",
)
#: sshd serves its Ed25519 key only: loading the ECDSA and RSA keys costs a TCG guest's
#: sshd about 0.5 s at every start, and every client of the last ten years speaks
#: Ed25519. (CustomizedImage keeps making all three; `sshd_settings` can add HostKeys.)
SSHD_HOSTKEY_DROPIN = """\
# macvtap-lab: serve the Ed25519 host key only (fast sshd start under TCG).
HostKey /etc/ssh/ssh_host_ed25519_key
"""
# ifupdown-pre.service runs `udevadm settle` after udev's coldplug so that NICs have
# their drivers; ours come from the initramfs. This one settles only when an interface
# ifupdown should raise does not exist yet (when Debian's initramfs booted the disk, say).
IFUPDOWN_PRE_UNIT = """\
[Unit]
Description=Helper to synchronize boot up for ifupdown (macvtap-lab: settle only if needed)
DefaultDependencies=no
Before=network.target

[Service]
Type=oneshot
TimeoutSec=180
RemainAfterExit=yes
ExecStart=/usr/local/lib/macvtap-lab/ifupdown-pre
"""
IFUPDOWN_PRE_SCRIPT = """\
#!/bin/sh
# macvtap-lab: wait for udev only when an interface ifupdown raises at boot is missing.
[ -f /etc/default/networking ] && . /etc/default/networking
[ "${CONFIGURE_INTERFACES:-yes}" != no ] || exit 0
for iface in $(ifquery --read-environment --list --exclude=lo); do
  [ -e "/sys/class/net/$iface" ] || exec udevadm settle
done
"""
# Debian's serial-getty@.service binds to dev-ttyS0.device (known only after udev's
# coldplug) and waits for basic.target: the console login (`virsh console`, networkMethod
# console) would wait for all of it. The lab's serial port always exists.
SERIAL_GETTY_UNIT = """\
[Unit]
Description=Serial Getty on %I (macvtap-lab: early, without udev)
Documentation=man:agetty(8) man:systemd-getty-generator(8)
DefaultDependencies=no
After=local-fs.target
Before=getty.target shutdown.target rescue.service
Conflicts=shutdown.target rescue.service
IgnoreOnIsolate=yes

[Service]
ExecStart=-/sbin/agetty -o '-p -- \\\\u' --keep-baud 115200,57600,38400,9600 - $TERM
Type=simple
Restart=always
UtmpIdentifier=%I
StandardInput=tty
StandardOutput=tty
TTYPath=/dev/%I
TTYReset=yes
TTYVHangup=yes
IgnoreSIGPIPE=no
SendSIGHUP=yes

[Install]
WantedBy=getty.target
"""
#: Units that do nothing useful in a lab guest (gettys on virtual terminals it has no
#: screen for, periodic maintenance, debug file systems, users and seeds that the image
#: already has, a remount the kernel command line makes unnecessary). Masked.
MASKED_UNITS = (
    "getty-static.service", "getty@tty1.service",
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
    "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer",
    "dev-hugepages.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "sys-fs-fuse-connections.mount", "systemd-pstore.service",
    "systemd-sysusers.service", "systemd-random-seed.service", "systemd-remount-fs.service",
)
#: systemd generators for what a lab guest has not: encrypted, integrity or verity volumes,
#: GPT auto-mounts, hibernation, rc.local, SysV scripts (every one has a native unit),
#: offline updates. Each is a process run before systemd starts any unit. Masked.
MASKED_GENERATORS = (
    "systemd-cryptsetup-generator", "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator", "systemd-integritysetup-generator",
    "systemd-veritysetup-generator", "systemd-rc-local-generator",
    "systemd-system-update-generator", "systemd-sysv-generator",
)


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
        "/etc/systemd/system/ssh.service.d/macvtap-lab.conf": SSH_DROPIN,
        **{f"/etc/systemd/system/{unit}.d/macvtap-lab.conf": AFTER_SSH_DROPIN
           for unit in AFTER_SSH_UNITS},
        "/etc/ssh/sshd_config.d/macvtap-lab-hostkey.conf": SSHD_HOSTKEY_DROPIN,
        "/etc/systemd/system/ifupdown-pre.service": IFUPDOWN_PRE_UNIT,
        "/usr/local/lib/macvtap-lab/ifupdown-pre": IFUPDOWN_PRE_SCRIPT,
        "/etc/systemd/system/serial-getty@ttyS0.service": SERIAL_GETTY_UNIT,
    }


#: Files of guest_files() that are programs.
EXECUTABLES = frozenset({"/usr/local/lib/macvtap-lab/ifupdown-pre"})


def guest_recipe(base_digest: str) -> dict[str, Any]:
    """Everything that decides the guest image."""
    return {
        "kind": "guest-image",
        "version": GUEST_RECIPE_VERSION,
        "base": base_digest,
        "install": INSTALL_SCRIPT,
        "files": guest_files(),
        "masked": [*MASKED_UNITS, *MASKED_GENERATORS],
        "cmdline": KERNEL_CMDLINE,
        "extlinux": extlinux_conf("KERNEL", "INITRD"),
        "disk_size": DISK_SIZE,
        "label": ROOT_LABEL,
    }


def guest_digest() -> str:
    """The recipe hash of the default guest image on this host."""
    return recipe_hash(guest_recipe(base_image_digest()))


def default_image_path(digest: str | None = None) -> Path:
    """Where the default guest image of recipe `digest` (default: this host's) is cached.

    Keyed by the recipe, so that images of different recipes (library versions) coexist
    in one cache and labs made from either keep working.
    """
    return cache_dir() / "images" / f"debian-guest-{(digest or guest_digest())[:12]}.qcow2"


def boot_files(image: Path) -> tuple[Path, Path]:
    """The kernel and lab initramfs cached beside `image` for direct kernel boot."""
    return image.with_suffix(KERNEL_SUFFIX), image.with_suffix(INITRD_SUFFIX)


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
    digest = guest_digest()
    target = Path(path) if path is not None else default_image_path(digest)
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
            kernel = _make_disk(rootfs, raw, work)
            rootfs.unlink()
            for name, final in zip(("vmlinuz", "initrd"), boot_files(target), strict=True):
                os.replace(work / name, final)
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
    """The record of the build, written last: its presence says the image is complete."""
    vmlinuz, initrd = boot_files(target)
    record = {"recipe": digest, "kernel": kernel,
              "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              # read by images.boot: direct kernel boot of this image (names beside it)
              "boot": {"kernel": vmlinuz.name, "initrd": initrd.name, "cmdline": KERNEL_CMDLINE}}
    partial = work / "sidecar.json"
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, sidecar_path(target))


def _install_packages(base_tag: str, digest: str, lock: str, rootfs: Path) -> None:
    """apt-get install the guest packages in a throw-away container; export its files."""
    import docker.errors

    from macvtap_provider.adapters.docker_api import docker_client

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


def _make_disk(rootfs: Path, raw: Path, work: Path) -> str:
    """Partition, format and fill `raw` from `rootfs` in one libguestfs session; copy its
    kernel and lab initramfs out to `work`/vmlinuz and `work`/initrd; return the kernel
    version it boots."""
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
            g.download(kernel, str(work / "vmlinuz"))
            g.download(LAB_INITRD, str(work / "initrd"))
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
    for wanted in (initrd, LAB_INITRD):
        if not g.is_file(wanted):
            raise ImageBuildError(
                f"guest image: {wanted} is missing (an initramfs build failed in the build "
                "container): see the build output (log level DEBUG)")
    return kernels[0], initrd


def _configure(g: Any) -> None:
    """Turn the exported container filesystem into a bootable guest's configuration."""
    for path, text in guest_files().items():
        g.mkdir_p(path.rsplit("/", 1)[0])
        g.write(path, text.encode())
        g.chmod(0o755 if path in EXECUTABLES else 0o644, path)
    for unit in MASKED_UNITS:
        g.ln_sf("/dev/null", f"/etc/systemd/system/{unit}")
    g.mkdir_p("/etc/systemd/system-generators")
    for generator in MASKED_GENERATORS:
        g.ln_sf("/dev/null", f"/etc/systemd/system-generators/{generator}")
    # No graphical session in a lab guest.
    g.ln_sf("/lib/systemd/system/multi-user.target", "/etc/systemd/system/default.target")
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
