"""Pure validation rules for lab inputs: names, MACs, addresses, sizes.

Every function raises `SpecError(field, message)` with the input's name and the
fix, so `check` can report it before anything is created.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from macvtap_provider.builders.endpoint import parse_endpoint, validate_endpoint
from macvtap_provider.errors import SpecError

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# Docker accepts [a-zA-Z0-9][a-zA-Z0-9_.-]+; libvirt forbids '/' and we keep names
# usable as file and interface-name stems, so both share this stricter rule.
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
MACVTAP_MODES = ("bridge", "vepa", "private", "passthrough")
VHOST_CHOICES = ("auto", "on", "off")
DOMAIN_TYPES = ("auto", "kvm", "qemu")
INTERFACE_TYPES = ("auto", "ethernet", "direct")
#: How a domain boots: its disk (firmware, then its bootloader), its image's kernel
#: directly, or auto (the kernel when the image has a boot record).
BOOT_MODES = ("auto", "disk", "kernel")
NETWORK_METHODS = ("console", "offline")
SECURITY_MODES = ("privileged", "capabilities", "auto")
_IFNAME_RE = re.compile(r"^[a-zA-Z0-9_.-]{1,15}$")
MEMORY_MIB_RANGE = (128, 65536)
VCPU_RANGE = (1, 64)


def check_name(value: object, field: str) -> str:
    """A container, domain or network name that docker and libvirt both accept."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise SpecError(field, f"{value!r} is not a valid name: use 1-63 letters, digits, "
                        "'.', '_' or '-', starting with a letter or digit")
    return value


def check_ifname(value: object, field: str) -> str:
    """A Linux interface name (at most 15 characters, no '/' or spaces)."""
    if not isinstance(value, str) or not _IFNAME_RE.fullmatch(value) or value in (".", ".."):
        raise SpecError(field, f"{value!r} is not a valid interface name: use at most 15 "
                        "letters, digits, '.', '_' or '-' (e.g. eth0)")
    return value


def normalize_mac(value: object, field: str) -> str:
    """A unicast, non-zero MAC in lower-case colon form."""
    if not isinstance(value, str):
        raise SpecError(field, f"{value!r} is not a MAC address: use the form 52:54:00:12:34:56")
    mac = value.strip().lower().replace("-", ":")
    if not _MAC_RE.fullmatch(mac):
        raise SpecError(field, f"{value!r} is not a MAC address: use the form 52:54:00:12:34:56")
    first = int(mac[:2], 16)
    if first & 1:
        raise SpecError(field, f"{value!r} is a multicast MAC: a NIC needs a unicast address "
                        "(first octet even, e.g. 52:54:00:...)")
    if mac == "00:00:00:00:00:00":
        raise SpecError(field, "00:00:00:00:00:00 is not a usable MAC: omit it to derive one")
    return mac


def derive_mac(name: str) -> str:
    """A stable, locally administered 52:54:00:xx:xx:xx MAC derived from a name."""
    digest = hashlib.sha256(name.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def check_ipv4(value: object, field: str) -> str:
    """A single IPv4 address, normalised."""
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise SpecError(field, f"{value!r} is not an IPv4 address (e.g. 10.213.0.10)") from None


def check_choice(value: object, field: str, choices: Iterable[str]) -> str:
    options = tuple(choices)
    if value not in options:
        raise SpecError(field, f"{value!r} is not one of {', '.join(options)}")
    return str(value)


def check_int_range(value: object, field: str, lo: int, hi: int, unit: str = "") -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value)) or int(value) != value):
        raise SpecError(field, f"{value!r} is not a whole number")
    number = int(value)
    if not lo <= number <= hi:
        suffix = f" {unit}" if unit else ""
        raise SpecError(field, f"{number}{suffix} is out of range: use {lo} to {hi}{suffix}")
    return number


@dataclass(frozen=True)
class Ipv4Interface:
    """An address with its prefix and gateway, checked to belong together."""

    address: str
    prefix: int
    gateway: str

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefix}"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Interface(self.cidr).network


