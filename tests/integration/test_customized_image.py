"""CustomizedImageProvider for real: images (an overlay, a copy) customised with libguestfs.

The images are inspected with libguestfs read-only, and the base they were made from is
proven untouched. A throw-away copy of the guest image with an /etc/cloud directory is the
base, so the cloud-init marker is tested too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from macvtap_provider import paths
from macvtap_provider.adapters import guestfs_api, qemu_img
from macvtap_provider.builders.guest_config import BEGIN_MARK, END_MARK
from macvtap_provider.errors import GuestfsError
from macvtap_provider.images.guest_image import ensure_guest_image
from macvtap_provider.resources.customized_image import (
    CustomizedImageProvider,
    base_link_path,
    marker_path,
)
from tests.integration.conftest import Lab, Made, file_identity, lab_for, openssl_sha512_crypt

pytestmark = [pytest.mark.guestfs, pytest.mark.slow]

SUBNET = "10.213.106.0/24"  # only addresses written into the images; no network is made
NAMESERVER = "10.213.106.1"
PASSWORD = f"img pw ${secrets.token_hex(4)}!"
WORK = paths.work_root()


@dataclass
class Files:
    root: Path
    base: Path
    out: Path


@dataclass
class Inspected:
    """What libguestfs (read-only) finds in a customised image."""

    files: dict[str, str | None]
    host_keys: dict[str, str]
    modes: dict[str, int]
    cloud_disabled: bool


READ = ("/etc/shadow", "/etc/ssh/sshd_config", "/etc/resolv.conf", "/etc/hostname",
        "/etc/hosts", "/etc/network/interfaces.d/eth0", "/root/.ssh/authorized_keys")


@contextlib.contextmanager
def open_image(image: str, readonly: bool = False) -> Iterator[guestfs_api.GuestSession]:
    """One image's filesystems mounted in its own appliance (test helper)."""
    with guestfs_api.open_images([image], readonly=readonly) as appliance, \
            appliance.session(0) as session:
        yield session


def inspect(path: Path) -> Inspected:
    with open_image(str(path), readonly=True) as session:
        files = {p: session.read(p) if session.exists(p) else None for p in READ}
        keys = session.glob("/etc/ssh/ssh_host_*")
        host_keys = {k: session.read(k) for k in keys if k.endswith(".pub")}
        g = session._g  # the session offers no stat; file modes matter to sshd
        modes = {p: g.statns(p)["st_mode"] & 0o7777
                 for p in [*keys, "/etc/shadow"]}
        cloud = session.exists("/etc/cloud/cloud-init.disabled")
    return Inspected(files, host_keys, modes, cloud)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    root: Path | None = None
    try:
        with lab_for("img", SUBNET, "guestfs", "qemu") as lab:
            root = WORK / lab.name("files")
            yield lab
        # Every image is deleted by now: its output directory went with the last one.
        assert not (root / "out").exists(), sorted(os.listdir(root / "out"))
    finally:
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def files(lab: Lab) -> Files:
    """A throw-away copy of the guest image, given an /etc/cloud directory."""
    root = WORK / lab.name("files")
    (root / "base").mkdir(parents=True)
    base = root / "base" / "debian.qcow2"
    shutil.copyfile(ensure_guest_image(), base)
    with open_image(str(base)) as session:
        session.write("/etc/cloud/cloud.cfg", "# throw-away base for the tests\n")
    return Files(root, base, root / "out")


@pytest.fixture(scope="module")
def base_before(files: Files) -> tuple[str, int, int, int, int]:
    return file_identity(files.base)


@pytest.fixture(scope="module")
def host_pub_key(files: Files) -> str:
    key = files.root / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test@lab", "-f",
                    str(key)], check=True)
    return (files.root / "id_test.pub").read_text().strip()


@pytest.fixture(scope="module")
def image_a(lab: Lab, files: Files, base_before: object) -> Made:
    return lab.image(files.out / "a.qcow2", PASSWORD, base_image=str(files.base),
                     nameservers=[NAMESERVER], hostname="img-a",
                     network={"address": "10.213.106.10", "prefix": 24, "gateway": NAMESERVER})


@pytest.fixture(scope="module")
def image_b(lab: Lab, files: Files, base_before: object, host_pub_key: str) -> Made:
    return lab.image(files.out / "b.qcow2", PASSWORD, base_image=str(files.base), mode="copy",
                     nameservers=[NAMESERVER], hostname="img-b", authorized_keys=[host_pub_key],
                     sshd_settings={"PermitRootLogin": "yes", "PasswordAuthentication": "yes",
                                    "MaxAuthTries": "3"})


@pytest.fixture(scope="module")
def seen_a(image_a: Made) -> Inspected:
    return inspect(Path(image_a.outs["path"]))


