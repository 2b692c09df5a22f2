"""Each provider's `diff`: what changes in place, what replaces, and what drift forces."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from macvtap_provider.builders.diff import UNKNOWN
from macvtap_provider.builders.secrets import customization_digest
from macvtap_provider.resources import _base
from macvtap_provider.resources.customized_image import (
    PUBLIC_INPUTS,
    CustomizedImageProvider,
    public_fields,
)
from macvtap_provider.resources.generated_password import GeneratedPasswordProvider
from macvtap_provider.resources.guest_network import GuestNetworkProvider
from macvtap_provider.resources.lab_network import LabNetworkProvider
from macvtap_provider.resources.libvirt_container import LibvirtContainerProvider
from macvtap_provider.resources.macvtap_domain import MacvtapDomainProvider

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _quiet_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_base, "_LOGGING_READY", True)


def _diff(provider: _base.LabProvider, olds: dict[str, Any],
          news: dict[str, Any]) -> tuple[bool, list[str], bool]:
    result = provider.diff("id-1", olds, news)
    return bool(result.changes), sorted(result.replaces or []), bool(result.delete_before_replace)


# == MacvtapDomain ============================================================================
DOMAIN = {"name": "guest", "libvirt_uri": "qemu:///system?socket=/srv/lab-1/run/libvirt-sock",
          "container": "lab-1", "disk_path": "/srv/lab-1/guest.qcow2",
          "mac": "52:54:00:aa:bb:cc", "memory_mib": 512, "vcpus": 1, "source_dev": "eth0",
          "mode": "bridge", "vhost": "auto", "domain_type": "auto", "interface_type": "ethernet",
          "docker_host": None, "image_digest": "d1"}
DOMAIN_OUTS = {"uuid": "c7a5fdbd-edaf-9455-926a-d65c16db1809", "guest_mac": "52:54:00:aa:bb:cc",
               "macvtap_device": "mvt23456", "macvtap_mac": "52:54:00:aa:bb:cc",
               "mac_matches": True, "state": "running", "domain_type_used": "qemu",
               "memory_mib_live": 512}
DOMAIN_OLDS = {**DOMAIN, **DOMAIN_OUTS}


def test_domain_no_change() -> None:
    assert _diff(MacvtapDomainProvider(), DOMAIN_OLDS, dict(DOMAIN))[:2] == (False, [])


def test_domain_state_from_before_boot_existed_is_no_change() -> None:
    # Such a domain boots its disk: `auto` with no kernel, which is what new inputs say
    # when its image (made before kernel_path existed) has no kernel either.
    news = {**DOMAIN, "boot": "auto", "kernel": None, "initrd": None, "cmdline": None}
    assert _diff(MacvtapDomainProvider(), DOMAIN_OLDS, news)[:2] == (False, [])


@pytest.mark.parametrize(("key", "value"), [("boot", "disk"), ("kernel", "/srv/lab-1/g.vmlinuz"),
                                            ("cmdline", "quiet")])
def test_domain_boot_changes_replace(key: str, value: str) -> None:
    olds = {**DOMAIN_OLDS, "boot": "auto", "kernel": None, "boot_used": "kernel"}
    changes, replaces, _ = _diff(MacvtapDomainProvider(), olds,
                                 {**DOMAIN, "boot": "auto", key: value})
    assert (changes, replaces) == (True, [key])


@pytest.mark.parametrize("olds", [
    DOMAIN_OLDS,  # made before `boot` existed: it boots its disk
    {**DOMAIN_OLDS, "boot": "auto", "kernel": None, "boot_used": "disk"}])
def test_domain_auto_boot_is_decided_at_create(olds: dict[str, Any]) -> None:
    # Its image now offers a kernel (a library upgrade, or a state made before images
    # exported one): the guest keeps booting its disk, nothing is replaced.
    news = {**DOMAIN, "boot": "auto", "kernel": "/srv/lab-1/g.vmlinuz",
            "initrd": "/srv/lab-1/g.initrd", "cmdline": "root=/dev/vda1 quiet"}
    assert _diff(MacvtapDomainProvider(), olds, news)[:2] == (False, [])
    # Asking for kernel boot explicitly is a change of `boot`: the guest is made again.
    changes, replaces, _ = _diff(MacvtapDomainProvider(), olds, {**news, "boot": "kernel"})
    assert (changes, "boot" in replaces) == (True, True)


def test_domain_float_noise_is_no_change() -> None:
    news = {**DOMAIN, "memory_mib": 512.0, "vcpus": 1.0, "docker_host": ""}
    assert _diff(MacvtapDomainProvider(), DOMAIN_OLDS, news)[:2] == (False, [])


@pytest.mark.parametrize(("key", "value"), [("memory_mib", 1024), ("vcpus", 2)])
def test_domain_size_changes_in_place(key: str, value: int) -> None:
    changes, replaces, _ = _diff(MacvtapDomainProvider(), DOMAIN_OLDS, {**DOMAIN, key: value})
    assert changes is True
    assert replaces == []


@pytest.mark.parametrize(("key", "value"), [
    ("mode", "vepa"), ("mac", "52:54:00:aa:bb:cd"), ("disk_path", "/srv/lab-1/other.qcow2"),
    ("interface_type", "direct"), ("domain_type", "kvm"), ("image_digest", "d2"),
    ("container", "lab-2"), ("source_dev", "eth1"), ("vhost", "off"),
])
def test_domain_replacing_changes(key: str, value: str) -> None:
    changes, replaces, delete_first = _diff(MacvtapDomainProvider(), DOMAIN_OLDS,
                                            {**DOMAIN, key: value})
    assert (changes, replaces, delete_first) == (True, [key], True)


def test_domain_unknown_disk_replaces() -> None:
    changes, replaces, _ = _diff(MacvtapDomainProvider(), DOMAIN_OLDS,
                                 {**DOMAIN, "disk_path": UNKNOWN})
    assert (changes, replaces) == (True, ["disk_path"])


def test_domain_shut_off_out_of_band_is_an_update() -> None:
    changes, replaces, _ = _diff(MacvtapDomainProvider(), {**DOMAIN_OLDS, "state": "shutoff"},
                                 dict(DOMAIN))
    assert (changes, replaces) == (True, [])


def test_domain_lost_macvtap_replaces() -> None:
    changes, replaces, _ = _diff(MacvtapDomainProvider(),
                                 {**DOMAIN_OLDS, "mac_matches": False}, dict(DOMAIN))
    assert (changes, replaces) == (True, ["mac_matches"])


def test_domain_outputs_do_not_count_as_changes() -> None:
    olds = {**DOMAIN_OLDS, "macvtap_device": "mvt1", "memory_mib_live": 2048}
    assert _diff(MacvtapDomainProvider(), olds, dict(DOMAIN))[:2] == (False, [])


# == CustomizedImage ==========================================================================
IMAGE: dict[str, Any] = {
    "base_image": "/srv/images/base.qcow2", "base_sha256": None,
    "output_path": "/srv/lab-1/guest.qcow2", "mode": "overlay",
    "sshd_settings": {"PermitRootLogin": "yes", "PasswordAuthentication": "yes"},
    "nameservers": ["10.213.0.1"], "hostname": "lab-guest", "authorized_keys": None,
    "network": {"address": "10.213.0.10", "prefix": 24, "gateway": "10.213.0.1"},
    "root_password": "pw"}
SALT = "0123456789abcdef0123456789abcdef"


@functools.cache
def _image_olds() -> dict[str, Any]:
    """The state `create` leaves: inputs without the password, plus salt and digest."""
    olds: dict[str, Any] = {k: v for k, v in IMAGE.items() if k != "root_password"}
    olds.update(path=IMAGE["output_path"], format="qcow2", virtual_size=1 << 30,
                backing_file="guest.base.qcow2", salt=SALT,
                digest=customization_digest(public_fields(IMAGE), "pw", SALT))
    return olds


def test_image_public_fields_are_the_inputs() -> None:
    # docker_host only when set (older states' digests have no such key).
    assert set(public_fields(IMAGE)) == set(PUBLIC_INPUTS) - {"docker_host"}
    assert "docker_host" in public_fields({**IMAGE, "docker_host": "ssh://root@h"})
    assert "root_password" not in public_fields(IMAGE)


def test_image_state_has_no_password() -> None:
    assert "pw" not in repr(_image_olds())


def test_image_no_change() -> None:
    assert _diff(CustomizedImageProvider(), _image_olds(), dict(IMAGE))[:2] == (False, [])


def test_image_password_change_detected_through_the_digest() -> None:
    changes, replaces, delete_first = _diff(CustomizedImageProvider(), _image_olds(),
                                            {**IMAGE, "root_password": "new-pw"})
    assert (changes, replaces, delete_first) == (True, ["root_password"], True)


def test_image_unknown_password_replaces() -> None:
    changes, replaces, _ = _diff(CustomizedImageProvider(), _image_olds(),
                                 {**IMAGE, "root_password": UNKNOWN})
    assert (changes, replaces) == (True, ["root_password"])


@pytest.mark.parametrize(("key", "value"), [
    ("hostname", "other"), ("nameservers", ["10.213.0.2"]), ("mode", "copy"),
    ("sshd_settings", {"PermitRootLogin": "no"}), ("network", None),
    ("base_sha256", "ab" * 32), ("output_path", "/srv/lab-1/other.qcow2"),
])
def test_image_public_change_replaces(key: str, value: object) -> None:
    changes, replaces, delete_first = _diff(CustomizedImageProvider(), _image_olds(),
                                            {**IMAGE, key: value})
    assert (changes, replaces, delete_first) == (True, [key], True)


def test_image_keeps_its_base_when_the_default_image_recipe_changes(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("MACVTAP_LAB_CACHE", str(tmp_path))
    old_default = str(tmp_path / "images" / "debian-guest.qcow2")
    new_default = str(tmp_path / "images" / "debian-guest-0123456789ab.qcow2")
    image = {**IMAGE, "base_image": old_default}
    olds: dict[str, Any] = {k: v for k, v in image.items() if k != "root_password"}
    olds.update(salt=SALT, digest=customization_digest(public_fields(image), "pw", SALT))
    news = {**IMAGE, "base_image": new_default}
    assert _diff(CustomizedImageProvider(), olds, news)[:2] == (False, [])
    # Any other base is a new image.
    other = {**IMAGE, "base_image": str(tmp_path / "images" / "vendor.qcow2")}
    assert _diff(CustomizedImageProvider(), olds, other)[:2] == (True, ["base_image"])


def test_image_without_salt_in_state_compares_inputs_only() -> None:
    olds = {k: v for k, v in _image_olds().items() if k not in ("salt", "digest")}
    assert _diff(CustomizedImageProvider(), olds, dict(IMAGE))[:2] == (False, [])


# == LabNetwork, LibvirtContainer, GuestNetwork ================================================
NET = {"name": "labnet", "subnet": "10.213.0.0/24", "gateway": "10.213.0.1", "internal": True,
       "docker_host": None}


@pytest.mark.parametrize(("key", "value"), [
    ("subnet", "10.214.0.0/24"), ("gateway", "10.213.0.254"), ("internal", False),
    ("name", "labnet2"),
])
def test_lab_network_every_input_replaces(key: str, value: object) -> None:
    olds = {**NET, "network_id": "abc", "bridge": "br-abc"}
    changes, replaces, delete_first = _diff(LabNetworkProvider(), olds, {**NET, key: value})
    assert (changes, replaces, delete_first) == (True, [key], True)


def test_lab_network_no_change() -> None:
    olds = {**NET, "network_id": "abc", "bridge": "br-abc"}
    assert _diff(LabNetworkProvider(), olds, dict(NET))[:2] == (False, [])


CONTAINER = {"name": "lab-1", "network": "labnet", "work_dir": "/srv/lab-1", "image": None,
             "security_mode": "auto", "docker_host": None, "ipv4_address": None}


def test_libvirt_container_no_change() -> None:
    olds = {**CONTAINER, "running": True, "container_id": "c1"}
    assert _diff(LibvirtContainerProvider(), olds, dict(CONTAINER))[:2] == (False, [])


def test_libvirt_container_image_change_replaces() -> None:
    changes, replaces, _ = _diff(LibvirtContainerProvider(), {**CONTAINER, "running": True},
                                 {**CONTAINER, "image": "libvirt:2"})
    assert (changes, replaces) == (True, ["image"])


def test_libvirt_container_stopped_out_of_band_replaces() -> None:
    changes, replaces, _ = _diff(LibvirtContainerProvider(), {**CONTAINER, "running": False},
                                 dict(CONTAINER))
    assert (changes, replaces) == (True, ["running"])


GUEST_NET = {"domain": "guest", "libvirt_uri": "qemu:///system?socket=/x", "container": "lab-1",
             "network": "labnet", "address": "10.213.0.10", "prefix": 24,
             "gateway": "10.213.0.1", "method": "console", "nameservers": None,
             "container_dev": "eth0"}


def test_guest_network_no_change() -> None:
    olds = {**GUEST_NET, "moved": True, "reachable": True, "guest_ip": "10.213.0.10"}
    assert _diff(GuestNetworkProvider(), olds, {**GUEST_NET, "prefix": 24.0})[:2] == (False, [])


def test_guest_network_address_change_replaces() -> None:
    changes, replaces, _ = _diff(GuestNetworkProvider(), {**GUEST_NET, "moved": True},
                                 {**GUEST_NET, "address": "10.213.0.11"})
    assert (changes, replaces) == (True, ["address"])


def test_guest_network_address_back_on_container_replaces() -> None:
    changes, replaces, _ = _diff(GuestNetworkProvider(), {**GUEST_NET, "moved": False},
                                 dict(GUEST_NET))
    assert (changes, replaces) == (True, ["moved"])


def test_generated_password_kept_until_its_length_changes() -> None:
    olds = {"length": 20, "result": "x" * 20}
    assert _diff(GeneratedPasswordProvider(), olds, {"length": 20.0})[:2] == (False, [])
    assert _diff(GeneratedPasswordProvider(), olds, {"length": 24})[:2] == (True, ["length"])
