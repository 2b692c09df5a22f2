"""Thin pyroute2 adapter: links, addresses and routes inside a container's netns.

Resources use the `Netns` protocol (what they may do in a container's netns), which
`PyrouteNetns` implements locally by opening /proc/<pid>/ns/net; a remote host can
implement the same operations another way (e.g. `ip` run by docker exec in a helper
container that shares the lab container's netns).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from macvtap_provider.errors import NetlinkError, NotFoundError

if TYPE_CHECKING:  # pyroute2 takes ~75 ms to import: only operations that use it pay
    from pyroute2 import IPRoute as NetNS

log = logging.getLogger(__name__)

MACVTAP_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "passthrough": 8}
CLONE_NEWNET = 0x40000000
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_RCVBUF = 1 << 20


@dataclass(frozen=True)
class LinkInfo:
    name: str
    index: int
    mac: str
    kind: str
    addresses: tuple[tuple[str, int], ...]


def netns_path(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    from pyroute2.netlink.exceptions import NetlinkError as PyrouteNetlinkError

    try:
        yield
    except PyrouteNetlinkError as exc:
        if exc.code == errno.ENODEV:
            raise NotFoundError(f"{what}: no such device") from exc
        raise NetlinkError(f"{what}: {os.strerror(exc.code)} (errno {exc.code})") from exc
    except FileNotFoundError as exc:
        raise NotFoundError(f"{what}: the network namespace is gone ({exc.filename})") from exc


def netlink_socket_in(path: str) -> socket.socket:
    """An rtnetlink socket bound to the network namespace at `path`, without a fork.

    pyroute2 opens such a socket in a forked child; forking a provider process that
    serves gRPC prints gRPC's "skipping fork() handlers" into the user's output (and is
    unsafe with its threads). A namespace belongs to a thread, so a short-lived thread
    enters it, opens the socket, and leaves; the socket stays in that namespace.
    """
    opened: list[socket.socket] = []
    failed: list[OSError] = []

    def enter_and_open() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            with contextlib.ExitStack() as fds:
                own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
                fds.callback(os.close, own)
                target = os.open(path, os.O_RDONLY)
                fds.callback(os.close, target)
                if libc.setns(target, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns({path}): {os.strerror(code)}")
                try:
                    opened.append(socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM,
                                                socket.NETLINK_ROUTE))
                finally:
                    libc.setns(own, CLONE_NEWNET)  # the thread ends next anyway
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=enter_and_open, name="netns-socket")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    sock = opened[0]
    # What pyroute2 sets on the sockets it opens: extended error messages, room for dumps.
    sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NETLINK_RCVBUF)
    return sock


@contextlib.contextmanager
def in_netns(pid: int) -> Iterator[NetNS]:
    """A netlink socket inside the network namespace of process `pid`."""
    from pyroute2 import IPRoute

    path = netns_path(pid)
    with translate_errors(f"opening netns of pid {pid}"):
        log.debug("netlink socket in %s", path)
        ns = IPRoute(use_socket=netlink_socket_in(path))
    try:
        yield ns
    finally:
        ns.close()


def _info(ns: NetNS, msg: object) -> LinkInfo:
    index = int(msg["index"])  # type: ignore[index]
    addrs = tuple(
        (a.get_attr("IFA_ADDRESS"), int(a["prefixlen"]))
        for a in ns.get_addr(index=index, family=2)
    )
    linkinfo = msg.get_attr("IFLA_LINKINFO")  # type: ignore[attr-defined]
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo else ""
    return LinkInfo(
        name=msg.get_attr("IFLA_IFNAME"),  # type: ignore[attr-defined]
        index=index,
        mac=str(msg.get_attr("IFLA_ADDRESS")).lower(),  # type: ignore[attr-defined]
        kind=kind or "",
        addresses=addrs,
    )


def link(ns: NetNS, name: str) -> LinkInfo | None:
    with translate_errors(f"reading link {name}"):
        found = ns.link_lookup(ifname=name)
        if not found:
            return None
        return _info(ns, ns.get_links(found[0])[0])


def links(ns: NetNS) -> list[LinkInfo]:
    with translate_errors("listing links"):
        return [_info(ns, m) for m in ns.get_links()]


def default_gateway(ns: NetNS) -> str | None:
    with translate_errors("reading the default route"):
        for route in ns.get_default_routes(family=2):
            gw = route.get_attr("RTA_GATEWAY")
            if gw:
                return str(gw)
    return None


def remove_address(ns: NetNS, ifname: str, address: str, prefix: int) -> bool:
    """Remove an address; False when it was not there."""
    info = link(ns, ifname)
    if info is None:
        raise NotFoundError(f"link {ifname} does not exist")
    if (address, prefix) not in info.addresses:
        return False
    log.debug("ip addr del %s/%d dev %s", address, prefix, ifname)
    with translate_errors(f"removing {address}/{prefix} from {ifname}"):
        ns.addr("del", index=info.index, address=address, prefixlen=prefix)
    return True


def restore_address(ns: NetNS, ifname: str, address: str, prefix: int, gateway: str) -> None:
    """Put an address and the default route back on a link (idempotent)."""
    info = link(ns, ifname)
    if info is None:
        raise NotFoundError(f"link {ifname} does not exist")
    with translate_errors(f"adding {address}/{prefix} to {ifname}"):
        if (address, prefix) not in info.addresses:
            log.debug("ip addr add %s/%d dev %s", address, prefix, ifname)
            ns.addr("add", index=info.index, address=address, prefixlen=prefix)
        if default_gateway(ns) != gateway:
            log.debug("ip route replace default via %s", gateway)
            ns.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=info.index)


def used_indexes(ns: NetNS) -> set[int]:
    with translate_errors("listing links"):
        return {int(m["index"]) for m in ns.get_links()}


def create_macvtap(ns: NetNS, parent: str, name: str, mac: str, mode: str, index: int) -> LinkInfo:
    """Create an up macvtap link `name` on `parent` with a chosen ifindex and MAC.

    The ifindex names the /dev/tapN node in the host's shared /dev, so the
    caller picks one no other namespace uses.
    """
    parent_info = link(ns, parent)
    if parent_info is None:
        raise NotFoundError(f"parent device {parent} does not exist in the container")
    log.debug("ip link add link %s name %s index %d address %s type macvtap mode %s",
              parent, name, index, mac, mode)
    with translate_errors(f"creating macvtap {name} on {parent}"):
        ns.link("add", ifname=name, kind="macvtap", link=parent_info.index, index=index,
                address=mac, macvtap_mode=mode if mode != "passthrough" else "passthru")
        ns.link("set", index=index, state="up")
    created = link(ns, name)
    if created is None:
        raise NetlinkError(f"macvtap {name} vanished right after it was created")
    return created


def delete_link(ns: NetNS, name: str) -> bool:
    """Delete a link; False when it was already gone."""
    info = link(ns, name)
    if info is None:
        return False
    log.debug("ip link del %s", name)
    from pyroute2.netlink.exceptions import NetlinkError as PyrouteNetlinkError

    with translate_errors(f"deleting link {name}"):
        try:
            ns.link("del", index=info.index)
        except PyrouteNetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise
    return True


class Netns(Protocol):
    """The network operations a resource performs inside a container's netns."""

    def link(self, name: str) -> LinkInfo | None: ...

    def links(self) -> list[LinkInfo]: ...

    def used_indexes(self) -> set[int]: ...

    def create_macvtap(self, parent: str, name: str, mac: str, mode: str,
                       index: int) -> LinkInfo: ...

    def delete_link(self, name: str) -> bool: ...

    def remove_address(self, ifname: str, address: str, prefix: int) -> bool: ...

    def restore_address(self, ifname: str, address: str, prefix: int, gateway: str) -> None: ...


class PyrouteNetns:
    """`Netns` over a pyroute2 socket opened in the namespace (local hosts)."""

    def __init__(self, ns: NetNS) -> None:
        self._ns = ns

    def link(self, name: str) -> LinkInfo | None:
        return link(self._ns, name)

    def links(self) -> list[LinkInfo]:
        return links(self._ns)

    def used_indexes(self) -> set[int]:
        return used_indexes(self._ns)

    def create_macvtap(self, parent: str, name: str, mac: str, mode: str,
                       index: int) -> LinkInfo:
        return create_macvtap(self._ns, parent, name, mac, mode, index)

    def delete_link(self, name: str) -> bool:
        return delete_link(self._ns, name)

    def remove_address(self, ifname: str, address: str, prefix: int) -> bool:
        return remove_address(self._ns, ifname, address, prefix)

    def restore_address(self, ifname: str, address: str, prefix: int, gateway: str) -> None:
        restore_address(self._ns, ifname, address, prefix, gateway)
