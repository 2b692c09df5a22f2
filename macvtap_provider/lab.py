"""`Lab` and `Guest`: the component resources a program composes labs from.

A `Lab` is a docker network (internal) and a libvirt container on it; each `Guest` is a
customised image, a macvtap domain in that container, and the handover of an address to
it. Settings are checked (`builders.lab_config`) before any resource is registered: a bad
value fails with the argument's name (or the stack config key's, with `Lab.from_config`)
and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pulumi

from macvtap_provider import paths
from macvtap_provider.builders import lab_config
from macvtap_provider.builders.lab_config import GUESTS, LabConfig, Naming, Setting
from macvtap_provider.errors import ConfigError
from macvtap_provider.resources.customized_image import (
    CustomizedImage,
    CustomizedImageArgs,
    NetworkArgs,
)
from macvtap_provider.resources.generated_password import GeneratedPassword
from macvtap_provider.resources.guest_network import GuestNetwork, GuestNetworkArgs
from macvtap_provider.resources.lab_network import LabNetwork, LabNetworkArgs
from macvtap_provider.resources.libvirt_container import LibvirtContainer, LibvirtContainerArgs
from macvtap_provider.resources.macvtap_domain import MacvtapDomain, MacvtapDomainArgs

__all__ = ["GUESTS", "Guest", "Lab", "LabConfigError", "StackConfig", "lab_name",
           "stack_config"]

#: Children made before they had a component parent keep their state (no replacement).
_WAS_TOP_LEVEL = [pulumi.Alias(parent=pulumi.ROOT_STACK_RESOURCE)]


class LabConfigError(ConfigError, pulumi.RunError):
    """A ConfigError raised while a program runs: Pulumi shows its message, no traceback."""

    def __init__(self, error: ConfigError) -> None:
        ConfigError.__init__(self, error.field, error.reason, error.where)


def lab_name(project: str, stack: str) -> str:
    """A docker/libvirt-safe name unique to a project's stack."""
    raw = re.sub(r"[^a-zA-Z0-9_.-]+", "-", f"{project}-{stack}").strip("-.") or "lab"
    return raw[:40]


def _checked(values: Mapping[str, Any], lab: str, naming: Naming) -> LabConfig:
    try:
        config = lab_config.check_lab_config(values, lab=lab, naming=naming)
    except ConfigError as exc:
        raise LabConfigError(exc) from None
    if config.base_image is not None and not Path(config.base_image).is_file():
        # Images are customised on this machine: the base must be here.
        raise LabConfigError(lab_config.config_error(
            lab_config.BY_KEY["baseImage"], naming, f"{config.base_image} is not a file on "
            "this machine: point it at a qcow2 image"))
    return config


class StackConfig:
    """A stack's config, read and checked once: the lab's settings, its password, extras."""

    def __init__(self, config: LabConfig, root_password: pulumi.Input[str] | None,
                 extra: Mapping[str, Any]) -> None:
        self.lab = config
        self.root_password = root_password
        self.extra = dict(extra)


def _project_config() -> dict[str, str]:
    """This program's stack config in its project's namespace (key -> raw text)."""
    from pulumi.runtime import config as runtime_config

    prefix = pulumi.get_project() + ":"
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    return {k[len(prefix):]: runtime_config.get_config(k) for k in sorted(keys)
            if k.startswith(prefix)}


def stack_config(name: str | None = None, extra: Sequence[Setting] = ()) -> StackConfig:
    """Read and check every stack config key of this project before anything is made.

    Args:
        name: The lab's name (default: `lab_name(project, stack)`), for derived defaults.
        extra: Settings of the program's own besides the lab's (e.g. `GUESTS`).

    Raises:
        LabConfigError: A key is unknown or its value is invalid; the message names the key
            and the fix (a RunError: `pulumi preview` shows it without a traceback).
    """
    lab = name or lab_name(pulumi.get_project(), pulumi.get_stack())
    raw = _project_config()
    unknown = lab_config.unknown_keys(raw, extra)
    if unknown:
        known = sorted(s.key for s in (*lab_config.SETTINGS, *extra))
        raise LabConfigError(ConfigError(
            unknown[0], f"is not a setting of this program (a typo?); known: "
            f"{', '.join(known)}; remove it with `pulumi config rm {unknown[0]}`"))
    extras = {s.key: raw.pop(s.key, None) for s in extra}
    checked = _checked(raw, lab, "config")
    extra_values = {}
    for setting in extra:
        try:
            extra_values[setting.key] = lab_config.check_setting(
                setting, extras[setting.key], "config")
        except ConfigError as exc:
            raise LabConfigError(exc) from None
    if extra_values.get(GUESTS.key) is not None:
        try:  # room in the subnet for that many guests
            lab_config.guest_addresses(checked, extra_values[GUESTS.key], "config")
        except ConfigError as exc:
            raise LabConfigError(exc) from None
    password = None
    if raw.get("rootPassword") is not None:
        password = pulumi.Config().get_secret("rootPassword")
    return StackConfig(checked, password, extra_values)


