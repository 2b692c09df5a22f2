"""Pure checks of a lab's settings, in the user's own terms: the stack config keys of the
Pulumi projects (`containerIp`) or the arguments of `Lab` (`container_ip`).

Each setting is declared once in `SETTINGS` (key, argument, type, what it is, its check);
the project files' `config:` blocks and the README agree with it (unit tests compare).
A value is checked before any resource is registered, and a failure names the key (or
argument) and the fix, never a resource input the user did not write.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from macvtap_provider.builders.secrets import check_password
from macvtap_provider.builders.validation import (
    BOOT_MODES,
    DOMAIN_TYPES,
    INTERFACE_TYPES,
    MACVTAP_MODES,
    MEMORY_MIB_RANGE,
    NETWORK_METHODS,
    SECURITY_MODES,
    VCPU_RANGE,
    VHOST_CHOICES,
    check_absolute_path,
    check_choice,
    check_docker_host,
    check_ifname,
    check_int_range,
    check_ipv4,
    check_subnet,
)
from macvtap_provider.errors import ConfigError, SpecError

Naming = Literal["config", "args"]

#: The host number of the container's address in the subnet, by default.
CONTAINER_HOST = 10
#: Guests after the first get host numbers from here on (the upper half of a /24).
EXTRA_GUEST_BASE = 200
GUESTS_RANGE = (1, 8)


def _whole(lo: int, hi: int, unit: str = "") -> Callable[[Any, str], int]:
    def check(value: Any, field: str) -> int:
        if isinstance(value, str):  # stack config values arrive as text
            try:
                value = int(value.strip())
            except ValueError:
                raise SpecError(field, f"{value!r} is not a whole number") from None
        return check_int_range(value, field, lo, hi, unit)
    return check


def _one_of(choices: Iterable[str]) -> Callable[[Any, str], str]:
    options = tuple(choices)
    return lambda value, field: check_choice(value, field, options)


def _subnet(value: Any, field: str) -> str:
    return str(check_subnet(value, field))


@dataclass(frozen=True)
class Setting:
    """One lab setting: its stack config key, its `Lab` argument, and its check."""

    key: str
    arg: str
    kind: Literal["string", "integer"]
    help: str
    example: str
    check: Callable[[Any, str], Any]
    secret: bool = False
    #: The program's default when unset (lab settings: None, their defaults are the
    #: resources' own or derived, as `help` says).
    default: Any = None


SETTINGS: tuple[Setting, ...] = (
    Setting("subnet", "subnet", "string",
            "The lab's docker network (internal, private range, /28 or larger). Default: a "
            "/24 in 10.213.0.0/16 derived from the lab's name.", "10.213.5.0/24", _subnet),
    Setting("containerIp", "container_ip", "string",
            "The container's address in the subnet, taken over by the first guest. "
            "Default: host .10 of the subnet.", "10.213.5.10", check_ipv4),
    Setting("uplink", "uplink", "string",
            "A NIC of the lab host whose LAN the lab joins: the lab network becomes a docker "
            "macvlan network on it, so the guests (macvtap on the container's eth0) sit on that "
            "LAN, and labs on several hosts of one LAN reach each other. Needs `subnet` (the "
            "LAN's) and `ipRange`. Default: none (an internal bridge of the lab's own).",
            "eth0", check_ifname),
    Setting("ipRange", "ip_range", "string",
            "The addresses of the subnet this lab uses (a CIDR inside it, /29 or larger, without "
            "the gateway): the container and probe containers get the lower half, the guests "
            "the upper half. Required with `uplink` (a range free on that LAN); stacks/hosts "
            "splits it among the hosts. Default: the whole subnet.", "10.213.5.128/26",
            lambda value, field: str(check_subnet(value, field))),
    Setting("workDir", "work_dir", "string",
            "Host directory for the lab's disks and libvirt socket. Default: "
            "/var/lib/macvtap-lab/<lab>.", "/var/lib/macvtap-lab/mylab", check_absolute_path),
    Setting("dockerHost", "docker_host", "string",
            "Docker endpoint (unix://, tcp://HOST:PORT, ssh://USER@HOST). Default: the local "
            "socket (DOCKER_HOST honoured).", "unix:///var/run/docker.sock", check_docker_host),
    Setting("securityMode", "security_mode", "string",
            "privileged, capabilities, or auto (privileged if dockerd allows it, else "
            "capabilities).", "capabilities", _one_of(SECURITY_MODES)),
    Setting("memoryMib", "memory_mib", "integer",
            "Guest memory in MiB (changed in place, with a guest restart).", "1024",
            _whole(*MEMORY_MIB_RANGE, "MiB")),
    Setting("vcpus", "vcpus", "integer", "Guest vCPUs (changed in place, with a restart).",
            "2", _whole(*VCPU_RANGE)),
    Setting("macvtapMode", "macvtap_mode", "string",
            "macvtap mode: bridge, vepa, private or passthrough.", "bridge",
            _one_of(MACVTAP_MODES)),
    Setting("vhost", "vhost", "string",
            "vhost-net: auto (KVM and /dev/vhost-net present), on or off.", "off",
            _one_of(VHOST_CHOICES)),
    Setting("domainType", "domain_type", "string",
            "kvm, qemu (TCG) or auto (kvm only when a KVM guest really boots here).", "qemu",
            _one_of(DOMAIN_TYPES)),
    Setting("interfaceType", "interface_type", "string",
            "ethernet (provider-made macvtap, safe with several containers), direct (the "
            "seed's), or auto (= ethernet).", "ethernet", _one_of(INTERFACE_TYPES)),
    Setting("guestBoot", "guest_boot", "string",
            "auto (the image's own kernel directly, skipping firmware and bootloader, when "
            "the image has one: the default Debian guest), kernel, or disk (as a PC boots).",
            "disk", _one_of(BOOT_MODES)),
    Setting("networkMethod", "network_method", "string",
            "offline (static eth0 written into the image) or console (serial-console login, "
            "as the seed).", "console", _one_of(NETWORK_METHODS)),
    Setting("baseImage", "base_image", "string",
            "A qcow2 base image on the lab host. Default: the locally built Debian guest.",
            "/srv/images/debian-12.qcow2", check_absolute_path),
    Setting("rootPassword", "root_password", "string",
            "The guests' root password (secret). Unset: one is generated and exported as the "
            "secret output root_password.", "--secret", check_password, secret=True),
)
#: The multi-guest stack's own setting.
GUESTS = Setting("guests", "guests", "integer",
                 "How many guests (the first takes over the container's address).", "3",
                 _whole(*GUESTS_RANGE), default=2)
BY_KEY = {s.key: s for s in (*SETTINGS, GUESTS)}
BY_ARG = {s.arg: s for s in (*SETTINGS, GUESTS)}


@dataclass(frozen=True)
class LabConfig:
    """A lab's settings, checked. None: the default (declared in the resource's Spec, or
    derived from the lab's name as stated in `SETTINGS`)."""

    subnet: str
    container_ip: str
    work_dir: str | None = None
    docker_host: str | None = None
    security_mode: str | None = None
    memory_mib: int | None = None
    vcpus: int | None = None
    macvtap_mode: str | None = None
    vhost: str | None = None
    domain_type: str | None = None
    interface_type: str | None = None
    guest_boot: str | None = None
    network_method: str = "offline"
    base_image: str | None = None
    uplink: str | None = None
    ip_range: str | None = None

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def docker_range(self) -> str | None:
        """Where docker hands out addresses: the lower half of `ip_range` (None: the lab
        network's default, the subnet's lower half)."""
        if self.ip_range is None:
            return None
        return str(next(ipaddress.IPv4Network(self.ip_range).subnets(prefixlen_diff=1)))

    @property
    def gateway(self) -> str:
        return host_address(self.subnet, 1)

    @property
    def prefix(self) -> int:
        return self.network.prefixlen