@pytest.fixture(scope="module")
def seen_b(image_b: Made) -> Inspected:
    return inspect(Path(image_b.outs["path"]))


def test_outputs_describe_an_overlay_with_a_relative_backing_path(
        files: Files, image_a: Made) -> None:
    out = files.out / "a.qcow2"
    info = qemu_img.info(out)

    assert image_a.id == str(out) == image_a.outs["path"]
    assert image_a.outs["format"] == info["format"] == "qcow2"
    assert image_a.outs["virtual_size"] == info["virtual-size"] > 0
    assert image_a.outs["backing_file"] == info["backing-filename"] == "a.base.qcow2"
    assert not image_a.outs["backing_file"].startswith("/")
    assert base_link_path(out).samefile(files.base)  # linked, never copied or written
    assert marker_path(out).exists()
    assert not out.with_name(out.name + ".tmp").exists()


def test_copy_mode_makes_a_standalone_image(files: Files, image_a: Made, image_b: Made) -> None:
    out = files.out / "b.qcow2"
    info = qemu_img.info(out)

    assert image_b.outs["format"] == info["format"] == "qcow2"
    assert image_b.outs["backing_file"] == "" and "backing-filename" not in info
    assert image_b.outs["virtual_size"] == image_a.outs["virtual_size"]
    assert not base_link_path(out).exists()
    assert marker_path(out).exists()


def test_outputs_hold_no_plaintext_password(image_a: Made, image_b: Made) -> None:
    for made in (image_a, image_b):
        assert "root_password" not in made.outs
        assert PASSWORD not in json.dumps(made.outs)
        assert made.outs["salt"] and made.outs["digest"]