class Lab(pulumi.ComponentResource):
    """A lab: an internal docker network and a libvirt container on it, where guests run.

    Every setting is optional; None means the default named in the README's settings
    table (`builders.lab_config.SETTINGS`). Guest settings (`memory_mib`, `vcpus`,
    `macvtap_mode`, `vhost`, `domain_type`, `interface_type`, `guest_boot`,
    `network_method`, `base_image`) are the defaults of the lab's guests. With `uplink` (a
    NIC of the lab host), the network is a docker macvlan network on that NIC instead: the
    lab joins its LAN, within `ip_range` of the LAN's `subnet`.

    Raises:
        LabConfigError: An argument is invalid (named, with the fix); nothing is registered.
    """

    #: The lab's checked settings (defaults filled in where the lab derives them).
    config: LabConfig
    #: The host directory of its disks and libvirt socket.
    work_dir: str
    #: Its children: the docker network and the libvirt container.
    network: LabNetwork
    container: LibvirtContainer
    #: The password made for it when none was given (else None).
    generated_password: GeneratedPassword | None
    #: The guests made in it so far, in order.
    guests: list[Guest]
    #: The docker network's name.
    network_name: pulumi.Output[str]
    #: The libvirt container's name.
    container_name: pulumi.Output[str]
    #: How to reach libvirt in the container.
    libvirt_uri: pulumi.Output[str]
    #: The container's image: it has ssh, sshpass and ping (a probe image for the guests).
    probe_image: pulumi.Output[str]
    #: The guests' root password (secret): the given one, or the generated one.
    root_password: pulumi.Output[str]

    #: The lab's name (its resources' names start with it).
    lab_name: str

    def __init__(self, name: str, *, subnet: str | None = None, container_ip: str | None = None,
                 work_dir: str | None = None, docker_host: str | None = None,
                 security_mode: str | None = None, memory_mib: int | None = None,
                 vcpus: int | None = None, macvtap_mode: str | None = None,
                 vhost: str | None = None, domain_type: str | None = None,
                 interface_type: str | None = None, guest_boot: str | None = None,
                 network_method: str | None = None,
                 base_image: str | None = None, uplink: str | None = None,
                 ip_range: str | None = None, root_password: pulumi.Input[str] | None = None,
                 opts: pulumi.ResourceOptions | None = None,
                 config: LabConfig | None = None) -> None:
        # A LabConfig comes from `stack_config`: its errors name stack config keys.
        self._naming: Naming = "args" if config is None else "config"
        if config is None:
            given = {"subnet": subnet, "container_ip": container_ip, "work_dir": work_dir,
                     "docker_host": docker_host, "security_mode": security_mode,
                     "memory_mib": memory_mib, "vcpus": vcpus, "macvtap_mode": macvtap_mode,
                     "vhost": vhost, "domain_type": domain_type,
                     "interface_type": interface_type, "guest_boot": guest_boot,
                     "network_method": network_method,
                     "base_image": base_image, "uplink": uplink, "ip_range": ip_range}
            if isinstance(root_password, str):
                given["root_password"] = root_password
            config = _checked(given, name, "args")
        super().__init__("macvtap:index:Lab", name, None, opts)
        self.lab_name = name
        self.config = config
        self.work_dir = config.work_dir or str(paths.work_root() / name)
        self.guests = []
        child = pulumi.ResourceOptions(parent=self, aliases=_WAS_TOP_LEVEL)
        self.generated_password = None
        if root_password is None:
            self.generated_password = GeneratedPassword(f"{name}-root-password", opts=child)
            root_password = self.generated_password.result
        self.root_password = pulumi.Output.secret(root_password)
        self.network = LabNetwork(f"{name}-net", LabNetworkArgs(
            name=f"{name}-net", subnet=config.subnet, gateway=config.gateway,
            docker_host=config.docker_host, ip_range=config.docker_range,
            parent=config.uplink), opts=child)
        self.container = LibvirtContainer(f"{name}-libvirt", LibvirtContainerArgs(
            name=f"{name}-libvirt", network=self.network.name, work_dir=self.work_dir,
            security_mode=config.security_mode, docker_host=config.docker_host,
            ipv4_address=config.container_ip), opts=child)
        self.network_name = self.network.name
        self.container_name = self.container.name
        self.libvirt_uri = self.container.libvirt_uri
        self.probe_image = self.container.image_ref
        self.register_outputs({
            "network_name": self.network_name, "container_name": self.container_name,
            "libvirt_uri": self.libvirt_uri, "probe_image": self.probe_image,
            "root_password": self.root_password})

    @classmethod
    def from_config(cls, name: str | None = None, *,
                    root_password: pulumi.Input[str] | None = None,
                    opts: pulumi.ResourceOptions | None = None) -> Lab:
        """A lab from this stack's config (see the README's settings table).

        The password: `root_password` if given, else the `rootPassword` secret, else a
        generated one (`root_password` output).

        Raises:
            LabConfigError: A config key is unknown or invalid (named, with the fix).
        """
        lab = name or lab_name(pulumi.get_project(), pulumi.get_stack())
        settings = stack_config(lab)
        password = root_password if root_password is not None else settings.root_password
        return cls(lab, root_password=password, opts=opts, config=settings.lab)

    def guest_addresses(self, count: int) -> list[str]:
        """The addresses `count` guests get by default (see `Guest`)."""
        try:
            return lab_config.guest_addresses(self.config, count, self._naming)
        except ConfigError as exc:
            raise LabConfigError(exc) from None

    def ssh_command(self, address: pulumi.Input[str]) -> pulumi.Output[str]:
        """How to log in to a guest from a probe container on the lab network."""
        return pulumi.Output.all(self.network_name, self.probe_image, address).apply(
            lambda v: f"docker run --rm -it --network {v[0]} --entrypoint ssh {v[1]} "
                      f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                      f"root@{v[2]}")


