"""Every validation rule of builders/validation.py: accepted, normalised and refused inputs."""

from __future__ import annotations

import ipaddress

import pytest

from macvtap_provider.builders.validation import (
    MACVTAP_MODES,
    Ipv4Interface,
    check_choice,
    check_ifname,
    check_int_range,
    check_ipv4_interface,
    check_name,
    check_nameservers,
    check_subnet,
    derive_mac,
    normalize_mac,
)
from macvtap_provider.errors import LabError, SpecError

pytestmark = pytest.mark.unit


# -- names -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lab", "lab-1", "Lab_1.test", "a", "1lab", "a" * 63])
def test_name_accepted(name: str) -> None:
    assert check_name(name, "name") == name


@pytest.mark.parametrize("name", [
    "", "-lab", ".lab", "_lab", "lab/1", "lab 1", "lab:1", "läb", "a" * 64, "lab\nx", None, 7,
])
def test_name_refused(name: object) -> None:
    with pytest.raises(SpecError) as exc:
        check_name(name, "container")
    assert exc.value.field == "container"
    assert "not a valid name" in exc.value.reason
    assert "letters, digits" in exc.value.reason  # says what is allowed


def test_spec_error_is_a_lab_error_and_a_value_error() -> None:
    with pytest.raises(SpecError) as exc:
        check_name("", "name")
    assert isinstance(exc.value, LabError)
    assert isinstance(exc.value, ValueError)
    assert str(exc.value).startswith("name: ")




def test_name_with_trailing_newline_refused() -> None:
    with pytest.raises(SpecError):
        check_name("lab\n", "name")


# -- interface names -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["eth0", "ens3", "br-1a2b3c4d5e6f", "vlan.10", "a" * 15])
def test_ifname_accepted(name: str) -> None:
    assert check_ifname(name, "source_dev") == name


@pytest.mark.parametrize("name", ["", "a" * 16, "eth/0", "eth 0", ".", "..", "eth\n0", None, 0])
def test_ifname_refused(name: object) -> None:
    with pytest.raises(SpecError) as exc:
        check_ifname(name, "source_dev")
    assert exc.value.field == "source_dev"
    assert "15" in exc.value.reason and "eth0" in exc.value.reason


def test_ifname_with_trailing_newline_refused() -> None:
    with pytest.raises(SpecError):
        check_ifname("eth0\n", "source_dev")


# -- MAC addresses ---------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "normal"), [
    ("52:54:00:12:34:56", "52:54:00:12:34:56"),
    ("52:54:00:AB:CD:EF", "52:54:00:ab:cd:ef"),
    ("52-54-00-ab-cd-ef", "52:54:00:ab:cd:ef"),
    ("52-54-00-AB-CD-EF", "52:54:00:ab:cd:ef"),
    ("  02:00:00:00:00:01 ", "02:00:00:00:00:01"),
    ("fe:ff:ff:ff:ff:ff", "fe:ff:ff:ff:ff:ff"),
])
def test_mac_normalised(given: str, normal: str) -> None:
    assert normalize_mac(given, "mac") == normal


@pytest.mark.parametrize("mac", [
    "", "52:54:00:12:34", "52:54:00:12:34:56:78", "52:54:00:12:34:5g", "5254.0012.3456",
    "525400123456", "52:54:00:1:2:3", "52:54:00:12:34:56/", None, 0x525400123456,
])
def test_mac_malformed(mac: object) -> None:
    with pytest.raises(SpecError) as exc:
        normalize_mac(mac, "mac")
    assert exc.value.field == "mac"
    assert "not a MAC address" in exc.value.reason
    assert "52:54:00:12:34:56" in exc.value.reason  # shows the expected form


@pytest.mark.parametrize("mac", [
    "01:00:5e:00:00:01",   # IPv4 multicast
    "33:33:00:00:00:01",   # IPv6 multicast
    "ff:ff:ff:ff:ff:ff",   # broadcast
    "53:54:00:12:34:56",   # odd first octet
    "01-00-5E-7F-FF-FA",   # dashed and upper case, still multicast
])
def test_mac_multicast_refused(mac: str) -> None:
    with pytest.raises(SpecError) as exc:
        normalize_mac(mac, "mac")
    assert exc.value.field == "mac"
    assert "multicast" in exc.value.reason and "unicast" in exc.value.reason


def test_mac_all_zero_refused() -> None:
    with pytest.raises(SpecError) as exc:
        normalize_mac("00-00-00-00-00-00", "mac")
    assert exc.value.field == "mac"
    assert "omit it" in exc.value.reason  # tells the user a MAC is derived when absent


@pytest.mark.parametrize("name", ["guest", "guest-2", "a", "x" * 63])
def test_derive_mac_is_a_stable_unicast_qemu_mac(name: str) -> None:
    mac = derive_mac(name)
    assert mac == derive_mac(name)
    assert mac.startswith("52:54:00:")
    assert normalize_mac(mac, "mac") == mac  # well formed, lower case, unicast, not zero