def test_shadow_root_hash_verifies_against_the_password(seen_a: Inspected) -> None:
    shadow = seen_a.files["/etc/shadow"]
    assert shadow is not None
    root = next(line for line in shadow.splitlines() if line.startswith("root:"))
    fields = root.split(":")
    hashed = fields[1]

    assert hashed.startswith("$6$")
    salt = hashed.split("$")[2]
    assert openssl_sha512_crypt(PASSWORD, salt) == hashed
    assert openssl_sha512_crypt(PASSWORD + "x", salt) != hashed
    today = int(time.time() // 86400)
    assert int(fields[2]) in (today - 1, today), "0 would force a password change at login"
    assert seen_a.modes["/etc/shadow"] == 0o640


def test_sshd_config_starts_with_the_managed_block(seen_a: Inspected, seen_b: Inspected) -> None:
    a = (seen_a.files["/etc/ssh/sshd_config"] or "").splitlines()
    b = (seen_b.files["/etc/ssh/sshd_config"] or "").splitlines()

    assert a[:4] == [BEGIN_MARK, "PermitRootLogin yes", "PasswordAuthentication yes", END_MARK]
    assert b[:5] == [BEGIN_MARK, "PermitRootLogin yes", "PasswordAuthentication yes",
                     "MaxAuthTries 3", END_MARK]
    # No other active line sets a managed keyword (sshd keeps the first value it reads).
    for line in a[4:]:
        words = line.split()
        assert not (words and words[0].lower() in ("permitrootlogin", "passwordauthentication")), line


def test_resolv_conf_names_only_the_lab_nameserver(seen_a: Inspected, seen_b: Inspected) -> None:
    for seen in (seen_a, seen_b):
        text = seen.files["/etc/resolv.conf"] or ""
        servers = [line for line in text.splitlines() if line.strip().startswith("nameserver")]
        assert servers == [f"nameserver {NAMESERVER}"], text


def test_cloud_init_is_disabled_where_it_exists(seen_a: Inspected, seen_b: Inspected) -> None:
    assert seen_a.cloud_disabled
    assert seen_b.cloud_disabled


def test_each_image_gets_its_own_host_keys(seen_a: Inspected, seen_b: Inspected) -> None:
    assert set(seen_a.host_keys) == set(seen_b.host_keys)
    assert "/etc/ssh/ssh_host_ed25519_key.pub" in seen_a.host_keys
    for path, key in seen_a.host_keys.items():
        assert key.strip() and key != seen_b.host_keys[path], path
    for seen in (seen_a, seen_b):
        private = {p: m for p, m in seen.modes.items()
                   if p.startswith("/etc/ssh/ssh_host_") and not p.endswith(".pub")}
        assert private and set(private.values()) == {0o600}, private


def test_hostname_network_and_keys_are_written(
        seen_a: Inspected, seen_b: Inspected, host_pub_key: str) -> None:
    assert seen_a.files["/etc/hostname"] == "img-a\n"
    assert "127.0.1.1\timg-a" in (seen_a.files["/etc/hosts"] or "")
    eth0 = seen_a.files["/etc/network/interfaces.d/eth0"] or ""
    assert "iface eth0 inet static" in eth0
    assert "address 10.213.106.10/24" in eth0
    assert f"gateway {NAMESERVER}" in eth0
    assert seen_b.files["/etc/hostname"] == "img-b\n"
    assert seen_b.files["/etc/network/interfaces.d/eth0"] is None
    assert seen_b.files["/root/.ssh/authorized_keys"] == host_pub_key + "\n"
    assert seen_a.files["/root/.ssh/authorized_keys"] is None


def test_the_base_image_is_byte_identical_afterwards(
        files: Files, base_before: tuple[str, int, int, int, int],
        seen_a: Inspected, seen_b: Inspected) -> None:
    assert file_identity(files.base) == base_before


def test_read_reports_the_real_image(image_a: Made) -> None:
    read = CustomizedImageProvider().read(image_a.id, dict(image_a.outs))

    assert read.id == image_a.id
    assert read.outs == image_a.outs


def test_diff_sees_a_new_password_without_storing_it(image_a: Made) -> None:
    provider = CustomizedImageProvider()
    olds = dict(image_a.outs)

    same = provider.diff(image_a.id, olds, dict(image_a.inputs))
    new_pw = provider.diff(image_a.id, olds, {**image_a.inputs, "root_password": PASSWORD + "2"})
    new_host = provider.diff(image_a.id, olds, {**image_a.inputs, "hostname": "img-c"})

    assert not same.changes
    assert new_pw.changes and new_pw.replaces == ["root_password"]
    assert new_host.changes and new_host.replaces == ["hostname"]


def test_check_verifies_base_sha256(files: Files, base_before: tuple[str, ...]) -> None:
    provider = CustomizedImageProvider()
    props = {"output_path": str(files.out / "c.qcow2"), "root_password": PASSWORD,
             "base_image": str(files.base)}

    good = provider.check({}, {**props, "base_sha256": base_before[0]})
    bad = provider.check({}, {**props, "base_sha256": "0" * 64})

    assert not good.failures
    assert [f.property for f in bad.failures] == ["base_sha256"]


def test_a_file_not_made_by_the_lab_is_refused_and_left_alone(files: Files) -> None:
    foreign = files.out / "foreign.qcow2"
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_bytes(b"not ours")
    try:
        provider = CustomizedImageProvider()
        props = provider.check({}, {"output_path": str(foreign), "root_password": PASSWORD,
                                    "base_image": str(files.base)}).inputs
        with pytest.raises(GuestfsError, match="not made by macvtap-lab"):
            provider.create(dict(props))

        assert foreign.read_bytes() == b"not ours"
        for path in (marker_path(foreign), base_link_path(foreign),
                     foreign.with_name(foreign.name + ".tmp")):
            assert not path.exists(), path
    finally:
        foreign.unlink(missing_ok=True)


def test_a_failed_customisation_leaves_nothing_behind(files: Files) -> None:
    blank = files.root / "base" / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "64M"], check=True)
    out = files.out / "fails.qcow2"
    provider = CustomizedImageProvider()
    props = provider.check({}, {"output_path": str(out), "root_password": PASSWORD,
                                "base_image": str(blank)}).inputs
    try:
        with pytest.raises(GuestfsError, match="no operating system"):
            provider.create(dict(props))

        for path in (out, marker_path(out), base_link_path(out), out.with_name(out.name + ".tmp")):
            assert not path.exists(), path
    finally:
        blank.unlink()


def test_out_of_band_removal_is_seen_and_delete_cleans_the_rest(
        image_b: Made, seen_b: Inspected) -> None:
    provider = CustomizedImageProvider()
    out = Path(image_b.outs["path"])

    out.unlink()  # rm, behind the provider's back
    assert provider.read(image_b.id, dict(image_b.outs)).id == ""

    provider.delete(image_b.id, dict(image_b.outs))
    provider.delete(image_b.id, dict(image_b.outs))
    assert not marker_path(out).exists()
    assert not base_link_path(out).exists()


def test_delete_removes_every_file_and_again_is_fine(
        files: Files, image_a: Made, seen_a: Inspected,
        base_before: tuple[str, int, int, int, int]) -> None:
    provider = CustomizedImageProvider()
    out = Path(image_a.outs["path"])

    provider.delete(image_a.id, dict(image_a.outs))
    provider.delete(image_a.id, dict(image_a.outs))

    for path in (out, marker_path(out), base_link_path(out)):
        assert not path.exists(), path
    assert provider.read(image_a.id, dict(image_a.outs)).id == ""
    assert file_identity(files.base) == base_before  # unlinking the link left the base alone