class Guest(pulumi.ComponentResource):
    """A guest of a `Lab`: its image (customised offline, in parallel with the container),
    its macvtap domain, and the handover of its address.

    Args:
        name: The guest's name (the domain's and the image file's).
        lab: The lab it runs in. Unset settings take the lab's.
        address: Its IPv4 address. Default: the first guest of a lab takes over the
            container's address (as in the seed); the next get .201, .202... of a /24.
        opts: Resource options (parent defaults to the lab).

    Raises:
        LabConfigError: An argument is invalid (named, with the fix); nothing is registered.
    """

    #: Its children: the disk, the libvirt domain and the address handover.
    image: CustomizedImage
    domain: MacvtapDomain
    network: GuestNetwork
    #: Its IPv4 address (given or default).
    address: str
    #: Its address, once a probe on the lab network saw ping and TCP 22 answer.
    guest_ip: pulumi.Output[str]
    #: Its NIC's MAC.
    guest_mac: pulumi.Output[str]
    #: The macvtap link behind the NIC, in the lab container.
    macvtap_device: pulumi.Output[str]
    #: That link's MAC.
    macvtap_mac: pulumi.Output[str]
    #: Whether the two MACs are equal (False: the guest is unreachable).
    mac_matches: pulumi.Output[bool]
    #: The libvirt domain's name.
    domain_name: pulumi.Output[str]
    #: The guest's qcow2 on the lab host.
    image_path: pulumi.Output[str]
    #: `docker run ... ssh root@<guest_ip>` from a probe container on the lab network.
    ssh_command: pulumi.Output[str]

    def __init__(self, name: str, lab: Lab, *, address: str | None = None,
                 memory_mib: int | None = None, vcpus: int | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        config = lab.config
        memory_mib = _guest_setting("memory_mib", memory_mib)
        vcpus = _guest_setting("vcpus", vcpus)
        if address is None:
            address = lab.guest_addresses(len(lab.guests) + 1)[-1]
        else:
            _check_address(address, config)
        opts = pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=lab), opts)
        super().__init__("macvtap:index:Guest", name, None, opts)
        lab.guests.append(self)
        self.address = address
        child = pulumi.ResourceOptions(parent=self, aliases=_WAS_TOP_LEVEL)
        offline = config.network_method == "offline"
        self.image = CustomizedImage(f"{name}-image", CustomizedImageArgs(
            output_path=f"{lab.work_dir}/images/{name}.qcow2", root_password=lab.root_password,
            base_image=config.base_image, nameservers=[config.gateway], hostname=name[:63],
            network=NetworkArgs(address, config.prefix, config.gateway) if offline else None,
            docker_host=lab.config.docker_host), opts=child)
        self.domain = MacvtapDomain(f"{name}-domain", MacvtapDomainArgs(
            name=name, libvirt_uri=lab.container.libvirt_uri, container=lab.container.name,
            disk_path=self.image.path,
            memory_mib=memory_mib if memory_mib is not None else config.memory_mib,
            vcpus=vcpus if vcpus is not None else config.vcpus,
            mode=config.macvtap_mode, vhost=config.vhost, domain_type=config.domain_type,
            interface_type=config.interface_type, docker_host=config.docker_host,
            image_digest=self.image.digest, boot=config.guest_boot,
            kernel=self.image.kernel_path, initrd=self.image.initrd_path,
            cmdline=self.image.kernel_cmdline), opts=child)
        self.network = GuestNetwork(f"{name}-network", GuestNetworkArgs(
            domain=self.domain.name, libvirt_uri=lab.container.libvirt_uri,
            container=lab.container.name, network=lab.network.name, address=address,
            prefix=config.prefix, gateway=config.gateway, root_password=lab.root_password,
            method=config.network_method, nameservers=[config.gateway],
            docker_host=config.docker_host, domain_id=self.domain.id), opts=child)
        self.guest_ip = self.network.guest_ip
        self.guest_mac = self.domain.guest_mac
        self.macvtap_device = self.domain.macvtap_device
        self.macvtap_mac = self.domain.macvtap_mac
        self.mac_matches = self.domain.mac_matches
        self.domain_name = self.domain.name
        self.image_path = self.image.path
        self.ssh_command = lab.ssh_command(self.network.guest_ip)
        self.register_outputs({
            "guest_ip": self.guest_ip, "guest_mac": self.guest_mac,
            "macvtap_device": self.macvtap_device, "macvtap_mac": self.macvtap_mac,
            "mac_matches": self.mac_matches, "domain_name": self.domain_name,
            "image_path": self.image_path, "ssh_command": self.ssh_command})


