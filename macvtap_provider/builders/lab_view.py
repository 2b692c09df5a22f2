"""A stack's guests as its state records them, read from `pulumi stack export` (pure).

Guests are found by resource kind, not by stack output names, so the same commands
work for the seed's lab, the multi-guest stack and a user's own project: each
MacvtapDomain is one guest, joined with the GuestNetwork that moved an address to it,
the LibvirtContainer it runs in, and the CustomizedImage it boots from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from macvtap_provider.errors import NotFoundError

#: The Pulumi secret envelope's signature key (`pulumi stack export --show-secrets`).
SECRET_SIG = "4dabf18193072939515e22adb298388d"


@dataclass(frozen=True)
class GuestRecord:
    """One guest as the state records it (the outputs of its resources)."""

    domain: str
    libvirt_uri: str
    container: str
    state: str
    guest_mac: str
    macvtap_device: str
    mac_matches: bool | None
    interface_type: str = "ethernet"
    docker_host: str | None = None
    network: str | None = None
    guest_ip: str | None = None
    prefix: int | None = None
    container_dev: str = "eth0"
    moved: bool | None = None
    reachable: bool | None = None
    container_mac: str | None = None
    probe_image: str | None = None
    authorized_keys: tuple[str, ...] = ()
    root_password: str | None = field(default=None, repr=False)


def unwrap_secret(value: Any) -> Any:
    """The plain value of a decrypted secret envelope; other values unchanged.

    A ciphertext (an export without --show-secrets) yields None: it cannot be read.
    """
    if isinstance(value, Mapping) and SECRET_SIG in value:
        if "plaintext" not in value:
            return None
        return json.loads(value["plaintext"])
    return value


def kind(resource: Mapping[str, Any]) -> str:
    """The resource's kind: the last part of its type (`...:MacvtapDomain`)."""
    return str(resource.get("type", "")).rsplit(":", 1)[-1]


def _live(resources: Iterable[Mapping[str, Any]], wanted: str) -> list[Mapping[str, Any]]:
    # Resources pending deletion (replaced ones) are not part of the lab any more.
    return [r for r in resources if kind(r) == wanted and not r.get("delete")
            and str(r.get("type", "")).startswith("pulumi-python:dynamic")]


def _outs(resource: Mapping[str, Any]) -> dict[str, Any]:
    return dict(resource.get("outputs") or {})


def _str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def guests_from_resources(resources: Iterable[Mapping[str, Any]]) -> list[GuestRecord]:
    """Every guest in a deployment's `resources`, by domain name (the state lists them in
    the order they were created, which parallel creates make vary from run to run)."""
    resources = list(resources)
    containers = {o.get("name"): o for o in map(_outs, _live(resources, "LibvirtContainer"))}
    networks = {(o.get("container"), o.get("domain")): r
                for r in _live(resources, "GuestNetwork") for o in [_outs(r)]}
    images = {o.get("path"): r for r in _live(resources, "CustomizedImage") for o in [_outs(r)]}
    guests = []
    for dom in map(_outs, _live(resources, "MacvtapDomain")):
        name, container = str(dom.get("name", "")), str(dom.get("container", ""))
        host = containers.get(container, {})
        net_res = networks.get((container, name), {})
        net = _outs(net_res)
        image_res = images.get(dom.get("disk_path"), {})
        password = unwrap_secret((net_res.get("inputs") or {}).get("root_password")) or \
            unwrap_secret((image_res.get("inputs") or {}).get("root_password"))
        prefix = net.get("prefix", host.get("prefix"))
        guests.append(GuestRecord(
            domain=name, libvirt_uri=str(dom.get("libvirt_uri", "")), container=container,
            state=str(dom.get("state", "")), guest_mac=str(dom.get("guest_mac", "")),
            macvtap_device=str(dom.get("macvtap_device", "")),
            mac_matches=dom.get("mac_matches"),
            interface_type=str(dom.get("interface_type") or "ethernet"),
            docker_host=_str(dom.get("docker_host")),
            network=_str(net.get("network") or host.get("network")),
            guest_ip=_str(net.get("guest_ip")),
            prefix=None if prefix is None else int(prefix),
            container_dev=str(net.get("container_dev") or "eth0"),
            moved=net.get("moved"), reachable=net.get("reachable"),
            container_mac=_str(host.get("mac_address")),
            probe_image=_str(host.get("image_ref")),
            authorized_keys=tuple(_outs(image_res).get("authorized_keys") or ()),
            root_password=password if isinstance(password, str) and password else None,
        ))
    return sorted(guests, key=lambda g: g.domain)


def guest_listing(guests: Iterable[GuestRecord]) -> str:
    """One line per guest: its domain name, address and recorded state."""
    rows = [(g.domain, g.guest_ip or "-", g.state or "-") for g in guests]
    width = max((len(r[0]) for r in rows), default=0)
    return "\n".join(f"  {d:<{width}}  {ip:<15}  {state}" for d, ip, state in rows)


def pick_guest(guests: list[GuestRecord], name: str | None, stack: str,
               command: str) -> GuestRecord:
    """The guest `name` names (its domain name, or a unique last part of it such as
    `g1` for `lab-g1`), or the only one.

    Raises:
        NotFoundError: no guest, no such guest, or several and none named (with a list).
    """
    if not guests:
        raise NotFoundError(f"stack {stack!r} has no guest (no MacvtapDomain in its state): "
                            "bring the lab up first (`make up` or `pulumi up`)")
    if name is None:
        if len(guests) == 1:
            return guests[0]
        raise NotFoundError(f"stack {stack!r} has {len(guests)} guests; pick one with "
                            f"`macvtap-lab {command} --guest NAME`:\n{guest_listing(guests)}")
    for guest in guests:
        if guest.domain == name:
            return guest
    by_suffix = [g for g in guests if g.domain.endswith(f"-{name}")]
    if len(by_suffix) == 1:
        return by_suffix[0]
    raise NotFoundError(f"stack {stack!r} has no guest named {name!r}; its guests:\n"
                        f"{guest_listing(guests)}")
