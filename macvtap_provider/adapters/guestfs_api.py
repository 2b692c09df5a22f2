"""Thin adapter around the libguestfs Python bindings: one appliance launch per use.

Under TCG (no usable KVM) an appliance launch takes ~12 s and libguestfs' OS inspection
another ~10 s, so: several images share one launch (`open_images`), and the root
filesystem is found by mounting the few Linux filesystems of each image (btrfs
subvolumes and, for an image alone in its appliance, LVM logical volumes included) and
looking for /etc/fstab and /etc/shadow; full inspection (`inspect_os`) only runs when that
finds no single root, or the root's fstab mounts /etc or /root from elsewhere. An image
with LVM or btrfs volumes never shares an appliance (`SharedApplianceError`): clones of one base
carry the same UUIDs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import guestfs

from macvtap_provider.adapters.kvm import kvm_usable
from macvtap_provider.errors import GuestfsError, SharedApplianceError

log = logging.getLogger(__name__)

#: Filesystem types a Linux root can have (what `vfs_type` reports).
LINUX_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs"})
#: Directories the lab writes into: they must be on the root filesystem for the fast path.
WRITTEN_DIRS = ("/etc", "/root")


class GuestSession:
    """A mounted guest filesystem. Paths are guest paths."""

    def __init__(self, g: guestfs.GuestFS, image: str) -> None:
        self._g = g
        self.image = image

    @contextlib.contextmanager
    def _op(self, what: str) -> Iterator[None]:
        try:
            yield
        except RuntimeError as exc:
            raise GuestfsError(f"image {self.image}: {what}: {exc}") from exc

    def exists(self, path: str) -> bool:
        with self._op(f"checking {path}"):
            return bool(self._g.exists(path))

    def is_dir(self, path: str) -> bool:
        with self._op(f"checking {path}"):
            return bool(self._g.is_dir(path))

    def read(self, path: str) -> str:
        with self._op(f"reading {path}"):
            data = self._g.read_file(path)
        return data.decode(errors="replace") if isinstance(data, bytes) else str(data)

    def write(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        """Write a file (parents created), with `mode`; content is never logged."""
        log.debug("guestfs write %s (%d bytes, mode %o)", path, len(content), mode)
        parent = path.rsplit("/", 1)[0] or "/"
        with self._op(f"writing {path}"):
            self._g.mkdir_p(parent)
            self._g.write(path, content.encode() if isinstance(content, str) else content)
            self._g.chmod(mode, path)

    def remove(self, path: str) -> None:
        log.debug("guestfs rm -f %s", path)
        with self._op(f"removing {path}"):
            self._g.rm_f(path)

    def glob(self, pattern: str) -> list[str]:
        with self._op(f"listing {pattern}"):
            return list(self._g.glob_expand(pattern))

    def touch(self, path: str) -> None:
        with self._op(f"creating {path}"):
            self._g.touch(path)

    def is_symlink(self, path: str) -> bool:
        with self._op(f"checking {path}"):
            return bool(self._g.is_symlink(path))

    def rename(self, path: str, new: str) -> None:
        log.debug("guestfs mv %s %s", path, new)
        with self._op(f"renaming {path}"):
            self._g.mv(path, new)

    def truncate(self, path: str) -> None:
        """Empty a file, keeping its inode, mode and label."""
        log.debug("guestfs truncate %s", path)
        with self._op(f"emptying {path}"):
            self._g.truncate(path)

    def relabel(self, file_contexts: str, paths: Sequence[str]) -> str:
        """Give `paths` (recursively) the SELinux labels of the guest's policy.

        With libguestfs' own relabel when the appliance has setfiles, else with the
        guest's setfiles (run in the guest's root, as virt-customize once did). Returns
        how it was done; raises GuestfsError when neither is there.
        """
        with self._op("checking the appliance for SELinux relabelling"):
            own = bool(self._g.feature_available(["selinuxrelabel"]))
        if own:
            for path in paths:
                log.debug("guestfs selinux_relabel %s %s", file_contexts, path)
                with self._op(f"relabelling {path}"):
                    self._g.selinux_relabel(file_contexts, path, force=True)
            return "libguestfs"
        if not any(self.exists(p) for p in ("/usr/sbin/setfiles", "/sbin/setfiles")):
            raise GuestfsError(
                f"image {self.image}: has an SELinux policy but neither the libguestfs "
                "appliance nor the guest has setfiles: install policycoreutils in the image "
                "(or on this machine) so the files written can be labelled")
        cmd = ["setfiles", "-F", "-e", "/proc", "-e", "/sys", "-e", "/dev", file_contexts,
               *paths]
        log.debug("guestfs command %s", cmd)
        with self._op("relabelling with the guest's setfiles"):
            self._g.command(cmd)
        return "guest setfiles"


def fstab_mounts(text: str) -> list[str]:
    """The mount points an /etc/fstab declares (swap and comments left out)."""
    points = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[1].startswith("/"):
            points.append(fields[1].rstrip("/") or "/")
    return points


def writes_elsewhere(points: Sequence[str]) -> bool:
    """True when a declared mount holds (part of) a directory the lab writes into."""
    return any(p != "/" and any(d == p or d.startswith(p + "/") or p.startswith(d + "/")
                                for d in WRITTEN_DIRS)
               for p in points)


#: Filesystem types (`vfs_type`) whose volumes are found by UUID across all disks.
SHARED_UUID_TYPES = frozenset({"LVM2_member", "btrfs"})


class Appliance:
    """A launched libguestfs appliance with one drive per image (/dev/sda, /dev/sdb...)."""

    def __init__(self, g: guestfs.GuestFS, images: Sequence[str], readonly: bool) -> None:
        self._g = g
        self.images = list(images)
        self.readonly = readonly
        self._devices: list[str] = list(g.list_devices())
        self._inspected: list[str] | None = None

    def _partitions(self, index: int) -> list[str]:
        g, device = self._g, self._devices[index]
        return [p for p in g.list_partitions() if g.part_to_dev(p) == device] or [device]

    def _vfs_type(self, dev: str) -> str:
        try:
            return str(self._g.vfs_type(dev))
        except RuntimeError:
            return ""

    def _partition_kinds(self, index: int) -> dict[str, str]:
        """Drive `index`'s partitions (or the whole drive) and their filesystem types."""
        return {dev: self._vfs_type(dev) for dev in self._partitions(index)}

    def _candidates(self, index: int, kinds: dict[str, str]) -> list[str]:
        """Mountables that may hold drive `index`'s root: its Linux filesystems, each
        btrfs subvolume, and (alone in the appliance) its LVM logical volumes."""
        g = self._g
        out = []
        for dev, kind in kinds.items():
            if kind == "btrfs":
                try:
                    g.mount_ro(dev, "/")
                    subvols = [v["btrfssubvolume_path"] for v in g.btrfs_subvolume_list("/")]
                except RuntimeError:
                    subvols = []
                finally:
                    g.umount_all()
                out += [dev, *(f"btrfsvol:{dev}/{v}" for v in subvols)]
            elif kind in LINUX_FILESYSTEMS:
                out.append(dev)
        if len(self._devices) == 1:
            out += [lv for lv in g.lvs() if self._vfs_type(lv) in LINUX_FILESYSTEMS]
        return out

    def _find_root(self, index: int, kinds: dict[str, str] | None = None) -> str | None:
        """The root filesystem of drive `index` found without inspection, or None.
        `kinds`: its `_partition_kinds`, when the caller has them already."""
        g = self._g
        roots = []
        kinds = self._partition_kinds(index) if kinds is None else kinds
        for dev in self._candidates(index, kinds):
            try:
                g.mount_ro(dev, "/")
            except RuntimeError:
                continue
            try:
                if g.is_file("/etc/fstab") and g.is_file("/etc/shadow"):
                    fstab = g.read_file("/etc/fstab")
                    text = fstab.decode(errors="replace") if isinstance(fstab, bytes) else fstab
                    if writes_elsewhere(fstab_mounts(text)):
                        return None  # /etc or /root elsewhere: let inspection mount it all
                    roots.append(dev)
            finally:
                g.umount_all()
        return roots[0] if len(roots) == 1 else None

    def _inspect(self, index: int) -> dict[str, str]:
        """Mount points (path -> device) of drive `index`'s OS, by libguestfs inspection."""
        g = self._g
        if self._inspected is None:
            log.info("inspecting %s (no single root filesystem found directly)",
                     ", ".join(self.images))
            self._inspected = list(g.inspect_os())
        device = self._devices[index]
        for root in self._inspected:
            mounts: dict[str, str] = g.inspect_get_mountpoints(root)
            if len(self._devices) == 1 or self._on_device(root, device):
                return mounts
        raise GuestfsError(f"image {self.images[index]}: no operating system found in it; "
                           "is it a bootable Linux guest image?")

    def _on_device(self, fs: str, device: str) -> bool:
        try:
            return bool(self._g.part_to_dev(fs) == device)
        except RuntimeError:
            return fs == device

    @contextlib.contextmanager
    def session(self, index: int) -> Iterator[GuestSession]:
        """Image `index`'s filesystems mounted at / (unmounted afterwards).

        Raises:
            SharedApplianceError: The image has LVM or btrfs volumes and shares this appliance.
        """
        g, image = self._g, self.images[index]
        try:
            kinds = self._partition_kinds(index)
            shared = set(kinds.values()) & SHARED_UUID_TYPES
            if shared and len(self.images) > 1:
                raise SharedApplianceError(f"image {image}: has {', '.join(sorted(shared))} "
                                           "volumes: it is customised in its own appliance")
            root = self._find_root(index, kinds)
            mounts = {"/": root} if root is not None else self._inspect(index)
            for mountpoint in sorted(mounts, key=len):
                if self.readonly:
                    g.mount_ro(mounts[mountpoint], mountpoint)
                else:
                    g.mount(mounts[mountpoint], mountpoint)
        except RuntimeError as exc:
            raise GuestfsError(f"image {image}: mounting its filesystems failed ({exc}); is it "
                               "a bootable Linux guest image?") from exc
        try:
            yield GuestSession(g, image)
        finally:
            with contextlib.suppress(RuntimeError):
                g.umount_all()


