"""One whole lab for real: network, libvirt container, customised image, macvtap domain, guest
network; then updates, out-of-band changes and deletes, in that order.

Booting a guest under TCG costs ~30 s, so one module-scoped lab serves every test; the tests
run in file order and the later ones change the lab (update, shut off, delete).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from macvtap_provider.adapters import netlink, qemu_img
from macvtap_provider.builders.tap import INDEX_RANGE
from macvtap_provider.errors import GuestfsError, LibvirtError
from macvtap_provider.images.guest_image import ensure_guest_image
from macvtap_provider.resources.customized_image import CustomizedImageProvider, marker_path
from macvtap_provider.resources.guest_network import GuestNetworkProvider
from macvtap_provider.resources.macvtap_domain import MacvtapDomainProvider
from tests.conftest import require
from tests.integration.conftest import (
    Lab,
    Made,
    Probe,
    checked,
    container_pid,
    default_gateway_in,
    file_identity,
    is_char_device,
    lab_for,
    link_in,
    links_in,
    probe_on,
    remember_tap,
    tap_node,
    wait_until,
)

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.guestfs,
              pytest.mark.netns, pytest.mark.slow]

SUBNET = "10.213.103.0/24"
GUEST_IP = "10.213.103.10"
PASSWORD = f"lab pw ${secrets.token_hex(4)}!"
HOSTNAME = "guest-main"


# ---- the lab (module scope: one guest boot for the whole module) -----------------------------


@pytest.fixture(scope="module")
def base_before() -> tuple[str, int, int, int, int]:
    require("docker", "guestfs")  # before the (possibly long) guest image build
    return file_identity(ensure_guest_image())


@pytest.fixture(scope="module")
def lab(base_before: object) -> Iterator[Lab]:
    with lab_for("main", SUBNET, "docker", "guestfs") as lab:
        lab.network()
        yield lab


@pytest.fixture(scope="module")
def container(lab: Lab) -> Made:
    return lab.container("lv", host=10)


@pytest.fixture(scope="module")
def image(lab: Lab, container: Made) -> Made:
    return lab.guest_image(container, PASSWORD, HOSTNAME)


@pytest.fixture(scope="module")
def domain(lab: Lab, container: Made, image: Made) -> Made:
    made = lab.domain(container, image, "vm")
    remember_tap(made, container.outs["pid"])
    return made


@pytest.fixture(scope="module")
def guest_net(lab: Lab, container: Made, domain: Made) -> Made:
    return lab.guest_network(container, domain)


@pytest.fixture(scope="module")
def probe(lab: Lab) -> Iterator[Probe]:
    with probe_on(lab.client, lab.net_name, lab.subnet) as probe:
        yield probe


def domain_xml(made: Made, flags: int = 0) -> etree._Element:
    conn = libvirt.open(made.outs["libvirt_uri"])
    try:
        return etree.fromstring(conn.lookupByName(made.outs["name"]).XMLDesc(flags).encode())
    finally:
        conn.close()


def libvirt_domain_names(container: Made) -> list[str]:
    conn = libvirt.open(container.outs["libvirt_uri"])
    try:
        return [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()


def out_of_band(made: Made, *actions: str) -> None:
    """virsh destroy / undefine, done with libvirt directly (not through the provider)."""
    conn = libvirt.open(made.outs["libvirt_uri"])
    try:
        dom = conn.lookupByName(made.outs["name"])
        for action in actions:
            getattr(dom, action)()
    finally:
        conn.close()


# ---- MacvtapDomain: create and read ---------------------------------------------------------


def test_domain_nic_is_our_macvtap_with_the_guest_mac(container: Made, domain: Made) -> None:
    outs, pid = domain.outs, container.outs["pid"]
    info = link_in(pid, outs["macvtap_device"])

    assert outs["state"] == "running"
    assert outs["domain_type_used"] == "qemu"  # KVM hangs on this host: TCG
    assert outs["mac_matches"] is True
    assert outs["guest_mac"] == outs["macvtap_mac"] == domain.inputs["mac"]
    assert info is not None and info.kind == "macvtap"
    assert info.mac == outs["guest_mac"]
    assert outs["macvtap_device"] == f"mvt{info.index}"  # the ifindex the provider chose
    assert INDEX_RANGE[0] <= info.index < INDEX_RANGE[1]
    assert is_char_device(tap_node(info.index))

    iface = domain_xml(domain).find("devices/interface")
    assert iface is not None and iface.get("type") == "ethernet"
    target = iface.find("target")
    assert target is not None
    assert (target.get("dev"), target.get("managed")) == (outs["macvtap_device"], "no")


def test_default_guest_boots_its_kernel_from_the_work_dir(image: Made, domain: Made) -> None:
    # Direct kernel boot: the files sit beside the disk, in the one directory the
    # libvirt container mounts (qemu loads them; libvirt still lists a boot device).
    kernel, initrd = image.outs["kernel_path"], image.outs["initrd_path"]
    assert Path(kernel).parent == Path(image.outs["path"]).parent == Path(initrd).parent
    assert Path(kernel).stat().st_size > 1 << 20 and Path(initrd).is_file()
    assert "quiet" in image.outs["kernel_cmdline"].split()
    assert domain.outs["boot_used"] == "kernel"
    os_el = domain_xml(domain).find("os")
    assert os_el is not None
    assert (os_el.findtext("kernel"), os_el.findtext("initrd"), os_el.findtext("cmdline")) == (
        kernel, initrd, image.outs["kernel_cmdline"])


def test_domain_read_reports_the_running_domain(domain: Made) -> None:
    read = MacvtapDomainProvider().read(domain.id, dict(domain.outs))

    assert read.id == domain.id == domain.outs["uuid"]
    for key in ("state", "guest_mac", "macvtap_device", "macvtap_mac", "mac_matches",
                "memory_mib_live", "domain_type_used"):
        assert read.outs[key] == domain.outs[key], key


# ---- GuestNetwork: the guest takes over the container's address -------------------------------


def test_guest_network_moves_the_address_to_the_guest(container: Made, guest_net: Made) -> None:
    eth0 = link_in(container.outs["pid"], "eth0")

    assert eth0 is not None
    assert (GUEST_IP, 24) not in eth0.addresses
    assert guest_net.outs["moved"] is True
    assert guest_net.outs["reachable"] is True
    assert guest_net.outs["guest_ip"] == GUEST_IP
    assert guest_net.outs["ssh_endpoint"] == f"root@{GUEST_IP}:22"
    assert PASSWORD not in json.dumps(guest_net.outs)


def test_probe_reaches_the_guest_and_logs_in_with_the_password(
        guest_net: Made, probe: Probe) -> None:
    assert probe.ping(GUEST_IP)
    assert probe.tcp_open(GUEST_IP, 22)

    out = probe.ssh_when_up(GUEST_IP, PASSWORD, "ip -4 addr show eth0; hostname")

    assert f"inet {GUEST_IP}/24" in out
    assert HOSTNAME in out.split()


def test_a_wrong_password_is_refused(guest_net: Made, probe: Probe) -> None:
    probe.ssh_when_up(GUEST_IP, PASSWORD, "true")  # sshd is up

    rc, out = probe.ssh(GUEST_IP, PASSWORD + "-wrong", "ip -4 addr show eth0")

    # One password prompt only: ssh itself gives up (255); sshpass says 5 if it sees a re-prompt.
    assert rc in (5, 255), out
    assert "Permission denied" in out or rc == 5, out
    assert f"inet {GUEST_IP}" not in out


def test_guest_network_read_reports_moved_and_diff_is_empty(guest_net: Made) -> None:
    provider = GuestNetworkProvider()
    read = provider.read(guest_net.id, dict(guest_net.outs))
    diff = provider.diff(guest_net.id, dict(read.outs), dict(guest_net.inputs))

    assert read.id == guest_net.id
    assert read.outs["moved"] is True
    assert not diff.changes


def test_address_put_back_on_the_container_is_seen_and_diff_replaces(
        container: Made, guest_net: Made) -> None:
    provider = GuestNetworkProvider()
    pid = container.outs["pid"]
    with netlink.in_netns(pid) as ns:
        ns.addr("add", index=ns.link_lookup(ifname="eth0")[0], address=GUEST_IP, prefixlen=24)
    try:
        read = provider.read(guest_net.id, dict(guest_net.outs))
        diff = provider.diff(guest_net.id, dict(read.outs), dict(guest_net.inputs))

        assert read.id == guest_net.id
        assert read.outs["moved"] is False
        assert diff.changes and "moved" in diff.replaces
    finally:
        with netlink.in_netns(pid) as ns:
            netlink.remove_address(ns, "eth0", GUEST_IP, 24)
    assert provider.read(guest_net.id, dict(guest_net.outs)).outs["moved"] is True


# ---- CustomizedImage: never edited under a running domain ------------------------------------


def test_image_of_a_running_domain_is_not_rebuilt(image: Made, domain: Made) -> None:
    out = Path(image.outs["path"])
    before = (sorted(p.name for p in out.parent.iterdir()), marker_path(out).read_text(),
              qemu_img.info(out)["backing-filename"])
    provider = CustomizedImageProvider()
    again = checked(provider, {**image.inputs, "hostname": "another"})

    with pytest.raises(GuestfsError, match="running domain"):
        provider.create(again)

    after = (sorted(p.name for p in out.parent.iterdir()), marker_path(out).read_text(),
             qemu_img.info(out)["backing-filename"])
    assert after == before
    assert provider.read(image.id, dict(image.outs)).id == image.id
    assert MacvtapDomainProvider().read(domain.id, dict(domain.outs)).outs["state"] == "running"


def test_image_of_a_running_domain_is_not_deleted(image: Made) -> None:
    with pytest.raises(GuestfsError, match="running domain"):
        CustomizedImageProvider().delete(image.id, dict(image.outs))

    assert Path(image.outs["path"]).exists()


# ---- MacvtapDomain: update in place, shut off out of band, delete ----------------------------


def test_memory_and_vcpus_update_in_place(domain: Made) -> None:
    provider = MacvtapDomainProvider()
    news = checked(provider, {**domain.inputs, "memory_mib": 640, "vcpus": 2})

    diff = provider.diff(domain.id, dict(domain.outs), news)
    assert diff.changes and not diff.replaces
    result = provider.update(domain.id, dict(domain.outs), news)
    outs = dict(result.outs)
    domain.outs, domain.inputs = outs, news

    assert outs["uuid"] == domain.id
    assert outs["state"] == "running"
    assert outs["memory_mib_live"] == 640
    assert outs["mac_matches"] is True
    for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
        xml = domain_xml(domain, flags)
        assert xml.findtext("uuid") == domain.id
        memory = xml.find("memory")
        assert memory is not None
        assert (memory.get("unit"), memory.text) == ("KiB", str(640 * 1024))
        assert xml.findtext("vcpu") == "2"
    after = provider.diff(domain.id, outs, news)
    assert not after.changes


def test_guest_comes_back_after_the_update_with_the_new_size(
        domain: Made, guest_net: Made, probe: Probe) -> None:
    out = probe.ssh_when_up(GUEST_IP, PASSWORD,
                            "nproc; grep MemTotal /proc/meminfo; ip -4 addr show eth0")
    lines = out.split()

    assert lines[0] == "2", out
    mem_kib = int(lines[lines.index("MemTotal:") + 1])
    assert 512 * 1024 < mem_kib <= 640 * 1024, out  # the kernel keeps a little for itself
    assert f"inet {GUEST_IP}/24" in out


# ---- GuestNetwork: delete gives the address back ---------------------------------------------


def test_guest_network_delete_gives_the_address_back(container: Made, guest_net: Made) -> None:
    provider = GuestNetworkProvider()
    pid = container.outs["pid"]

    provider.delete(guest_net.id, dict(guest_net.outs))
    provider.delete(guest_net.id, dict(guest_net.outs))  # again: no error, no duplicate

    eth0 = link_in(pid, "eth0")
    assert eth0 is not None and (GUEST_IP, 24) in eth0.addresses
    assert default_gateway_in(pid) == container.outs["gateway"]
    assert provider.read(guest_net.id, dict(guest_net.outs)).outs["moved"] is False


def test_domain_shut_off_out_of_band_is_seen_and_update_starts_it(domain: Made) -> None:
    provider = MacvtapDomainProvider()

    out_of_band(domain, "destroy")  # virsh destroy
    read = provider.read(domain.id, dict(domain.outs))
    diff = provider.diff(domain.id, dict(read.outs), dict(domain.inputs))

    assert read.id == domain.id
    assert read.outs["state"] == "shutoff"
    assert diff.changes and not diff.replaces
    started = provider.update(domain.id, dict(read.outs), dict(domain.inputs))
    assert started.outs["state"] == "running"
    assert started.outs["uuid"] == domain.id
    assert started.outs["mac_matches"] is True


def test_delete_of_a_shut_off_domain_removes_it_and_its_macvtap(
        container: Made, image: Made, domain: Made) -> None:
    provider = MacvtapDomainProvider()
    pid = container.outs["pid"]
    index = domain.tap_index
    assert index is not None
    out_of_band(domain, "destroy")
    assert provider.read(domain.id, dict(domain.outs)).outs["state"] == "shutoff"

    provider.delete(domain.id, dict(domain.outs))

    assert domain.outs["name"] not in libvirt_domain_names(container)
    assert link_in(pid, domain.outs["macvtap_device"]) is None
    assert wait_until(lambda: not tap_node(index).exists(), 5), tap_node(index)
    assert not qemu_img.in_use(Path(image.outs["path"]))
    provider.delete(domain.id, dict(domain.outs))  # again: fine
    assert provider.read(domain.id, dict(domain.outs)).id == ""


def test_macvtap_deleted_out_of_band_is_seen_and_diff_replaces(
        lab: Lab, container: Made, image: Made) -> None:
    provider = MacvtapDomainProvider()
    pid = container.outs["pid"]
    made = lab.domain(container, image.outs["path"], "vm2")
    remember_tap(made, pid)

    with netlink.in_netns(pid) as ns:  # ip link del, behind the provider's back
        assert netlink.delete_link(ns, made.outs["macvtap_device"])
    read = provider.read(made.id, dict(made.outs))
    diff = provider.diff(made.id, dict(read.outs), dict(made.inputs))

    assert read.id == made.id
    assert read.outs["macvtap_mac"] == "" and read.outs["mac_matches"] is False
    assert diff.changes and "mac_matches" in diff.replaces
    provider.delete(made.id, dict(made.outs))  # the link is gone already: fine
    assert made.outs["name"] not in libvirt_domain_names(container)


def test_a_leftover_of_ours_is_replaced_and_a_foreign_domain_is_refused(
        lab: Lab, container: Made, image: Made) -> None:
    provider = MacvtapDomainProvider()
    pid = container.outs["pid"]
    made = lab.domain(container, image.outs["path"], "vm3")
    first = made.id

    # The state lost it (an interrupted run): create again with the same inputs.
    again = provider.create(dict(made.inputs))
    made.id, made.outs = str(again.id), dict(again.outs)
    remember_tap(made, pid)

    assert made.id != first
    assert libvirt_domain_names(container) == [made.outs["name"]]
    macvtaps = [link.name for link in links_in(pid) if link.kind == "macvtap"]
    assert macvtaps == [made.outs["macvtap_device"]]
    assert made.outs["state"] == "running" and made.outs["mac_matches"] is True
    provider.delete(made.id, dict(made.outs))

    foreign = lab.name("vm4")
    conn = libvirt.open(container.outs["libvirt_uri"])
    try:
        dom = conn.defineXML(
            f"<domain type='qemu'><name>{foreign}</name><memory unit='MiB'>128</memory>"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>")
        try:
            props = checked(provider, {**made.inputs, "name": foreign, "mac": None})
            with pytest.raises(LibvirtError, match="not made by this stack"):
                provider.create(props)
            assert dom.isPersistent() and not dom.isActive()  # left alone
            assert [link.name for link in links_in(pid) if link.kind == "macvtap"] == []
        finally:
            dom.undefine()
    finally:
        conn.close()


def test_a_domain_that_cannot_start_leaves_nothing_behind(lab: Lab, container: Made) -> None:
    pid = container.outs["pid"]
    bad = lab.blank_disk(container, "notadisk", content=b"this is not a qcow2 image\n")
    name = lab.name("vmbad")

    with pytest.raises(LibvirtError, match="starting domain"):
        lab.domain(container, bad.id, "vmbad")

    assert name not in libvirt_domain_names(container)
    assert [link.name for link in links_in(pid) if link.kind == "macvtap"] == []


def test_domain_undefined_out_of_band_reads_gone_and_delete_removes_the_link(
        lab: Lab, container: Made, image: Made) -> None:
    provider = MacvtapDomainProvider()
    pid = container.outs["pid"]
    made = lab.domain(container, image.outs["path"], "vm5")
    index = remember_tap(made, pid)

    out_of_band(made, "destroy", "undefine")  # virsh destroy + undefine
    assert provider.read(made.id, dict(made.outs)).id == ""
    assert link_in(pid, made.outs["macvtap_device"]) is not None  # ours: libvirt left it

    provider.delete(made.id, dict(made.outs))
    provider.delete(made.id, dict(made.outs))

    assert link_in(pid, made.outs["macvtap_device"]) is None
    assert wait_until(lambda: not tap_node(index).exists(), 5), tap_node(index)


def test_the_base_image_is_untouched_by_the_lab(
        base_before: tuple[str, int, int, int, int], image: Made) -> None:
    assert file_identity(ensure_guest_image()) == base_before


def test_nothing_of_the_domains_is_left_in_the_container(lab: Lab, container: Made) -> None:
    pid = container_pid(lab.client, container.outs["name"])
    assert pid is not None
    kinds = {link.name: link.kind for link in links_in(pid)}

    assert "macvtap" not in kinds.values(), kinds
    assert libvirt_domain_names(container) == []
