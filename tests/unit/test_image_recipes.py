"""Recipe keys, mirror parsing and the baked-in configuration of the image builders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from macvtap_provider.errors import ImageBuildError
from macvtap_provider.images import base, guest_image, libvirt_image

pytestmark = pytest.mark.unit

HOST_DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


# ---- mirror -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        pytest.param({"debian.sources": HOST_DEB822}, "http://deb.debian.org/debian",
                     id="deb822-host"),
        pytest.param({"sources.list": "deb http://ftp.de.debian.org/debian/ bookworm main\n"},
                     "http://ftp.de.debian.org/debian", id="one-line-trailing-slash"),
        pytest.param({"sources.list": "deb [arch=amd64 signed-by=/k.gpg] "
                                      "http://mirror.example/debian bookworm main contrib\n"},
                     "http://mirror.example/debian", id="one-line-options"),
        pytest.param({"sources.list": "# deb http://commented.example/debian bookworm main\n"
                                      "deb-src http://src.example/debian bookworm main\n"},
                     None, id="comment-and-deb-src-ignored"),
        pytest.param({"sources.list": "deb http://security.debian.org/debian-security "
                                      "bookworm-security main\n"},
                     None, id="security-only"),
        pytest.param({"sources.list": "deb cdrom:[Debian 12]/ bookworm main\n"},
                     None, id="cdrom-ignored"),
        pytest.param({"a.sources": "Types: deb\nURIs: http://off.example/debian\n"
                                   "Suites: bookworm\nEnabled: no\n"},
                     None, id="deb822-disabled"),
        pytest.param({"a.sources": "Types: deb-src deb\nURIs:\n http://cont.example/debian\n"
                                   "Suites: bookworm\n"},
                     "http://cont.example/debian", id="deb822-continuation-line"),
        pytest.param({"sources.list": "deb http://old.example/debian bullseye main\n",
                      "b.sources": "Types: deb\nURIs: http://new.example/debian\n"
                                   "Suites: bookworm\n"},
                     "http://new.example/debian", id="exact-suite-wins"),
        pytest.param({"sources.list": "deb http://old.example/debian trixie main\n"},
                     "http://old.example/debian", id="other-release-same-archive"),
        pytest.param({}, None, id="nothing"),
    ],
)
def test_parse_mirror(sources: dict[str, str], expected: str | None) -> None:
    assert base.parse_mirror(sources) == expected


def test_host_mirror_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(base.MIRROR_ENV, "http://local.example/debian/")
    assert base.host_mirror() == "http://local.example/debian"


def test_host_mirror_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(base.MIRROR_ENV, raising=False)
    monkeypatch.setattr(base, "APT_SOURCES", tmp_path / "missing.list")
    monkeypatch.setattr(base, "APT_SOURCES_DIR", tmp_path)
    (tmp_path / "x.sources.disabled").write_text(HOST_DEB822)  # apt ignores this name
    assert base.host_mirror() == base.FALLBACK_MIRROR


# ---- recipe keys --------------------------------------------------------------------------


def test_recipe_hash_ignores_key_order_and_sees_values() -> None:
    one = base.recipe_hash({"a": 1, "b": {"c": [1, 2]}})
    assert one == base.recipe_hash({"b": {"c": [1, 2]}, "a": 1})
    assert one != base.recipe_hash({"a": 1, "b": {"c": [2, 1]}})
    assert re.fullmatch(r"[0-9a-f]{64}", one)


def test_rootfs_key_depends_on_mirror_and_paths_follow_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("MACVTAP_LAB_CACHE", str(tmp_path))
    a, b = base.rootfs_digest("http://a.example/debian"), base.rootfs_digest("http://b/debian")
    assert a != b
    assert base.rootfs_path("http://a.example/debian") == (
        tmp_path / "rootfs" / f"debian-bookworm-minbase-{a[:12]}.tar")


def test_base_image_key_follows_rootfs() -> None:
    assert (base.recipe_hash(base.base_image_recipe("x"))
            != base.recipe_hash(base.base_image_recipe("y")))


def _context(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / name.replace("_", ".")).write_text(text)
    return tmp_path


def test_libvirt_key_covers_context_files_and_base(tmp_path: Path) -> None:
    ctx = _context(tmp_path, Dockerfile="FROM x\n", qemu_conf="a = 1\n", run_sh="exec x\n")
    (tmp_path / "notes.txt").write_text("not part of the image")
    files = libvirt_image.context_files(ctx)
    assert sorted(files) == ["Dockerfile", "qemu.conf", "run.sh"]
    key = base.recipe_hash(libvirt_image.libvirt_recipe("base:1", files))

    assert key != base.recipe_hash(libvirt_image.libvirt_recipe("base:2", files))
    (tmp_path / "qemu.conf").write_text("a = 2\n")
    changed = libvirt_image.context_files(ctx)
    assert key != base.recipe_hash(libvirt_image.libvirt_recipe("base:1", changed))
    assert libvirt_image.libvirt_tag(key) == f"macvtap-lab/libvirt:{key[:12]}"


def test_libvirt_context_without_dockerfile_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="no Dockerfile"):
        libvirt_image.context_files(_context(tmp_path, qemu_conf="a = 1\n"))


def test_guest_key_follows_base_image() -> None:
    assert (base.recipe_hash(guest_image.guest_recipe("x"))
            != base.recipe_hash(guest_image.guest_recipe("y")))


def test_sidecar_matches_only_with_image_and_same_recipe(tmp_path: Path) -> None:
    image = tmp_path / "guest.qcow2"
    sidecar = guest_image.sidecar_path(image)
    assert sidecar.name == "guest.qcow2.recipe.json"
    assert not guest_image.sidecar_matches(image, "abc")
    sidecar.write_text(json.dumps({"recipe": "abc"}))
    assert not guest_image.sidecar_matches(image, "abc"), "no image yet"
    image.write_bytes(b"qcow2")
    assert guest_image.sidecar_matches(image, "abc")
    assert not guest_image.sidecar_matches(image, "abd")
    sidecar.write_text("not json")
    assert not guest_image.sidecar_matches(image, "abc")
    sidecar.write_text("[]")
    assert not guest_image.sidecar_matches(image, "abc")


# ---- baked-in configuration ---------------------------------------------------------------


def _settings(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines()
             if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_qemu_conf_has_the_container_settings() -> None:
    settings = _settings(libvirt_image.context_files()["qemu.conf"])
    assert settings == {
        "cgroup_controllers": "[ ]",
        "user": '"root"',
        "group": '"root"',
        "dynamic_ownership": "0",
        "remember_owner": "0",
        "security_driver": '"none"',
        "stdio_handler": '"logd"',
    }


def test_libvirtd_conf_listens_on_no_network_socket() -> None:
    settings = _settings(libvirt_image.context_files()["libvirtd.conf"])
    assert settings["listen_tcp"] == "0"
    assert settings["listen_tls"] == "0"
    assert settings["unix_sock_rw_perms"] == '"0700"'


def test_dockerfile_uses_only_the_local_base_and_supervises_libvirtd() -> None:
    files = libvirt_image.context_files()
    froms = [line for line in files["Dockerfile"].splitlines() if line.startswith("FROM")]
    assert froms == ["FROM ${BASE}"]
    assert "autostart/default.xml" in files["Dockerfile"]
    lines = [line.strip() for line in files["entrypoint.sh"].splitlines()]
    assert lines.index("virtlogd --daemon") < lines.index("libvirtd-ctl start")
    assert "libvirtd-ctl.sh /usr/local/sbin/libvirtd-ctl" in files["Dockerfile"]
    for name in ("entrypoint.sh", "libvirtd-ctl.sh"):
        assert "--listen" not in files[name]


def test_guest_files_never_name_a_resolver() -> None:
    files = guest_image.guest_files()
    assert "nameserver" not in files["/etc/resolv.conf"]
    assert files["/etc/hostname"] == "lab-guest\n"
    assert f"LABEL={guest_image.ROOT_LABEL} " in files["/etc/fstab"]
    assert "source /etc/network/interfaces.d/*" in files["/etc/network/interfaces"]
    unit = files[f"/etc/systemd/system/{guest_image.HOSTKEYS_UNIT}"]
    assert "Before=ssh.service" in unit and "ssh-keygen -A" in unit


def test_install_script_installs_no_recommends_and_no_cloud_init() -> None:
    script = guest_image.INSTALL_SCRIPT
    assert "--no-install-recommends" in script
    assert "cloud-init" not in script
    assert all(package in script for package in guest_image.GUEST_PACKAGES)
    assert "rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d" in script


def test_extlinux_conf_boots_the_given_kernel_on_the_serial_console() -> None:
    text = guest_image.extlinux_conf("/boot/vmlinuz-6.1", "/boot/initrd.img-6.1")
    lines = [line.strip() for line in text.splitlines()]
    assert lines[1] == "SERIAL 0 115200", "SERIAL must come first"
    assert "LINUX /boot/vmlinuz-6.1" in lines
    assert "INITRD /boot/initrd.img-6.1" in lines
    append = next(line for line in lines if line.startswith("APPEND "))
    assert "root=LABEL=lab-root" in append
    assert "console=ttyS0,115200n8" in append and "net.ifnames=0" in append


# ---- the fast boot ----------------------------------------------------------------------------


def test_kernel_cmdline_is_quiet_and_mounts_the_root_read_write() -> None:
    words = guest_image.KERNEL_CMDLINE.split()
    # remount-fs is masked: the root must come up read-write from the kernel's mount.
    assert "rw" in words and "ro" not in words
    assert "systemd-remount-fs.service" in guest_image.MASKED_UNITS
    assert "quiet" in words and "console=ttyS0,115200n8" in words


def test_lab_initramfs_is_built_from_busybox_and_the_virtio_modules() -> None:
    script = guest_image.INSTALL_SCRIPT
    assert f"> {guest_image.LAB_INITRD}" in script
    assert "for m in virtio_pci virtio_blk virtio_net virtio_rng;" in script
    assert "cpio -o -H newc" in script
    # busybox is a build tool only: purged once the initramfs holds its copy.
    assert "apt-get purge -y busybox-static" in script
    assert script.index("apt-get purge") > script.index(guest_image.LAB_INITRD)
    # /init travels verbatim in a quoted here-document (no shell expansion in the build).
    assert "<<'LAB_INIT_EOF'\n" + guest_image.LAB_INIT + "LAB_INIT_EOF\n" in script


def test_lab_init_honours_the_command_line_and_explains_a_missing_root() -> None:
    init = guest_image.LAB_INIT
    assert init.startswith("#!/bin/busybox sh\n")
    for word in ("root=*)", "rootfstype=*)", "init=*)", "rw)", "ro)"):
        assert word in init
    assert "findfs" in init and "switch_root /root" in init
    assert "boot: disk" in init  # what to do when the disk is not virtio


def test_sshd_and_the_console_do_not_wait_for_udev() -> None:
    files = guest_image.guest_files()
    ssh = files["/etc/systemd/system/ssh.service.d/macvtap-lab.conf"]
    assert "DefaultDependencies=no" in ssh and "ExecStartPre=\n" in ssh
    assert "Conflicts=shutdown.target" in ssh
    for unit in ("systemd-udev-trigger.service", "systemd-udevd.service",
                 "systemd-tmpfiles-setup.service", "modprobe@.service"):
        dropin = files[f"/etc/systemd/system/{unit}.d/macvtap-lab.conf"]
        assert "After=ssh.service serial-getty@ttyS0.service" in dropin
    getty = files["/etc/systemd/system/serial-getty@ttyS0.service"]
    assert "BindsTo" not in getty and "Type=idle" not in getty
    assert "DefaultDependencies=no" in getty
    assert "After=local-fs.target\n" in getty  # not after tmpfiles: those wait for it
    assert "HostKey /etc/ssh/ssh_host_ed25519_key\n" in files[
        "/etc/ssh/sshd_config.d/macvtap-lab-hostkey.conf"]
    hostkeys = files[f"/etc/systemd/system/{guest_image.HOSTKEYS_UNIT}"]
    assert "DefaultDependencies=no" in hostkeys
    assert "ConditionPathExists=|!/etc/ssh/ssh_host_ed25519_key" in hostkeys


def test_ifupdown_pre_settles_only_for_a_missing_interface() -> None:
    files = guest_image.guest_files()
    unit = files["/etc/systemd/system/ifupdown-pre.service"]
    assert "After=systemd-udev-trigger" not in unit
    script_path = "/usr/local/lib/macvtap-lab/ifupdown-pre"
    assert f"ExecStart={script_path}" in unit
    assert script_path in guest_image.EXECUTABLES
    assert "exec udevadm settle" in files[script_path]


def test_masked_units_keep_what_a_lab_uses() -> None:
    masked = set(guest_image.MASKED_UNITS) | set(guest_image.MASKED_GENERATORS)
    for needed in ("ssh.service", "networking.service", "systemd-journald.service",
                   "serial-getty@ttyS0.service", "systemd-getty-generator",
                   "systemd-fstab-generator", "systemd-udevd.service"):
        assert needed not in masked
    recipe = guest_image.guest_recipe("x")
    assert recipe["masked"] == [*guest_image.MASKED_UNITS, *guest_image.MASKED_GENERATORS]


def test_default_image_path_is_keyed_by_the_recipe(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACVTAP_LAB_CACHE", str(tmp_path))
    a, b = guest_image.default_image_path("a" * 64), guest_image.default_image_path("b" * 64)
    assert a == tmp_path / "images" / f"debian-guest-{'a' * 12}.qcow2"
    assert a != b
    assert guest_image.boot_files(a) == (a.with_suffix(".vmlinuz"), a.with_suffix(".initrd"))


def test_the_default_image_path_loads_no_docker() -> None:
    # Every preview's CustomizedImage check asks for it: no docker client, no guestfs.
    import subprocess
    import sys

    code = ("import sys\nfrom macvtap_provider import paths\npaths.default_guest_image()\n"
            "heavy = [m for m in ('docker', 'guestfs', 'libvirt') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)