def _guest_setting(arg: str, value: Any) -> Any:
    try:
        return lab_config.check_setting(lab_config.BY_ARG[arg], value, "args")
    except ConfigError as exc:
        raise LabConfigError(ConfigError(exc.field, exc.reason, "Guest argument")) from None


def _check_address(address: str, config: LabConfig) -> None:
    """A guest's own address: a host address of the lab's subnet, not its gateway."""
    net = config.network
    try:
        addr = ipaddress.IPv4Address(address)
    except ValueError:
        reason = f"{address!r} is not an IPv4 address (e.g. {lab_config.host_address(config.subnet, 201)})"
    else:
        if addr not in net:
            reason = f"{addr} is outside the lab's subnet {net}: pick an address inside it"
        elif addr in (net.network_address, net.broadcast_address):
            reason = f"{addr} is the network or broadcast address of {net}"
        elif str(addr) == config.gateway:
            reason = f"{addr} is the lab network's gateway: pick another host address"
        elif config.ip_range is not None and addr not in ipaddress.IPv4Network(config.ip_range):
            reason = (f"{addr} is outside the lab's ip_range {config.ip_range} (the rest of "
                      "the subnet is not the lab's): pick an address inside it")
        else:
            return
    raise LabConfigError(ConfigError("address", reason, "Guest argument"))