def check_ipv4_interface(address: object, prefix: object, gateway: object,
                         field: str = "address") -> Ipv4Interface:
    """Validate an IPv4 address/prefix/gateway triple."""
    try:
        addr = ipaddress.IPv4Address(str(address))
    except ValueError:
        raise SpecError(field, f"{address!r} is not an IPv4 address (e.g. 10.213.0.10)") from None
    base = field.rsplit(".", 1)[0] + "." if "." in field else ""
    gw_field, prefix_field = f"{base}gateway", f"{base}prefix"
    length = check_int_range(prefix, prefix_field, 1, 30)
    try:
        gw = ipaddress.IPv4Address(str(gateway))
    except ValueError:
        raise SpecError(gw_field, f"{gateway!r} is not an IPv4 address") from None
    net = ipaddress.IPv4Interface(f"{addr}/{length}").network
    if gw not in net:
        raise SpecError(gw_field, f"{gw} is outside the subnet {net} of {addr}/{length}: "
                        "use a gateway inside it")
    if addr == gw:
        raise SpecError(field, f"{addr} is the gateway's address: pick another host address")
    if addr in (net.network_address, net.broadcast_address):
        raise SpecError(field, f"{addr} is the network or broadcast address of {net}")
    return Ipv4Interface(str(addr), length, str(gw))


def check_subnet(value: object, field: str = "subnet") -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as exc:
        raise SpecError(field, f"{value!r} is not an IPv4 subnet in CIDR form "
                        f"(e.g. 10.213.0.0/24): {exc}") from None
    if net.prefixlen > 29:
        raise SpecError(field, f"{net} is too small: use /29 or larger")
    if net.is_global:
        raise SpecError(field, f"{net} is a public range: labs use private ranges only "
                        "(e.g. 10.213.0.0/24)")
    return net


def check_nameservers(values: object, field: str = "nameservers") -> tuple[str, ...]:
    """Resolver addresses; public resolvers are refused (lab traffic stays in the lab)."""
    if values is None:
        return ()
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise SpecError(field, f"{values!r} is not a list of IPv4 addresses")
    out = []
    for value in values:
        try:
            addr = ipaddress.ip_address(str(value))
        except ValueError:
            raise SpecError(field, f"{value!r} is not an IP address") from None
        if addr.is_global:
            raise SpecError(field, f"{addr} is a public resolver: point the guest at a resolver "
                            "inside the lab (e.g. the lab network's gateway)")
        out.append(str(addr))
    return tuple(out)


#: Transports docker-py speaks (a docker endpoint's URL scheme).
DOCKER_SCHEMES = ("unix", "tcp", "ssh")
_DOCKER_HOST_FIX = "use unix:///var/run/docker.sock, tcp://HOST:2376 or ssh://USER@HOST"


def check_docker_host(value: object, field: str = "docker_host") -> str | None:
    """A docker endpoint URL (None or "": the local default, DOCKER_HOST honoured)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SpecError(field, f"{value!r} is not a docker endpoint: {_DOCKER_HOST_FIX}")
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in DOCKER_SCHEMES:
        raise SpecError(field, f"{value!r} is not a docker endpoint (scheme "
                        f"{parts.scheme or 'missing'!r}, not one of "
                        f"{', '.join(DOCKER_SCHEMES)}): {_DOCKER_HOST_FIX}")
    if parts.scheme == "unix":
        if not parts.path.startswith("/") or parts.netloc:
            raise SpecError(field, f"{value!r} does not name a socket path: use "
                            "unix:///var/run/docker.sock (three slashes)")
        return value
    try:
        port = parts.port
    except ValueError:
        raise SpecError(field, f"{value!r} has an invalid port: {_DOCKER_HOST_FIX}") from None
    if not parts.hostname or (parts.path not in ("", "/")):
        raise SpecError(field, f"{value!r} does not name a host: {_DOCKER_HOST_FIX}")
    if parts.scheme == "tcp" and port is None:
        raise SpecError(field, f"{value!r} has no port: use tcp://HOST:2376 (TLS) or "
                        "tcp://HOST:2375")
    # The ssh key, known-hosts file and TLS files ride in the query (builders/endpoint).
    try:
        problems = validate_endpoint(parse_endpoint(value))
    except SpecError as exc:
        raise SpecError(field, exc.reason) from None
    if problems:
        raise SpecError(field, problems[0].reason)
    return value


def check_absolute_path(value: object, field: str) -> str:
    """An absolute path (a directory or file on the lab host)."""
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise SpecError(field, f"{value!r} is not an absolute path (e.g. /var/lib/macvtap-lab/x)")
    return value
