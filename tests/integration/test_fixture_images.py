"""The base-image fixtures: each is laid out like the image it stands for, and boots.

Built by tests/images (cached by recipe hash, like the default guest); booted under plain
qemu with TCG to the serial login prompt and sshd. The timings are printed (`-s`) and kept
as test properties (`--junitxml`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from macvtap_provider.adapters.kvm import kvm_usable
from tests.conftest import require
from tests.images import FIXTURES, build_record, ensure_fixture
from tests.images.qemu_boot import boot, nocloud_seed
from tests.images.recipes import FILE_CONTEXTS, GPT_BIOS_BOOT, GPT_ESP, LVM_LV, LVM_VG

pytestmark = [pytest.mark.guestfs, pytest.mark.docker]

# Firmware + grub end at the kernel's banner; then the initramfs, then systemd.
MILESTONES = ("Linux version", "Run /init", r"systemd\[1\]")


@functools.cache
def built(name: str) -> Path:
    return ensure_fixture(name)


@pytest.fixture(params=list(FIXTURES))
def fixture_name(request: pytest.FixtureRequest) -> str:
    require("docker", "guestfs", "qemu")
    name: str = request.param
    return name


@pytest.fixture
def inspect(fixture_name: str) -> Iterator[Any]:
    """A read-only libguestfs handle on the fixture, its filesystems mounted."""
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend("direct")
    if not kvm_usable():
        g.set_backend_setting("force_tcg", "1")
    g.add_drive_opts(str(built(fixture_name)), format="qcow2", readonly=True)
    g.launch()
    try:
        yield g
    finally:
        g.close()


def _mount(g: Any, device: str, point: str, options: str = "") -> None:
    g.mount_options(options or "ro", device, point)


def test_fixture_is_cached_by_recipe_and_records_its_build(fixture_name: str) -> None:
    path = built(fixture_name)
    record = build_record(fixture_name)

    assert path.name.startswith(f"{fixture_name}-") and record["recipe"][:12] in path.name
    assert ensure_fixture(fixture_name) == path  # warm: nothing rebuilt
    print(f"\n{fixture_name}: built in {record['seconds']} s, "
          f"{path.stat().st_size / 1e6:.0f} MB")


@pytest.mark.parametrize("fixture_name", ["cloud-gpt"], indirect=True)
def test_cloud_gpt_is_gpt_with_bios_boot_esp_and_ext4_root_and_cloud_init(inspect: Any) -> None:
    g = inspect
    assert g.part_get_parttype("/dev/sda") == "gpt"
    types = [g.part_get_gpt_type("/dev/sda", n) for n in (1, 2, 3)]
    assert types[:2] == [GPT_BIOS_BOOT, GPT_ESP]
    assert [g.vfs_type(f"/dev/sda{n}") for n in (2, 3)] == ["vfat", "ext4"]
    _mount(g, "/dev/sda3", "/")
    _mount(g, "/dev/sda2", "/boot/efi")
    assert g.is_file("/boot/grub/i386-pc/core.img") and g.is_file("/boot/grub/grub.cfg")
    assert g.is_file("/boot/efi/EFI/BOOT/BOOTX64.EFI")
    assert g.cat("/etc/ssh/sshd_config.d/50-cloud-init.conf") == "PasswordAuthentication no\n"
    assert "renderer: networkd" in g.cat("/etc/netplan/90-default.yaml")
    assert g.is_symlink("/etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
    assert g.exists("/etc/systemd/system/cloud-init.target.wants/cloud-init.service")
    assert not g.exists("/etc/cloud/cloud-init.disabled")
    assert g.readlink("/etc/resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
    assert not g.exists("/etc/network/interfaces")  # no ifupdown
    assert g.cat("/etc/machine-id") == ""


@pytest.mark.parametrize("fixture_name", ["rhel-like"], indirect=True)
def test_rhel_like_has_boot_lvm_xfs_networkmanager_and_selinux_labels(inspect: Any) -> None:
    g = inspect
    assert g.part_get_parttype("/dev/sda") == "msdos"
    assert g.vfs_type("/dev/sda1") == "ext4"
    assert g.vgs() == [LVM_VG] and g.lvs() == [f"/dev/{LVM_VG}/{LVM_LV}"]
    assert g.vfs_type(f"/dev/{LVM_VG}/{LVM_LV}") == "xfs"
    _mount(g, f"/dev/{LVM_VG}/{LVM_LV}", "/")
    _mount(g, "/dev/sda1", "/boot")
    grub_cfg = g.cat("/boot/grub/grub.cfg")
    assert f"root=/dev/mapper/{LVM_VG}-{LVM_LV}" in grub_cfg
    assert "selinux=1 security=selinux enforcing=1" in grub_cfg
    assert "SELINUX=enforcing" in g.cat("/etc/selinux/config").splitlines()
    assert g.is_file(FILE_CONTEXTS)
    labels = {path: g.lgetxattr(path, "security.selinux").rstrip(b"\0").decode()
              for path in ("/etc/shadow", "/usr/sbin/sshd", "/etc/ssh/sshd_config", "/boot")}
    assert labels == {"/etc/shadow": "system_u:object_r:shadow_t:s0",
                      "/usr/sbin/sshd": "system_u:object_r:sshd_exec_t:s0",
                      "/etc/ssh/sshd_config": "system_u:object_r:etc_t:s0",
                      "/boot": "system_u:object_r:boot_t:s0"}
    assert g.cat("/etc/NetworkManager/NetworkManager.conf").split() == ["[main]",
                                                                        "plugins=keyfile"]
    wants = "/etc/systemd/system/multi-user.target.wants"
    assert g.is_symlink(f"{wants}/NetworkManager.service")
    assert not g.exists(f"{wants}/systemd-networkd.service")
    assert not g.exists("/etc/network/interfaces")
    assert g.exists("/etc/systemd/system/cloud-init.target.wants/cloud-init.service")
    machine_id = g.cat("/etc/machine-id").strip()
    assert len(machine_id) == 32 and int(machine_id, 16)


@pytest.mark.parametrize("fixture_name", ["btrfs"], indirect=True)
def test_btrfs_has_its_root_in_subvolume_at_and_systemd_networkd(inspect: Any) -> None:
    g = inspect
    assert g.vfs_type("/dev/sda1") == "btrfs"
    _mount(g, "/dev/sda1", "/")
    assert {v["btrfssubvolume_path"] for v in g.btrfs_subvolume_list("/")} == {"@", "@home"}
    assert not g.exists("/etc/fstab")  # the top level holds only the subvolumes
    g.umount("/")
    _mount(g, "/dev/sda1", "/", "ro,subvol=@")
    fstab = g.cat("/etc/fstab")
    assert "\t/\tbtrfs\tdefaults,subvol=@\t" in fstab
    assert "rootflags=subvol=@" in g.cat("/boot/grub/grub.cfg")
    assert g.is_symlink("/etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
    assert "DHCP=yes" in g.cat("/etc/systemd/network/80-dhcp.network")
    assert not g.exists("/etc/network/interfaces")


@pytest.mark.slow
def test_fixture_boots_to_login_and_sshd(fixture_name: str, tmp_path: Path,
                                         record_property: Any) -> None:
    image = built(fixture_name)
    # cloud-gpt's cloud-init makes the host keys and sets the hostname (the image's own is
    # localhost) from its stock NoCloud datasource.
    seed = nocloud_seed(tmp_path / "seed", fixture_name) if fixture_name == "cloud-gpt" else None

    result = boot(image, seed=seed, milestones=MILESTONES)

    tail = result.console[-3000:]
    assert result.login_s is not None, f"{fixture_name}: no login prompt; console:\n{tail}"
    assert result.ssh_s is not None, f"{fixture_name}: sshd never answered; console:\n{tail}"
    if fixture_name == "rhel-like":
        assert "enforcing=1" in result.console
        assert "Successfully loaded SELinux policy" in result.console, tail
    if fixture_name == "cloud-gpt":
        assert "cloud-gpt login:" in result.console, tail
    for key, value in {**result.milestones, "login": result.login_s,
                       "ssh": result.ssh_s}.items():
        record_property(f"boot_{key}_s", value)
    print(f"\n{fixture_name}: {result.milestones} login {result.login_s} s, "
          f"ssh {result.ssh_s} s")
