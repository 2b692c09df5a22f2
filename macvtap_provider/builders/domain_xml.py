"""Pure builder and readers for libvirt domain XML (lxml only)."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

LAB_NS = "https://macvtap-lab.invalid/xmlns/domain/1"
QEMU_BINARY = "/usr/bin/qemu-system-x86_64"


@dataclass(frozen=True)
class DirectNic:
    """The seed's NIC: libvirt creates a macvtap on `source_dev` (`<interface type='direct'>`)."""

    source_dev: str = "eth0"
    mode: str = "bridge"


@dataclass(frozen=True)
class EthernetNic:
    """A macvtap link made by us, handed to libvirt unmanaged (`<interface type='ethernet'>`).

    Used when several libvirt containers share the host's /dev: the link gets a
    host-wide unique ifindex, hence a /dev/tapN no other guest can open.
    """

    target_dev: str


@dataclass(frozen=True)
class KernelBoot:
    """Direct kernel boot: qemu loads these host files itself (no firmware disk boot, no
    bootloader). Paths as qemu sees them (inside the libvirt container: its work dir)."""

    kernel: str
    initrd: str = ""
    cmdline: str = ""


@dataclass(frozen=True)
class DomainXmlSpec:
    name: str
    memory_mib: int
    vcpus: int
    disk_path: str
    mac: str
    nic: DirectNic | EthernetNic
    domain_type: str = "qemu"  # "kvm" or "qemu" (TCG)
    vhost: bool = False
    disk_format: str = "qcow2"
    owner: str = ""  # recorded in <metadata> to find a stack's domains
    uuid: str | None = None  # set when redefining an existing domain
    kernel_boot: KernelBoot | None = None  # None: firmware boots the disk


def resolve_domain_type(requested: str, kvm_usable: bool) -> str:
    """kvm or qemu (TCG): `auto` is kvm only when a KVM guest really boots on the host
    (`kvm_usable`, the answer of an explicit probe made by the caller)."""
    if requested != "auto":
        return requested
    return "kvm" if kvm_usable else "qemu"


def resolve_vhost(requested: str, vhost_net_present: bool, domain_type: str) -> bool:
    """Whether the NIC uses vhost-net: `auto` when the host has /dev/vhost-net and the
    domain is KVM (qemu ignores vhost for TCG domains)."""
    if requested != "auto":
        return requested == "on"
    return vhost_net_present and domain_type == "kvm"


def _sub(parent: etree._Element, tag: str, text: str | None = None,
         **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def build_domain_xml(spec: DomainXmlSpec) -> str:
    """The domain definition for `spec`, as a pretty-printed XML string."""
    dom = etree.Element("domain", type=spec.domain_type)
    _sub(dom, "name", spec.name)
    if spec.uuid:
        _sub(dom, "uuid", spec.uuid)
    meta = _sub(dom, "metadata")
    lab = etree.SubElement(meta, f"{{{LAB_NS}}}lab", nsmap={"lab": LAB_NS})
    etree.SubElement(lab, f"{{{LAB_NS}}}owner").text = spec.owner or spec.name
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "currentMemory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus), placement="static")
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if spec.kernel_boot is None:
        _sub(os_el, "boot", dev="hd")
    else:
        _sub(os_el, "kernel", spec.kernel_boot.kernel)
        if spec.kernel_boot.initrd:
            _sub(os_el, "initrd", spec.kernel_boot.initrd)
        if spec.kernel_boot.cmdline:
            _sub(os_el, "cmdline", spec.kernel_boot.cmdline)
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.domain_type == "kvm":
        _sub(dom, "cpu", mode="host-passthrough", check="none")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    _sub(devices, "emulator", QEMU_BINARY)
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type=spec.disk_format)
    _sub(disk, "source", file=spec.disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")

    if isinstance(spec.nic, DirectNic):
        iface = _sub(devices, "interface", type="direct")
        _sub(iface, "mac", address=spec.mac)
        _sub(iface, "source", dev=spec.nic.source_dev, mode=spec.nic.mode)
    else:
        iface = _sub(devices, "interface", type="ethernet")
        _sub(iface, "mac", address=spec.mac)
        _sub(iface, "target", dev=spec.nic.target_dev, managed="no")
    _sub(iface, "model", type="virtio")
    if spec.vhost:
        _sub(iface, "driver", name="vhost")

    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    # Entropy from the host from the first moment: without it a TCG guest's sshd waits
    # seconds in getrandom() until the kernel's pool is ready (~1 s of a fast boot).
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="none")
    return etree.tostring(dom, pretty_print=True, encoding="unicode")


def _parse(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())


def interface_mac(xml: str) -> str | None:
    """The first NIC's MAC in a domain XML."""
    el = _parse(xml).find("devices/interface/mac")
    return None if el is None else str(el.get("address")).lower()


def interface_target(xml: str) -> str | None:
    """The host-side device name of the first NIC (live XML: e.g. macvtap0)."""
    el = _parse(xml).find("devices/interface/target")
    return None if el is None else el.get("dev")


def domain_owner(xml: str) -> str | None:
    el = _parse(xml).find(f"metadata/{{{LAB_NS}}}lab/{{{LAB_NS}}}owner")
    return None if el is None else el.text


def memory_mib(xml: str) -> int:
    el = _parse(xml).find("memory")
    if el is None or el.text is None:
        return 0
    value = int(el.text)
    unit = el.get("unit", "KiB")
    factor = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024}.get(unit, 1)
    return int(value * factor)


def vcpus(xml: str) -> int:
    el = _parse(xml).find("vcpu")
    return 0 if el is None or el.text is None else int(el.text)


def uses_vhost(xml: str) -> bool:
    """Whether the first NIC asks for the vhost-net backend (`<driver name='vhost'/>`)."""
    el = _parse(xml).find("devices/interface/driver")
    return el is not None and el.get("name") == "vhost"


def kernel_boot(xml: str) -> KernelBoot | None:
    """The direct kernel boot a domain XML asks for, or None when it boots its disk."""
    os_el = _parse(xml).find("os")
    kernel = None if os_el is None else os_el.findtext("kernel")
    if os_el is None or not kernel:
        return None
    return KernelBoot(kernel, os_el.findtext("initrd") or "", os_el.findtext("cmdline") or "")


def etree_domain_type(xml: str) -> str:
    """The domain's type attribute (kvm or qemu)."""
    return str(_parse(xml).get("type", ""))
