"""Bad input is refused at `pulumi preview`, before any side effect, with one clear
message naming the input."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import make_cli

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
    cli = make_cli(tmp_path, project, "bad")
    props = {**GOOD[kind], **change}
    props = {k: v for k, v in props.items() if v is not None}
    cli.run("config", "set", "case", json.dumps({"kind": kind, "props": props}))
    before = snapshot()
    proc = cli.run("preview", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    failure = f"property {prop} value"
    assert failure in text or f"{kind}: " in text, text
    assert words in text, text
    # The refusal is a check failure, not a crash inside the provider. (The SDK may print
    # its own traceback when the engine stops the program after the failure.)
    assert "macvtap_provider/" not in text, text
    assert snapshot() == before == (set(), set(), False)
