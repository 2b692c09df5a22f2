"""MacvtapDomain: a libvirt guest in a LibvirtContainer whose NIC is a macvtap device.

Two NIC backends:
- `ethernet` (default, safe with several libvirt containers per host): the provider
  creates the macvtap link itself inside the container's netns, with the guest's MAC
  and a host-wide unique ifindex (so a unique /dev/tapN), and hands it to libvirt
  unmanaged (`<interface type='ethernet'>`). Deleting the link is ours too.
- `direct` (the seed's `<interface type='direct'>`): libvirt creates macvtapN; only safe
  with one libvirt container per host, since every container numbers its links from the
  same small ifindex while /dev/tapN lives in the shared /dev.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource, UpdateResult

from macvtap_provider import boot_log, faults
from macvtap_provider.adapters import libvirt_api
from macvtap_provider.adapters.lab_host import VHOST_NET, LabHost, for_endpoint
from macvtap_provider.builders import domain_xml, tap
from macvtap_provider.builders.validation import (
    BOOT_MODES,
    DOMAIN_TYPES,
    INTERFACE_TYPES,
    MACVTAP_MODES,
    MEMORY_MIB_RANGE,
    VCPU_RANGE,
    VHOST_CHOICES,
    check_choice,
    check_ifname,
    check_int_range,
    check_name,
    derive_mac,
    normalize_mac,
)
from macvtap_provider.errors import LibvirtError, NetlinkError, NotFoundError, SpecError
from macvtap_provider.resources._base import (
    LabProvider,
    check_endpoint,
    fill_defaults,
    input_names,
    is_unknown,
    known,
    output_names,
    resource_props,
    spec_kwargs,
)

if TYPE_CHECKING:
    import libvirt

log = logging.getLogger(__name__)

CONTAINER_STOPPED = "container-stopped"
#: How long delete waits for qemu to release the disk after the domain is destroyed.
RELEASE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class MacvtapDomainSpec:
    """A domain's inputs, validated, with their defaults (the only place they are set)."""

    name: str
    libvirt_uri: str
    container: str
    disk_path: str
    #: None is filled in by `check`: a stable 52:54:00:xx:xx:xx derived from the name.
    mac: str | None = None
    memory_mib: int = 512
    vcpus: int = 1
    source_dev: str = "eth0"
    mode: str = "bridge"
    vhost: str = "auto"
    domain_type: str = "auto"
    #: `check` turns auto into ethernet.
    interface_type: str = "auto"
    docker_host: str | None = None
    image_digest: str | None = None
    #: `check` keeps auto: kernel when `kernel` is given (at create), else disk.
    boot: str = "auto"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None

    @staticmethod
    def from_props(props: dict[str, Any]) -> MacvtapDomainSpec:
        kwargs = spec_kwargs(MacvtapDomainSpec, props)
        for key in ("memory_mib", "vcpus"):
            if key in kwargs:
                kwargs[key] = int(kwargs[key])
        return MacvtapDomainSpec(**kwargs)

    @property
    def nic_mac(self) -> str:
        return self.mac or derive_mac(self.name)

    @property
    def kernel_boot(self) -> domain_xml.KernelBoot | None:
        """Direct kernel boot, or None: the firmware boots the disk."""
        if self.boot == "disk" or not self.kernel:
            return None
        return domain_xml.KernelBoot(self.kernel, self.initrd or "", self.cmdline or "")

    @property
    def owner(self) -> str:
        """Recorded in the domain's metadata: which container/domain made it."""
        return f"{self.container}/{self.name}"