def test_derive_mac_known_value() -> None:
    # Pinned: a change would give every existing domain a new MAC (and a replacement).
    assert derive_mac("guest") == "52:54:00:84:98:3c"


def test_derive_mac_differs_by_name() -> None:
    macs = {derive_mac(f"guest-{i}") for i in range(200)}
    assert len(macs) == 200


# -- choices and integer ranges --------------------------------------------------------------
@pytest.mark.parametrize("mode", MACVTAP_MODES)
def test_choice_accepted(mode: str) -> None:
    assert check_choice(mode, "mode", MACVTAP_MODES) == mode


@pytest.mark.parametrize("value", ["Bridge", "bridge ", "", None, 1, "vepa,bridge"])
def test_choice_refused_lists_options(value: object) -> None:
    with pytest.raises(SpecError) as exc:
        check_choice(value, "mode", MACVTAP_MODES)
    assert exc.value.field == "mode"
    assert "bridge, vepa, private, passthrough" in exc.value.reason


def test_choice_accepts_a_generator() -> None:
    assert check_choice("b", "x", (c for c in "abc")) == "b"


@pytest.mark.parametrize(("value", "expected"), [
    (128, 128), (512, 512), (65536, 65536), (512.0, 512),
])
def test_int_range_accepted(value: object, expected: int) -> None:
    result = check_int_range(value, "memory_mib", 128, 65536, "MiB")
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value", [-512, 0, 127, 65537, 10**12])
def test_int_range_out_of_range(value: int) -> None:
    with pytest.raises(SpecError) as exc:
        check_int_range(value, "memory_mib", 128, 65536, "MiB")
    assert exc.value.field == "memory_mib"
    assert f"{value} MiB is out of range" in exc.value.reason
    assert "use 128 to 65536 MiB" in exc.value.reason


def test_int_range_without_unit() -> None:
    with pytest.raises(SpecError, match=r"vcpus: 0 is out of range: use 1 to 64$"):
        check_int_range(0, "vcpus", 1, 64)


@pytest.mark.parametrize("value", [True, False, 512.5, "512", None, [512], 1e-3])
def test_int_range_not_a_whole_number(value: object) -> None:
    with pytest.raises(SpecError) as exc:
        check_int_range(value, "memory_mib", 0, 65536)
    assert exc.value.field == "memory_mib"
    assert "not a whole number" in exc.value.reason


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_int_range_non_finite_is_a_spec_error(value: float) -> None:
    with pytest.raises(SpecError):
        check_int_range(value, "memory_mib", 128, 65536)


# -- IPv4 address / prefix / gateway ---------------------------------------------------------
def test_ipv4_interface_accepted() -> None:
    iface = check_ipv4_interface("10.213.0.10", 24, "10.213.0.1")
    assert iface == Ipv4Interface("10.213.0.10", 24, "10.213.0.1")
    assert iface.cidr == "10.213.0.10/24"
    assert iface.network == ipaddress.IPv4Network("10.213.0.0/24")


def test_ipv4_interface_normalises_types() -> None:
    iface = check_ipv4_interface(ipaddress.IPv4Address("172.18.0.2"), 16.0, "172.18.0.1")
    assert (iface.address, iface.prefix, iface.gateway) == ("172.18.0.2", 16, "172.18.0.1")
    assert type(iface.prefix) is int


@pytest.mark.parametrize(("address", "prefix", "gateway"), [
    ("10.0.0.2", 30, "10.0.0.1"),         # smallest allowed prefix
    ("10.0.0.254", 1, "10.0.0.1"),        # largest allowed prefix
    ("192.168.1.200", 25, "192.168.1.129"),
])
def test_ipv4_interface_edge_cases_accepted(address: str, prefix: int, gateway: str) -> None:
    assert check_ipv4_interface(address, prefix, gateway).address == address


@pytest.mark.parametrize("address", ["10.213.0", "10.213.0.256", "10.213.0.10/24", "fe80::1",
                                     "", None, "host"])
def test_ipv4_interface_bad_address(address: object) -> None:
    with pytest.raises(SpecError) as exc:
        check_ipv4_interface(address, 24, "10.213.0.1", field="network.address")
    assert exc.value.field == "network.address"
    assert "not an IPv4 address" in exc.value.reason


@pytest.mark.parametrize("prefix", [0, 31, 32, 33, -1, "24", 24.5, True])
def test_ipv4_interface_prefix_out_of_range(prefix: object) -> None:
    with pytest.raises(SpecError) as exc:
        check_ipv4_interface("10.213.0.10", prefix, "10.213.0.1")
    assert exc.value.field == "prefix"


@pytest.mark.parametrize("gateway", ["10.213.1.1", "192.168.0.1", "10.214.0.1"])
def test_ipv4_interface_gateway_outside_subnet(gateway: str) -> None:
    with pytest.raises(SpecError) as exc:
        check_ipv4_interface("10.213.0.10", 24, gateway)
    assert exc.value.field == "gateway"
    assert "outside the subnet 10.213.0.0/24" in exc.value.reason


