"""The base-image fixtures' recipes: vendor-image layouts rebuilt from Debian packages (pure).

Each fixture stands in for a kind of image users bring. It is a real guest: its packages
are Debian's, it boots through grub from its own disk under TCG, and it is shaped like the
image it stands for, never like the lab's own guest (no ifupdown, no lab hostname, no
``net.ifnames=0`` where the vendor keeps predictable NIC names).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: Bump when the build steps change in a way the recipe does not show.
FIXTURE_RECIPE_VERSION = 2

Layout = Literal["gpt-bios-esp-ext4", "boot-lvm-xfs", "btrfs-subvol"]

# GPT partition types (the UEFI spec's and the Discoverable Partitions Specification's).
GPT_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
GPT_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
GPT_LINUX_ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"

LVM_VG = "rhel"
LVM_LV = "root"
SELINUX_TYPE = "default"  # Debian's selinux-policy-default
FILE_CONTEXTS = f"/etc/selinux/{SELINUX_TYPE}/contexts/files/file_contexts"

BASE_PACKAGES = ("linux-image-cloud-amd64", "systemd-sysv", "openssh-server", "iproute2",
                 "iputils-ping")

# Like RHEL's sshd-keygen@.service: images ship no host keys, each clone makes its own.
SSH_KEYGEN_UNIT = """\
[Unit]
Description=Generate missing SSH host keys
Before=ssh.service
ConditionFileNotEmpty=|!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""
SSH_KEYGEN_PATH = "/etc/systemd/system/sshd-keygen.service"
KEYGEN_WANTS = "/etc/systemd/system/multi-user.target.wants/sshd-keygen.service"


@dataclass(frozen=True)
class Fixture:
    """One base image: what is installed, how the disk is laid out, how it boots.

    Attributes:
        name: the fixture's name (also its hostname).
        summary: one line for logs and reports.
        layout: the disk layout, built by the builder of the same name.
        packages: installed with apt (no recommends) on top of the Debian minbase rootfs.
        setup: shell run in the build container after the install (enable units, ...).
        cmdline: GRUB_CMDLINE_LINUX.
        files: absolute path -> text, written after the rootfs is unpacked.
        modes: absolute path -> mode for files that need one other than 0644.
        symlinks: link path -> target, made after the files.
        machine_id: the content of /etc/machine-id ("" = empty, made at first boot).
        selinux: label every file with the guest's own policy at build time.
        disk_size: the virtual size in bytes.
    """

    name: str
    summary: str
    layout: Layout
    packages: tuple[str, ...]
    setup: str
    cmdline: str
    files: Mapping[str, str] = field(default_factory=dict)
    modes: Mapping[str, int] = field(default_factory=dict)
    symlinks: Mapping[str, str] = field(default_factory=dict)
    machine_id: str = ""
    selinux: bool = False
    disk_size: int = 2 * 1024**3

    def recipe(self, base_digest: str) -> dict[str, Any]:
        """Everything that decides the image (hashed into its file name)."""
        return {
            "kind": "fixture-image",
            "version": FIXTURE_RECIPE_VERSION,
            "base": base_digest,
            "name": self.name,
            "layout": self.layout,
            "install": install_script(self),
            "cmdline": self.cmdline,
            "grub": grub_defaults(self),
            "files": dict(self.files),
            "modes": dict(self.modes),
            "symlinks": dict(self.symlinks),
            "machine_id": self.machine_id,
            "selinux": self.selinux,
            "disk_size": self.disk_size,
        }


def install_script(fixture: Fixture) -> str:
    """The build container's script: install the packages, run the fixture's setup."""
    return f"""\
set -eu
export DEBIAN_FRONTEND=noninteractive
# No service may start inside the build container.
printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d
apt-get update
INITRD=No apt-get install -y --no-install-recommends {" ".join(fixture.packages)}
{fixture.setup}
update-initramfs -c -k all
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
"""


def grub_defaults(fixture: Fixture) -> str:
    """/etc/default/grub.d/50-image.cfg: serial console, no menu delay, the command line."""
    return (
        "# Image defaults: a console on the first serial port, no boot menu delay.\n"
        "GRUB_TIMEOUT=0\n"
        "GRUB_TIMEOUT_STYLE=hidden\n"
        'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
        f'GRUB_CMDLINE_LINUX="{fixture.cmdline}"\n'
        'GRUB_TERMINAL="console serial"\n'
        'GRUB_SERIAL_COMMAND="serial --speed=115200"\n'
        "GRUB_DISABLE_OS_PROBER=true\n"
    )


def fixed_machine_id(name: str) -> str:
    """A machine-id baked into an image (32 hex digits), the same for every build."""
    return hashlib.sha256(f"macvtap-lab fixture {name}".encode()).hexdigest()[:32]


