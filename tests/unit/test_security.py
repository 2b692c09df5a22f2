"""Capability masks and the docker security kwargs of each mode."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from macvtap_provider.builders.security import (
    ALL_DEVICES_RULE,
    CAPABILITIES,
    DEV_VOLUME,
    SecurityMode,
    container_security_kwargs,
    missing_capabilities,
    modes_to_try,
    parse_capability_mask,
)
from macvtap_provider.errors import SpecError
from tests.conftest import absent

pytestmark = pytest.mark.unit

CAPABILITY_HEADER = Path("/usr/include/linux/capability.h")


def test_numbering_follows_the_kernel() -> None:
    assert len(CAPABILITIES) == 41
    assert CAPABILITIES.index("CHOWN") == 0
    assert CAPABILITIES.index("NET_ADMIN") == 12
    assert CAPABILITIES.index("SYS_RESOURCE") == 24
    assert CAPABILITIES.index("CHECKPOINT_RESTORE") == 40


def test_numbering_matches_the_installed_header() -> None:
    if not CAPABILITY_HEADER.exists():
        absent("no kernel headers installed (linux-libc-dev, pulled in by gcc)")
    defined = dict(
        (int(num), name)
        for name, num in re.findall(r"#define CAP_([A-Z_]+)\s+(\d+)\s*$",
                                    CAPABILITY_HEADER.read_text(), re.MULTILINE)
        if name != "LAST_CAP"
    )
    for bit, name in enumerate(CAPABILITIES):
        assert defined.get(bit) == name


@pytest.mark.parametrize(
    ("mask", "missing"),
    [
        pytest.param("000001fffeffffff", ["SYS_RESOURCE"], id="this-host-no-sys-resource"),
        pytest.param("000001ffffffffff", [], id="full-41-caps"),
        pytest.param("0x000001ffffffffff", [], id="0x-prefix"),
        pytest.param("000001fffeffffff\n", ["SYS_RESOURCE"], id="trailing-newline"),
        pytest.param("0000003fffffffff", ["BPF", "CHECKPOINT_RESTORE", "PERFMON"],
                     id="pre-5.9-kernel"),
        pytest.param("000001ffffffefff", ["NET_ADMIN"], id="no-net-admin"),
    ],
)
def test_missing_from_mask(mask: str, missing: list[str]) -> None:
    assert missing_capabilities(parse_capability_mask(mask)) == missing


def test_mask_names() -> None:
    assert parse_capability_mask("0") == frozenset()
    assert parse_capability_mask("3") == {"CHOWN", "DAC_OVERRIDE"}
    assert parse_capability_mask("1000000") == {"SYS_RESOURCE"}


def test_unknown_high_bits_are_kept_by_number() -> None:
    caps = parse_capability_mask("000003ffffffffff")
    assert "CAP_41" in caps
    assert missing_capabilities(caps) == []


@pytest.mark.parametrize("mask", ["", "xyz", "-1", "0x"])
def test_bad_mask(mask: str) -> None:
    with pytest.raises(SpecError, match="capability mask"):
        parse_capability_mask(mask)


def test_capability_kwargs_drop_what_the_host_lacks() -> None:
    kwargs = container_security_kwargs(SecurityMode.CAPABILITIES, ["SYS_RESOURCE"])
    assert kwargs == {
        "init": True,
        "volumes": {"/dev": {"bind": "/dev", "mode": "rw"}},
        "cap_add": ["ALL"],
        "cap_drop": ["SYS_RESOURCE"],
        "security_opt": ["apparmor=unconfined", "seccomp=unconfined"],
        "device_cgroup_rules": [ALL_DEVICES_RULE],
    }
    assert "privileged" not in kwargs


def test_privileged_kwargs() -> None:
    kwargs = container_security_kwargs(SecurityMode.PRIVILEGED, [])
    assert kwargs == {
        "init": True,
        "privileged": True,
        "volumes": {"/dev": {"bind": "/dev", "mode": "rw"}},
    }


def test_auto_tries_privileged_then_capabilities() -> None:
    # One meaning everywhere (provider, doctor, README): the daemon is the judge.
    assert modes_to_try(SecurityMode.AUTO) == [SecurityMode.PRIVILEGED,
                                               SecurityMode.CAPABILITIES]
    assert modes_to_try(SecurityMode.CAPABILITIES) == [SecurityMode.CAPABILITIES]
    assert modes_to_try(SecurityMode.PRIVILEGED) == [SecurityMode.PRIVILEGED]


def test_auto_has_no_kwargs_of_its_own() -> None:
    with pytest.raises(SpecError, match="not a concrete mode"):
        container_security_kwargs(SecurityMode.AUTO, [])


@pytest.mark.parametrize("mode", [SecurityMode.PRIVILEGED, SecurityMode.CAPABILITIES])
def test_volumes_are_a_fresh_mergeable_dict(mode: SecurityMode) -> None:
    kwargs = container_security_kwargs(mode, [])
    kwargs["volumes"]["/srv/lab"] = {"bind": "/var/lib/lab", "mode": "rw"}
    kwargs["volumes"]["/dev"]["mode"] = "ro"
    assert DEV_VOLUME == {"/dev": {"bind": "/dev", "mode": "rw"}}
    assert container_security_kwargs(mode, [])["volumes"] == DEV_VOLUME


def test_missing_list_is_copied() -> None:
    missing = ["SYS_RESOURCE"]
    kwargs = container_security_kwargs(SecurityMode.CAPABILITIES, missing)
    kwargs["cap_drop"].append("NET_ADMIN")
    assert missing == ["SYS_RESOURCE"]