def test_ipv4_interface_bad_gateway() -> None:
    with pytest.raises(SpecError) as exc:
        check_ipv4_interface("10.213.0.10", 24, "router")
    assert exc.value.field == "gateway"
    assert "'router' is not an IPv4 address" in exc.value.reason


def test_ipv4_interface_address_is_the_gateway() -> None:
    with pytest.raises(SpecError) as exc:
        check_ipv4_interface("10.213.0.1", 24, "10.213.0.1")
    assert exc.value.field == "address"
    assert "gateway's address" in exc.value.reason


@pytest.mark.parametrize(("address", "prefix"), [
    ("10.213.0.0", 24), ("10.213.0.255", 24), ("10.0.0.0", 30), ("10.0.0.3", 30),
])
def test_ipv4_interface_network_or_broadcast_address(address: str, prefix: int) -> None:
    gateway = "10.0.0.1" if prefix == 30 else "10.213.0.1"
    with pytest.raises(SpecError) as exc:
        check_ipv4_interface(address, prefix, gateway)
    assert exc.value.field == "address"
    assert "network or broadcast" in exc.value.reason


# -- subnets ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "prefixlen"), [
    ("10.213.0.0/24", 24), ("172.18.0.0/16", 16), ("192.168.50.0/29", 29), ("10.0.0.0/8", 8),
    ("100.64.0.0/24", 24),  # carrier-grade NAT space is not public
])
def test_subnet_accepted(value: str, prefixlen: int) -> None:
    assert check_subnet(value).prefixlen == prefixlen


@pytest.mark.parametrize("value", ["10.213.0/24", "10.213.0.0/33", "lab", "", None,
                                   "fd00::/64", "10.213.0.0/24/1"])
def test_subnet_not_cidr(value: object) -> None:
    with pytest.raises(SpecError) as exc:
        check_subnet(value)
    assert exc.value.field == "subnet"
    assert "CIDR" in exc.value.reason and "10.213.0.0/24" in exc.value.reason


def test_subnet_with_host_bits_set() -> None:
    with pytest.raises(SpecError) as exc:
        check_subnet("10.213.0.1/24", field="ip_range")
    assert exc.value.field == "ip_range"
    assert "host bits set" in exc.value.reason


@pytest.mark.parametrize("value", ["10.213.0.0/30", "10.213.0.0/31", "10.213.0.1/32"])
def test_subnet_too_small(value: str) -> None:
    with pytest.raises(SpecError) as exc:
        check_subnet(value)
    assert exc.value.field == "subnet"
    assert "too small" in exc.value.reason and "/29" in exc.value.reason


@pytest.mark.parametrize("value", ["8.8.8.0/24", "1.1.1.0/24", "203.0.114.0/24", "11.0.0.0/8"])
def test_subnet_public_refused(value: str) -> None:
    with pytest.raises(SpecError) as exc:
        check_subnet(value)
    assert exc.value.field == "subnet"
    assert "public range" in exc.value.reason and "private" in exc.value.reason


# -- nameservers -----------------------------------------------------------------------------
@pytest.mark.parametrize(("values", "expected"), [
    (None, ()),
    ([], ()),
    (["10.213.0.1"], ("10.213.0.1",)),
    (("192.168.1.1", "172.16.0.53"), ("192.168.1.1", "172.16.0.53")),
    ([ipaddress.IPv4Address("10.0.0.1")], ("10.0.0.1",)),
    (["fd00::53"], ("fd00::53",)),
])
def test_nameservers_accepted(values: object, expected: tuple[str, ...]) -> None:
    assert check_nameservers(values) == expected


@pytest.mark.parametrize("resolver", ["8.8.8.8", "1.1.1.1", "9.9.9.9", "2001:4860:4860::8888"])
def test_nameservers_public_refused(resolver: str) -> None:
    with pytest.raises(SpecError) as exc:
        check_nameservers(["10.213.0.1", resolver])
    assert exc.value.field == "nameservers"
    assert f"{resolver} is a public resolver" in exc.value.reason
    assert "gateway" in exc.value.reason  # points at the lab network's gateway instead


@pytest.mark.parametrize("values", ["10.213.0.1", {"ns": "10.213.0.1"}, 10, b"10.0.0.1"])
def test_nameservers_not_a_list(values: object) -> None:
    with pytest.raises(SpecError) as exc:
        check_nameservers(values, field="dns")
    assert exc.value.field == "dns"
    assert "not a list" in exc.value.reason


@pytest.mark.parametrize("value", ["resolver", "10.213.0.300", "", None])
def test_nameservers_bad_entry(value: object) -> None:
    with pytest.raises(SpecError) as exc:
        check_nameservers([value])
    assert exc.value.field == "nameservers"
    assert "not an IP address" in exc.value.reason
