"""Bad input is refused at `pulumi preview`, before any side effect, with one clear
message naming the input."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import docker
import pytest
from pulumi import automation as auto

from macvtap_provider.builders.lab_config import GUESTS, SETTINGS
from tests.conftest import ROOT
from tests.e2e.conftest import make_stack, refused

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.docker]

PROGRAM = '''
import json
import pulumi
from macvtap_provider.resources import (customized_image, guest_network, lab_network,
                                        libvirt_container, macvtap_domain)

case = json.loads(pulumi.Config().require("case"))
kinds = {
    "LabNetwork": (lab_network.LabNetwork, lab_network.LabNetworkArgs),
    "LibvirtContainer": (libvirt_container.LibvirtContainer,
                         libvirt_container.LibvirtContainerArgs),
    "CustomizedImage": (customized_image.CustomizedImage, customized_image.CustomizedImageArgs),
    "MacvtapDomain": (macvtap_domain.MacvtapDomain, macvtap_domain.MacvtapDomainArgs),
    "GuestNetwork": (guest_network.GuestNetwork, guest_network.GuestNetworkArgs),
}
if case["kind"] == "Lab":  # the component: its arguments are checked like stack config
    import macvtap_provider as mvt

    mvt.Guest("mvtbad-vm", mvt.Lab("mvtbad-lab", **case["props"]))
else:
    cls, args = kinds[case["kind"]]
    cls("subject", args(**case["props"]))
'''

BASE = "/nonexistent-base.qcow2"
GOOD = {
    "LabNetwork": {"name": "mvtbad-net", "subnet": "10.213.240.0/24"},
    "LibvirtContainer": {"name": "mvtbad-lv", "network": "bridge"},
    "CustomizedImage": {"output_path": "/var/lib/macvtap-lab/mvtbad/images/g.qcow2",
                        "root_password": "pw-123456"},
    "MacvtapDomain": {"name": "mvtbad-dom", "libvirt_uri": "qemu:///system?socket=/x/sock",
                      "container": "mvtbad-lv", "disk_path": "/var/lib/x/g.qcow2"},
    "GuestNetwork": {"domain": "mvtbad-dom", "libvirt_uri": "qemu:///system?socket=/x/sock",
                     "container": "mvtbad-lv", "network": "mvtbad-net", "address": "10.213.240.10",
                     "prefix": 24, "gateway": "10.213.240.1", "root_password": "pw-123456"},
}

# (kind, change, property named in the failure, words the message must contain)
CASES = [
    ("MacvtapDomain", {"mac": "52:54:00:zz:00:01"}, "mac", "not a MAC address"),
    ("MacvtapDomain", {"mac": "01:00:5e:00:00:01"}, "mac", "multicast"),
    ("MacvtapDomain", {"mac": "00:00:00:00:00:00"}, "mac", "not a usable MAC"),
    ("MacvtapDomain", {"mode": "bridged"}, "mode", "not one of"),
    ("MacvtapDomain", {"memory_mib": -512}, "memory_mib", "out of range"),
    ("MacvtapDomain", {"memory_mib": 10_000_000}, "memory_mib", "out of range"),
    ("MacvtapDomain", {"vcpus": 0}, "vcpus", "out of range"),
    ("MacvtapDomain", {"vcpus": 1000}, "vcpus", "out of range"),
    ("MacvtapDomain", {"source_dev": "eth0 with spaces"}, "source_dev", "interface name"),
    ("MacvtapDomain", {"name": "bad/name"}, "name", "not a valid name"),
    ("MacvtapDomain", {"vhost": "sometimes"}, "vhost", "not one of"),
    ("MacvtapDomain", {"domain_type": "xen"}, "domain_type", "not one of"),
    ("MacvtapDomain", {"disk_path": "relative/disk.qcow2"}, "disk_path", "absolute"),
    ("MacvtapDomain", {"libvirt_uri": "not-a-uri"}, "libvirt_uri", "not a libvirt URI"),
    ("LabNetwork", {"subnet": "10.213.240.0/33"}, "subnet", "CIDR"),
    ("LabNetwork", {"subnet": "10.213.240.7/24"}, "subnet", "CIDR"),
    ("LabNetwork", {"subnet": "8.8.8.0/24"}, "subnet", "public range"),
    ("LabNetwork", {"gateway": "10.213.241.1"}, "gateway", "outside the subnet"),
    ("LabNetwork", {"name": "-leading-dash"}, "name", "not a valid name"),
    ("LibvirtContainer", {"security_mode": "yolo"}, "security_mode", "not one of"),
    ("LibvirtContainer", {"docker_host": "ftp://x"}, "docker_host", "not a docker endpoint"),
    ("LabNetwork", {"docker_host": "tcp://dockerhost"}, "docker_host", "no port"),
    ("LibvirtContainer", {"name": "has space"}, "name", "not a valid name"),
    ("LibvirtContainer", {"work_dir": "relative/dir"}, "work_dir", "absolute"),
    ("LibvirtContainer", {"ipv4_address": "10.213.240.300"}, "ipv4_address", "not an IPv4"),
    ("CustomizedImage", {"base_image": BASE}, "base_image", "does not exist"),
    ("CustomizedImage", {"root_password": ""}, "root_password", "empty root password"),
    ("CustomizedImage", {"output_path": "/nonexistent-dir-xyz/g.qcow2"}, "output_path",
     "does not exist"),
    ("CustomizedImage", {"output_path": "/var/lib/macvtap-lab/x/g.img"}, "output_path",
     ".qcow2"),
    ("CustomizedImage", {"sshd_settings": {"PermitRootLogon": "yes"}},
     "sshd_settings.PermitRootLogon", "not an sshd_config keyword"),
    ("CustomizedImage", {"nameservers": ["8.8.8.8"]}, "nameservers", "public resolver"),
    ("CustomizedImage", {"mode": "clone"}, "mode", "not one of"),
    ("CustomizedImage", {"hostname": "under_score"}, "hostname", "not a valid host name"),
    ("CustomizedImage", {"network": {"address": "10.213.240.10", "prefix": 24,
                                     "gateway": "10.213.99.1"}}, "network.gateway",
     "outside the subnet"),
    ("GuestNetwork", {"gateway": "10.213.99.1"}, "gateway", "outside the subnet"),
    ("GuestNetwork", {"address": "10.213.240.1"}, "address", "gateway's address"),
    ("GuestNetwork", {"address": "10.213.240.0"}, "address", "network or broadcast"),
    ("GuestNetwork", {"prefix": 31}, "prefix", "out of range"),
    ("GuestNetwork", {"method": "telepathy"}, "method", "not one of"),
    ("GuestNetwork", {"root_password": None}, "root_password", "required"),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("badinput")
    (root / "Pulumi.yaml").write_text(
        f"name: badinput\nruntime:\n  name: python\n  options:\n"
        f"    virtualenv: {ROOT / '.venv'}\n")
    (root / "__main__.py").write_text(PROGRAM)
    return root


def snapshot() -> tuple[set[str], set[str], bool]:
    client = docker.from_env()
    try:
        return ({c.name for c in client.containers.list(all=True) if "mvtbad" in (c.name or "")},
                {n.name for n in client.networks.list() if "mvtbad" in (n.name or "")},
                Path("/var/lib/macvtap-lab/mvtbad").exists())
    finally:
        client.close()


def test_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(("kind", "change", "prop", "words"), CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_refused_at_preview(project: Path, tmp_path: Path, kind: str, change: dict[str, object],
                            prop: str, words: str) -> None:
    st = make_stack(tmp_path, project, "bad")
    props = {**GOOD[kind], **change}
    props = {k: v for k, v in props.items() if v is not None}
    st.config("case", json.dumps({"kind": kind, "props": props}))
    before = snapshot()
    text = refused(st)
    failure = f"property {prop} value"
    assert failure in text or f"{kind}: " in text, text
    assert words in text, text
    # The refusal is a check failure, not a crash inside the provider. (The SDK may print
    # its own traceback when the engine stops the program after the failure.)
    assert "macvtap_provider/" not in text, text
    assert snapshot() == before == (set(), set(), False)


# Stack config of the lab project (and the multi project's own key): each bad value fails
# the program before any resource is registered, naming the key and the fix, no traceback.
# (key, value, words the message must contain, project)
CONFIG_CASES = [
    ("subnet", "10.213.241.0/33", "not an IPv4 subnet", "."),
    ("subnet", "10.213.241.7/24", "not an IPv4 subnet", "."),
    ("subnet", "8.8.8.0/24", "public range", "."),
    ("subnet", "10.213.241.0/29", "no host .10", "."),
    ("containerIp", "10.9.9.9", "outside the lab's subnet", "."),
    ("containerIp", "10.213.241.1", "gateway", "."),
    ("workDir", "relative/dir", "not an absolute path", "."),
    ("dockerHost", "ftp://x", "not a docker endpoint", "."),
    ("securityMode", "yolo", "not one of", "."),
    ("memoryMib", "100", "out of range", "."),
    ("vcpus", "0", "out of range", "."),
    ("macvtapMode", "bridged", "not one of", "."),
    ("vhost", "sometimes", "not one of", "."),
    ("domainType", "xen", "not one of", "."),
    ("interfaceType", "tap", "not one of", "."),
    ("guestBoot", "bios", "not one of", "."),
    ("uplink", "eth0 with spaces", "not a valid interface name", "."),
    ("ipRange", "10.213.99.0/26", "not inside the lab's subnet", "."),
    ("ipRange", "10.213.241.0/26", "includes the subnet's gateway", "."),
    ("networkMethod", "dhcp", "not one of", "."),
    ("baseImage", "/nonexistent/base.qcow2", "not a file on this machine", "."),
    ("rootPassword", "pw-one\rtwo", "newlines or NUL", "."),
    ("memmoryMib", "512", "not a setting of this program", "."),
    ("guests", "9", "out of range", "stacks/multi"),
    ("subnet", "10.213.241.0/25", "/24 or larger", "stacks/multi"),
]


def test_every_config_key_has_a_case() -> None:
    assert {s.key for s in (*SETTINGS, GUESTS)} <= {c[0] for c in CONFIG_CASES}


@pytest.mark.parametrize(("key", "value", "words", "project"), CONFIG_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CONFIG_CASES)])
def test_bad_stack_config_refused_before_any_resource(tmp_path: Path, key: str, value: str,
                                                      words: str, project: str) -> None:
    st = make_stack(tmp_path, ROOT / project, "bad")
    if key != "subnet":
        st.config("subnet", "10.213.241.0/24")
    if project == "stacks/multi" and key == "subnet":
        st.config("guests", "3")
    if key == "rootPassword":
        st.set_secret(key, value)
    else:
        st.config(key, value)
    before = snapshot()
    try:
        text = refused(st)
    finally:
        with contextlib.suppress(auto.CommandError):
            st.remove()
    assert f"stack config `{key}`: " in text and words in text, text
    assert "pulumi config" in text, text  # the fix
    assert "Traceback" not in text and "macvtap_provider/" not in text, text
    # Nothing registered but the stack itself.
    assert "dynamic/macvtap" not in text and "macvtap:index" not in text, text
    if key == "containerIp":
        assert "gateway ... is outside" not in text and "network.gateway" not in text
    assert snapshot() == before


LAB_CASES = [
    ({"subnet": "10.213.241.0/33"}, "subnet", "not an IPv4 subnet"),
    ({"subnet": "10.213.241.0/24", "container_ip": "10.9.9.9"}, "container_ip", "outside"),
    ({"subnet": "10.213.241.0/24", "docker_host": "ftp://x"}, "docker_host",
     "not a docker endpoint"),
]


@pytest.mark.parametrize(("props", "arg", "words"), LAB_CASES,
                         ids=[c[1] for c in LAB_CASES])
def test_bad_lab_arguments_refused_like_config(project: Path, tmp_path: Path,
                                               props: dict[str, object], arg: str,
                                               words: str) -> None:
    st = make_stack(tmp_path, project, "badlab")
    st.config("case", json.dumps({"kind": "Lab", "props": props}))
    text = refused(st)
    assert f"Lab argument `{arg}`: " in text and words in text, text
    assert "Traceback" not in text and "dynamic/macvtap" not in text, text