@dataclass(frozen=True)
class Accel:
    """How a domain runs, decided once at create (the KVM probe is explicit) and kept."""

    domain_type: str  # kvm or qemu
    vhost: bool

    @staticmethod
    def decide(spec: MacvtapDomainSpec, host: LabHost) -> Accel:
        # Only `auto` asks the host; the probe boots a tiny guest (up to 20 s, then cached).
        kvm = host.kvm_usable() if spec.domain_type == "auto" else spec.domain_type == "kvm"
        domain_type = domain_xml.resolve_domain_type(spec.domain_type, kvm)
        vhost_net = spec.vhost == "auto" and host.has_device(VHOST_NET)
        return Accel(domain_type, domain_xml.resolve_vhost(spec.vhost, vhost_net, domain_type))

    @staticmethod
    def recorded(olds: dict[str, Any]) -> Accel | None:
        """What create decided, from the state (None for states made before it was kept)."""
        domain_type, vhost = olds.get("domain_type_used"), olds.get("vhost_used")
        if domain_type in ("kvm", "qemu") and isinstance(vhost, bool):
            return Accel(str(domain_type), vhost)
        return None


def build_xml(spec: MacvtapDomainSpec, accel: Accel, link_name: str | None,
              uuid: str | None = None) -> str:
    nic: domain_xml.DirectNic | domain_xml.EthernetNic
    if spec.interface_type == "direct":
        nic = domain_xml.DirectNic(spec.source_dev, spec.mode)
    else:
        assert link_name is not None
        nic = domain_xml.EthernetNic(link_name)
    return domain_xml.build_domain_xml(domain_xml.DomainXmlSpec(
        name=spec.name, memory_mib=spec.memory_mib, vcpus=spec.vcpus, disk_path=spec.disk_path,
        mac=spec.nic_mac, nic=nic, domain_type=accel.domain_type, vhost=accel.vhost,
        owner=spec.owner, uuid=uuid, kernel_boot=spec.kernel_boot))


_KERNEL_INPUTS = ("kernel", "initrd", "cmdline")


def _boot_decided_at_create(olds: dict[str, Any], news: dict[str, Any]) -> dict[str, Any]:
    """`boot: auto` is decided when the domain is made: one that booted its disk keeps
    doing so, so a kernel the image offers later (a state made before the image exported
    one, or an image that gained one) is no reason to replace the guest. The news, with
    the kernel inputs of such a domain read as unchanged."""
    if news.get("boot") != "auto" or olds.get("boot", "auto") != "auto" \
            or olds.get("boot_used", "disk") != "disk":
        return news
    return {**news, **{key: olds.get(key) for key in _KERNEL_INPUTS}}


def libvirtd_hint(container: str) -> str:
    """What to do when libvirtd in a running container does not answer."""
    return (f"libvirtd in container {container!r} is stopped or still starting: start it "
            f"with `docker exec {container} libvirtd-ctl start` (its guests keep running "
            "meanwhile), then run the command again")


def container_status(host: LabHost, name: str) -> str:
    """running, stopped or gone."""
    info = host.container(name)
    if info is None:
        return "gone"
    return "running" if info.running else "stopped"


@dataclass
class MacvtapDomainArgs:
    """Inputs of a MacvtapDomain; None: the default of `MacvtapDomainSpec`."""

    #: The libvirt domain's name.
    name: pulumi.Input[str]
    #: libvirt in the LibvirtContainer (its `libvirt_uri` output).
    libvirt_uri: pulumi.Input[str]
    #: The LibvirtContainer's name (its netns holds the macvtap).
    container: pulumi.Input[str]
    #: The guest disk (a CustomizedImage's `path`).
    disk_path: pulumi.Input[str]
    #: Guest memory in MiB (128-65536; changed in place, with a restart).
    memory_mib: pulumi.Input[int] | None = None
    #: Virtual CPUs (1-64; changed in place, with a restart).
    vcpus: pulumi.Input[int] | None = None
    #: The NIC's MAC (default: derived from the name).
    mac: pulumi.Input[str] | None = None
    #: The macvtap's parent device in the container.
    source_dev: pulumi.Input[str] | None = None
    #: macvtap mode: bridge, vepa, private or passthrough.
    mode: pulumi.Input[str] | None = None
    #: vhost-net: on, off, or auto (on when KVM and /dev/vhost-net).
    vhost: pulumi.Input[str] | None = None
    #: kvm, qemu (TCG) or auto (kvm only when a KVM guest really boots on the host).
    domain_type: pulumi.Input[str] | None = None
    #: ethernet (provider-made macvtap), direct (libvirt's; one container per host) or auto.
    interface_type: pulumi.Input[str] | None = None
    #: Docker endpoint of the container's host (default: the local socket).
    docker_host: pulumi.Input[str] | None = None
    #: The image's digest (a CustomizedImage's `digest`): a new image replaces the domain.
    image_digest: pulumi.Input[str] | None = None
    #: disk (firmware, then the disk's bootloader), kernel (`kernel` and `initrd` loaded
    #: by qemu, with `cmdline`: no firmware disk boot, no bootloader), or auto (kernel
    #: when `kernel` is set).
    boot: pulumi.Input[str] | None = None
    #: A kernel on the lab host (a CustomizedImage's `kernel_path`; "" or None: none).
    kernel: pulumi.Input[str] | None = None
    #: Its initramfs on the lab host (a CustomizedImage's `initrd_path`).
    initrd: pulumi.Input[str] | None = None
    #: The kernel command line (a CustomizedImage's `kernel_cmdline`).
    cmdline: pulumi.Input[str] | None = None


