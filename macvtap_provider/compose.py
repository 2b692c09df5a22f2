"""Composition helpers the stacks share: one lab network + container, guests on it."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

import pulumi

from macvtap_provider import paths
from macvtap_provider.resources.customized_image import CustomizedImage, CustomizedImageArgs
from macvtap_provider.resources.generated_password import GeneratedPassword
from macvtap_provider.resources.guest_network import GuestNetwork, GuestNetworkArgs
from macvtap_provider.resources.lab_network import LabNetwork, LabNetworkArgs
from macvtap_provider.resources.libvirt_container import LibvirtContainer, LibvirtContainerArgs
from macvtap_provider.resources.macvtap_domain import MacvtapDomain, MacvtapDomainArgs


def lab_name(project: str, stack: str) -> str:
    """A docker/libvirt-safe name unique to a project's stack."""
    raw = re.sub(r"[^a-zA-Z0-9_.-]+", "-", f"{project}-{stack}").strip("-.") or "lab"
    return raw[:40]


def default_subnet(name: str) -> str:
    """A /24 in 10.213.0.0/16 derived from the lab's name (distinct stacks, distinct nets)."""
    third = 1 + int(hashlib.sha256(name.encode()).hexdigest(), 16) % 99
    return f"10.213.{third}.0/24"


def host_address(subnet: str, host: int) -> str:
    net = ipaddress.IPv4Network(subnet)
    return str(net.network_address + host)


@dataclass
class LabSettings:
    """Everything a lab needs, read from stack config. None: the resource's own default
    (declared once, in its Spec)."""

    name: str
    subnet: str
    container_ip: str
    work_dir: str
    root_password: pulumi.Input[str]
    memory_mib: int | None = None
    vcpus: int | None = None
    mode: str | None = None
    vhost: str | None = None
    domain_type: str | None = None
    interface_type: str | None = None
    network_method: str = "offline"
    base_image: str | None = None
    security_mode: str | None = None
    docker_host: str | None = None
    generated_password: GeneratedPassword | None = None

    @staticmethod
    def from_config(config: pulumi.Config, name: str,
                    root_password: pulumi.Input[str] | None = None) -> LabSettings:
        """Settings from stack config; the password from `root_password`, else the
        `rootPassword` secret, else a GeneratedPassword (exported by the stacks)."""
        subnet = config.get("subnet") or default_subnet(name)
        password = root_password if root_password is not None else \
            config.get_secret("rootPassword")
        generated = None
        if password is None:
            generated = GeneratedPassword(f"{name}-root-password")
            password = generated.result
        return LabSettings(
            name=name, subnet=subnet,
            container_ip=config.get("containerIp") or host_address(subnet, 10),
            work_dir=config.get("workDir") or str(paths.work_root() / name),
            root_password=password,
            memory_mib=config.get_int("memoryMib"),
            vcpus=config.get_int("vcpus"),
            mode=config.get("macvtapMode") or None,
            vhost=config.get("vhost") or None,
            domain_type=config.get("domainType") or None,
            interface_type=config.get("interfaceType") or None,
            network_method=config.get("networkMethod") or "offline",
            base_image=config.get("baseImage") or None,
            security_mode=config.get("securityMode") or None,
            docker_host=config.get("dockerHost") or None,
            generated_password=generated,
        )

    @property
    def gateway(self) -> str:
        return host_address(self.subnet, 1)

    @property
    def prefix(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen


@dataclass
class LabHost:
    network: LabNetwork
    container: LibvirtContainer


def lab_host(s: LabSettings) -> LabHost:
    """The docker network (internal) and the libvirt container with a pinned address."""
    network = LabNetwork(f"{s.name}-net", LabNetworkArgs(
        name=f"{s.name}-net", subnet=s.subnet, gateway=s.gateway, docker_host=s.docker_host))
    container = LibvirtContainer(f"{s.name}-libvirt", LibvirtContainerArgs(
        name=f"{s.name}-libvirt", network=network.name, work_dir=s.work_dir,
        security_mode=s.security_mode, docker_host=s.docker_host, ipv4_address=s.container_ip))
    return LabHost(network, container)


@dataclass
class Guest:
    image: CustomizedImage
    domain: MacvtapDomain
    network: GuestNetwork
    address: str


def guest(s: LabSettings, host: LabHost, name: str, address: str,
          memory_mib: int | None = None) -> Guest:
    """One guest: its image (customised in parallel with the container), its macvtap
    domain, and the network handover. The guest that takes `s.container_ip` takes over
    the container's address, as in the seed; others use addresses of their own."""
    static = {"address": address, "prefix": s.prefix, "gateway": s.gateway}
    image = CustomizedImage(f"{name}-image", CustomizedImageArgs(
        output_path=f"{s.work_dir}/images/{name}.qcow2", root_password=s.root_password,
        base_image=s.base_image, nameservers=[s.gateway], hostname=name[:63],
        network=static if s.network_method == "offline" else None))
    domain = MacvtapDomain(f"{name}-domain", MacvtapDomainArgs(
        name=name, libvirt_uri=host.container.libvirt_uri, container=host.container.name,
        disk_path=image.path, memory_mib=memory_mib if memory_mib is not None else s.memory_mib,
        vcpus=s.vcpus,
        mode=s.mode, vhost=s.vhost, domain_type=s.domain_type,
        interface_type=s.interface_type, docker_host=s.docker_host,
        image_digest=image.digest))
    net = GuestNetwork(f"{name}-network", GuestNetworkArgs(
        domain=domain.name, libvirt_uri=host.container.libvirt_uri,
        container=host.container.name, network=host.network.name, address=address,
        prefix=s.prefix, gateway=s.gateway, root_password=s.root_password,
        method=s.network_method, nameservers=[s.gateway], docker_host=s.docker_host,
        domain_id=domain.id))
    return Guest(image, domain, net, address)


def ssh_command(host: LabHost, address: pulumi.Input[str]) -> pulumi.Output[str]:
    """How to log in to a guest from a probe container on the lab network."""
    return pulumi.Output.all(host.network.name, host.container.image_ref, address).apply(
        lambda v: f"docker run --rm -it --network {v[0]} --entrypoint ssh {v[1]} "
                  f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@{v[2]}")
