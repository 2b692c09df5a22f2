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

from macvtap_provider.errors import DaemonUnreachableError, LabTimeoutError
from macvtap_provider.resources import guest_network
from macvtap_provider.resources.macvtap_domain import MacvtapDomainProvider
from tests.integration.conftest import (
    Lab,
    Made,
    container_pid,
    default_gateway_in,
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
    with lab_for("direct", SUBNET, "docker") as lab:
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
    remember_tap(made, pid_of(lab, container))
    return made


def pid_of(lab: Lab, container: Made) -> int:
    """The container's current PID (a test below restarts it, which changes it)."""
    pid = container_pid(lab.client, container.outs["name"])
    assert pid is not None
    return pid


def undefine_out_of_band(made: Made) -> None:
    conn = libvirt.open(made.outs["libvirt_uri"])
    try:
        dom = conn.lookupByName(made.outs["name"])
        if dom.isActive():
            dom.destroy()
        dom.undefine()
    finally:
        conn.close()


def test_direct_nic_is_libvirts_macvtap_with_the_guest_mac(
        lab: Lab, container: Made, domain: Made) -> None:
    outs = domain.outs
    info = link_in(pid_of(lab, container), outs["macvtap_device"])

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


def test_an_unreachable_guest_gets_no_address_the_container_keeps_it(
        lab: Lab, container: Made, domain: Made, monkeypatch: pytest.MonkeyPatch) -> None:
    # The blank-disk guest never answers; wait 6 s for it, not the real 180 s.
    monkeypatch.setattr(guest_network, "REACH_TIMEOUT_S", 6.0)
    pid = pid_of(lab, container)
    address = container.outs["ip_address"]

    with pytest.raises(LabTimeoutError, match="did not answer"):
        lab.guest_network(container, domain)

    eth0 = link_in(pid, "eth0")
    assert eth0 is not None and (address, 24) in eth0.addresses
    assert default_gateway_in(pid) == container.outs["gateway"]
    probes = lab.client.containers.list(
        all=True, filters={"label": f"{guest_network.PROBE_LABEL}={container.outs['name']}"})
    assert probes == []


def test_shut_off_out_of_band_is_seen_and_diff_only_starts_it(domain: Made) -> None:
    provider = MacvtapDomainProvider()
    conn = libvirt.open(domain.outs["libvirt_uri"])
    try:
        conn.lookupByName(domain.outs["name"]).destroy()  # virsh destroy
    finally:
        conn.close()

    read = provider.read(domain.id, dict(domain.outs))
    diff = provider.diff(domain.id, dict(read.outs), dict(domain.inputs))

    assert read.id == domain.id
    assert read.outs["state"] == "shutoff"
    assert diff.changes
    assert diff.replaces == [], f"a shut-off domain is replaced, not started: {read.outs}"


def test_read_with_libvirtd_unreachable_is_an_error_not_gone(domain: Made) -> None:
    outs = {**domain.outs, "libvirt_uri": "qemu:///system?socket=/nonexistent/libvirt-sock"}

    with pytest.raises(DaemonUnreachableError):
        MacvtapDomainProvider().read(domain.id, outs)


def test_a_stopped_container_does_not_make_its_domain_gone(lab: Lab, domain: Made) -> None:
    provider = MacvtapDomainProvider()
    box = lab.client.containers.get(domain.outs["container"])

    box.stop(timeout=5)
    try:
        while_stopped = provider.read(domain.id, dict(domain.outs))
        diff = provider.diff(domain.id, dict(while_stopped.outs), dict(domain.inputs))
    finally:
        box.start()
    assert wait_until(lambda: _answers(domain.outs["libvirt_uri"]), 60)
    after = provider.read(domain.id, dict(domain.outs))

    # Not "gone" (refresh would drop it from the state), but recorded as unusable, so
    # `up` replaces it along with its container.
    assert while_stopped.id == domain.id
    assert while_stopped.outs["state"] == "container-stopped"
    assert diff.replaces == ["state"]
    assert after.id == domain.id  # the domain never went away
    assert after.outs["state"] == "shutoff"


def _answers(uri: str) -> bool:
    try:
        libvirt.open(uri).close()
    except libvirt.libvirtError:
        return False
    return True


def test_undefined_out_of_band_reads_gone_and_delete_is_fine(
        lab: Lab, container: Made, domain: Made) -> None:
    provider = MacvtapDomainProvider()
    index = domain.tap_index
    assert index is not None

    undefine_out_of_band(domain)

    assert provider.read(domain.id, dict(domain.outs)).id == ""
    # libvirt made this macvtap, libvirt removed it with the domain.
    assert link_in(pid_of(lab, container), domain.outs["macvtap_device"]) is None
    assert wait_until(lambda: not tap_node(index).exists(), 5)
    provider.delete(domain.id, dict(domain.outs))
    provider.delete(domain.id, dict(domain.outs))


def test_container_removed_out_of_band_takes_the_domain_with_it(
        lab: Lab, container: Made, disk: str) -> None:
    provider = MacvtapDomainProvider()
    made = lab.domain(container, disk, "vm2", interface_type="direct")
    index = remember_tap(made, pid_of(lab, container))

    lab.client.containers.get(container.id).remove(force=True)  # docker rm -f

    assert provider.read(made.id, dict(made.outs)).id == ""
    provider.delete(made.id, dict(made.outs))
    provider.delete(made.id, dict(made.outs))
    with pytest.raises(docker.errors.NotFound):
        lab.client.containers.get(container.id)
    assert wait_until(lambda: not tap_node(index).exists(), 10), tap_node(index)
