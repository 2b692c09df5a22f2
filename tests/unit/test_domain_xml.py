"""Domain XML: golden files, libvirt's test driver as the schema check, and the readers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import libvirt
import pytest
from lxml import etree

from macvtap_provider.adapters import libvirt_api
from macvtap_provider.builders.domain_xml import (
    LAB_NS,
    QEMU_BINARY,
    DirectNic,
    DomainXmlSpec,
    EthernetNic,
    KernelBoot,
    build_domain_xml,
    domain_owner,
    etree_domain_type,
    interface_mac,
    interface_target,
    kernel_boot,
    memory_mib,
    resolve_domain_type,
    resolve_vhost,
    uses_vhost,
    vcpus,
)
from macvtap_provider.errors import LibvirtError

pytestmark = pytest.mark.unit


def validate_xml(xml: str) -> None:
    """Let libvirt's own test driver parse and define `xml` (no side effects anywhere)."""
    with libvirt_api.connection("test:///default") as conn, \
            libvirt_api.translate_errors("validating domain XML"):
        dom = conn.defineXML(xml)
        dom.undefine()


def disk_source(xml: str) -> str | None:
    el = etree.fromstring(xml.encode()).find("devices/disk/source")
    return None if el is None else el.get("file")


@pytest.mark.parametrize(("requested", "kvm", "expected"), [
    ("auto", True, "kvm"), ("auto", False, "qemu"), ("kvm", False, "kvm"),
    ("qemu", True, "qemu")])
def test_domain_type_auto_follows_the_probe(requested: str, kvm: bool, expected: str) -> None:
    assert resolve_domain_type(requested, kvm) == expected


@pytest.mark.parametrize(("requested", "present", "domain_type", "expected"), [
    ("auto", True, "kvm", True), ("auto", True, "qemu", False), ("auto", False, "kvm", False),
    ("on", False, "qemu", True), ("off", True, "kvm", False)])
def test_vhost_auto_needs_the_device_and_kvm(requested: str, present: bool, domain_type: str,
                                             expected: bool) -> None:
    assert resolve_vhost(requested, present, domain_type) is expected

UUID = "c7a5fdbd-edaf-9455-926a-d65c16db1809"

SPECS: dict[str, DomainXmlSpec] = {
    "domain_direct_bridge_vhost.xml": DomainXmlSpec(
        name="guest-1", memory_mib=512, vcpus=1,
        disk_path="/var/lib/macvtap-lab/lab-1/guest-1.qcow2", mac="52:54:00:aa:bb:cc",
        nic=DirectNic(source_dev="eth0", mode="bridge"), domain_type="kvm", vhost=True,
        owner="lab-1/guest-1"),
    "domain_ethernet_qemu.xml": DomainXmlSpec(
        name="guest-2", memory_mib=1024, vcpus=2,
        disk_path="/var/lib/macvtap-lab/lab-2/guest-2.qcow2", mac="52:54:00:12:34:56",
        nic=EthernetNic(target_dev="mvt23456"), domain_type="qemu", vhost=False,
        owner="lab-2/guest-2"),
    "domain_kvm_uuid.xml": DomainXmlSpec(
        name="guest-3", memory_mib=2048, vcpus=4,
        disk_path="/var/lib/macvtap-lab/lab-3/guest-3.qcow2", mac="52:54:00:de:ad:01",
        nic=EthernetNic(target_dev="mvt40001"), domain_type="kvm", vhost=False,
        owner="lab-3/guest-3", uuid=UUID),
    "domain_kernel_boot.xml": DomainXmlSpec(
        name="guest-4", memory_mib=512, vcpus=1,
        disk_path="/var/lib/macvtap-lab/lab-4/images/guest-4.qcow2", mac="52:54:00:de:ad:04",
        nic=EthernetNic(target_dev="mvt40004"), domain_type="qemu", owner="lab-4/guest-4",
        kernel_boot=KernelBoot("/var/lib/macvtap-lab/lab-4/images/guest-4.vmlinuz",
                               "/var/lib/macvtap-lab/lab-4/images/guest-4.initrd",
                               "root=LABEL=lab-root rw console=ttyS0,115200n8 quiet")),
}


