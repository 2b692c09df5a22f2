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
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource, UpdateResult

from macvtap_provider import boot_log
from macvtap_provider.adapters import console, docker_api
from macvtap_provider.adapters.lab_host import LabHost, for_endpoint
from macvtap_provider.builders import guest_config
from macvtap_provider.builders.secrets import check_password
from macvtap_provider.builders.validation import (
    NETWORK_METHODS,
    check_choice,
    check_ifname,
    check_ipv4_interface,
    check_name,
    check_nameservers,
)
from macvtap_provider.errors import LabError, LabTimeoutError, NotFoundError, SpecError
from macvtap_provider.resources._base import (
    LabProvider,
    check_endpoint,
    fill_defaults,
    input_names,
    is_unknown,
    known,
    known_items,
    output_names,
    resource_props,
    spec_kwargs,
)

log = logging.getLogger(__name__)

METHODS = NETWORK_METHODS
#: The probe containers' label (adapters.docker_api.PROBE_LABEL, value: the lab container).
PROBE_LABEL = docker_api.PROBE_LABEL
REACH_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class GuestNetworkSpec:
    """A guest network handover's inputs, validated, with their defaults."""

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
    #: "": the project's libvirt image (it has ping and bash).
    probe_image: str = ""
    domain_id: str | None = None

    @staticmethod
    def from_props(props: dict[str, Any]) -> GuestNetworkSpec:
        kwargs = spec_kwargs(GuestNetworkSpec, props)
        kwargs["prefix"] = int(kwargs["prefix"])
        kwargs["nameservers"] = tuple(kwargs.get("nameservers") or ())
        return GuestNetworkSpec(**kwargs)


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


def reach_script(address: str) -> tuple[str, str]:
    """(wait until ping and TCP 22 answer, ping once) as shell commands for the probe."""
    ping = f"ping -c 1 -W 1 {address} >/dev/null"
    tcp = f"(exec 3<>/dev/tcp/{address}/22) 2>/dev/null"
    return f"until {ping} && {tcp}; do sleep 0.5; done", ping


@dataclass
class GuestNetworkArgs:
    """Inputs of a GuestNetwork; None: the default of `GuestNetworkSpec`."""

    #: The MacvtapDomain's name.
    domain: pulumi.Input[str]
    #: libvirt in the LibvirtContainer (its `libvirt_uri`).
    libvirt_uri: pulumi.Input[str]
    #: The LibvirtContainer's name: its address moves to the guest.
    container: pulumi.Input[str]
    #: The docker network the reachability probe joins (a LabNetwork's name).
    network: pulumi.Input[str]
    #: The guest's address, prefix length and gateway.
    address: pulumi.Input[str]
    prefix: pulumi.Input[int]
    gateway: pulumi.Input[str]
    #: The guest's root password (secret; needed by method console).
    root_password: pulumi.Input[str] | None = None
    #: console (log in on the serial console, as the seed) or offline (in the image).
    method: pulumi.Input[str] | None = None
    #: Resolvers written by method console (lab addresses only).
    nameservers: pulumi.Input[list[str]] | None = None
    #: The container's device that holds the address.
    container_dev: pulumi.Input[str] | None = None
    #: Docker endpoint of the container's host (default: the local socket).
    docker_host: pulumi.Input[str] | None = None
    #: Image of the probe container (default: the project's libvirt image).
    probe_image: pulumi.Input[str] | None = None
    #: The MacvtapDomain's Pulumi id: a domain made again (new id) gets its network again.
    domain_id: pulumi.Input[str] | None = None