def default_subnet(name: str) -> str:
    """A /24 in 10.213.0.0/16 derived from the lab's name (distinct stacks, distinct nets)."""
    third = 1 + int(hashlib.sha256(name.encode()).hexdigest(), 16) % 99
    return f"10.213.{third}.0/24"


def host_address(subnet: str, host: int) -> str:
    net = ipaddress.IPv4Network(subnet)
    return str(net.network_address + host)


def _name(setting: Setting, naming: Naming) -> str:
    return setting.key if naming == "config" else setting.arg


def config_error(setting: Setting, naming: Naming, reason: str) -> ConfigError:
    """The error for `setting`, named and with the fix, as the user wrote it."""
    if naming == "config":
        value = "--secret " + setting.key if setting.secret else f"{setting.key} {setting.example}"
        fix = (f"set it with `pulumi config set {value}`, or remove it "
               f"(`pulumi config rm {setting.key}`) for the default")
        return ConfigError(setting.key, f"{reason}; {fix}", "stack config")
    example = "..." if setting.secret else repr(setting.example)
    return ConfigError(setting.arg, f"{reason}; pass e.g. {setting.arg}={example}, or leave it "
                       "out for the default", "Lab argument")


def check_setting(setting: Setting, value: Any, naming: Naming) -> Any:
    """One setting's value, checked and normalised; None or "" (unset): its default."""
    if value is None or value == "":
        return setting.default
    try:
        return setting.check(value, _name(setting, naming))
    except SpecError as exc:
        raise config_error(setting, naming, exc.reason) from None


