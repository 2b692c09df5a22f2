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
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource, UpdateResult

from macvtap_provider import faults
from macvtap_provider.adapters import docker_api, libvirt_api, netlink, qemu_img
from macvtap_provider.adapters.kvm import kvm_usable
from macvtap_provider.builders import domain_xml, tap
from macvtap_provider.builders.validation import (
    MACVTAP_MODES,
    MEMORY_MIB_RANGE,
    VCPU_RANGE,
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
    default,
    is_unknown,
    known,
    resource_props,
)

log = logging.getLogger(__name__)

VHOST_NET = Path("/dev/vhost-net")
CONTAINER_STOPPED = "container-stopped"
INTERFACE_TYPES = ("auto", "ethernet", "direct")


@dataclass(frozen=True)
class MacvtapDomainSpec:
    name: str
    libvirt_uri: str
    container: str
    disk_path: str
    mac: str
    memory_mib: int = 512
    vcpus: int = 1
    source_dev: str = "eth0"
    mode: str = "bridge"
    vhost: str = "auto"
    domain_type: str = "auto"
    interface_type: str = "ethernet"
    docker_host: str | None = None

    @staticmethod
    def from_props(props: dict[str, Any]) -> MacvtapDomainSpec:
        return MacvtapDomainSpec(
            name=props["name"], libvirt_uri=props["libvirt_uri"], container=props["container"],
            disk_path=props["disk_path"], mac=props["mac"],
            memory_mib=int(props.get("memory_mib") or 512), vcpus=int(props.get("vcpus") or 1),
            source_dev=props.get("source_dev") or "eth0", mode=props.get("mode") or "bridge",
            vhost=props.get("vhost") or "auto", domain_type=props.get("domain_type") or "auto",
            interface_type=props.get("interface_type") or "ethernet",
            docker_host=props.get("docker_host"))

    def resolved_type(self) -> str:
        if self.domain_type != "auto":
            return self.domain_type
        return "kvm" if kvm_usable() else "qemu"

    def resolved_vhost(self) -> bool:
        # The container sees the host's /dev (bind-mounted), so the host's answer is its answer.
        if self.vhost != "auto":
            return self.vhost == "on"
        return VHOST_NET.exists() and self.resolved_type() == "kvm"


def build_xml(spec: MacvtapDomainSpec, link_name: str | None, uuid: str | None = None) -> str:
    nic: domain_xml.DirectNic | domain_xml.EthernetNic
    if spec.interface_type == "direct":
        nic = domain_xml.DirectNic(spec.source_dev, spec.mode)
    else:
        assert link_name is not None
        nic = domain_xml.EthernetNic(link_name)
    return domain_xml.build_domain_xml(domain_xml.DomainXmlSpec(
        name=spec.name, memory_mib=spec.memory_mib, vcpus=spec.vcpus, disk_path=spec.disk_path,
        mac=spec.mac, nic=nic, domain_type=spec.resolved_type(), vhost=spec.resolved_vhost(),
        owner=f"{spec.container}/{spec.name}", uuid=uuid))


def container_state(docker_host: str | None, name: str) -> tuple[str, int | None]:
    """("running", pid), ("stopped", None) or ("gone", None) for a container."""
    with docker_api.docker_client(docker_host) as client:
        container = docker_api.find_container(client, name)
        if container is None:
            return "gone", None
        if container.status != "running":
            return "stopped", None
        return "running", int(container.attrs["State"]["Pid"])


def libvirtd_hint(container: str) -> str:
    """What to do when libvirtd in a running container does not answer."""
    return (f"libvirtd in container {container!r} is stopped or still starting: start it "
            f"with `docker exec {container} libvirtd-ctl start` (its guests keep running "
            "meanwhile), then run the command again")


def container_pid(docker_host: str | None, name: str) -> int | None:
    """The PID of a running container (for its netns); None when it is gone or stopped."""
    return container_state(docker_host, name)[1]


