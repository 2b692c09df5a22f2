"""Links, addresses and routes inside a container's netns through `docker exec ip -j ...`:
the netlink adapter's operations for containers on another host, where the container's
PID and /proc/<pid>/ns/net mean nothing on this machine."""

from __future__ import annotations

import json
import logging
from typing import Any

from docker.models.containers import Container

from macvtap_provider.adapters import remote
from macvtap_provider.adapters.netlink import LinkInfo
from macvtap_provider.builders.tap import taps_in_dev
from macvtap_provider.errors import NetlinkError, NotFoundError

log = logging.getLogger(__name__)


def _ip(container: Container, *args: str, what: str) -> str:
    code, out = remote.exec_output(container, ["ip", *args])
    if code != 0:
        text = out.strip()
        if "does not exist" in text or "Cannot find device" in text:
            raise NotFoundError(f"{what} in container {container.name!r}: no such device")
        raise NetlinkError(f"{what} in container {container.name!r}: ip {' '.join(args)}: {text}")
    return out


def parse_links(text: str) -> list[LinkInfo]:
    """`ip -j -d addr show` output -> LinkInfo (IPv4 addresses only, as netlink does)."""
    entries: list[dict[str, Any]] = json.loads(text or "[]")
    return [
        LinkInfo(
            name=str(entry["ifname"]),
            index=int(entry["ifindex"]),
            mac=str(entry.get("address", "")).lower(),
            kind=str((entry.get("linkinfo") or {}).get("info_kind", "")),
            addresses=tuple((str(a["local"]), int(a["prefixlen"]))
                            for a in entry.get("addr_info", []) if a.get("family") == "inet"),
        )
        for entry in entries
    ]


def links(container: Container) -> list[LinkInfo]:
    return parse_links(_ip(container, "-j", "-d", "addr", "show", what="listing links"))


def link(container: Container, name: str) -> LinkInfo | None:
    found = [info for info in links(container) if info.name == name]
    return found[0] if found else None


def default_gateway(container: Container) -> str | None:
    routes: list[dict[str, Any]] = json.loads(
        _ip(container, "-j", "-4", "route", "show", "default", what="reading the default route")
        or "[]")
    for route in routes:
        if route.get("gateway"):
            return str(route["gateway"])
    return None


def remove_address(container: Container, ifname: str, address: str, prefix: int) -> bool:
    """Remove an address; False when it was not there."""
    info = link(container, ifname)
    if info is None:
        raise NotFoundError(f"link {ifname} does not exist in container {container.name!r}")
    if (address, prefix) not in info.addresses:
        return False
    _ip(container, "addr", "del", f"{address}/{prefix}", "dev", ifname,
        what=f"removing {address}/{prefix} from {ifname}")
    return True


def restore_address(container: Container, ifname: str, address: str, prefix: int,
                    gateway: str) -> None:
    """Put an address and the default route back on a link (idempotent)."""
    info = link(container, ifname)
    if info is None:
        raise NotFoundError(f"link {ifname} does not exist in container {container.name!r}")
    if (address, prefix) not in info.addresses:
        _ip(container, "addr", "add", f"{address}/{prefix}", "dev", ifname,
            what=f"adding {address}/{prefix} to {ifname}")
    if default_gateway(container) != gateway:
        _ip(container, "route", "replace", "default", "via", gateway, "dev", ifname,
            what=f"setting the default route via {gateway}")


def used_indexes(container: Container) -> set[int]:
    return {info.index for info in links(container)}


def tap_indexes(container: Container) -> set[int]:
    """The N of every /dev/tapN on the container's host (its /dev is the host's)."""
    code, out = remote.exec_output(container, ["ls", "/dev"])
    if code != 0:
        raise NetlinkError(f"listing /dev in container {container.name!r}: {out.strip()}")
    return taps_in_dev(out.split())


def create_macvtap(container: Container, parent: str, name: str, mac: str, mode: str,
                   index: int) -> LinkInfo:
    """Create an up macvtap link `name` on `parent` with a chosen ifindex and MAC."""
    if link(container, parent) is None:
        raise NotFoundError(f"parent device {parent} does not exist in container "
                            f"{container.name!r}")
    kernel_mode = "passthru" if mode == "passthrough" else mode
    _ip(container, "link", "add", "link", parent, "name", name, "index", str(index),
        "address", mac, "type", "macvtap", "mode", kernel_mode,
        what=f"creating macvtap {name} on {parent}")
    _ip(container, "link", "set", name, "up", what=f"setting {name} up")
    created = link(container, name)
    if created is None:
        raise NetlinkError(f"macvtap {name} vanished right after it was created")
    return created


def delete_link(container: Container, name: str) -> bool:
    """Delete a link; False when it was already gone."""
    if link(container, name) is None:
        return False
    try:
        _ip(container, "link", "del", name, what=f"deleting link {name}")
    except NotFoundError:
        return False
    return True