class MacvtapDomainProvider(LabProvider):
    INPUTS = input_names(MacvtapDomainArgs)
    UPDATABLE = frozenset({"memory_mib", "vcpus"})
    REPLACE_ON = frozenset(INPUTS) - UPDATABLE
    KIND = "MacvtapDomain"
    # Domains made before these inputs existed booted their disk: `auto` without a kernel.
    ADDED_INPUTS = {"boot": "auto"}

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        name = known(props, "name", lambda v: check_name(v, "name"))
        if props.get("mac"):
            if not is_unknown(props["mac"]):
                props["mac"] = normalize_mac(props["mac"], "mac")
        elif name:
            props["mac"] = derive_mac(name)
        fill_defaults(props, MacvtapDomainSpec)
        known(props, "memory_mib",
              lambda v: check_int_range(v, "memory_mib", *MEMORY_MIB_RANGE, "MiB"))
        known(props, "vcpus", lambda v: check_int_range(v, "vcpus", *VCPU_RANGE))
        known(props, "source_dev", lambda v: check_ifname(v, "source_dev"))
        known(props, "mode", lambda v: check_choice(v, "mode", MACVTAP_MODES))
        known(props, "vhost", lambda v: check_choice(v, "vhost", VHOST_CHOICES))
        known(props, "domain_type", lambda v: check_choice(v, "domain_type", DOMAIN_TYPES))
        known(props, "interface_type",
              lambda v: check_choice(v, "interface_type", INTERFACE_TYPES))
        if props["interface_type"] == "auto":
            props["interface_type"] = "ethernet"
        known(props, "container", lambda v: check_name(v, "container"))
        check_endpoint(props)
        path = known(props, "disk_path", str)
        if path is not None and not Path(path).is_absolute():
            raise SpecError("disk_path", f"{path!r} is not an absolute path")
        uri = known(props, "libvirt_uri", str)
        if uri is not None and "://" not in uri:
            raise SpecError("libvirt_uri", f"{uri!r} is not a libvirt URI (qemu:///system?socket=...)")
        known(props, "boot", lambda v: check_choice(v, "boot", BOOT_MODES))
        for key in ("kernel", "initrd"):
            path = known(props, key, lambda v: str(v or ""))
            if path and not Path(path).is_absolute():
                raise SpecError(key, f"{path!r} is not an absolute path")
        if props["boot"] == "kernel" and not is_unknown(props.get("kernel")) \
                and not props.get("kernel"):
            raise SpecError("kernel", "boot is kernel but no kernel is given: set `kernel` "
                            "(a CustomizedImage's kernel_path) or use boot auto/disk")
        if props["vhost"] == "on" and props["domain_type"] == "qemu":
            raise SpecError("vhost", "vhost needs a KVM domain: use vhost auto/off with domain_type qemu")
        return props

    # -- create ----------------------------------------------------------------------------
    def create(self, props: dict[str, Any]) -> CreateResult:
        spec = MacvtapDomainSpec.from_props(props)
        host = for_endpoint(spec.docker_host)
        if not host.files.exists(spec.disk_path):
            raise NotFoundError(f"domain {spec.name!r}: disk {spec.disk_path} does not exist "
                                "(is the CustomizedImage created?)")
        if container_status(host, spec.container) != "running":
            raise NotFoundError(f"domain {spec.name!r}: container {spec.container!r} is not "
                                "running; create the LibvirtContainer first")
        boot = spec.kernel_boot
        for path in (boot.kernel, boot.initrd) if boot is not None else ():
            if path and not host.files.exists(path):
                raise NotFoundError(f"domain {spec.name!r}: {path} does not exist on the lab "
                                    "host (is the CustomizedImage created?); boot: disk "
                                    "boots the disk instead")
        accel = Accel.decide(spec, host)
        with host.libvirt(spec.libvirt_uri, spec.container, libvirtd_hint(spec.container)) as conn:
            self._clear_leftover(conn, spec, host)
            link_name = self._make_link(spec, host) if spec.interface_type == "ethernet" else None
            dom = libvirt_api.define(conn, build_xml(spec, accel, link_name), spec.name)
            faults.pause(faults.DOMAIN_DEFINED)
            try:
                log.info("starting domain %s (%s, %d MiB, %s NIC, %s boot)", spec.name,
                         accel.domain_type, spec.memory_mib, spec.interface_type,
                         "kernel" if boot is not None else "disk")
                libvirt_api.start(dom)
                boot_log.record(boot_log.STARTED, spec.owner)
            except BaseException:
                # Leave nothing half made: no defined-but-dead domain, no orphan link.
                with contextlib.suppress(Exception):
                    libvirt_api.undefine(dom)
                if link_name:
                    with contextlib.suppress(Exception), host.netns(spec.container) as ns:
                        ns.delete_link(link_name)
                raise
            outs = self._outs(props, spec, host, dom, link_name)
        return CreateResult(outs["uuid"], outs)

    @staticmethod
    def _clear_leftover(conn: libvirt.virConnect, spec: MacvtapDomainSpec,
                        host: LabHost) -> None:
        dom = libvirt_api.find_domain(conn, spec.name)
        if dom is None:
            return
        xml = libvirt_api.inactive_xml(dom)
        if domain_xml.domain_owner(xml) != spec.owner:
            raise LibvirtError(f"domain {spec.name!r} already exists and was not made by this "
                               f"stack: undefine it (virsh undefine {spec.name}) or rename")
        log.info("removing domain %s left by an interrupted run", spec.name)
        libvirt_api.stop(dom)
        libvirt_api.undefine(dom)
        target = domain_xml.interface_target(xml)
        if target:
            with host.netns(spec.container) as ns:
                ns.delete_link(target)

    @staticmethod
    def _make_link(spec: MacvtapDomainSpec, host: LabHost) -> str:
        with host.netns(spec.container) as ns:
            if ns.link(spec.source_dev) is None:
                raise NotFoundError(f"domain {spec.name!r}: parent device {spec.source_dev!r} "
                                    f"does not exist in container {spec.container!r}")
            for stale in ns.links():
                # A macvtap with this guest's MAC can only be ours, left when the domain was
                # removed out of band (libvirt never deletes an unmanaged link).
                if stale.kind == "macvtap" and stale.mac == spec.nic_mac:
                    log.info("removing stale macvtap %s (MAC %s)", stale.name, stale.mac)
                    ns.delete_link(stale.name)
            last: Exception | None = None
            for attempt in range(8):
                taken = host.tap_indexes() | ns.used_indexes()
                index = tap.pick_tap_index(spec.owner, taken, attempt)
                name = tap.macvtap_name(index)
                try:
                    info = ns.create_macvtap(spec.source_dev, name, spec.nic_mac, spec.mode,
                                             index)
                except NetlinkError as exc:
                    log.debug("macvtap index %d refused (%s); trying another", index, exc)
                    last = exc
                    continue
                log.info("macvtap %s (ifindex %d, /dev/tap%d) on %s, MAC %s", name, index, index,
                         spec.source_dev, info.mac)
                return name
        raise NetlinkError(f"domain {spec.name!r}: no macvtap link could be created on "
                           f"{spec.source_dev} in container {spec.container!r} ({last})")

    @staticmethod
    def _outs(props: dict[str, Any], spec: MacvtapDomainSpec, host: LabHost,
              dom: libvirt.virDomain, link_name: str | None) -> dict[str, Any]:
        live = libvirt_api.live_xml(dom)
        device = link_name or domain_xml.interface_target(live) or ""
        guest_mac = domain_xml.interface_mac(live) or ""
        tap_mac = ""
        if device:
            with host.netns(spec.container) as ns:
                info = ns.link(device)
            tap_mac = info.mac if info else ""
        return {
            **props,
            "uuid": libvirt_api.uuid(dom),
            "guest_mac": guest_mac,
            "macvtap_device": device,
            "macvtap_mac": tap_mac,
            "mac_matches": bool(tap_mac) and tap_mac == guest_mac,
            "state": libvirt_api.state_name(dom),
            "domain_type_used": domain_xml.etree_domain_type(live),
            "vhost_used": domain_xml.uses_vhost(live),
            "memory_mib_live": domain_xml.memory_mib(live),
            "boot_used": "kernel" if domain_xml.kernel_boot(live) is not None else "disk",
        }

    # -- read / update / delete -----------------------------------------------------------
    @contextlib.contextmanager
    def _domain(self, spec: MacvtapDomainSpec,
                host: LabHost) -> Iterator[libvirt.virDomain | None]:
        if container_status(host, spec.container) != "running":
            # The domain lived in that container: it is gone with it.
            yield None
            return
        with host.libvirt(spec.libvirt_uri, spec.container, libvirtd_hint(spec.container)) as conn:
            yield libvirt_api.find_domain(conn, spec.name)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        spec = MacvtapDomainSpec.from_props(props)
        host = for_endpoint(spec.docker_host)
        if container_status(host, spec.container) == "stopped":
            # libvirtd is down with its container: the domain is neither known gone nor
            # running. Refresh records that; `up` replaces the container and its domains.
            return ReadResult(id_, {**props, "state": CONTAINER_STOPPED, "mac_matches": False})
        with self._domain(spec, host) as dom:
            if dom is None or libvirt_api.uuid(dom) != id_:
                return self.read_missing()
            link_name = props.get("macvtap_device") if spec.interface_type == "ethernet" else None
            return ReadResult(id_, self._outs(props, spec, host, dom, link_name))

    def drift_replaces(self, olds: dict[str, Any]) -> list[str]:
        if olds.get("state") == CONTAINER_STOPPED:
            return ["state"]
        # A direct NIC's macvtap exists only while the domain runs (libvirt makes it at
        # start), so a shut-off direct domain is restarted, not replaced.
        if olds.get("mac_matches") is False and (
                olds.get("state") == "running" or olds.get("interface_type") != "direct"):
            return ["mac_matches"]  # e.g. our macvtap link was deleted out of band
        return []

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        result = super().diff(id_, olds, _boot_decided_at_create(olds, news))
        if not result.changes and olds.get("state") not in (None, "running"):
            result.changes = True  # shut off out of band: `up` starts it again (update)
        return result

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        spec = MacvtapDomainSpec.from_props(news)
        host = for_endpoint(spec.docker_host)
        with self._domain(spec, host) as dom:
            if dom is None:
                raise NotFoundError(f"domain {spec.name!r} is gone: run `pulumi refresh` then "
                                    "`pulumi up` to recreate it")
            link_name = olds.get("macvtap_device") if spec.interface_type == "ethernet" else None
            if (olds.get("memory_mib"), olds.get("vcpus")) != (spec.memory_mib, spec.vcpus):
                log.info("domain %s: %d MiB / %d vCPU -> %d MiB / %d vCPU (redefine + restart)",
                         spec.name, olds.get("memory_mib"), olds.get("vcpus"), spec.memory_mib,
                         spec.vcpus)
                # The same acceleration as at create (decided once, kept in the state).
                accel = Accel.recorded(olds) or Accel.decide(spec, host)
                dom = libvirt_api.define(libvirt_api.connection_of(dom),
                                         build_xml(spec, accel, link_name, libvirt_api.uuid(dom)),
                                         spec.name)
                libvirt_api.stop(dom)
            if not libvirt_api.is_active(dom):
                libvirt_api.start(dom)
                boot_log.record(boot_log.STARTED, spec.owner)
            return UpdateResult(self._outs(news, spec, host, dom, link_name))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        spec = MacvtapDomainSpec.from_props(props)
        host = for_endpoint(spec.docker_host)
        running = container_status(host, spec.container) == "running"
        with self._domain(spec, host) as dom:
            if dom is not None:
                log.info("destroying and undefining domain %s", spec.name)
                libvirt_api.stop(dom)
                libvirt_api.undefine(dom)
            link_name = props.get("macvtap_device")
            if running and link_name and spec.interface_type == "ethernet":
                with host.netns(spec.container) as ns:
                    ns.delete_link(link_name)
        # qemu may take a moment to release the disk after destroy.
        host.files.wait_released(spec.disk_path, RELEASE_TIMEOUT_S)


