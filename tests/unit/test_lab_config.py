"""Lab settings are checked in the user's terms: each bad value names the stack config key
(or the Lab argument) and the fix, and both namings give the same reason."""

from __future__ import annotations

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