@dataclass(frozen=True)
class Drive:
    """A disk attached to an appliance."""

    path: str
    format: str = "qcow2"
    readonly: bool = False


@contextlib.contextmanager
def launch(drives: Sequence[Drive] = (), scratch_bytes: int = 0,
           what: str = "") -> Iterator[guestfs.GuestFS]:
    """The one place a libguestfs appliance is launched: backend `direct`, TCG unless a
    KVM guest really boots here (/dev/kvm may exist yet hang: libguestfs must never probe
    it), `drives` attached in order (/dev/sda, /dev/sdb...), plus a scratch disk of
    `scratch_bytes` when non-zero. Yields the launched handle; shuts it down (writing
    changes back) when the block ends without an exception, and always closes it.

    Raises:
        GuestfsError: The appliance did not launch or did not write its changes back.
    """
    label = what or ", ".join(d.path for d in drives) or "a scratch disk"
    tcg = not kvm_usable()
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        try:
            g.set_backend("direct")
            if tcg:
                g.set_backend_settings(["force_tcg"])
            for drive in drives:
                g.add_drive_opts(drive.path, format=drive.format, readonly=drive.readonly)
            if scratch_bytes:
                g.add_drive_scratch(scratch_bytes)
            log.info("launching the libguestfs appliance for %s (%s)", label,
                     "TCG, ~12 s" if tcg else "KVM")
            started = time.monotonic()
            g.launch()
            log.debug("appliance up in %.1fs", time.monotonic() - started)
        except RuntimeError as exc:  # the bindings raise RuntimeError for every failure
            raise GuestfsError(
                f"{label}: libguestfs failed to launch ({exc}); run `macvtap-lab doctor` to "
                "check the appliance, and that no running domain holds the image") from exc
        yield g
        try:
            g.shutdown()
        except RuntimeError as exc:
            raise GuestfsError(f"{label}: writing changes back failed: {exc}") from exc
    finally:
        g.close()


@contextlib.contextmanager
def open_images(images: Sequence[str], fmt: str = "qcow2",
                readonly: bool = False) -> Iterator[Appliance]:
    """Launch one appliance with every image attached; yields it for `session(i)` calls.

    Changes are written back when the block ends without an exception.
    """
    drives = [Drive(image, fmt, readonly) for image in images]
    with launch(drives, what=f"image {', '.join(images)}") as g:
        try:
            appliance = Appliance(g, images, readonly)
        except RuntimeError as exc:
            raise GuestfsError(f"image {', '.join(images)}: listing its devices failed: "
                               f"{exc}") from exc
        yield appliance