def hosts_file(hostname: str) -> str:
    return (f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")


# ---- the fixtures -------------------------------------------------------------------------

# Debian 13 / Ubuntu cloud images: netplan's default DHCP on every wired NIC, rendered by
# systemd-networkd; cloud-init writes its own 50-cloud-init.yaml when it runs.
NETPLAN_DEFAULT = """\
network:
  version: 2
  renderer: networkd
  ethernets:
    all-en:
      match:
        name: "en*"
      dhcp4: true
    all-eth:
      match:
        name: "eth*"
      dhcp4: true
"""

CLOUD_GPT = Fixture(
    name="cloud-gpt",
    summary="GPT (BIOS boot + ESP + ext4 root), grub, cloud-init, netplan -> systemd-networkd",
    layout="gpt-bios-esp-ext4",
    packages=(*BASE_PACKAGES, "cloud-init", "netplan.io", "systemd-resolved", "grub-pc",
              "grub-efi-amd64-bin", "dosfstools", "e2fsprogs"),
    setup="systemctl enable systemd-networkd.service systemd-resolved.service "
          "cloud-init-local.service cloud-init.service cloud-config.service "
          "cloud-final.service",
    cmdline="console=tty0 console=ttyS0,115200 consoleblank=0",
    files={
        "/etc/hostname": "localhost\n",
        "/etc/hosts": hosts_file("localhost"),
        "/etc/netplan/90-default.yaml": NETPLAN_DEFAULT,
        # What cloud-init writes when a datasource says ssh_pwauth: false (Ubuntu's images
        # ship it): it is read before sshd_config's own settings, so it wins over them.
        "/etc/ssh/sshd_config.d/50-cloud-init.conf": "PasswordAuthentication no\n",
    },
    modes={"/etc/netplan/90-default.yaml": 0o600},
    symlinks={"/etc/resolv.conf": "../run/systemd/resolve/stub-resolv.conf"},
)

NM_CONF = """\
[main]
plugins=keyfile
"""
SELINUX_CONFIG = f"""\
# This file controls the state of SELinux on the system.
SELINUX=enforcing
SELINUXTYPE={SELINUX_TYPE}
"""

RHEL_LIKE = Fixture(
    name="rhel-like",
    summary="ext4 /boot + LVM VG/LV holding an XFS root, NetworkManager keyfiles, SELinux "
            "enforcing, cloud-init, a baked-in machine-id",
    layout="boot-lvm-xfs",
    packages=(*BASE_PACKAGES, "lvm2", "xfsprogs", "network-manager", "selinux-policy-default",
              "selinux-utils", "policycoreutils", "grub-pc", "cloud-init", "e2fsprogs"),
    setup="systemctl enable NetworkManager.service cloud-init-local.service cloud-init.service cloud-config.service "
          "cloud-final.service",
    # RHEL's cloud images keep ethN names; Debian's kernel needs SELinux asked for.
    cmdline="console=tty0 console=ttyS0,115200n8 net.ifnames=0 selinux=1 security=selinux "
            "enforcing=1",
    files={
        "/etc/hostname": "localhost.localdomain\n",
        "/etc/hosts": "127.0.0.1   localhost localhost.localdomain localhost4\n"
                      "::1         localhost localhost.localdomain localhost6\n",
        "/etc/NetworkManager/NetworkManager.conf": NM_CONF,
        "/etc/selinux/config": SELINUX_CONFIG,
        SSH_KEYGEN_PATH: SSH_KEYGEN_UNIT,
    },
    symlinks={KEYGEN_WANTS: SSH_KEYGEN_PATH},
    machine_id=fixed_machine_id("rhel-like"),
    selinux=True,
    disk_size=3 * 1024**3,
)

NETWORKD_DHCP = """\
[Match]
Name=en* eth*

[Network]
DHCP=yes
"""

BTRFS = Fixture(
    name="btrfs",
    summary="MBR, btrfs root in subvolume @ (and @home), grub, systemd-networkd",
    layout="btrfs-subvol",
    packages=(*BASE_PACKAGES, "btrfs-progs", "grub-pc"),
    setup="systemctl enable systemd-networkd.service",
    cmdline="console=ttyS0,115200n8",
    files={
        "/etc/hostname": "btrfs\n",
        "/etc/hosts": hosts_file("btrfs"),
        "/etc/systemd/network/80-dhcp.network": NETWORKD_DHCP,
        "/etc/resolv.conf": "",
        SSH_KEYGEN_PATH: SSH_KEYGEN_UNIT,
    },
    symlinks={KEYGEN_WANTS: SSH_KEYGEN_PATH},
)

#: The fixtures built here; "default" (the lab's own guest) is built by the product.
FIXTURES: dict[str, Fixture] = {f.name: f for f in (CLOUD_GPT, RHEL_LIKE, BTRFS)}
ALL_NAMES = ("default", *FIXTURES)
