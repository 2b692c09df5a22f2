"""MacvtapDomain with the seed's `<interface type='direct'>` (libvirt makes macvtapN).

Only one libvirt container is used: direct is unsafe with several (see test_two_containers).
The guest need not boot to test the NIC plumbing, so its disk is a blank qcow2 (no image
customisation, no boot wait).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import docker
import libvirt
import pytest
from lxml import etree

from macvtap_provider.resources.macvtap_domain import MacvtapDomainProvider
from tests.integration.conftest import (
    Lab,
    Made,
    is_char_device,
    lab_for,
    link_in,
    remember_tap,
    tap_node,
    wait_until,
)

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.netns]

SUBNET = "10.213.104.0/24"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_for("direct", SUBNET) as lab:
        lab.network()
        yield lab


@pytest.fixture(scope="module")
def container(lab: Lab) -> Made:
    return lab.container("lv", host=10)


@pytest.fixture(scope="module")
def disk(lab: Lab, container: Made) -> str:
    return lab.blank_disk(container, "blank").id


@pytest.fixture(scope="module")
def domain(lab: Lab, container: Made, disk: str) -> Made:
    made = lab.domain(container, disk, "vm", interface_type="direct")
    remember_tap(made, container.outs["pid"])
    return made


def undefine_out_of_band(made: Made) -> None:
    conn = libvirt.open(made.outs["libvirt_uri"])
    try:
        dom = conn.lookupByName(made.outs["name"])
        dom.destroy()
        dom.undefine()
    finally:
        conn.close()


def test_direct_nic_is_libvirts_macvtap_with_the_guest_mac(container: Made, domain: Made) -> None:
    outs = domain.outs
    info = link_in(container.outs["pid"], outs["macvtap_device"])

    assert outs["interface_type"] == "direct"
    assert re.fullmatch(r"macvtap\d+", outs["macvtap_device"]), outs["macvtap_device"]
    assert outs["state"] == "running"
    assert outs["mac_matches"] is True
    assert outs["guest_mac"] == outs["macvtap_mac"] == domain.inputs["mac"]
    assert info is not None and info.kind == "macvtap" and info.mac == outs["guest_mac"]
    assert is_char_device(tap_node(info.index))
    conn = libvirt.open(outs["libvirt_uri"])
    try:
        xml = etree.fromstring(conn.lookupByName(outs["name"]).XMLDesc(0).encode())
    finally:
        conn.close()
    iface = xml.find("devices/interface")
    assert iface is not None and iface.get("type") == "direct"
    source = iface.find("source")
    assert source is not None and (source.get("dev"), source.get("mode")) == ("eth0", "bridge")


def test_read_reports_it(domain: Made) -> None:
    read = MacvtapDomainProvider().read(domain.id, dict(domain.outs))

    assert read.id == domain.id
    for key in ("macvtap_device", "macvtap_mac", "guest_mac", "mac_matches", "state"):
        assert read.outs[key] == domain.outs[key], key


def test_undefined_out_of_band_reads_gone_and_delete_is_fine(
        container: Made, domain: Made) -> None:
    provider = MacvtapDomainProvider()
    index = domain.tap_index
    assert index is not None

    undefine_out_of_band(domain)

    assert provider.read(domain.id, dict(domain.outs)).id == ""
    # libvirt made this macvtap, libvirt removed it with the domain.
    assert link_in(container.outs["pid"], domain.outs["macvtap_device"]) is None
    assert wait_until(lambda: not tap_node(index).exists(), 5)
    provider.delete(domain.id, dict(domain.outs))
    provider.delete(domain.id, dict(domain.outs))


def test_container_removed_out_of_band_takes_the_domain_with_it(
        lab: Lab, container: Made, disk: str) -> None:
    provider = MacvtapDomainProvider()
    made = lab.domain(container, disk, "vm2", interface_type="direct")
    index = remember_tap(made, container.outs["pid"])

    lab.client.containers.get(container.id).remove(force=True)  # docker rm -f

    assert provider.read(made.id, dict(made.outs)).id == ""
    provider.delete(made.id, dict(made.outs))
    provider.delete(made.id, dict(made.outs))
    with pytest.raises(docker.errors.NotFound):
        lab.client.containers.get(container.id)
    assert wait_until(lambda: not tap_node(index).exists(), 10), tap_node(index)
