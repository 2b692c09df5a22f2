"""LabNetwork: the docker network the lab lives on (internal by default: no way out), or a
macvlan network on a NIC of the lab host (the lab joins that NIC's LAN)."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource

from macvtap_provider.adapters import docker_api, lab_host
from macvtap_provider.builders.endpoint import parse_endpoint
from macvtap_provider.builders.validation import check_ifname, check_name, check_subnet
from macvtap_provider.errors import DockerError, SpecError
from macvtap_provider.resources._base import (
    LabProvider,
    check_endpoint,
    default,
    fill_defaults,
    input_names,
    is_unknown,
    known,
    output_names,
    resource_props,
    spec_kwargs,
)

log = logging.getLogger(__name__)
LABEL = "org.macvtap-lab.network"


@dataclass(frozen=True)
class LabNetworkSpec:
    """A lab network's inputs, validated, with their defaults."""

    name: str
    subnet: str
    #: None: the subnet's first host address.
    gateway: str | None = None
    internal: bool = True
    docker_host: str | None = None
    #: None: the subnet's lower half (docker hands out only these; guests use the upper).
    ip_range: str | None = None
    #: A NIC of the docker host: the network is a macvlan network on it. None: a bridge.
    parent: str | None = None

    @staticmethod
    def from_props(props: dict[str, Any]) -> LabNetworkSpec:
        kwargs = spec_kwargs(LabNetworkSpec, props)
        kwargs["internal"] = bool(kwargs.get("internal", True))
        return LabNetworkSpec(**kwargs)


def is_leftover(attrs: dict[str, Any], spec: LabNetworkSpec) -> bool:
    """Whether an existing network is exactly the one `spec` would make, labelled by us."""
    pools = (attrs.get("IPAM") or {}).get("Config") or []
    return ((attrs.get("Labels") or {}).get(LABEL) == spec.name
            and attrs.get("Internal", False) == spec.internal
            and attrs.get("Driver", "bridge") == ("macvlan" if spec.parent else "bridge")
            and (attrs.get("Options") or {}).get("parent") == spec.parent
            and any(p.get("Subnet") == spec.subnet
                    and (not spec.gateway or p.get("Gateway") == spec.gateway)
                    and (not spec.ip_range or p.get("IPRange") == spec.ip_range) for p in pools))


@dataclass
class LabNetworkArgs:
    """Inputs of a LabNetwork; None: the default of `LabNetworkSpec`."""

    #: The docker network's name.
    name: pulumi.Input[str]
    #: Its IPv4 subnet in CIDR form (private ranges only, /29 or larger).
    subnet: pulumi.Input[str]
    #: The bridge's address (default: the subnet's first host).
    gateway: pulumi.Input[str] | None = None
    #: No route out of the network.
    internal: pulumi.Input[bool] | None = None
    #: Docker endpoint (unix://, tcp://, ssh://; default: the local socket).
    docker_host: pulumi.Input[str] | None = None
    #: The range docker hands out (default: the subnet's lower half).
    ip_range: pulumi.Input[str] | None = None
    #: A NIC of the docker host (e.g. eth0): a macvlan network on it, that NIC's LAN, so
    #: never internal (default: none, a bridge of the lab's own).
    parent: pulumi.Input[str] | None = None