class GuestNetworkProvider(LabProvider):
    INPUTS = input_names(GuestNetworkArgs, exclude=("root_password",))
    REPLACE_ON = frozenset(INPUTS)
    KIND = "GuestNetwork"

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        fill_defaults(props, GuestNetworkSpec)
        known(props, "domain", lambda v: check_name(v, "domain"))
        known(props, "network", lambda v: check_name(v, "network"))
        known(props, "container", lambda v: check_name(v, "container"))
        known(props, "method", lambda v: check_choice(v, "method", METHODS))
        known(props, "container_dev", lambda v: check_ifname(v, "container_dev"))
        check_endpoint(props)
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
        host = for_endpoint(spec.docker_host)
        with host.netns(spec.container) as ns:
            if ns.link(spec.container_dev) is None:
                raise NotFoundError(f"container {spec.container!r} has no {spec.container_dev}")
        if spec.method == "console":
            assert spec.root_password is not None
            log.info("guest %s: waiting for the serial login prompt (boot under TCG ~20-40 s)",
                     spec.domain)
            with console.serial_login(spec.libvirt_uri, spec.domain, spec.root_password) as shell:
                self._handover(spec, host)
                try:
                    for cmd in guest_commands(spec):
                        shell.check(cmd)
                except BaseException:
                    self._give_back(spec, host)
                    raise
        else:
            self._handover(spec, host)
        try:
            self._prove_reachable(spec, host)
        except BaseException:
            self._give_back(spec, host)
            raise
        boot_log.record(boot_log.REACHABLE, f"{spec.container}/{spec.domain}")
        outs = {k: v for k, v in props.items() if k != "root_password"}
        outs.update(self._outs(spec, moved=True), reachable=True)
        return CreateResult(f"{spec.container}/{spec.address}", outs)

    @staticmethod
    def _outs(spec: GuestNetworkSpec, moved: bool) -> dict[str, Any]:
        return {"guest_ip": spec.address, "ssh_endpoint": f"root@{spec.address}:22",
                "moved": moved}

    @staticmethod
    def _handover(spec: GuestNetworkSpec, host: LabHost) -> None:
        with host.netns(spec.container) as ns:
            if ns.remove_address(spec.container_dev, spec.address, spec.prefix):
                log.info("removed %s/%d from %s:%s (the guest owns it now)", spec.address,
                         spec.prefix, spec.container, spec.container_dev)

    @staticmethod
    def _give_back(spec: GuestNetworkSpec, host: LabHost) -> None:
        with contextlib.suppress(LabError), host.netns(spec.container) as ns:
            ns.restore_address(spec.container_dev, spec.address, spec.prefix, spec.gateway)
            log.info("restored %s/%d on %s:%s", spec.address, spec.prefix, spec.container,
                     spec.container_dev)

    @staticmethod
    def _prove_reachable(spec: GuestNetworkSpec, host: LabHost) -> None:
        """Wait until the guest answers ping and accepts TCP 22, seen from the lab network.

        One `docker exec` polls inside a probe container (every 0.5 s), so success is
        seen as soon as sshd listens; on timeout a last look says which of the two failed.
        """
        image = spec.probe_image
        if not image:
            from macvtap_provider.images.libvirt_image import ensure_libvirt_image

            image = ensure_libvirt_image()
        log.info("probing %s from the docker network %s (ping, TCP 22)", spec.address,
                 spec.network)
        wait, ping = reach_script(spec.address)
        with host.docker() as client, docker_api.probe_container(
                client, image, owner=spec.container, network=spec.network,
                name_prefix=f"{spec.container}-probe-") as probe:
            rc, _ = docker_api.exec_in(client, probe.name, ["bash", "-c", wait],
                                       timeout_s=int(REACH_TIMEOUT_S))
            if rc == 0:
                log.info("guest %s answers ping and TCP 22", spec.address)
                return
            rc, _ = docker_api.exec_in(client, probe.name, ["bash", "-c", ping])
            last = "no ping reply" if rc != 0 else "TCP 22 closed"
        raise LabTimeoutError(f"guest {spec.domain!r} did not answer on {spec.address} within "
                              f"{REACH_TIMEOUT_S:.0f}s ({last}); check the guest's eth0 config "
                              "and that its MAC equals the macvtap's (mac_matches)")

    # -- read / update / delete -------------------------------------------------------------
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        spec = GuestNetworkSpec.from_props(props)
        host = for_endpoint(spec.docker_host)
        info = host.container(spec.container)
        if info is None:
            return self.read_missing()
        if not info.running:
            # A stopped container gets its address back from docker when it starts again.
            return ReadResult(id_, {**props, **self._outs(spec, moved=False)})
        with host.netns(spec.container) as ns:
            link = ns.link(spec.container_dev)
        back_on_container = link is not None and (spec.address, spec.prefix) in link.addresses
        return ReadResult(id_, {**props, **self._outs(spec, moved=not back_on_container)})

    def drift_replaces(self, olds: dict[str, Any]) -> list[str]:
        # The address is back on the container (refresh saw it): hand it over again.
        return ["moved"] if olds.get("moved") is False else []

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult({k: v for k, v in news.items() if k != "root_password"})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        spec = GuestNetworkSpec.from_props(props)
        host = for_endpoint(spec.docker_host)
        info = host.container(spec.container)
        if info is None or not info.running:
            return  # the container and its netns are gone: nothing to give back
        self._give_back(spec, host)


class GuestNetwork(Resource, module="macvtap", name="GuestNetwork"):
    """Moves the container's eth0 address and default route to the guest, and proves it."""

    domain: pulumi.Output[str]
    libvirt_uri: pulumi.Output[str]
    container: pulumi.Output[str]
    network: pulumi.Output[str]
    address: pulumi.Output[str]
    prefix: pulumi.Output[int]
    gateway: pulumi.Output[str]
    method: pulumi.Output[str]
    nameservers: pulumi.Output[list[str] | None]
    container_dev: pulumi.Output[str]
    docker_host: pulumi.Output[str | None]
    probe_image: pulumi.Output[str]
    domain_id: pulumi.Output[str | None]
    #: The guest's address (= `address`, once the guest answers on it).
    guest_ip: pulumi.Output[str]
    #: root@<guest_ip>:22
    ssh_endpoint: pulumi.Output[str]
    #: True once a probe on the lab network saw ping and TCP 22.
    reachable: pulumi.Output[bool]
    #: False when refresh found the address back on the container.
    moved: pulumi.Output[bool]

    def __init__(self, resource_name: str, args: GuestNetworkArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props, opts = resource_props(args, OUTPUTS, secrets=("root_password",), opts=opts)
        super().__init__(GuestNetworkProvider(), resource_name, props, opts)


OUTPUTS = output_names(GuestNetwork, GuestNetworkArgs)