def _spec(name: str, **changes: object) -> DomainXmlSpec:
    from dataclasses import replace

    return replace(SPECS[name], **changes)  # type: ignore[arg-type]


def _tree(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())


def _at(parent: etree._Element, path: str) -> etree._Element:
    el = parent.find(path)
    assert el is not None, f"no <{path}> in the XML"
    return el


def _attrs(parent: etree._Element, path: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in _at(parent, path).attrib.items()}


@pytest.fixture(scope="module")
def test_conn() -> Iterator[libvirt.virConnect]:
    """libvirt's in-process test driver (no daemon)."""
    conn = libvirt.open("test:///default")
    try:
        yield conn
    finally:
        conn.close()


# -- golden files and libvirt's own parser ----------------------------------------------------
@pytest.mark.parametrize("golden_name", sorted(SPECS))
def test_golden(golden_name: str, golden: Callable[[str, str], None]) -> None:
    golden(golden_name, build_domain_xml(SPECS[golden_name]))


@pytest.mark.parametrize("golden_name", sorted(SPECS))
def test_libvirt_accepts_the_xml(golden_name: str) -> None:
    validate_xml(build_domain_xml(SPECS[golden_name]))


@pytest.mark.parametrize("xml", [
    "<domain",
    "<domain type='bogus'><name>x</name><memory>1024</memory><os><type>hvm</type></os></domain>",
])
def test_validate_xml_refuses_broken_xml(xml: str) -> None:
    # The oracle must be able to say no, or the tests above prove nothing.
    with pytest.raises(LibvirtError, match="validating domain XML"):
        validate_xml(xml)


def test_libvirt_refuses_a_multicast_mac() -> None:
    xml = build_domain_xml(_spec("domain_ethernet_qemu.xml", mac="01:00:5e:00:00:01"))
    with pytest.raises(LibvirtError, match="unicast"):
        validate_xml(xml)


def test_build_is_deterministic() -> None:
    spec = SPECS["domain_ethernet_qemu.xml"]
    assert build_domain_xml(spec) == build_domain_xml(spec)


def test_every_domain_gets_host_entropy() -> None:
    rng = _at(_tree(build_domain_xml(SPECS["domain_ethernet_qemu.xml"])), "devices/rng")
    assert rng.get("model") == "virtio"
    backend = _at(rng, "backend")
    assert (backend.get("model"), backend.text) == ("random", "/dev/urandom")


# -- how it boots ---------------------------------------------------------------------------
def test_disk_boot_by_default() -> None:
    os_el = _at(_tree(build_domain_xml(SPECS["domain_ethernet_qemu.xml"])), "os")
    assert _attrs(os_el, "boot") == {"dev": "hd"}
    assert [el.tag for el in os_el] == ["type", "boot"]


def test_kernel_boot_elements() -> None:
    spec = SPECS["domain_kernel_boot.xml"]
    xml = build_domain_xml(spec)
    os_el = _at(_tree(xml), "os")
    # The firmware does not boot the disk: no <boot dev=...>, the kernel comes from the host.
    assert [el.tag for el in os_el] == ["type", "kernel", "initrd", "cmdline"]
    assert kernel_boot(xml) == spec.kernel_boot
    assert kernel_boot(build_domain_xml(SPECS["domain_kvm_uuid.xml"])) is None


def test_kernel_boot_without_initrd_or_cmdline() -> None:
    boot = KernelBoot("/k/vmlinuz")
    xml = build_domain_xml(_spec("domain_kernel_boot.xml", kernel_boot=boot))
    assert [el.tag for el in _at(_tree(xml), "os")] == ["type", "kernel"]
    assert kernel_boot(xml) == boot
    validate_xml(xml)


# -- the NIC --------------------------------------------------------------------------------
def test_direct_nic() -> None:
    iface = _at(_tree(build_domain_xml(SPECS["domain_direct_bridge_vhost.xml"])),
                "devices/interface")
    assert iface.get("type") == "direct"
    assert _attrs(iface, "source") == {"dev": "eth0", "mode": "bridge"}
    assert _at(iface, "mac").get("address") == "52:54:00:aa:bb:cc"
    assert _at(iface, "model").get("type") == "virtio"
    assert iface.find("target") is None  # libvirt names the macvtap itself