class MacvtapDomainProvider(LabProvider):
    INPUTS = ("name", "libvirt_uri", "container", "disk_path", "mac", "memory_mib", "vcpus",
              "source_dev", "mode", "vhost", "domain_type", "interface_type", "docker_host",
              "image_digest")
    UPDATABLE = frozenset({"memory_mib", "vcpus"})
    REPLACE_ON = frozenset(INPUTS) - UPDATABLE
    KIND = "MacvtapDomain"

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        name = known(props, "name", lambda v: check_name(v, "name"))
        if props.get("mac"):
            if not is_unknown(props["mac"]):
                props["mac"] = normalize_mac(props["mac"], "mac")
        elif name:
            props["mac"] = derive_mac(name)
        default(props, "memory_mib", 512)
        default(props, "vcpus", 1)
        known(props, "memory_mib", lambda v: check_int_range(v, "memory_mib", *MEMORY_MIB_RANGE, "MiB"))
        known(props, "vcpus", lambda v: check_int_range(v, "vcpus", *VCPU_RANGE))
        props["source_dev"] = props.get("source_dev") or "eth0"
        known(props, "source_dev", lambda v: check_ifname(v, "source_dev"))
        props["mode"] = props.get("mode") or "bridge"
        known(props, "mode", lambda v: check_choice(v, "mode", MACVTAP_MODES))
        props["vhost"] = props.get("vhost") or "auto"
        known(props, "vhost", lambda v: check_choice(v, "vhost", ("auto", "on", "off")))
        props["domain_type"] = props.get("domain_type") or "auto"
        known(props, "domain_type", lambda v: check_choice(v, "domain_type", ("auto", "kvm", "qemu")))
        props["interface_type"] = props.get("interface_type") or "auto"
        known(props, "interface_type", lambda v: check_choice(v, "interface_type", INTERFACE_TYPES))
        if props["interface_type"] == "auto":
            props["interface_type"] = "ethernet"
        known(props, "container", lambda v: check_name(v, "container"))
        path = known(props, "disk_path", str)
        if path is not None and not Path(path).is_absolute():
            raise SpecError("disk_path", f"{path!r} is not an absolute path")
        uri = known(props, "libvirt_uri", str)
        if uri is not None and "://" not in uri:
            raise SpecError("libvirt_uri", f"{uri!r} is not a libvirt URI (qemu:///system?socket=...)")
        if props["vhost"] == "on" and props["domain_type"] == "qemu":
            raise SpecError("vhost", "vhost needs a KVM domain: use vhost auto/off with domain_type qemu")
        return props

    # -- create ----------------------------------------------------------------------------
    def create(self, props: dict[str, Any]) -> CreateResult:
        spec = MacvtapDomainSpec.from_props(props)
        if not Path(spec.disk_path).exists():
            raise NotFoundError(f"domain {spec.name!r}: disk {spec.disk_path} does not exist "
                                "(is the CustomizedImage created?)")
        pid = container_pid(spec.docker_host, spec.container)
        if pid is None:
            raise NotFoundError(f"domain {spec.name!r}: container {spec.container!r} is not "
                                "running; create the LibvirtContainer first")
        with libvirt_api.connection(spec.libvirt_uri, libvirtd_hint(spec.container)) as conn:
            self._clear_leftover(conn, spec, pid)
            link_name = self._make_link(spec, pid) if spec.interface_type == "ethernet" else None
            xml = build_xml(spec, link_name)
            dom = libvirt_api.define(conn, xml, spec.name)
            faults.pause(faults.DOMAIN_DEFINED)
            try:
                log.info("starting domain %s (%s, %d MiB, %s NIC)", spec.name,
                         spec.resolved_type(), spec.memory_mib, spec.interface_type)
                libvirt_api.start(dom)
            except BaseException:
                # Leave nothing half made: no defined-but-dead domain, no orphan link.
                with contextlib.suppress(Exception):
                    libvirt_api.undefine(dom)
                if link_name:
                    with contextlib.suppress(Exception), netlink.in_netns(pid) as ns:
                        netlink.delete_link(ns, link_name)
                raise
            outs = self._outs(props, spec, dom, pid, link_name)
        return CreateResult(outs["uuid"], outs)

    @staticmethod
    def _clear_leftover(conn: libvirt.virConnect, spec: MacvtapDomainSpec, pid: int) -> None:
        dom = libvirt_api.find_domain(conn, spec.name)
        if dom is None:
            return
        xml = libvirt_api.inactive_xml(dom)
        if domain_xml.domain_owner(xml) != f"{spec.container}/{spec.name}":
            raise LibvirtError(f"domain {spec.name!r} already exists and was not made by this "
                               f"stack: undefine it (virsh undefine {spec.name}) or rename")
        log.info("removing domain %s left by an interrupted run", spec.name)
        libvirt_api.stop(dom)
        libvirt_api.undefine(dom)
        target = domain_xml.interface_target(xml)
        if target:
            with netlink.in_netns(pid) as ns:
                netlink.delete_link(ns, target)

    @staticmethod
    def _make_link(spec: MacvtapDomainSpec, pid: int) -> str:
        with netlink.in_netns(pid) as ns:
            if netlink.link(ns, spec.source_dev) is None:
                raise NotFoundError(f"domain {spec.name!r}: parent device {spec.source_dev!r} "
                                    f"does not exist in container {spec.container!r}")
            for stale in netlink.links(ns):
                # A macvtap with this guest's MAC can only be ours, left when the domain was
                # removed out of band (libvirt never deletes an unmanaged link).
                if stale.kind == "macvtap" and stale.mac == spec.mac:
                    log.info("removing stale macvtap %s (MAC %s)", stale.name, stale.mac)
                    netlink.delete_link(ns, stale.name)
            last: Exception | None = None
            for attempt in range(8):
                taken = tap.taps_in_dev(os.listdir("/dev")) | netlink.used_indexes(ns)
                index = tap.pick_tap_index(f"{spec.container}/{spec.name}", taken, attempt)
                name = tap.macvtap_name(index)
                try:
                    info = netlink.create_macvtap(ns, spec.source_dev, name, spec.mac, spec.mode,
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
    def _outs(props: dict[str, Any], spec: MacvtapDomainSpec, dom: libvirt.virDomain, pid: int,
              link_name: str | None) -> dict[str, Any]:
        live = libvirt_api.live_xml(dom)
        device = link_name or domain_xml.interface_target(live) or ""
        guest_mac = domain_xml.interface_mac(live) or ""
        tap_mac = ""
        if device:
            with netlink.in_netns(pid) as ns:
                info = netlink.link(ns, device)
            tap_mac = info.mac if info else ""
        return {
            **props,
            "uuid": dom.UUIDString(),
            "guest_mac": guest_mac,
            "macvtap_device": device,
            "macvtap_mac": tap_mac,
            "mac_matches": bool(tap_mac) and tap_mac == guest_mac,
            "state": libvirt_api.state_name(dom),
            "domain_type_used": domain_xml.etree_domain_type(live),
            "memory_mib_live": domain_xml.memory_mib(live),
        }

    # -- read / update / delete -----------------------------------------------------------
    @contextlib.contextmanager
    def _domain(self, spec: MacvtapDomainSpec) -> Iterator[tuple[libvirt.virDomain | None, int | None]]:
        pid = container_pid(spec.docker_host, spec.container)
        if pid is None:
            # The domain lived in that container: it is gone with it.
            yield None, None
            return
        with libvirt_api.connection(spec.libvirt_uri, libvirtd_hint(spec.container)) as conn:
            yield libvirt_api.find_domain(conn, spec.name), pid

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        spec = MacvtapDomainSpec.from_props(props)
        if container_state(spec.docker_host, spec.container)[0] == "stopped":
            # libvirtd is down with its container: the domain is neither known gone nor
            # running. Refresh records that; `up` replaces the container and its domains.
            return ReadResult(id_, {**props, "state": CONTAINER_STOPPED, "mac_matches": False})
        with self._domain(spec) as (dom, pid):
            if dom is None or pid is None or dom.UUIDString() != id_:
                return self.read_missing()
            link_name = props.get("macvtap_device") if spec.interface_type == "ethernet" else None
            return ReadResult(id_, self._outs(props, spec, dom, pid, link_name))

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
        result = super().diff(id_, olds, news)
        if not result.changes and olds.get("state") not in (None, "running"):
            result.changes = True  # shut off out of band: `up` starts it again (update)
        return result

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        spec = MacvtapDomainSpec.from_props(news)
        with self._domain(spec) as (dom, pid):
            if dom is None or pid is None:
                raise NotFoundError(f"domain {spec.name!r} is gone: run `pulumi refresh` then "
                                    "`pulumi up` to recreate it")
            link_name = olds.get("macvtap_device") if spec.interface_type == "ethernet" else None
            if (olds.get("memory_mib"), olds.get("vcpus")) != (spec.memory_mib, spec.vcpus):
                log.info("domain %s: %d MiB / %d vCPU -> %d MiB / %d vCPU (redefine + restart)",
                         spec.name, olds.get("memory_mib"), olds.get("vcpus"), spec.memory_mib,
                         spec.vcpus)
                conn = dom.connect()
                dom = libvirt_api.define(conn, build_xml(spec, link_name, dom.UUIDString()),
                                         spec.name)
                libvirt_api.stop(dom)
            if not dom.isActive():
                libvirt_api.start(dom)
            return UpdateResult(self._outs(news, spec, dom, pid, link_name))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        spec = MacvtapDomainSpec.from_props(props)
        with self._domain(spec) as (dom, pid):
            if dom is not None:
                log.info("destroying and undefining domain %s", spec.name)
                libvirt_api.stop(dom)
                libvirt_api.undefine(dom)
            link_name = props.get("macvtap_device")
            if pid is not None and link_name and spec.interface_type == "ethernet":
                with netlink.in_netns(pid) as ns:
                    netlink.delete_link(ns, link_name)
        # qemu may take a moment to release the disk after destroy.
        deadline = time.monotonic() + 10
        while Path(spec.disk_path).exists() and qemu_img.in_use(Path(spec.disk_path)) \
                and time.monotonic() < deadline:
            time.sleep(0.2)


@dataclass
class MacvtapDomainArgs:
    name: pulumi.Input[str]
    libvirt_uri: pulumi.Input[str]
    container: pulumi.Input[str]
    disk_path: pulumi.Input[str]
    memory_mib: pulumi.Input[int] = 512
    vcpus: pulumi.Input[int] = 1
    mac: pulumi.Input[str] | None = None
    source_dev: pulumi.Input[str] = "eth0"
    mode: pulumi.Input[str] = "bridge"
    vhost: pulumi.Input[str] = "auto"
    domain_type: pulumi.Input[str] = "auto"
    interface_type: pulumi.Input[str] = "auto"
    docker_host: pulumi.Input[str] | None = None
    image_digest: pulumi.Input[str] | None = None


OUTPUTS = ("uuid", "guest_mac", "macvtap_device", "macvtap_mac", "mac_matches", "state",
           "domain_type_used", "memory_mib_live")


class MacvtapDomain(Resource, module="macvtap", name="MacvtapDomain"):
    """A libvirt domain whose NIC is a macvtap on the container's eth0 (bridge mode)."""

    uuid: pulumi.Output[str]
    name: pulumi.Output[str]
    guest_mac: pulumi.Output[str]
    macvtap_device: pulumi.Output[str]
    macvtap_mac: pulumi.Output[str]
    mac_matches: pulumi.Output[bool]
    state: pulumi.Output[str]
    domain_type_used: pulumi.Output[str]

    def __init__(self, resource_name: str, args: MacvtapDomainArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props, opts = resource_props(args, OUTPUTS, opts=opts)
        super().__init__(MacvtapDomainProvider(), resource_name, props, opts)
