"""GuestNetwork: the guest takes over the container's eth0 address and default route.

The seed's steps: configure the guest (over the serial console, or already written
offline into the image), remove the address from the container's eth0 (otherwise
both claim it), then prove the guest answers. The container cannot reach its own
guest through its macvtap parent, so a probe container on the same docker network
checks ping and TCP 22.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pulumi
from docker.models.containers import Container
from pulumi.dynamic import CreateResult, ReadResult, Resource, UpdateResult

from macvtap_provider.adapters import console, docker_api, netlink
from macvtap_provider.builders import guest_config
from macvtap_provider.builders.secrets import check_password
from macvtap_provider.builders.validation import (
    check_choice,
    check_ifname,
    check_ipv4_interface,
    check_name,
    check_nameservers,
)
from macvtap_provider.errors import LabError, LabTimeoutError, NotFoundError, SpecError
from macvtap_provider.resources._base import (
    LabProvider,
    is_unknown,
    known,
    known_items,
    resource_props,
)
from macvtap_provider.resources.macvtap_domain import container_pid, container_state

log = logging.getLogger(__name__)

METHODS = ("console", "offline")
PROBE_LABEL = "org.macvtap-lab.probe"
REACH_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class GuestNetworkSpec:
    domain: str
    libvirt_uri: str
    container: str
    network: str
    address: str
    prefix: int
    gateway: str
    root_password: str | None = field(default=None, repr=False)
    method: str = "console"
    nameservers: tuple[str, ...] = ()
    container_dev: str = "eth0"
    docker_host: str | None = None
    probe_image: str = ""

    @staticmethod
    def from_props(props: dict[str, Any]) -> GuestNetworkSpec:
        return GuestNetworkSpec(
            domain=props["domain"], libvirt_uri=props["libvirt_uri"],
            container=props["container"], network=props["network"],
            address=props["address"], prefix=int(props["prefix"]), gateway=props["gateway"],
            root_password=props.get("root_password"), method=props.get("method") or "console",
            nameservers=tuple(props.get("nameservers") or ()),
            container_dev=props.get("container_dev") or "eth0",
            docker_host=props.get("docker_host"), probe_image=props.get("probe_image") or "")


def guest_commands(spec: GuestNetworkSpec) -> list[str]:
    """The seed's console steps, as shell commands (pure)."""
    cmds = [
        "ip addr flush dev eth0",
        f"ip addr add {spec.address}/{spec.prefix} dev eth0",
        "ip link set eth0 up",
        f"ip route replace default via {spec.gateway} dev eth0",
    ]
    if spec.nameservers:
        text = guest_config.resolv_conf(spec.nameservers).replace("\n", "\\n")
        cmds.append(f"printf '{text}' > /etc/resolv.conf")
    return cmds