@pytest.mark.parametrize("mode", ["bridge", "vepa", "private", "passthrough"])
def test_direct_nic_modes_and_devices(mode: str) -> None:
    xml = build_domain_xml(_spec("domain_direct_bridge_vhost.xml",
                                 nic=DirectNic(source_dev="ens3", mode=mode)))
    assert _attrs(_tree(xml), "devices/interface/source") == {"dev": "ens3", "mode": mode}
    validate_xml(xml)


@pytest.mark.parametrize(("vhost", "drivers"), [(True, ["vhost"]), (False, [])])
@pytest.mark.parametrize("nic", [DirectNic(), EthernetNic("mvt20000")], ids=["direct", "ethernet"])
def test_vhost_driver_only_when_asked(vhost: bool, drivers: list[str],
                                      nic: DirectNic | EthernetNic) -> None:
    xml = build_domain_xml(_spec("domain_direct_bridge_vhost.xml", nic=nic, vhost=vhost))
    found = [d.get("name") for d in _tree(xml).findall("devices/interface/driver")]
    assert found == drivers


def test_ethernet_nic() -> None:
    iface = _at(_tree(build_domain_xml(SPECS["domain_ethernet_qemu.xml"])), "devices/interface")
    assert iface.get("type") == "ethernet"
    assert _attrs(iface, "target") == {"dev": "mvt23456", "managed": "no"}
    assert iface.find("source") is None
    assert _at(iface, "model").get("type") == "virtio"
    assert _at(iface, "mac").get("address") == "52:54:00:12:34:56"


def test_one_nic_one_disk_serial_console() -> None:
    root = _tree(build_domain_xml(SPECS["domain_ethernet_qemu.xml"]))
    assert len(root.findall("devices/interface")) == 1
    assert len(root.findall("devices/disk")) == 1
    assert _at(root, "devices/serial").get("type") == "pty"
    assert _attrs(root, "devices/console/target") == {"type": "serial", "port": "0"}
    assert root.findtext("devices/emulator") == QEMU_BINARY


# -- domain type, cpu, uuid, disk -------------------------------------------------------------
def test_kvm_gets_host_passthrough_cpu() -> None:
    root = _tree(build_domain_xml(SPECS["domain_direct_bridge_vhost.xml"]))
    assert root.get("type") == "kvm"
    cpus = root.findall("cpu")
    assert len(cpus) == 1
    assert _attrs(root, "cpu") == {"mode": "host-passthrough", "check": "none"}


def test_qemu_has_no_cpu_element() -> None:
    root = _tree(build_domain_xml(SPECS["domain_ethernet_qemu.xml"]))
    assert root.get("type") == "qemu"
    assert root.find("cpu") is None


def test_uuid_element_only_when_given() -> None:
    with_uuid = _tree(build_domain_xml(SPECS["domain_kvm_uuid.xml"]))
    assert with_uuid.findtext("uuid") == UUID
    assert [el.tag for el in with_uuid][:2] == ["name", "uuid"]
    without = _tree(build_domain_xml(_spec("domain_kvm_uuid.xml", uuid=None)))
    assert without.find("uuid") is None


def test_libvirt_keeps_the_given_uuid(test_conn: libvirt.virConnect) -> None:
    dom = test_conn.defineXML(build_domain_xml(SPECS["domain_kvm_uuid.xml"]))
    try:
        assert dom.UUIDString() == UUID
    finally:
        dom.undefine()


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_disk(fmt: str) -> None:
    root = _tree(build_domain_xml(_spec("domain_ethernet_qemu.xml", disk_format=fmt)))
    disk = _at(root, "devices/disk")
    assert _attrs(disk, "driver") == {"name": "qemu", "type": fmt}
    assert _at(disk, "source").get("file") == "/var/lib/macvtap-lab/lab-2/guest-2.qcow2"
    assert _attrs(disk, "target") == {"dev": "vda", "bus": "virtio"}


def test_owner_defaults_to_the_name() -> None:
    xml = build_domain_xml(_spec("domain_ethernet_qemu.xml", owner=""))
    assert domain_owner(xml) == "guest-2"


