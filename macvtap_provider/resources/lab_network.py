"""LabNetwork: the docker network the lab lives on (internal by default: no way out)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

import docker.types
import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource

from macvtap_provider.adapters import docker_api
from macvtap_provider.builders.validation import check_name, check_subnet
from macvtap_provider.errors import DockerError, SpecError
from macvtap_provider.resources._base import LabProvider, is_unknown, known, resource_props

log = logging.getLogger(__name__)
LABEL = "org.macvtap-lab.network"


@dataclass(frozen=True)
class LabNetworkSpec:
    name: str
    subnet: str
    gateway: str
    internal: bool = True
    docker_host: str | None = None
    ip_range: str | None = None

    @staticmethod
    def from_props(props: dict[str, Any]) -> LabNetworkSpec:
        return LabNetworkSpec(
            name=props["name"], subnet=props["subnet"], gateway=props["gateway"],
            internal=bool(props.get("internal", True)), docker_host=props.get("docker_host"),
            ip_range=props.get("ip_range"))


def is_leftover(attrs: dict[str, Any], spec: LabNetworkSpec) -> bool:
    """Whether an existing network is exactly the one `spec` would make, labelled by us."""
    pools = (attrs.get("IPAM") or {}).get("Config") or []
    return ((attrs.get("Labels") or {}).get(LABEL) == spec.name
            and attrs.get("Internal", False) == spec.internal
            and any(p.get("Subnet") == spec.subnet
                    and (not spec.gateway or p.get("Gateway") == spec.gateway)
                    and (not spec.ip_range or p.get("IPRange") == spec.ip_range) for p in pools))


class LabNetworkProvider(LabProvider):
    INPUTS = ("name", "subnet", "gateway", "internal", "docker_host", "ip_range")
    REPLACE_ON = frozenset(INPUTS)
    KIND = "LabNetwork"

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        known(props, "name", lambda v: check_name(v, "name"))
        net = known(props, "subnet", check_subnet)
        props.setdefault("internal", True)
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
        log.info("creating docker network %s (%s, internal=%s)", spec.name, spec.subnet,
                 spec.internal)
        pool = docker.types.IPAMPool(subnet=spec.subnet, gateway=spec.gateway,
                                     iprange=spec.ip_range)
        with docker_api.docker_client(spec.docker_host) as client:
            with docker_api.translate_errors(f"creating network {spec.name!r}"):
                existing = [n for n in client.networks.list(names=[spec.name])
                            if n.name == spec.name]
                if existing:
                    net = existing[0]
                    net.reload()
                    if not is_leftover(net.attrs, spec):
                        raise DockerError(
                            f"network {spec.name!r} already exists and is not this stack's "
                            f"(or differs from it): remove it (docker network rm {spec.name}) "
                            "or pick another name")
                    # An interrupted `up` made it and never recorded it: take it over.
                    log.info("taking over network %s left by an interrupted run", spec.name)
                    return CreateResult(str(net.id), self._outs(props, net.attrs))
                net = client.networks.create(
                    spec.name, driver="bridge", internal=spec.internal,
                    ipam=docker.types.IPAMConfig(pool_configs=[pool]),
                    labels={LABEL: spec.name}, check_duplicate=True)
            return CreateResult(str(net.id), self._outs(props, net.attrs))

    @staticmethod
    def _outs(props: dict[str, Any], attrs: dict[str, Any]) -> dict[str, Any]:
        return {**props, "network_id": attrs["Id"],
                "bridge": attrs.get("Options", {}).get("com.docker.network.bridge.name")
                or f"br-{attrs['Id'][:12]}"}

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        spec = LabNetworkSpec.from_props(props)
        with docker_api.docker_client(spec.docker_host) as client:
            with docker_api.translate_errors(f"reading network {spec.name!r}"):
                try:
                    net = client.networks.get(id_)
                except docker.errors.NotFound:
                    return self.read_missing()
            return ReadResult(id_, self._outs(props, net.attrs))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        spec = LabNetworkSpec.from_props(props)
        log.info("removing docker network %s", spec.name)
        with (docker_api.docker_client(spec.docker_host) as client,
              docker_api.translate_errors(f"removing network {spec.name!r}"),
              contextlib.suppress(docker.errors.NotFound)):
            client.networks.get(id_).remove()


@dataclass
class LabNetworkArgs:
    name: pulumi.Input[str]
    subnet: pulumi.Input[str] = "10.213.0.0/24"
    gateway: pulumi.Input[str] | None = None
    internal: pulumi.Input[bool] = True
    docker_host: pulumi.Input[str] | None = None
    ip_range: pulumi.Input[str] | None = None


class LabNetwork(Resource, module="macvtap", name="LabNetwork"):
    """A docker bridge network for the lab; `internal` networks cannot reach outside."""

    network_id: pulumi.Output[str]
    name: pulumi.Output[str]
    subnet: pulumi.Output[str]
    gateway: pulumi.Output[str]
    bridge: pulumi.Output[str]

    def __init__(self, resource_name: str, args: LabNetworkArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props, opts = resource_props(args, ("network_id", "bridge"), opts=opts)
        super().__init__(LabNetworkProvider(), resource_name, props, opts)