class GuestNetworkProvider(LabProvider):
    INPUTS = ("domain", "libvirt_uri", "container", "network", "address", "prefix", "gateway",
              "method", "nameservers", "container_dev", "docker_host", "probe_image",
              "domain_id")
    REPLACE_ON = frozenset(INPUTS)
    KIND = "GuestNetwork"

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        known(props, "domain", lambda v: check_name(v, "domain"))
        known(props, "network", lambda v: check_name(v, "network"))
        known(props, "container", lambda v: check_name(v, "container"))
        props["method"] = props.get("method") or "console"
        known(props, "method", lambda v: check_choice(v, "method", METHODS))
        props["container_dev"] = props.get("container_dev") or "eth0"
        known(props, "container_dev", lambda v: check_ifname(v, "container_dev"))
        triple = (props.get("address"), props.get("prefix"), props.get("gateway"))
        if None in triple:
            raise SpecError("address", "address, prefix and gateway are required "
                            "(pass the LibvirtContainer's ip_address, prefix and gateway)")
        if not any(is_unknown(v) for v in triple):
            iface = check_ipv4_interface(*triple)
            props["address"], props["prefix"], props["gateway"] = (
                iface.address, iface.prefix, iface.gateway)
        ns = known(props, "nameservers", lambda v: known_items(v, check_nameservers))
        if ns is not None:
            props["nameservers"] = list(ns)
        if props["method"] == "console":
            if props.get("root_password") is None:
                raise SpecError("root_password", "is required for method 'console' (the "
                                "guest's root password, as a secret)")
            known(props, "root_password", check_password)
        return props

    # -- create -----------------------------------------------------------------------------
    def create(self, props: dict[str, Any]) -> CreateResult:
        spec = GuestNetworkSpec.from_props(props)
        pid = self._pid(spec)
        with netlink.in_netns(pid) as ns:
            info = netlink.link(ns, spec.container_dev)
            if info is None:
                raise NotFoundError(f"container {spec.container!r} has no {spec.container_dev}")
        if spec.method == "console":
            assert spec.root_password is not None
            log.info("guest %s: waiting for the serial login prompt (boot under TCG ~20-40 s)",
                     spec.domain)
            with console.serial_login(spec.libvirt_uri, spec.domain, spec.root_password) as shell:
                self._handover(spec, pid)
                try:
                    for cmd in guest_commands(spec):
                        shell.check(cmd)
                except BaseException:
                    self._give_back(spec, pid)
                    raise
        else:
            self._handover(spec, pid)
        try:
            self._prove_reachable(spec)
        except BaseException:
            self._give_back(spec, pid)
            raise
        outs = {k: v for k, v in props.items() if k != "root_password"}
        outs.update(self._outs(spec, moved=True), reachable=True)
        return CreateResult(f"{spec.container}/{spec.address}", outs)

    @staticmethod
    def _pid(spec: GuestNetworkSpec) -> int:
        pid = container_pid(spec.docker_host, spec.container)
        if pid is None:
            raise NotFoundError(f"container {spec.container!r} is not running")
        return pid

    @staticmethod
    def _outs(spec: GuestNetworkSpec, moved: bool) -> dict[str, Any]:
        return {"guest_ip": spec.address, "ssh_endpoint": f"root@{spec.address}:22",
                "moved": moved}

    @staticmethod
    def _handover(spec: GuestNetworkSpec, pid: int) -> None:
        with netlink.in_netns(pid) as ns:
            if netlink.remove_address(ns, spec.container_dev, spec.address, spec.prefix):
                log.info("removed %s/%d from %s:%s (the guest owns it now)", spec.address,
                         spec.prefix, spec.container, spec.container_dev)

    @staticmethod
    def _give_back(spec: GuestNetworkSpec, pid: int) -> None:
        with contextlib.suppress(LabError), netlink.in_netns(pid) as ns:
            netlink.restore_address(ns, spec.container_dev, spec.address, spec.prefix,
                                    spec.gateway)
            log.info("restored %s/%d on %s:%s", spec.address, spec.prefix, spec.container,
                     spec.container_dev)

    @staticmethod
    @contextlib.contextmanager
    def _probe(spec: GuestNetworkSpec) -> Iterator[Container]:
        image = spec.probe_image
        if not image:
            from macvtap_provider.images.libvirt_image import ensure_libvirt_image

            image = ensure_libvirt_image()
        name = f"{spec.container}-probe-{secrets.token_hex(3)}"
        with docker_api.docker_client(spec.docker_host) as client:
            with docker_api.translate_errors(f"starting probe container {name!r}"):
                probe = client.containers.run(
                    image, ["900"], entrypoint=["sleep"], name=name, detach=True,
                    network=spec.network, labels={PROBE_LABEL: spec.container}, init=True)
            try:
                yield probe
            finally:
                docker_api.remove_container(client, name)

    def _prove_reachable(self, spec: GuestNetworkSpec) -> None:
        """Wait until the guest answers ping and accepts TCP 22, seen from the lab network.

        One `docker exec` polls inside the probe container (every 0.5 s), so success is
        seen as soon as sshd listens; on timeout a last look says which of the two failed.
        """
        log.info("probing %s from the docker network %s (ping, TCP 22)", spec.address,
                 spec.network)
        ping = f"ping -c 1 -W 1 {spec.address} >/dev/null"
        tcp = f"(exec 3<>/dev/tcp/{spec.address}/22) 2>/dev/null"
        with self._probe(spec) as probe:
            rc, _ = docker_api.exec_in(
                probe, ["bash", "-c", f"until {ping} && {tcp}; do sleep 0.5; done"],
                timeout_s=int(REACH_TIMEOUT_S))
            if rc == 0:
                log.info("guest %s answers ping and TCP 22", spec.address)
                return
            rc, _ = docker_api.exec_in(probe, ["bash", "-c", ping])
            last = "no ping reply" if rc != 0 else "TCP 22 closed"
        raise LabTimeoutError(f"guest {spec.domain!r} did not answer on {spec.address} within "
                              f"{REACH_TIMEOUT_S:.0f}s ({last}); check the guest's eth0 config "
                              "and that its MAC equals the macvtap's (mac_matches)")

    # -- read / update / delete -------------------------------------------------------------
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        spec = GuestNetworkSpec.from_props(props)
        state, pid = container_state(spec.docker_host, spec.container)
        if state == "gone":
            return self.read_missing()
        if pid is None:
            # A stopped container gets its address back from docker when it starts again.
            return ReadResult(id_, {**props, **self._outs(spec, moved=False)})
        with netlink.in_netns(pid) as ns:
            info = netlink.link(ns, spec.container_dev)
        back_on_container = info is not None and (spec.address, spec.prefix) in info.addresses
        return ReadResult(id_, {**props, **self._outs(spec, moved=not back_on_container)})

    def drift_replaces(self, olds: dict[str, Any]) -> list[str]:
        # The address is back on the container (refresh saw it): hand it over again.
        return ["moved"] if olds.get("moved") is False else []

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult({k: v for k, v in news.items() if k != "root_password"})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        spec = GuestNetworkSpec.from_props(props)
        pid = container_pid(spec.docker_host, spec.container)
        if pid is None:
            return  # the container and its netns are gone: nothing to give back
        self._give_back(spec, pid)


@dataclass
class GuestNetworkArgs:
    domain: pulumi.Input[str]
    libvirt_uri: pulumi.Input[str]
    container: pulumi.Input[str]
    network: pulumi.Input[str]
    address: pulumi.Input[str]
    prefix: pulumi.Input[int]
    gateway: pulumi.Input[str]
    root_password: pulumi.Input[str] | None = None
    method: pulumi.Input[str] = "console"
    nameservers: pulumi.Input[list[str]] | None = None
    container_dev: pulumi.Input[str] = "eth0"
    docker_host: pulumi.Input[str] | None = None
    probe_image: pulumi.Input[str] | None = None
    # The MacvtapDomain's Pulumi id: a domain made again (new id) gets its network again.
    domain_id: pulumi.Input[str] | None = None


class GuestNetwork(Resource, module="macvtap", name="GuestNetwork"):
    """Moves the container's eth0 address and default route to the guest, and proves it."""

    guest_ip: pulumi.Output[str]
    prefix: pulumi.Output[int]
    gateway: pulumi.Output[str]
    ssh_endpoint: pulumi.Output[str]
    reachable: pulumi.Output[bool]
    moved: pulumi.Output[bool]

    def __init__(self, resource_name: str, args: GuestNetworkArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props, opts = resource_props(args, ("guest_ip", "ssh_endpoint", "reachable", "moved"),
                                     secrets=("root_password",), opts=opts)
        super().__init__(GuestNetworkProvider(), resource_name, props, opts)
