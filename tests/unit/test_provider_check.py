"""Each provider's `check`: bad inputs name the property and the fix, good ones come back
normalised, preview placeholders (UNKNOWN) pass, and nothing is created on the way."""

from __future__ import annotations

import copy
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from macvtap_provider import paths
from macvtap_provider.adapters import qemu_img
from macvtap_provider.boot_record import sidecar_path
from macvtap_provider.builders.diff import UNKNOWN
from macvtap_provider.builders.domain_xml import KernelBoot
from macvtap_provider.builders.guest_config import DEFAULT_SSHD_SETTINGS
from macvtap_provider.builders.validation import derive_mac
from macvtap_provider.resources import _base
from macvtap_provider.resources.customized_image import CustomizedImageProvider
from macvtap_provider.resources.generated_password import ALPHABET, GeneratedPasswordProvider
from macvtap_provider.resources.guest_network import GuestNetworkProvider
from macvtap_provider.resources.lab_network import LabNetworkProvider
from macvtap_provider.resources.libvirt_container import LibvirtContainerProvider
from macvtap_provider.resources.macvtap_domain import MacvtapDomainProvider, MacvtapDomainSpec
from tests.conftest import ROOT
from tests.unit._providers import accepted, refused, run_check

pytestmark = pytest.mark.unit

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEx7XbZ4wP0Hc8eO4Jm2m3Lr5pYpQ0VjS9wQm3nE5kTq lab@host"


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # check() would attach a stderr handler to the package logger for the rest of the run.
    monkeypatch.setattr(_base, "_LOGGING_READY", True)
    monkeypatch.setenv("MACVTAP_LAB_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("MACVTAP_LAB_CACHE", str(tmp_path / "cache"))


# == LabNetwork ===============================================================================
NET = {"name": "labnet", "subnet": "10.213.0.0/24"}


def test_lab_network_defaults() -> None:
    out = accepted(LabNetworkProvider(), NET)
    assert out["gateway"] == "10.213.0.1"
    assert out["internal"] is True
    assert out["name"] == "labnet" and out["subnet"] == "10.213.0.0/24"


def test_lab_network_keeps_given_gateway_and_internal() -> None:
    out = accepted(LabNetworkProvider(), {**NET, "gateway": "10.213.0.254", "internal": False})
    assert out["gateway"] == "10.213.0.254"
    assert out["internal"] is False


@pytest.mark.parametrize(("change", "prop", "words"), [
    ({"name": "lab net"}, "name", "not a valid name"),
    ({"name": ""}, "name", "not a valid name"),
    ({"subnet": "10.213.0.0/33"}, "subnet", "CIDR"),
    ({"subnet": "10.213.0.1/24"}, "subnet", "host bits"),
    ({"subnet": "10.213.0.0/30"}, "subnet", "too small"),
    ({"subnet": "8.8.8.0/24"}, "subnet", "public range"),
    ({"gateway": "10.214.0.1"}, "gateway", "outside the subnet 10.213.0.0/24"),
    ({"parent": "eth0/1"}, "parent", "not a valid interface name"),
    ({"parent": "eth0", "internal": True}, "internal", "cannot be internal"),
])
def test_lab_network_refusals(change: dict[str, Any], prop: str, words: str) -> None:
    got_prop, reason = refused(LabNetworkProvider(), {**NET, **change})
    assert got_prop == prop
    assert words in reason


def test_lab_network_malformed_gateway_is_a_failure() -> None:
    prop, reason = refused(LabNetworkProvider(), {**NET, "gateway": "router"})
    assert prop == "gateway" and "not an IPv4 address" in reason




def test_lab_network_on_an_uplink_is_not_internal() -> None:
    out = accepted(LabNetworkProvider(), {**NET, "parent": "eth0", "ip_range": "10.213.0.64/27"})
    assert out["parent"] == "eth0" and out["internal"] is False
    assert out["ip_range"] == "10.213.0.64/27"


def test_lab_network_empty_parent_is_a_bridge() -> None:
    assert accepted(LabNetworkProvider(), {**NET, "parent": ""})["parent"] is None


@pytest.mark.parametrize("key", list(("name", "subnet", "gateway", "internal", "docker_host",
                                      "ip_range", "parent")))
def test_lab_network_accepts_unknown(key: str) -> None:
    accepted(LabNetworkProvider(), {**NET, key: UNKNOWN})


# == LibvirtContainer =========================================================================
CONTAINER = {"name": "lab-1", "network": "labnet"}


def test_libvirt_container_defaults(tmp_path: Path) -> None:
    out = accepted(LibvirtContainerProvider(), CONTAINER)
    assert out["security_mode"] == "auto"
    assert out["work_dir"] == str(tmp_path / "work" / "lab-1")
    assert not (tmp_path / "work").exists()  # check creates nothing


@pytest.mark.parametrize("mode", ["auto", "privileged", "capabilities"])
def test_libvirt_container_security_modes(mode: str) -> None:
    out = accepted(LibvirtContainerProvider(), {**CONTAINER, "security_mode": mode,
                                                "work_dir": "/srv/lab-1",
                                                "ipv4_address": "10.213.0.10"})
    assert (out["security_mode"], out["work_dir"]) == (mode, "/srv/lab-1")


@pytest.mark.parametrize(("change", "prop", "words"), [
    ({"name": "lab/1"}, "name", "not a valid name"),
    ({"network": "-net"}, "network", "not a valid name"),
    ({"security_mode": "root"}, "security_mode", "privileged, capabilities, auto"),
    ({"work_dir": "relative/dir"}, "work_dir", "not an absolute path"),
    ({"ipv4_address": "10.213.0.300"}, "ipv4_address", "not an IPv4 address"),
])
def test_libvirt_container_refusals(change: dict[str, Any], prop: str, words: str) -> None:
    got_prop, reason = refused(LibvirtContainerProvider(), {**CONTAINER, **change})
    assert got_prop == prop
    assert words in reason




@pytest.mark.parametrize("key", list(("name", "network", "work_dir", "image", "security_mode", "docker_host",
              "ipv4_address")))
def test_libvirt_container_accepts_unknown(key: str) -> None:
    accepted(LibvirtContainerProvider(), {**CONTAINER, "work_dir": "/srv/lab-1", key: UNKNOWN})


# == CustomizedImage ==========================================================================
@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny qcow2 and a raw image (qemu-img only, no guest inside)."""
    root = tmp_path_factory.mktemp("images")
    made = {"qcow2": root / "base.qcow2", "raw": root / "base.img"}
    for fmt, path in made.items():
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), "1M"], check=True)
    return made


@pytest.fixture
def image_props(images: dict[str, Path], tmp_path: Path) -> dict[str, Any]:
    return {"base_image": str(images["qcow2"]),
            "output_path": str(tmp_path / "out" / "guest.qcow2"),
            "root_password": "pw"}


def test_customized_image_defaults(image_props: dict[str, Any], tmp_path: Path) -> None:
    out = accepted(CustomizedImageProvider(), image_props)
    assert out["mode"] == "overlay"
    assert out["sshd_settings"] == dict(DEFAULT_SSHD_SETTINGS)
    assert out["hostname"] == "lab-guest"
    assert out["root_password"] == "pw"
    assert not (tmp_path / "out").exists()  # check creates nothing


def test_customized_image_normalises_everything(image_props: dict[str, Any],
                                                images: dict[str, Path]) -> None:
    sha = hashlib.sha256(images["qcow2"].read_bytes()).hexdigest()
    out = accepted(CustomizedImageProvider(), {
        **image_props, "mode": "copy", "base_sha256": sha.upper(),
        "sshd_settings": {"PermitRootLogin": "prohibit-password", "Port": 2222},
        "nameservers": ("10.213.0.1",), "hostname": "g1", "authorized_keys": (f" {ED25519} ",),
        "network": {"address": "10.213.0.10", "prefix": 24.0, "gateway": "10.213.0.1"},
    })
    assert out["mode"] == "copy"
    assert out["sshd_settings"] == {"PermitRootLogin": "prohibit-password", "Port": "2222"}
    assert out["nameservers"] == ["10.213.0.1"]
    assert out["authorized_keys"] == [ED25519]
    assert out["network"] == {"address": "10.213.0.10", "prefix": 24, "gateway": "10.213.0.1"}
    assert type(out["network"]["prefix"]) is int


def test_customized_image_missing_default_base_is_built_later(tmp_path: Path) -> None:
    out = accepted(CustomizedImageProvider(), {"output_path": str(tmp_path / "g.qcow2"),
                                               "root_password": "pw"})
    # The default image's name carries its recipe's hash: versions coexist in one cache.
    base = Path(out["base_image"])
    assert base.parent == tmp_path / "cache" / "images"
    assert re.fullmatch(r"debian-guest-[0-9a-f]{12}\.qcow2", base.name)
    assert not base.exists()


def test_customized_image_base_does_not_exist(image_props: dict[str, Any],
                                              tmp_path: Path) -> None:
    missing = tmp_path / "nope.qcow2"
    prop, reason = refused(CustomizedImageProvider(), {**image_props, "base_image": str(missing)})
    assert prop == "base_image"
    assert f"{missing} does not exist" in reason
    assert "macvtap-lab images build" in reason


def test_customized_image_raw_base(image_props: dict[str, Any],
                                   images: dict[str, Path]) -> None:
    prop, reason = refused(CustomizedImageProvider(),
                           {**image_props, "base_image": str(images["raw"])})
    assert prop == "base_image"
    assert "is a raw image" in reason
    assert "qemu-img convert -O qcow2" in reason


def test_customized_image_wrong_sha256(image_props: dict[str, Any]) -> None:
    prop, reason = refused(CustomizedImageProvider(), {**image_props, "base_sha256": "0" * 64})
    assert prop == "base_sha256"
    assert "not " + "0" * 64 in reason and "checksum" in reason


def test_customized_image_output_under_missing_top_dir(image_props: dict[str, Any]) -> None:
    prop, reason = refused(CustomizedImageProvider(), {
        **image_props, "output_path": "/nonexistent-xyz/lab/guest.qcow2"})
    assert prop == "output_path"
    assert "/nonexistent-xyz, which does not exist" in reason


def test_customized_image_output_in_read_only_dir() -> None:
    """A directory the user cannot write to is refused. Root writes anywhere, so under
    root the check runs in a child process as `nobody`."""
    top = Path(tempfile.mkdtemp(prefix="mvt-ro-", dir="/tmp"))
    top.chmod(0o755)
    ro = top / "ro"
    ro.mkdir(mode=0o555)
    ro.chmod(0o555)
    code = (
        "from macvtap_provider.resources.customized_image import _check_output_path\n"
        "from macvtap_provider.errors import SpecError\n"
        f"try:\n    _check_output_path({str(ro / 'sub' / 'guest.qcow2')!r})\n"
        "except SpecError as e:\n    print(e.field, '|', e.reason)\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              user=65534 if os.geteuid() == 0 else None, cwd=str(ROOT),
                              check=True)
    finally:
        shutil.rmtree(top)
    prop, reason = proc.stdout.strip().split(" | ", 1)
    assert prop == "output_path"
    assert f"{ro} is not a writable directory" in reason


def test_customized_image_output_under_a_file(image_props: dict[str, Any],
                                              tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    prop, reason = refused(CustomizedImageProvider(), {
        **image_props, "output_path": str(blocker / "guest.qcow2")})
    assert prop == "output_path"
    assert "not a writable directory" in reason


def test_customized_image_output_is_a_directory(image_props: dict[str, Any],
                                                tmp_path: Path) -> None:
    (tmp_path / "dir.qcow2").mkdir()
    prop, reason = refused(CustomizedImageProvider(), {
        **image_props, "output_path": str(tmp_path / "dir.qcow2")})
    assert prop == "output_path"
    assert "is a directory" in reason


@pytest.mark.parametrize(("path", "words"), [
    ("/tmp/guest.img", "must end in .qcow2"),
    ("/tmp/guest.qcow2.tmp", "must end in .qcow2"),
    ("guest.qcow2", "not an absolute path"),
])
def test_customized_image_output_path_form(image_props: dict[str, Any], path: str,
                                           words: str) -> None:
    prop, reason = refused(CustomizedImageProvider(), {**image_props, "output_path": path})
    assert prop == "output_path"
    assert words in reason


@pytest.mark.parametrize(("change", "prop", "words"), [
    ({"root_password": ""}, "root_password", "empty root password"),
    ({"root_password": None}, "root_password", "is required"),
    ({"root_password": "a\nb"}, "root_password", "newlines"),
    ({"mode": "thin"}, "mode", "overlay, copy"),
    ({"sshd_settings": {"NoSuchKeyword": "yes"}}, "sshd_settings.NoSuchKeyword",
     "not an sshd_config keyword"),
    ({"sshd_settings": {"Include": "/tmp/evil.conf"}}, "sshd_settings.Include",
     "not an sshd_config keyword"),
    ({"sshd_settings": ["PermitRootLogin yes"]}, "sshd_settings", "mapping"),
    ({"nameservers": ["8.8.8.8"]}, "nameservers", "gateway"),
    ({"nameservers": "10.213.0.1"}, "nameservers", "not a list"),
    ({"hostname": "lab_guest"}, "hostname", "not a valid host name"),
    ({"authorized_keys": ["AAAA"]}, "authorized_keys", "not an OpenSSH public key line"),
    ({"network": {"address": "10.213.0", "prefix": 24, "gateway": "10.213.0.1"}},
     "network.address", "not an IPv4 address"),
    ({"network": {"address": "10.213.0.1", "prefix": 24, "gateway": "10.213.0.1"}},
     "network.address", "gateway's address"),
])
def test_customized_image_refusals(image_props: dict[str, Any], change: dict[str, Any],
                                   prop: str, words: str) -> None:
    got_prop, reason = refused(CustomizedImageProvider(), {**image_props, **change})
    assert got_prop == prop
    assert words in reason


def test_customized_image_failure_does_not_echo_the_password(image_props: dict[str, Any]) -> None:
    _prop, reason = refused(CustomizedImageProvider(),
                            {**image_props, "root_password": "Sup3r\nSecret"})
    assert "Sup3r" not in reason


def test_customized_image_gateway_outside_subnet(image_props: dict[str, Any]) -> None:
    result = run_check(CustomizedImageProvider(), {
        **image_props, "network": {"address": "10.213.0.10", "prefix": 24,
                                   "gateway": "10.214.0.1"}})
    assert len(result.failures) == 1
    assert "10.214.0.1 is outside the subnet 10.213.0.0/24" in result.failures[0].reason


@pytest.mark.parametrize(("network", "prop"), [
    ({"address": "10.213.0.10", "prefix": 24, "gateway": "10.214.0.1"}, "network.gateway"),
    ({"address": "10.213.0.10", "prefix": 31, "gateway": "10.213.0.11"}, "network.prefix"),
])
def test_customized_image_network_failures_name_the_network_property(
        image_props: dict[str, Any], network: dict[str, Any], prop: str) -> None:
    got_prop, _reason = refused(CustomizedImageProvider(), {**image_props, "network": network})
    assert got_prop == prop




@pytest.mark.parametrize("key", list(("base_image", "base_sha256", "output_path", "root_password", "mode",
              "sshd_settings", "nameservers", "hostname", "authorized_keys", "network")))
def test_customized_image_accepts_unknown(image_props: dict[str, Any], key: str) -> None:
    accepted(CustomizedImageProvider(), {**image_props, key: UNKNOWN})


@pytest.mark.parametrize("part", ["address", "prefix", "gateway"])
def test_customized_image_accepts_unknown_network_parts(image_props: dict[str, Any],
                                                        part: str) -> None:
    network = {"address": "10.213.0.10", "prefix": 24, "gateway": "10.213.0.1", part: UNKNOWN}
    accepted(CustomizedImageProvider(), {**image_props, "network": network})




@pytest.mark.parametrize("key", ["nameservers", "authorized_keys"])
def test_customized_image_accepts_unknown_list_elements(image_props: dict[str, Any],
                                                        key: str) -> None:
    accepted(CustomizedImageProvider(), {**image_props, key: [UNKNOWN]})


# == MacvtapDomain ============================================================================
DOMAIN = {"name": "guest", "libvirt_uri": "qemu:///system?socket=/srv/lab-1/run/libvirt-sock",
          "container": "lab-1", "disk_path": "/srv/lab-1/guest.qcow2"}


def test_macvtap_domain_defaults() -> None:
    out = accepted(MacvtapDomainProvider(), DOMAIN)
    assert out["mac"] == derive_mac("guest")
    assert (out["memory_mib"], out["vcpus"]) == (512, 1)
    assert (out["source_dev"], out["mode"], out["vhost"]) == ("eth0", "bridge", "auto")
    assert out["domain_type"] == "auto"
    assert out["interface_type"] == "ethernet"  # "auto" resolves to the multi-container-safe NIC
    assert out["boot"] == "auto" and not out.get("kernel")


@pytest.mark.parametrize(("boot", "kernel", "expected"), [
    ("auto", "/w/g.vmlinuz", "kernel"), ("auto", "", "disk"), ("auto", None, "disk"),
    ("disk", "/w/g.vmlinuz", "disk"), ("kernel", "/w/g.vmlinuz", "kernel"),
])
def test_macvtap_domain_boot_resolution(boot: str, kernel: str | None, expected: str) -> None:
    out = accepted(MacvtapDomainProvider(), {**DOMAIN, "boot": boot, "kernel": kernel,
                                             "initrd": "/w/g.initrd", "cmdline": "quiet"})
    spec = MacvtapDomainSpec.from_props(out)
    if expected == "disk":
        assert spec.kernel_boot is None
    else:
        assert spec.kernel_boot == KernelBoot("/w/g.vmlinuz", "/w/g.initrd", "quiet")


@pytest.mark.parametrize(("mac", "normal"), [
    ("52:54:00:AB:CD:EF", "52:54:00:ab:cd:ef"), ("52-54-00-ab-cd-ef", "52:54:00:ab:cd:ef"),
])
def test_macvtap_domain_normalises_mac(mac: str, normal: str) -> None:
    assert accepted(MacvtapDomainProvider(), {**DOMAIN, "mac": mac})["mac"] == normal


def test_macvtap_domain_explicit_choices_kept() -> None:
    out = accepted(MacvtapDomainProvider(), {
        **DOMAIN, "memory_mib": 2048.0, "vcpus": 4, "source_dev": "ens3", "mode": "vepa",
        "vhost": "on", "domain_type": "kvm", "interface_type": "direct"})
    assert out["memory_mib"] == 2048 and out["vcpus"] == 4
    assert (out["source_dev"], out["mode"], out["vhost"], out["domain_type"],
            out["interface_type"]) == ("ens3", "vepa", "on", "kvm", "direct")


@pytest.mark.parametrize(("change", "prop", "words"), [
    ({"name": "guest 1"}, "name", "not a valid name"),
    ({"mac": "01:00:5e:00:00:01"}, "mac", "multicast"),
    ({"mac": "52:54:00:zz:00:01"}, "mac", "not a MAC address"),
    ({"mac": "00:00:00:00:00:00"}, "mac", "not a usable MAC"),
    ({"memory_mib": 64}, "memory_mib", "64 MiB is out of range: use 128 to 65536 MiB"),
    ({"memory_mib": -512}, "memory_mib", "out of range"),
    ({"memory_mib": 10**9}, "memory_mib", "out of range"),
    ({"memory_mib": 512.5}, "memory_mib", "not a whole number"),
    ({"memory_mib": "512"}, "memory_mib", "not a whole number"),
    ({"vcpus": 65}, "vcpus", "use 1 to 64"),
    ({"vcpus": True}, "vcpus", "not a whole number"),
    ({"source_dev": "eth0/1"}, "source_dev", "not a valid interface name"),
    ({"mode": "bridged"}, "mode", "bridge, vepa, private, passthrough"),
    ({"vhost": "yes"}, "vhost", "auto, on, off"),
    ({"domain_type": "xen"}, "domain_type", "auto, kvm, qemu"),
    ({"interface_type": "tap"}, "interface_type", "auto, ethernet, direct"),
    ({"container": "lab:1"}, "container", "not a valid name"),
    ({"disk_path": "guest.qcow2"}, "disk_path", "not an absolute path"),
    ({"libvirt_uri": "localhost"}, "libvirt_uri", "not a libvirt URI"),
    ({"vhost": "on", "domain_type": "qemu"}, "vhost", "needs a KVM domain"),
    ({"boot": "pxe"}, "boot", "auto, disk, kernel"),
    ({"kernel": "vmlinuz"}, "kernel", "not an absolute path"),
    ({"initrd": "initrd.img"}, "initrd", "not an absolute path"),
    ({"boot": "kernel"}, "kernel", "no kernel is given"),
    ({"boot": "kernel", "kernel": ""}, "kernel", "no kernel is given"),
])
def test_macvtap_domain_refusals(change: dict[str, Any], prop: str, words: str) -> None:
    got_prop, reason = refused(MacvtapDomainProvider(), {**DOMAIN, **change})
    assert got_prop == prop
    assert words in reason


@pytest.mark.parametrize("key", ["memory_mib", "vcpus"])
def test_macvtap_domain_zero_is_refused(key: str) -> None:
    prop, reason = refused(MacvtapDomainProvider(), {**DOMAIN, key: 0})
    assert prop == key and "out of range" in reason


@pytest.mark.parametrize("key", [
    "name", "libvirt_uri", "container", "disk_path", "mac", "memory_mib", "vcpus", "source_dev",
    "mode", "vhost", "domain_type", "interface_type", "docker_host", "image_digest", "boot",
    "kernel", "initrd", "cmdline",
])
def test_macvtap_domain_accepts_unknown(key: str) -> None:
    out = accepted(MacvtapDomainProvider(), {**DOMAIN, key: UNKNOWN})
    assert out[key] == UNKNOWN


def test_macvtap_domain_mac_not_derived_from_an_unknown_name() -> None:
    out = accepted(MacvtapDomainProvider(), {**DOMAIN, "name": UNKNOWN})
    assert "mac" not in out or out["mac"] in (None, UNKNOWN)


# == GuestNetwork =============================================================================
GUEST_NET = {"domain": "guest", "libvirt_uri": "qemu:///system?socket=/srv/x/libvirt-sock",
             "container": "lab-1", "network": "labnet", "address": "10.213.0.10",
             "prefix": 24, "gateway": "10.213.0.1", "root_password": "pw"}


def test_guest_network_defaults() -> None:
    out = accepted(GuestNetworkProvider(), {**GUEST_NET, "prefix": 24.0})
    assert out["method"] == "console"
    assert out["container_dev"] == "eth0"
    assert out["prefix"] == 24 and type(out["prefix"]) is int


def test_guest_network_offline_needs_no_password() -> None:
    props = {k: v for k, v in GUEST_NET.items() if k != "root_password"}
    out = accepted(GuestNetworkProvider(), {**props, "method": "offline",
                                            "nameservers": ("10.213.0.1",)})
    assert out["method"] == "offline"
    assert out["nameservers"] == ["10.213.0.1"]


@pytest.mark.parametrize(("change", "prop", "words"), [
    ({"domain": "guest/1"}, "domain", "not a valid name"),
    ({"container": ""}, "container", "not a valid name"),
    ({"method": "ssh"}, "method", "console, offline"),
    ({"container_dev": "eth0 "}, "container_dev", "not a valid interface name"),
    ({"address": None}, "address", "address, prefix and gateway are required"),
    ({"prefix": None}, "address", "ip_address, prefix and gateway"),
    ({"address": "10.213.0.300"}, "address", "not an IPv4 address"),
    ({"prefix": 31}, "prefix", "out of range"),
    ({"gateway": "10.214.0.1"}, "gateway", "outside the subnet"),
    ({"address": "10.213.0.1"}, "address", "gateway's address"),
    ({"address": "10.213.0.255"}, "address", "broadcast"),
    ({"nameservers": ["1.1.1.1"]}, "nameservers", "public resolver"),
    ({"root_password": None}, "root_password", "required for method 'console'"),
    ({"root_password": ""}, "root_password", "empty root password"),
])
def test_guest_network_refusals(change: dict[str, Any], prop: str, words: str) -> None:
    got_prop, reason = refused(GuestNetworkProvider(), {**GUEST_NET, **change})
    assert got_prop == prop
    assert words in reason


@pytest.mark.parametrize("key", [
    "domain", "libvirt_uri", "container", "network", "address", "prefix", "gateway",
    "root_password", "method", "nameservers", "container_dev", "docker_host", "probe_image",
])
def test_guest_network_accepts_unknown(key: str) -> None:
    accepted(GuestNetworkProvider(), {**GUEST_NET, key: UNKNOWN})


def test_guest_network_accepts_unknown_nameserver_element() -> None:
    accepted(GuestNetworkProvider(), {**GUEST_NET, "nameservers": ["10.213.0.1", UNKNOWN]})


# == GeneratedPassword =========================================================================
def test_generated_password_defaults() -> None:
    assert accepted(GeneratedPasswordProvider(), {})["length"] == 20


@pytest.mark.parametrize("length", [12, 32.0, 128, UNKNOWN])
def test_generated_password_length_accepted(length: object) -> None:
    assert accepted(GeneratedPasswordProvider(), {"length": length})["length"] == length


@pytest.mark.parametrize("length", [8, 11, 129, 12.5, "20"])
def test_generated_password_length_refused(length: object) -> None:
    prop, reason = refused(GeneratedPasswordProvider(), {"length": length})
    assert prop == "length"
    assert "use 12 to 128" in reason or "not a whole number" in reason


def test_generated_password_zero_length_refused() -> None:
    assert refused(GeneratedPasswordProvider(), {"length": 0})[0] == "length"


def test_generated_password_create_is_random_and_alphanumeric() -> None:
    first = GeneratedPasswordProvider().create({"length": 24})
    second = GeneratedPasswordProvider().create({"length": 24})
    assert first.outs is not None and second.outs is not None
    assert len(first.outs["result"]) == 24
    assert set(first.outs["result"]) <= set(ALPHABET)
    assert first.outs["result"] != second.outs["result"]
    assert first.id != second.id


# == all providers: check is pure ==============================================================
@pytest.mark.parametrize(("provider", "props"), [
    (LabNetworkProvider(), {**NET, "gateway": "10.213.0.1"}),
    (LibvirtContainerProvider(), CONTAINER),
    (MacvtapDomainProvider(), {**DOMAIN, "mac": "52-54-00-AA-BB-CC"}),
    (GeneratedPasswordProvider(), {"length": 16.0}),
    (GuestNetworkProvider(), {**GUEST_NET, "nameservers": ("10.213.0.1",)}),
    (CustomizedImageProvider(), {"output_path": "/tmp/x/guest.qcow2", "root_password": "pw",
                                 "network": {"address": "10.213.0.10", "prefix": 24.0,
                                             "gateway": "10.213.0.1"},
                                 "sshd_settings": {"Port": 22}}),
], ids=lambda v: type(v).__name__ if not isinstance(v, dict) else "")
def test_check_does_not_mutate_its_input(provider: _base.LabProvider,
                                         props: dict[str, Any]) -> None:
    news = copy.deepcopy(props)
    provider.check({}, news)
    assert news == props


def test_customized_image_default_base_is_not_probed_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default image was built here and its sidecar says so: no qemu-img per preview.
    base = paths.default_guest_image()
    base.parent.mkdir(parents=True)
    base.write_bytes(b"not even qcow2: never opened")
    sidecar_path(base).write_text('{"recipe": "r"}')

    def no_probe(_path: Path) -> dict[str, Any]:
        raise AssertionError("qemu-img info was run")

    monkeypatch.setattr(qemu_img, "info", no_probe)
    out = accepted(CustomizedImageProvider(), {"output_path": str(tmp_path / "g.qcow2"),
                                               "root_password": "pw"})
    assert out["base_image"] == str(base)
