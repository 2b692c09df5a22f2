"""Thin adapter around libvirt-python: a connection factory and error translation by code.

libvirt-python is imported by the first operation (`_libvirt()`), not with this module: a
Pulumi program only declares resources and never pays for it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING

from macvtap_provider.errors import (
    DaemonUnreachableError,
    LabTimeoutError,
    LibvirtError,
    NotFoundError,
)

if TYPE_CHECKING:
    import libvirt

log = logging.getLogger(__name__)


@functools.cache
def _libvirt() -> ModuleType:
    import libvirt

    # libvirt prints every error to stderr unless a handler is installed; ours are raised.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    module: ModuleType = libvirt
    return module


def _unreachable_codes() -> set[int]:
    lv = _libvirt()
    return {lv.VIR_ERR_NO_CONNECT, lv.VIR_ERR_SYSTEM_ERROR, lv.VIR_ERR_RPC,
            lv.VIR_ERR_AUTH_FAILED}


def _not_found_codes() -> set[int]:
    return {_libvirt().VIR_ERR_NO_DOMAIN}


def _state_names() -> dict[int, str]:
    lv = _libvirt()
    return {
        lv.VIR_DOMAIN_NOSTATE: "nostate", lv.VIR_DOMAIN_RUNNING: "running",
        lv.VIR_DOMAIN_BLOCKED: "blocked", lv.VIR_DOMAIN_PAUSED: "paused",
        lv.VIR_DOMAIN_SHUTDOWN: "shutdown", lv.VIR_DOMAIN_SHUTOFF: "shutoff",
        lv.VIR_DOMAIN_CRASHED: "crashed", lv.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
    }


@contextlib.contextmanager
def translate_errors(what: str, uri: str = "", hint: str = "") -> Iterator[None]:
    """Map libvirt errors to the lab's error tree; `hint` says what to do when libvirtd
    does not answer (default: check the container)."""
    try:
        yield
    except _libvirt().libvirtError as exc:
        code = exc.get_error_code()
        if code in _not_found_codes():
            raise NotFoundError(f"{what}: {exc.get_error_message()}") from exc
        if code in _unreachable_codes():
            raise DaemonUnreachableError(
                f"{what}: libvirtd at {uri or 'the given URI'} does not answer "
                f"({exc.get_error_message()}); {hint or 'is the libvirt container running?'}"
            ) from exc
        raise LibvirtError(f"{what}: {exc.get_error_message()}") from exc


@contextlib.contextmanager
def connection(uri: str, hint: str = "") -> Iterator[libvirt.virConnect]:
    """An open connection to `uri`, closed afterwards."""
    with translate_errors(f"connecting to libvirt at {uri}", uri, hint):
        conn = _libvirt().open(uri)
    try:
        yield conn
    finally:
        with contextlib.suppress(_libvirt().libvirtError):
            conn.close()


def wait_until_answering(uri: str, timeout_s: float, interval_s: float = 0.5) -> str:
    """Poll until libvirtd at `uri` answers; returns its version string."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            with connection(uri) as conn:
                v = conn.getLibVersion()
                return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"
        except DaemonUnreachableError as exc:
            last = str(exc)
        time.sleep(interval_s)
    raise LabTimeoutError(f"libvirtd at {uri} did not answer within {timeout_s:.0f}s ({last})")


def find_domain(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByName(name)
    except _libvirt().libvirtError as exc:
        if exc.get_error_code() in _not_found_codes():
            return None
        with translate_errors(f"looking up domain {name!r}"):
            raise


def state_name(dom: libvirt.virDomain) -> str:
    with translate_errors(f"reading the state of domain {dom.name()!r}"):
        state, _reason = dom.state()
    return _state_names().get(state, "unknown")


def define(conn: libvirt.virConnect, xml: str, name: str) -> libvirt.virDomain:
    log.debug("virsh define (domain %s)", name)
    with translate_errors(f"defining domain {name!r}"):
        return conn.defineXML(xml)


def start(dom: libvirt.virDomain) -> None:
    log.debug("virsh start %s", dom.name())
    with translate_errors(f"starting domain {dom.name()!r}"):
        dom.create()


def stop(dom: libvirt.virDomain) -> None:
    """Hard stop (virsh destroy); a domain that is not running is fine."""
    if dom.isActive():
        log.debug("virsh destroy %s", dom.name())
        with translate_errors(f"stopping domain {dom.name()!r}"):
            try:
                dom.destroy()
            except _libvirt().libvirtError as exc:
                if exc.get_error_code() != _libvirt().VIR_ERR_OPERATION_INVALID:
                    raise


def undefine(dom: libvirt.virDomain) -> None:
    log.debug("virsh undefine %s", dom.name())
    with translate_errors(f"undefining domain {dom.name()!r}"):
        try:
            dom.undefineFlags(_libvirt().VIR_DOMAIN_UNDEFINE_NVRAM)
        except _libvirt().libvirtError as exc:
            if exc.get_error_code() not in _not_found_codes():
                raise


def live_xml(dom: libvirt.virDomain) -> str:
    with translate_errors(f"reading the XML of domain {dom.name()!r}"):
        return str(dom.XMLDesc(0))


def inactive_xml(dom: libvirt.virDomain) -> str:
    with translate_errors(f"reading the XML of domain {dom.name()!r}"):
        return str(dom.XMLDesc(_libvirt().VIR_DOMAIN_XML_INACTIVE))


def uuid(dom: libvirt.virDomain) -> str:
    with translate_errors("reading a domain's UUID"):
        return str(dom.UUIDString())


def is_active(dom: libvirt.virDomain) -> bool:
    with translate_errors(f"reading the state of domain {dom.name()!r}"):
        return bool(dom.isActive())


def connection_of(dom: libvirt.virDomain) -> libvirt.virConnect:
    """The open connection a domain handle belongs to."""
    return dom.connect()