def test_xml_special_characters_are_escaped() -> None:
    xml = build_domain_xml(_spec("domain_ethernet_qemu.xml", disk_path="/tmp/a&b<c>'\".qcow2"))
    assert disk_source(xml) == "/tmp/a&b<c>'\".qcow2"


# -- readers, on our XML and on libvirt's re-serialised XML -----------------------------------
@pytest.mark.parametrize("golden_name", sorted(SPECS))
def test_readers_round_trip(golden_name: str) -> None:
    spec = SPECS[golden_name]
    xml = build_domain_xml(spec)
    assert interface_mac(xml) == spec.mac
    assert domain_owner(xml) == spec.owner
    assert memory_mib(xml) == spec.memory_mib
    assert vcpus(xml) == spec.vcpus
    assert disk_source(xml) == spec.disk_path
    assert etree_domain_type(xml) == spec.domain_type
    expected_target = spec.nic.target_dev if isinstance(spec.nic, EthernetNic) else None
    assert interface_target(xml) == expected_target


@pytest.mark.parametrize("golden_name", sorted(SPECS))
def test_readers_on_libvirts_own_xml(golden_name: str, test_conn: libvirt.virConnect) -> None:
    """libvirt rewrites memory in KiB, single-quotes attributes and keeps our metadata."""
    spec = SPECS[golden_name]
    dom = test_conn.defineXML(build_domain_xml(spec))
    try:
        xml = dom.XMLDesc(0)
    finally:
        dom.undefine()
    assert "unit='KiB'" in xml
    assert memory_mib(xml) == spec.memory_mib
    assert vcpus(xml) == spec.vcpus
    assert interface_mac(xml) == spec.mac
    assert domain_owner(xml) == spec.owner
    assert disk_source(xml) == spec.disk_path
    assert etree_domain_type(xml) == spec.domain_type


@pytest.mark.parametrize(("value", "unit", "mib"), [
    ("524288", "KiB", 512), ("524288", "k", 512), ("524288", None, 512),
    ("512", "MiB", 512), ("512", "M", 512),
    ("2", "GiB", 2048), ("1", "G", 1024),
    ("1536", "KiB", 1),  # rounds down
])
def test_memory_mib_units(value: str, unit: str | None, mib: int) -> None:
    attr = f" unit='{unit}'" if unit else ""
    assert memory_mib(f"<domain><memory{attr}>{value}</memory></domain>") == mib


@pytest.mark.parametrize("xml", ["<domain/>", "<domain><memory/></domain>"])
def test_memory_mib_missing(xml: str) -> None:
    assert memory_mib(xml) == 0


def test_readers_on_a_bare_domain() -> None:
    xml = "<domain type='qemu'><name>x</name></domain>"
    assert interface_mac(xml) is None
    assert interface_target(xml) is None
    assert domain_owner(xml) is None
    assert vcpus(xml) == 0
    assert disk_source(xml) is None
    assert etree_domain_type(xml) == "qemu"
    assert etree_domain_type("<domain/>") == ""


def test_interface_mac_is_lower_cased() -> None:
    xml = "<domain><devices><interface><mac address='52:54:00:AB:CD:EF'/></interface></devices></domain>"
    assert interface_mac(xml) == "52:54:00:ab:cd:ef"


def test_interface_target_of_a_live_direct_nic() -> None:
    xml = ("<domain><devices><interface type='direct'><mac address='52:54:00:00:00:01'/>"
           "<source dev='eth0' mode='bridge'/><target dev='macvtap0'/></interface>"
           "</devices></domain>")
    assert interface_target(xml) == "macvtap0"


def test_domain_owner_needs_our_namespace() -> None:
    foreign = ("<domain><metadata><lab xmlns='https://example.invalid/other'>"
               "<owner>x/y</owner></lab></metadata></domain>")
    assert domain_owner(foreign) is None
    ours = (f"<domain><metadata><m:lab xmlns:m='{LAB_NS}'><m:owner>c/d</m:owner></m:lab>"
            "</metadata></domain>")
    assert domain_owner(ours) == "c/d"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_uses_vhost_reads_back_what_was_built(name: str) -> None:
    assert uses_vhost(build_domain_xml(SPECS[name])) is SPECS[name].vhost