def unknown_keys(keys: Iterable[str], extra: Iterable[Setting] = ()) -> list[str]:
    """Stack config keys (of the project's namespace) that no setting declares: typos."""
    known = {s.key for s in (*SETTINGS, *extra)}
    return sorted(k for k in keys if k not in known)


def check_lab_config(values: Mapping[str, Any], *, lab: str, naming: Naming) -> LabConfig:
    """Every lab setting in `values` (keyed by config key or argument name, per
    `naming`), checked alone and together; the secret one is checked but not kept.

    Raises:
        ConfigError: A value is invalid; it names the key (or argument) and the fix.
    """
    by = BY_KEY if naming == "config" else BY_ARG
    unknown = [k for k in values if k not in by]
    if unknown:
        raise ConfigError(unknown[0], "is not a lab setting; known: "
                          f"{', '.join(sorted(by))}",
                          "stack config" if naming == "config" else "Lab argument")
    checked = {by[k].arg: check_setting(by[k], v, naming) for k, v in values.items()}
    checked.pop("root_password", None)
    checked.pop("guests", None)
    subnet = checked.pop("subnet", None)
    if subnet is None and checked.get("uplink"):
        raise config_error(BY_KEY["subnet"], naming, "is required with "
                           f"`{_name(BY_KEY['uplink'], naming)}`: the lab joins that LAN, so "
                           "give the LAN's subnet")
    if subnet is None:
        subnet = default_subnet(lab)
    net = ipaddress.IPv4Network(subnet)
    ip_range = _check_ip_range(checked.get("ip_range"), net, bool(checked.get("uplink")),
                               naming)
    container_ip = checked.pop("container_ip", None)
    if container_ip is None and ip_range is not None:
        container_ip = str(ip_range.network_address)
    elif container_ip is None:
        if net.num_addresses <= CONTAINER_HOST + 1:
            raise config_error(BY_KEY["subnet"], naming, f"{net} has no host .{CONTAINER_HOST} "
                               "for the container's default address: use a /28 or larger "
                               "subnet, or set the container's address")
        container_ip = host_address(subnet, CONTAINER_HOST)
    else:
        _check_in_subnet(container_ip, net, naming)
        if ip_range is not None and ipaddress.IPv4Address(container_ip) not in ip_range:
            raise config_error(BY_KEY["containerIp"], naming, f"{container_ip} is outside "
                               f"`{_name(BY_KEY['ipRange'], naming)}` {ip_range}: pick an "
                               "address inside it, or leave it unset (its first address)")
    if checked.get("network_method") is None:
        checked.pop("network_method", None)
    known = {f.name for f in fields(LabConfig)}
    return LabConfig(subnet=subnet, container_ip=container_ip,
                     **{k: v for k, v in checked.items() if k in known})


def _check_ip_range(value: str | None, net: ipaddress.IPv4Network, uplink: bool,
                    naming: Naming) -> ipaddress.IPv4Network | None:
    """The lab's part of the subnet: inside it, without its gateway (nor its network
    address); required on an uplink (the LAN's other addresses are not the lab's). The
    broadcast address may end it: guests skip it."""
    setting = BY_KEY["ipRange"]
    if value is None:
        if uplink:
            raise config_error(setting, naming, "is required with "
                               f"`{_name(BY_KEY['uplink'], naming)}`: name the part of "
                               f"{net} that is free on that LAN for this lab (e.g. "
                               f"{_example_range(net)})")
        return None
    rng = ipaddress.IPv4Network(value)
    if not rng.subnet_of(net):
        raise config_error(setting, naming, f"{rng} is not inside the lab's subnet {net} "
                           f"(`{_name(BY_KEY['subnet'], naming)}`)")
    if net.network_address + 1 in rng:  # then its network address too
        raise config_error(setting, naming, f"{rng} includes the subnet's gateway "
                           f"{net.network_address + 1}: pick a range without it (e.g. "
                           f"{_example_range(net)})")
    return rng


