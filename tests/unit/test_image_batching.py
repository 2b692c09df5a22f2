"""Pure rules behind faster image customisation: launch groups and the fast root check."""

from __future__ import annotations

import pytest

from macvtap_provider.adapters.guestfs_api import fstab_mounts, writes_elsewhere
from macvtap_provider.builders.batching import split_batch

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("count", "slots", "groups"), [
    (1, 2, [[0]]),
    (4, 2, [[0, 2], [1, 3]]),
    (5, 2, [[0, 2, 4], [1, 3]]),
    (3, 8, [[0], [1], [2]]),
    (2, 0, [[0, 1]]),
])
def test_split_batch_deals_images_round_robin(count: int, slots: int,
                                              groups: list[list[int]]) -> None:
    assert split_batch(count, slots) == groups


def test_every_image_is_in_exactly_one_group() -> None:
    for count in range(1, 10):
        for slots in range(1, 5):
            flat = sorted(i for group in split_batch(count, slots) for i in group)
            assert flat == list(range(count))


def test_fstab_mounts_ignores_comments_swap_and_blank_lines() -> None:
    text = """\
# comment
LABEL=lab-root  /  ext4  errors=remount-ro  0  0
UUID=1234 /boot ext4 defaults 0 2   # trailing comment
/dev/sda2 none swap sw 0 0

tmpfs /tmp/ tmpfs defaults 0 0
"""
    assert fstab_mounts(text) == ["/", "/boot", "/tmp"]


@pytest.mark.parametrize(("points", "elsewhere"), [
    (["/"], False),
    (["/", "/boot", "/var", "/home"], False),
    (["/", "/etc"], True),
    (["/", "/root"], True),
    (["/", "/etc/ssh"], True),
    (["/", "/rootfs"], False),
])
def test_writes_elsewhere_only_for_etc_and_root(points: list[str], elsewhere: bool) -> None:
    assert writes_elsewhere(points) is elsewhere


# -- finding the root without inspection, on a fake libguestfs handle ---------------------------


class FakeGuestfs:
    """Just what `Appliance` calls: devices, partitions, filesystem types, and mountables
    that hold an OS (an /etc/fstab and /etc/shadow) once mounted at /."""

    def __init__(self, disks: dict[str, dict[str, str]], roots: set[str],
                 lvs: dict[str, str] | None = None,
                 subvols: dict[str, list[str]] | None = None) -> None:
        self.disks, self.roots = disks, roots
        self.lv_types = lvs or {}
        self.subvols = subvols or {}
        self.mounted: str | None = None

    def list_devices(self) -> list[str]:
        return list(self.disks)

    def list_partitions(self) -> list[str]:
        return [p for parts in self.disks.values() for p in parts]

    def part_to_dev(self, part: str) -> str:
        return next(d for d, parts in self.disks.items() if part in parts)

    def vfs_type(self, dev: str) -> str:
        for parts in self.disks.values():
            if dev in parts:
                return parts[dev]
        if dev in self.lv_types:
            return self.lv_types[dev]
        raise RuntimeError(f"{dev}: unknown")

    def lvs(self) -> list[str]:
        return list(self.lv_types)

    def mount_ro(self, dev: str, _point: str) -> None:
        self.mounted = dev

    mount = mount_ro

    def umount_all(self) -> None:
        self.mounted = None

    def btrfs_subvolume_list(self, _point: str) -> list[dict[str, str]]:
        return [{"btrfssubvolume_path": v} for v in self.subvols.get(str(self.mounted), [])]

    def is_file(self, _path: str) -> bool:
        return self.mounted in self.roots

    def read_file(self, _path: str) -> bytes:
        return b"UUID=x / ext4 defaults 0 1\nUUID=y /boot ext4 defaults 0 2\n"


def _root(g: FakeGuestfs, index: int = 0) -> str | None:
    from macvtap_provider.adapters.guestfs_api import Appliance

    appliance = Appliance(g, [f"img{i}" for i in range(len(g.disks))], readonly=False)  # type: ignore[arg-type]
    return appliance._find_root(index)


def test_gpt_root_is_the_ext4_partition_beside_bios_boot_and_esp() -> None:
    g = FakeGuestfs({"/dev/sda": {"/dev/sda1": "", "/dev/sda2": "vfat", "/dev/sda3": "ext4"}},
                    roots={"/dev/sda3"})
    assert _root(g) == "/dev/sda3"


def test_lvm_root_is_found_when_the_image_is_alone() -> None:
    g = FakeGuestfs({"/dev/sda": {"/dev/sda1": "ext4", "/dev/sda2": "LVM2_member"}},
                    roots={"/dev/rhel/root"}, lvs={"/dev/rhel/root": "xfs"})
    assert _root(g) == "/dev/rhel/root"


def test_btrfs_root_is_the_subvolume_holding_the_os() -> None:
    g = FakeGuestfs({"/dev/sda": {"/dev/sda1": "btrfs"}}, roots={"btrfsvol:/dev/sda1/@"},
                    subvols={"/dev/sda1": ["@", "@home"]})
    assert _root(g) == "btrfsvol:/dev/sda1/@"


def test_two_roots_leave_it_to_inspection() -> None:
    g = FakeGuestfs({"/dev/sda": {"/dev/sda1": "ext4", "/dev/sda2": "ext4"}},
                    roots={"/dev/sda1", "/dev/sda2"})
    assert _root(g) is None


@pytest.mark.parametrize("kind", ["LVM2_member", "btrfs"])
def test_lvm_or_btrfs_image_never_shares_an_appliance(kind: str) -> None:
    from macvtap_provider.adapters.guestfs_api import Appliance
    from macvtap_provider.errors import SharedApplianceError

    g = FakeGuestfs({"/dev/sda": {"/dev/sda1": "ext4"},
                     "/dev/sdb": {"/dev/sdb1": "ext4", "/dev/sdb2": kind}}, roots={"/dev/sda1"})
    appliance = Appliance(g, ["a.qcow2", "b.qcow2"], readonly=False)  # type: ignore[arg-type]
    with appliance.session(0):
        pass  # the plain image shares the appliance
    with pytest.raises(SharedApplianceError, match=r"b\.qcow2: has"), appliance.session(1):
        pass
    alone = Appliance(FakeGuestfs({"/dev/sda": {"/dev/sda1": kind}}, roots=set(),
                                  lvs={}), ["b.qcow2"], readonly=False)  # type: ignore[arg-type]
    assert alone._find_root(0) is None  # no error: alone, it may be inspected