class MacvtapDomain(Resource, module="macvtap", name="MacvtapDomain"):
    """A libvirt domain whose NIC is a macvtap on the container's eth0 (bridge mode)."""

    name: pulumi.Output[str]
    libvirt_uri: pulumi.Output[str]
    container: pulumi.Output[str]
    disk_path: pulumi.Output[str]
    memory_mib: pulumi.Output[int]
    vcpus: pulumi.Output[int]
    mac: pulumi.Output[str]
    source_dev: pulumi.Output[str]
    mode: pulumi.Output[str]
    vhost: pulumi.Output[str]
    domain_type: pulumi.Output[str]
    interface_type: pulumi.Output[str]
    docker_host: pulumi.Output[str | None]
    image_digest: pulumi.Output[str | None]
    boot: pulumi.Output[str]
    kernel: pulumi.Output[str | None]
    initrd: pulumi.Output[str | None]
    cmdline: pulumi.Output[str | None]
    #: The libvirt domain's UUID (also its Pulumi id).
    uuid: pulumi.Output[str]
    #: The NIC's MAC as libvirt reports it.
    guest_mac: pulumi.Output[str]
    #: The macvtap link in the container (mvtN, or macvtapN for a direct NIC).
    macvtap_device: pulumi.Output[str]
    #: The macvtap link's MAC, and whether it equals the guest's (False: unreachable).
    macvtap_mac: pulumi.Output[str]
    mac_matches: pulumi.Output[bool]
    #: libvirt's state: running, shutoff... (container-stopped when refresh saw that).
    state: pulumi.Output[str]
    #: kvm or qemu, as decided at create (domain_type auto: by a real KVM boot probe).
    domain_type_used: pulumi.Output[str]
    #: Whether the NIC uses vhost-net.
    vhost_used: pulumi.Output[bool]
    #: The memory the running domain has, in MiB.
    memory_mib_live: pulumi.Output[int]
    #: kernel (direct kernel boot) or disk, as the domain is defined.
    boot_used: pulumi.Output[str]

    def __init__(self, resource_name: str, args: MacvtapDomainArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props, opts = resource_props(args, OUTPUTS, opts=opts)
        super().__init__(MacvtapDomainProvider(), resource_name, props, opts)


OUTPUTS = output_names(MacvtapDomain, MacvtapDomainArgs)