class LabNetworkProvider(LabProvider):
    INPUTS = input_names(LabNetworkArgs)
    REPLACE_ON = frozenset(INPUTS)
    KIND = "LabNetwork"

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        if props.get("parent") == "":
            props["parent"] = None
        parent = known(props, "parent", lambda v: check_ifname(v, "parent"))
        if parent:
            if props.get("internal") is True:
                raise SpecError("internal", f"a macvlan network on {parent} is that NIC's LAN: "
                                "it cannot be internal (docker would move it onto a dummy "
                                "link); leave internal unset, or drop parent for an internal "
                                "bridge")
            default(props, "internal", False)
        fill_defaults(props, LabNetworkSpec)
        known(props, "name", lambda v: check_name(v, "name"))
        check_endpoint(props)
        if props.get("subnet") is None:
            raise SpecError("subnet", "is required: the network's IPv4 subnet in CIDR form "
                            "(e.g. 10.213.0.0/24)")
        net = known(props, "subnet", check_subnet)
        if net is not None:
            gateway = props.get("gateway") or str(next(net.hosts()))
            if not is_unknown(gateway):
                try:
                    gw = ipaddress.IPv4Address(str(gateway))
                except ValueError:
                    raise SpecError("gateway", f"{gateway!r} is not an IPv4 address") from None
                if gw not in net:
                    raise SpecError("gateway", f"{gateway} is outside the subnet {net}")
                if gw in (net.network_address, net.broadcast_address):
                    raise SpecError("gateway", f"{gateway} is the network or broadcast "
                                    f"address of {net}: use a host address")
            props["gateway"] = gateway
            # Docker hands out addresses only from the lower half; the upper half is free
            # for guests with addresses of their own.
            if not props.get("ip_range"):
                props["ip_range"] = str(next(net.subnets(prefixlen_diff=1)))
            rng = known(props, "ip_range", lambda v: check_subnet(v, "ip_range"))
            if rng is not None and not rng.subnet_of(net):
                raise SpecError("ip_range", f"{rng} is not inside the subnet {net}")
        return props

    def create(self, props: dict[str, Any]) -> CreateResult:
        spec = LabNetworkSpec.from_props(props)
        log.info("creating docker network %s (%s, %s)", spec.name, spec.subnet,
                 f"macvlan on {spec.parent}" if spec.parent else f"internal={spec.internal}")
        with lab_host.for_endpoint(spec.docker_host).docker() as client:
            existing = docker_api.find_network(client, spec.name)
            if existing is not None:
                if not is_leftover(dict(existing.attrs), spec):
                    raise DockerError(
                        f"network {spec.name!r} already exists and is not this stack's "
                        f"(or differs from it): remove it (docker network rm {spec.name}) "
                        "or pick another name")
                # An interrupted `up` made it and never recorded it: take it over.
                log.info("taking over network %s left by an interrupted run", spec.name)
                return CreateResult(existing.id, self._outs(props, existing))
            try:
                net = docker_api.create_network(
                    client, spec.name, subnet=spec.subnet, gateway=spec.gateway,
                    ip_range=spec.ip_range, internal=spec.internal, labels={LABEL: spec.name},
                    parent=spec.parent)
            except DockerError as exc:
                if not spec.parent:
                    raise
                raise DockerError(
                    f"{exc}: check that {spec.parent} is a NIC of "
                    f"{parse_endpoint(spec.docker_host).label} and that no "
                    "other macvlan network there uses it (docker allows one per NIC: give "
                    f"another lab a VLAN subinterface such as {spec.parent}.10)") from exc
        return CreateResult(net.id, self._outs(props, net))

    @staticmethod
    def _outs(props: dict[str, Any], net: docker_api.NetworkInfo) -> dict[str, Any]:
        return {**props, "network_id": net.id, "bridge": net.bridge}

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        spec = LabNetworkSpec.from_props(props)
        with lab_host.for_endpoint(spec.docker_host).docker() as client:
            net = docker_api.network_by_id(client, id_)
        if net is None:
            return self.read_missing()
        return ReadResult(id_, self._outs(props, net))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        spec = LabNetworkSpec.from_props(props)
        log.info("removing docker network %s", spec.name)
        with lab_host.for_endpoint(spec.docker_host).docker() as client:
            docker_api.remove_network(client, id_)


class LabNetwork(Resource, module="macvtap", name="LabNetwork"):
    """A docker bridge network for the lab (`internal` networks cannot reach outside), or
    with `parent` a macvlan network on that NIC of the docker host: the lab's containers,
    and guests whose macvtap sits on a container's eth0, are then on that NIC's LAN."""

    name: pulumi.Output[str]
    subnet: pulumi.Output[str]
    gateway: pulumi.Output[str]
    internal: pulumi.Output[bool]
    docker_host: pulumi.Output[str | None]
    ip_range: pulumi.Output[str]
    #: The docker network's id.
    network_id: pulumi.Output[str]
    parent: pulumi.Output[str | None]
    #: The Linux bridge behind it on the docker host (br-<id>; "" for a macvlan network).
    bridge: pulumi.Output[str]

    def __init__(self, resource_name: str, args: LabNetworkArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props, opts = resource_props(args, OUTPUTS, opts=opts)
        super().__init__(LabNetworkProvider(), resource_name, props, opts)


OUTPUTS = output_names(LabNetwork, LabNetworkArgs)