def _example_range(net: ipaddress.IPv4Network) -> str:
    """A range a user could pick: the second quarter of the subnet (or its second half)."""
    parts = list(net.subnets(prefixlen_diff=2 if net.prefixlen <= 27 else 1))
    return str(parts[1])


def split_ip_range(config: LabConfig, guests: Sequence[int], naming: Naming) -> list[LabConfig]:
    """One config per host of a stack that spans hosts: `ip_range` split into equal,
    disjoint parts, one per host in order, each with room for that host's guests; each
    host's container takes the first address of its part. Unchanged copies when the config
    has no `ip_range`.

    Raises:
        ConfigError: the range is too small for that many hosts or guests, or one
            `containerIp` is given for several hosts (named as the user wrote them).
    """
    if config.ip_range is None:
        return [config for _ in guests]
    rng = ipaddress.IPv4Network(config.ip_range)
    bits = (len(guests) - 1).bit_length()
    if len(guests) > 1 and rng.prefixlen + bits > 29:
        raise config_error(BY_KEY["ipRange"], naming, f"{rng} is too small for {len(guests)} "
                           f"hosts: each needs a /29 or larger part; use a /{29 - bits} or "
                           "larger range")
    if len(guests) > 1 and config.container_ip != str(rng.network_address):
        raise config_error(BY_KEY["containerIp"], naming, "one address cannot serve the labs "
                           "of several hosts: leave it unset (each host's container takes the "
                           f"first address of its part of `{_name(BY_KEY['ipRange'], naming)}`)")
    parts = list(rng.subnets(prefixlen_diff=bits))[:len(guests)] if len(guests) > 1 else [rng]
    configs = [replace(config, ip_range=str(part), container_ip=(
        str(part.network_address) if len(guests) > 1 else config.container_ip))
        for part in parts]
    for part_config, count in zip(configs, guests, strict=True):
        guest_addresses(part_config, count, naming)
    return configs


def _check_in_subnet(address: str, net: ipaddress.IPv4Network, naming: Naming) -> None:
    addr = ipaddress.IPv4Address(address)
    setting = BY_KEY["containerIp"]
    subnet_name = _name(BY_KEY["subnet"], naming)
    if addr not in net:
        raise config_error(setting, naming, f"{addr} is outside the lab's subnet {net} "
                           f"(`{subnet_name}`): pick an address inside it")
    if addr in (net.network_address, net.broadcast_address):
        raise config_error(setting, naming, f"{addr} is the network or broadcast address of "
                           f"{net}: pick a host address")
    if addr == net.network_address + 1:
        raise config_error(setting, naming, f"{addr} is the lab network's gateway (the docker "
                           "bridge): pick another host address")


def guest_addresses(config: LabConfig, count: int, naming: Naming) -> list[str]:
    """The guests' addresses: the first takes over the container's, the others get
    .201, .202... (the upper half of a /24, which docker never hands out), or, with an
    `ip_range`, that range's upper half in order.

    Raises:
        ConfigError: the subnet has no room for that many guests (named as `subnet`).
    """
    if config.ip_range is not None:
        rng = ipaddress.IPv4Network(config.ip_range)
        upper = list(rng.subnets(prefixlen_diff=1))[1]
        broadcast = str(config.network.broadcast_address)
        pool = [str(a) for a in upper if str(a) not in (config.container_ip, broadcast)]
        if count - 1 > len(pool):
            raise config_error(BY_KEY["ipRange"], naming, f"{rng} has room for "
                               f"{len(pool) + 1} guests (the container's address and the "
                               f"range's upper half), not {count}: use a larger range")
        return [config.container_ip, *pool[:count - 1]]
    net = config.network
    last = EXTRA_GUEST_BASE + count - 1
    if count > 1 and net.num_addresses <= last + 1:
        raise config_error(BY_KEY["subnet"], naming, f"{net} has no host .{last} for guest "
                           f"{count}: use a /24 or larger subnet for {count} guests")
    return [config.container_ip] + [host_address(config.subnet, EXTRA_GUEST_BASE + i)
                                    for i in range(1, count)]
