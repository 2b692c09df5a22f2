"""Lab settings are checked in the user's terms: each bad value names the stack config key
(or the Lab argument) and the fix, and both namings give the same reason."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from macvtap_provider.builders import lab_config
from macvtap_provider.builders.lab_config import (
    BY_KEY,
    GUESTS,
    SETTINGS,
    LabConfig,
    check_lab_config,
    check_setting,
    guest_addresses,
)
from macvtap_provider.errors import ConfigError, SpecError

pytestmark = pytest.mark.unit

LAB = "macvtap-lab-dev"
SUBNET = "10.213.5.0/24"

# (config key, value, words the reason must contain); other keys at their defaults.
BAD: list[tuple[str, Any, str]] = [
    ("subnet", "10.213.5.0/33", "not an IPv4 subnet"),
    ("subnet", "10.213.5.7/24", "not an IPv4 subnet"),
    ("subnet", "8.8.8.0/24", "public range"),
    ("subnet", "10.213.5.0/30", "too small"),
    ("subnet", "10.213.5.0/29", "no host .10"),
    ("containerIp", "10.9.9.9", "outside the lab's subnet"),
    ("containerIp", "10.213.5.1", "gateway"),
    ("containerIp", "10.213.5.255", "broadcast"),
    ("containerIp", "banana", "not an IPv4 address"),
    ("workDir", "relative/dir", "not an absolute path"),
    ("dockerHost", "ftp://x", "not a docker endpoint"),
    ("dockerHost", "tcp://dockerhost", "no port"),
    ("dockerHost", "unix://var/run/docker.sock", "socket path"),
    ("securityMode", "yolo", "not one of"),
    ("memoryMib", "100", "out of range"),
    ("memoryMib", "lots", "not a whole number"),
    ("vcpus", "0", "out of range"),
    ("macvtapMode", "bridged", "not one of"),
    ("vhost", "sometimes", "not one of"),
    ("domainType", "xen", "not one of"),
    ("interfaceType", "tap", "not one of"),
    ("guestBoot", "pxe", "not one of"),
    ("networkMethod", "dhcp", "not one of"),
    ("baseImage", "images/debian.qcow2", "not an absolute path"),
    ("uplink", "eth0/1", "not a valid interface name"),
    ("uplink", "a-very-long-nic-name", "not a valid interface name"),
    ("ipRange", "10.213.6.0/26", "not inside the lab's subnet"),
    ("ipRange", "10.213.5.0/26", "includes the subnet's gateway 10.213.5.1"),
    ("ipRange", "10.213.5.64/30", "too small"),
    ("ipRange", "upper half", "not an IPv4 subnet"),
    ("rootPassword", "two\nlines", "newlines"),
]


def _values(key: str, value: Any, naming: str) -> dict[str, Any]:
    values = {"subnet": SUBNET, key: value}
    by = BY_KEY if naming == "config" else {s.key: s for s in SETTINGS}
    return {(k if naming == "config" else by[k].arg): v for k, v in values.items()}


def test_every_setting_has_a_bad_case() -> None:
    assert {s.key for s in SETTINGS} <= {key for key, _, _ in BAD}


@pytest.mark.parametrize(("key", "value", "words"), BAD, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD)])
def test_bad_value_names_the_key_and_the_fix(key: str, value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_lab_config(_values(key, value, "config"), lab=LAB, naming="config")
    error = caught.value
    blamed = "subnet" if key == "subnet" else key
    assert error.field == blamed
    text = str(error)
    assert text.startswith(f"stack config `{blamed}`: "), text
    assert words in text, text
    assert f"pulumi config set {'--secret ' if key == 'rootPassword' else ''}{blamed}" in text
    if key == "rootPassword":
        assert "two" not in text and "lines" not in text.replace("newlines", "")


@pytest.mark.parametrize(("key", "value", "words"), BAD, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD)])
def test_lab_arguments_give_the_same_reason(key: str, value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as as_config:
        check_lab_config(_values(key, value, "config"), lab=LAB, naming="config")
    with pytest.raises(ConfigError) as as_args:
        check_lab_config(_values(key, value, "args"), lab=LAB, naming="args")
    arg = BY_KEY[as_config.value.field].arg
    assert as_args.value.field == arg
    assert str(as_args.value).startswith(f"Lab argument `{arg}`: ")
    reason_config = as_config.value.reason.split("; set it with")[0]
    reason_args = as_args.value.reason.split("; pass e.g.")[0]
    assert reason_args == reason_config.replace("`subnet`", f"`{BY_KEY['subnet'].arg}`")


def test_container_ip_outside_the_subnet_blames_container_ip_not_the_gateway() -> None:
    with pytest.raises(ConfigError) as caught:
        check_lab_config({"subnet": SUBNET, "containerIp": "10.9.9.9"}, lab=LAB, naming="config")
    assert caught.value.field == "containerIp"
    assert "gateway" not in str(caught.value)


def test_defaults() -> None:
    config = check_lab_config({}, lab=LAB, naming="config")
    assert config.subnet == lab_config.default_subnet(LAB)
    assert config.container_ip == lab_config.host_address(config.subnet, 10)
    assert config.gateway == lab_config.host_address(config.subnet, 1)
    assert config.network_method == "offline"
    assert config.memory_mib is None and config.security_mode is None  # the resources' own


def test_empty_values_mean_unset() -> None:
    assert check_lab_config({"subnet": "", "memoryMib": "", "dockerHost": ""}, lab=LAB,
                            naming="config") == check_lab_config({}, lab=LAB, naming="config")


def test_good_values_are_normalised() -> None:
    config = check_lab_config({"subnet": SUBNET, "containerIp": "10.213.5.20",
                               "memoryMib": "1024", "vcpus": 2, "dockerHost": "ssh://root@h",
                               "rootPassword": "pw-123456"}, lab=LAB, naming="config")
    assert config == LabConfig(subnet=SUBNET, container_ip="10.213.5.20", memory_mib=1024,
                               vcpus=2, docker_host="ssh://root@h")


def test_unknown_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"memmoryMib.*not a lab setting"):
        check_lab_config({"memmoryMib": "512"}, lab=LAB, naming="config")
    assert lab_config.unknown_keys(["subnet", "memmoryMib", "guests"], [GUESTS]) == ["memmoryMib"]


@pytest.mark.parametrize(("value", "expected"), [(None, 2), ("", 2), ("3", 3), (8, 8)])
def test_guests_setting(value: Any, expected: int) -> None:
    assert check_setting(GUESTS, value, "config") == expected


@pytest.mark.parametrize("value", ["0", "9", "two"])
def test_guests_out_of_range(value: str) -> None:
    with pytest.raises(ConfigError, match="stack config `guests`"):
        check_setting(GUESTS, value, "config")


def test_guest_addresses() -> None:
    config = check_lab_config({"subnet": SUBNET}, lab=LAB, naming="config")
    assert guest_addresses(config, 3, "config") == ["10.213.5.10", "10.213.5.201",
                                                    "10.213.5.202"]
    small = check_lab_config({"subnet": "10.213.5.0/25"}, lab=LAB, naming="config")
    assert guest_addresses(small, 1, "config") == ["10.213.5.10"]
    with pytest.raises(ConfigError, match=r"stack config `subnet`.*/24 or larger"):
        guest_addresses(small, 2, "config")


def test_config_error_is_a_spec_error() -> None:
    error = ConfigError("subnet", "bad", "stack config")
    assert isinstance(error, SpecError) and isinstance(error, ValueError)
    assert str(error) == "stack config `subnet`: bad"


# -- a lab on a host's LAN (uplink) and its part of the LAN's subnet (ipRange) -------------
LAN = {"subnet": SUBNET, "uplink": "eth0", "ipRange": "10.213.5.128/26"}


def test_an_uplink_needs_the_lans_subnet_and_a_range() -> None:
    with pytest.raises(ConfigError, match=r"`subnet`: is required with `uplink`") as caught:
        check_lab_config({"uplink": "eth0"}, lab=LAB, naming="config")
    assert caught.value.field == "subnet"
    with pytest.raises(ConfigError) as caught:
        check_lab_config({"subnet": SUBNET, "uplink": "eth0"}, lab=LAB, naming="config")
    assert caught.value.field == "ipRange"
    assert "is required with `uplink`" in str(caught.value)
    assert "10.213.5.64/26" in str(caught.value)  # an example that avoids the gateway
    with pytest.raises(ConfigError) as caught:
        check_lab_config({"subnet": SUBNET, "uplink": "eth0"}, lab=LAB, naming="args")
    assert caught.value.field == "ip_range"


def test_a_range_places_the_container_docker_and_the_guests() -> None:
    config = check_lab_config(LAN, lab=LAB, naming="config")
    assert (config.uplink, config.ip_range) == ("eth0", "10.213.5.128/26")
    assert config.container_ip == "10.213.5.128"
    assert config.docker_range == "10.213.5.128/27"  # docker: the lower half
    assert guest_addresses(config, 3, "config") == ["10.213.5.128", "10.213.5.160",
                                                    "10.213.5.161"]
    assert check_lab_config({}, lab=LAB, naming="config").docker_range is None


def test_a_container_ip_outside_the_range_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"outside `ipRange` 10\.213\.5\.128/26") as caught:
        check_lab_config({**LAN, "containerIp": "10.213.5.20"}, lab=LAB, naming="config")
    assert caught.value.field == "containerIp"


def test_a_range_without_room_for_the_guests_is_named() -> None:
    config = check_lab_config({**LAN, "ipRange": "10.213.5.128/29"}, lab=LAB, naming="config")
    assert len(guest_addresses(config, 5, "config")) == 5
    with pytest.raises(ConfigError, match=r"`ipRange`: 10\.213\.5\.128/29 has room for 5 guests"):
        guest_addresses(config, 6, "config")
    top = check_lab_config({**LAN, "ipRange": "10.213.5.248/29"}, lab=LAB, naming="config")
    assert guest_addresses(top, 4, "config")[1:] == ["10.213.5.252", "10.213.5.253",
                                                     "10.213.5.254"]  # never .255
    with pytest.raises(ConfigError, match="has room for 4 guests"):
        guest_addresses(top, 5, "config")


@pytest.mark.parametrize("hosts", [1, 2, 3, 4])
@pytest.mark.parametrize("ip_range", ["10.213.5.128/25", "10.213.5.64/26", "10.213.5.32/27"])
def test_hosts_on_one_lan_get_disjoint_addresses(hosts: int, ip_range: str) -> None:
    config = check_lab_config({**LAN, "ipRange": ip_range}, lab=LAB, naming="config")
    parts = lab_config.split_ip_range(config, [2] * hosts, "config")
    assert len(parts) == hosts
    taken: list[set[str]] = []
    for part in parts:
        assert part.uplink == "eth0" and part.subnet == SUBNET
        rng = ipaddress.IPv4Network(part.ip_range or "")
        assert rng.subnet_of(ipaddress.IPv4Network(ip_range))
        docker = ipaddress.IPv4Network(part.docker_range or "")
        guests = set(guest_addresses(part, 2, "config"))
        assert part.container_ip in guests
        taken.append({str(a) for a in docker} | guests)
    for i, mine in enumerate(taken):
        for other in taken[i + 1:]:
            assert not mine & other


def test_a_split_names_what_does_not_fit() -> None:
    config = check_lab_config({**LAN, "ipRange": "10.213.5.128/28"}, lab=LAB, naming="config")
    with pytest.raises(ConfigError, match=r"`ipRange`: 10.213.5.128/28 is too small for 3 "
                                          r"hosts.*use a /27"):
        lab_config.split_ip_range(config, [1, 1, 1], "config")
    with pytest.raises(ConfigError, match=r"`ipRange`: 10\.213\.5\.136/29 has room for 5 guests"):
        lab_config.split_ip_range(config, [1, 6], "config")
    pinned = check_lab_config({**LAN, "containerIp": "10.213.5.140"}, lab=LAB, naming="config")
    with pytest.raises(ConfigError, match="`containerIp`: one address cannot serve"):
        lab_config.split_ip_range(pinned, [1, 1], "config")
    assert lab_config.split_ip_range(pinned, [2], "config") == [pinned]


def test_without_a_range_every_host_keeps_the_lab_config() -> None:
    config = check_lab_config({"subnet": SUBNET}, lab=LAB, naming="config")
    assert lab_config.split_ip_range(config, [1, 1], "config") == [config, config]
