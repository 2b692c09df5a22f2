"""Container security settings for the libvirt container: capability sets and docker kwargs.

The libvirt container runs qemu, creates macvtap links and opens host device nodes
(/dev/net/tun, /dev/tapN, /dev/kvm). Both security modes therefore make the container
**effectively root on the host**. Run labs only on a machine you would let this code own.

Risk of each mode:

``privileged``
    ``docker run --privileged`` plus the host's /dev bind-mounted read-write. The container
    gets every capability, every host device node, no seccomp filter and no AppArmor
    profile. A process in it can load firmware, write raw disks, reconfigure the host's
    network, and escape to the host with little effort.

``capabilities``
    The same power, assembled by hand for hosts where ``--privileged`` is refused
    (the host's capability bounding set lacks one, typically CAP_SYS_RESOURCE, so runc fails
    with "unable to apply caps: operation not permitted"): every capability the host can
    grant (``cap_add=["ALL"]`` minus the missing ones), seccomp and AppArmor unconfined, a
    device cgroup rule allowing all devices (``a *:* rwm``) and the host's /dev bind-mounted
    read-write. It is no safer than ``privileged``: it only omits what the host cannot give.

``auto``
    ``privileged`` if the docker daemon starts the container that way, else
    ``capabilities``: the daemon, whose capability bounding set may differ from this
    process's (and which may run on another host), is the judge. `modes_to_try` gives
    the order; the LibvirtContainer provider and the doctor both follow it.

Both modes run docker's init (``init=True``) in front of the command: libvirtd as PID 1
leaves zombie qemu probe processes behind and then hangs.
"""

from __future__ import annotations

import enum
from typing import Any

from macvtap_provider.errors import SpecError

#: Linux capabilities by number (include/uapi/linux/capability.h), without the CAP_ prefix,
#: as docker's cap_add / cap_drop accept them.
CAPABILITIES: tuple[str, ...] = (
    "CHOWN",  # 0
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",  # 5
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",  # 10
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",  # 15
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",  # 20
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",  # 25
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",  # 30
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",  # 35
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",  # 40
)

#: The host's /dev, bind-mounted read-write (docker-py `volumes` format, mergeable).
DEV_VOLUME: dict[str, dict[str, str]] = {"/dev": {"bind": "/dev", "mode": "rw"}}

#: Lets the container open every device node, including /dev/tapN whose major is dynamic.
ALL_DEVICES_RULE = "a *:* rwm"


class SecurityMode(enum.Enum):
    """How the libvirt container gets its power over the host (see the module docstring)."""

    PRIVILEGED = "privileged"
    CAPABILITIES = "capabilities"
    AUTO = "auto"


def parse_capability_mask(hex_mask: str) -> frozenset[str]:
    """Turn a capability mask from /proc/<pid>/status (e.g. CapBnd) into capability names.

    Args:
        hex_mask: The hexadecimal mask, e.g. "000001fffeffffff" (an optional 0x is accepted).

    Returns:
        The names of the set bits ("CHOWN", "SYS_RESOURCE", ...). Bits above the last
        capability known here are named "CAP_<bit>" so they are not lost silently.

    Raises:
        SpecError: The text is not a hexadecimal number.
    """
    text = hex_mask.strip().lower().removeprefix("0x")
    try:
        value = int(text, 16)
    except ValueError:
        raise SpecError("capability mask", f"{hex_mask!r} is not a hexadecimal mask") from None
    if value < 0:
        raise SpecError("capability mask", f"{hex_mask!r} is negative")
    names: set[str] = set()
    bit = 0
    while value:
        if value & 1:
            names.add(CAPABILITIES[bit] if bit < len(CAPABILITIES) else f"CAP_{bit}")
        value >>= 1
        bit += 1
    return frozenset(names)


def missing_capabilities(bounding: frozenset[str]) -> list[str]:
    """The known capabilities the host cannot grant (not in its bounding set), sorted."""
    return sorted(set(CAPABILITIES) - bounding)


def modes_to_try(mode: SecurityMode) -> list[SecurityMode]:
    """The concrete modes to start a container with, in order: `auto` tries
    `privileged` first and falls back to `capabilities` when the daemon refuses it."""
    if mode is SecurityMode.AUTO:
        return [SecurityMode.PRIVILEGED, SecurityMode.CAPABILITIES]
    return [mode]


def container_security_kwargs(mode: SecurityMode, missing: list[str]) -> dict[str, Any]:
    """docker-py `containers.create/run` kwargs for a container that may drive host devices.

    Args:
        mode: A concrete security mode (`modes_to_try` turns `auto` into those).
        missing: Capabilities the host cannot grant (`missing_capabilities`); they are dropped
            from "ALL" in capabilities mode.

    Returns:
        A fresh dict with `init`, `volumes` (the /dev bind, in docker-py's dict format so the
        caller can merge its own volumes into it) and the mode's privilege settings.

    Raises:
        SpecError: `mode` is `auto`, which names no single set of settings.

    `privileged` ignores `missing`: the daemon is the judge.
    """
    if mode is SecurityMode.AUTO:
        raise SpecError("security_mode", "auto is not a concrete mode: try each of "
                        "modes_to_try(auto) in turn")
    kwargs: dict[str, Any] = {
        "init": True,
        "volumes": {host: dict(spec) for host, spec in DEV_VOLUME.items()},
    }
    if mode is SecurityMode.PRIVILEGED:
        kwargs["privileged"] = True
        return kwargs
    kwargs.update(
        cap_add=["ALL"],
        cap_drop=list(missing),
        security_opt=["apparmor=unconfined", "seccomp=unconfined"],
        device_cgroup_rules=[ALL_DEVICES_RULE],
    )
    return kwargs
