"""The lab at hand: `macvtap-lab console | ssh | status` on a stack read through the
Automation API. Pure decisions live in builders (lab_view, status, stack_target); this
module joins them with the adapters."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from macvtap_provider.adapters import console as serial
from macvtap_provider.adapters import docker_api, lab_host, libvirt_api, pulumi_stack, terminal
from macvtap_provider.builders import domain_xml, lab_view, status
from macvtap_provider.builders.lab_view import GuestRecord
from macvtap_provider.builders.stack_target import StackTarget
from macvtap_provider.errors import ConsoleError, LabError, NotFoundError

log = logging.getLogger(__name__)

PROBE_LABEL = docker_api.PROBE_LABEL
#: A probe outlives no session longer than this, even if the command is killed.
PROBE_LIFETIME_S = 12 * 3600
SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=15")
KEY_IN_PROBE = "/root/.ssh/macvtap-lab-key"


@dataclass(frozen=True)
class Selection:
    """What the user named on the command line."""

    project_dir: Path | None = None
    stack: str | None = None
    guest: str | None = None


@dataclass(frozen=True)
class Lab:
    """A stack's guests and the commands that act on it, for messages."""

    target: StackTarget
    stack: str
    guests: list[GuestRecord]

    def heal_command(self) -> str:
        return self.target.command("up", "--refresh", "--yes", stack=self.stack, cwd=Path.cwd())

    def console_command(self, guest: GuestRecord) -> str:
        return f"macvtap-lab console --stack {self.stack} --guest {guest.domain}"


def open_lab(sel: Selection) -> Lab:
    """Select the stack and read its guests (one `stack export` through the API)."""
    target = pulumi_stack.locate(sel.project_dir, sel.stack)
    stack = pulumi_stack.open_stack(target)
    return Lab(target, stack.name, lab_view.guests_from_resources(stack.resources()))


# -- console ------------------------------------------------------------------------------
def console(sel: Selection, login: bool = False, force: bool = False) -> int:
    """Attach this terminal to a guest's serial console (`virsh console`); returns its
    exit status. Works with the guest's network down: only libvirt is involved."""
    lab = open_lab(sel)
    guest = lab_view.pick_guest(lab.guests, sel.guest, lab.stack, "console")
    _require_running(lab, guest)
    terminal.require_terminal("macvtap-lab console")
    argv = ["virsh", "-c", guest.libvirt_uri, "console", guest.domain]
    if force:
        argv.append("--force")
    sys.stderr.write(
        f"Serial console of guest {guest.domain} (stack {lab.stack}). Leave with Ctrl-] "
        "(Ctrl and the right square bracket).\n"
        + ("Logging in as root with the stack's password...\n" if login else
           "Press Enter for the login prompt; `macvtap-lab console --login` types root's "
           "password for you.\n"))
    sys.stderr.flush()
    password = None
    if login:
        if guest.root_password is None:
            raise NotFoundError(f"guest {guest.domain!r} of stack {lab.stack!r}: no root "
                                "password in the stack's state; log in without --login")
        password = guest.root_password
    if shutil.which("virsh") is None:
        raise ConsoleError("virsh is not installed: install libvirt-clients (Debian/Ubuntu) "
                           "or libvirt-client (Fedora)")
    return terminal.run(argv, login=serial.attach_step(guest.domain, password),
                        interactive=True)


def container_state(docker_host: str | None, name: str) -> str:
    """running, stopped or gone."""
    info = lab_host.for_endpoint(docker_host).container(name)
    return "gone" if info is None else "running" if info.running else "stopped"


@dataclass(frozen=True)
class Probe:
    """A probe container on a guest's network, and the client that reaches it."""

    client: Any
    name: str


def _require_running(lab: Lab, guest: GuestRecord) -> None:
    """Refuse, naming the stack and the fix, when the guest's domain is not running."""
    state = container_state(guest.docker_host, guest.container)
    if state != "running":
        raise ConsoleError(
            f"guest {guest.domain!r} of stack {lab.stack!r} is not running: its container "
            f"{guest.container!r} is {state}. Bring it back with `{lab.heal_command()}`")
    with libvirt_api.connection(guest.libvirt_uri) as conn:
        dom = libvirt_api.find_domain(conn, guest.domain)
        now = "undefined" if dom is None else libvirt_api.state_name(dom)
    if now != "running":
        raise ConsoleError(
            f"guest {guest.domain!r} of stack {lab.stack!r} is not running (domain state: "
            f"{now}). Start it again with `{lab.heal_command()}`")


# -- probes -------------------------------------------------------------------------------
@contextlib.contextmanager
def _probe(guest: GuestRecord) -> Iterator[Probe]:
    """A throw-away container on the guest's docker network, always removed."""
    image = guest.probe_image
    if not image:
        from macvtap_provider.images.libvirt_image import ensure_libvirt_image

        image = ensure_libvirt_image()
    with lab_host.for_endpoint(guest.docker_host).docker() as client, \
            docker_api.probe_container(client, image, owner=guest.container,
                                       network=guest.network, lifetime_s=PROBE_LIFETIME_S,
                                       name_prefix=f"{guest.container}-probe-") as probe:
        yield Probe(client, probe.name)


@contextlib.contextmanager
def _finally_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the command through `finally` (so probes are removed).

    Only in this process: a child forked meanwhile (pyroute2 forks one to enter a netns,
    and stops it with SIGTERM) inherits the handler and must not unwind our stack, which
    would remove the probe from under us.
    """
    owner = os.getpid()

    def stop(signum: int, _frame: Any) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# -- ssh ----------------------------------------------------------------------------------
def _matching_key(authorized: tuple[str, ...], ssh_dir: Path) -> Path | None:
    """The user's private key whose public half the image authorises, if any."""
    wanted = {" ".join(k.split()[:2]) for k in authorized}
    for pub in sorted(ssh_dir.glob("*.pub")):
        with contextlib.suppress(OSError, IndexError):
            if " ".join(pub.read_text().split()[:2]) in wanted and pub.with_suffix("").exists():
                return pub.with_suffix("")
    return None


def _put_key(probe: Probe, key: Path) -> None:
    """Copy a private key into the probe (a file in it, never its config or env)."""
    docker_api.put_file(probe.client, probe.name, KEY_IN_PROBE, key.read_bytes())


def ssh(sel: Selection, command: list[str], identity: Path | None = None,
        interactive: bool | None = None) -> int:
    """Log in to a guest from a probe container on its network; returns ssh's exit
    status (the remote command's, or 255 when ssh itself failed)."""
    lab = open_lab(sel)
    guest = lab_view.pick_guest(lab.guests, sel.guest, lab.stack, "ssh")
    if not guest.guest_ip or not guest.network:
        raise NotFoundError(f"guest {guest.domain!r} of stack {lab.stack!r} has no address on "
                            "a lab network (no GuestNetwork): use `macvtap-lab console`")
    key = identity or (_matching_key(guest.authorized_keys, Path.home() / ".ssh")
                       if guest.authorized_keys else None)
    if key is None and guest.root_password is None:
        raise NotFoundError(f"guest {guest.domain!r} of stack {lab.stack!r}: no root password "
                            "in the stack's state and no key: pass --identity FILE")
    auth = (["-i", KEY_IN_PROBE, "-o", "PasswordAuthentication=no", "-o",
             "KbdInteractiveAuthentication=no"] if key else
            ["-o", "PreferredAuthentications=password,keyboard-interactive", "-o",
             "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1"])
    with _finally_on_signals(), _probe(guest) as probe:
        if key:
            _put_key(probe, key)
        docker = ["docker"] + (["-H", guest.docker_host] if guest.docker_host else [])
        argv = [*docker, "exec", "-it", str(probe.name), "ssh", *SSH_OPTIONS, *auth,
                f"root@{guest.guest_ip}"]
        if command:
            argv += ["--", *command]
        login = None if key else terminal.password_answer(
            guest.root_password or "", f"ssh root@{guest.guest_ip}")
        return terminal.run(argv, login=login, interactive=interactive)


# -- status -------------------------------------------------------------------------------
def read_live(guest: GuestRecord, probe: Probe | None) -> status.LiveGuest:
    """What is true now for one guest: container, domain, macvtap, address, probe."""
    notes: list[str] = []
    host = lab_host.for_endpoint(guest.docker_host)
    state = container_state(guest.docker_host, guest.container)
    if state != "running":
        return status.LiveGuest(container=state)
    facts: dict[str, Any] = {}
    device = ""
    try:
        with libvirt_api.connection(guest.libvirt_uri) as conn:
            dom = libvirt_api.find_domain(conn, guest.domain)
            if dom is None:
                facts["domain_state"] = "undefined"
            else:
                facts["domain_state"] = libvirt_api.state_name(dom)
                xml = libvirt_api.live_xml(dom)
                facts["guest_mac"] = domain_xml.interface_mac(xml) or ""
                device = (guest.macvtap_device if guest.interface_type == "ethernet"
                          else domain_xml.interface_target(xml)) or ""
    except LabError as exc:
        notes.append(str(exc))
    try:
        with host.netns(guest.container) as ns:
            if device:
                tap = ns.link(device)
                facts["macvtap_mac"] = tap.mac if tap else ""
            eth = ns.link(guest.container_dev)
            if guest.guest_ip:
                facts["container_holds_address"] = eth is not None and any(
                    addr == guest.guest_ip for addr, _prefix in eth.addresses)
    except LabError as exc:
        notes.append(f"container {guest.container!r}: {exc}")
    if probe is not None and guest.guest_ip:
        try:
            rc, out = docker_api.exec_in(
                probe.client, probe.name, ["bash", "-c", status.probe_script(guest.guest_ip)],
                timeout_s=15)
        except LabError as exc:
            notes.append(f"the probe failed: {exc}")
        else:
            answered_by, tcp = status.parse_probe(out)
            facts.update(probed=tcp is not None, answered_by=answered_by, tcp22=tcp)
            if tcp is None:
                notes.append(f"the probe did not finish (exit {rc}): {out.strip()[-200:]}")
    return status.LiveGuest(container=state, notes=tuple(notes), **facts)


def lab_status(sel: Selection, out: TextIO | None = None) -> int:
    """Print one table per guest; exit 0 when all was read and as recorded, 1 when
    something drifted, 3 when something could not be read (and nothing drifted)."""
    lab = open_lab(sel)
    stream = out or sys.stdout
    if not lab.guests:
        raise NotFoundError(f"stack {lab.stack!r} has no guest (no MacvtapDomain in its "
                            "state): bring the lab up first (`make up` or `pulumi up`)")
    wanted = [lab_view.pick_guest(lab.guests, sel.guest, lab.stack, "status")] if sel.guest \
        else lab.guests
    worst = status.EXIT_CLEAN
    with _finally_on_signals(), contextlib.ExitStack() as stack:
        probes: dict[tuple[str | None, str], Probe | None] = {}
        for guest in wanted:
            where = (guest.docker_host, guest.network or "")
            if where not in probes:
                probes[where] = _try_probe(stack, guest)
            result = status.evaluate(guest, read_live(guest, probes[where]))
            if result.exit_code == status.EXIT_DRIFT or worst == status.EXIT_CLEAN:
                worst = result.exit_code
            stream.write(status.render(result, lab.stack, lab.heal_command(),
                                       lab.console_command(guest)))
    return worst


def _try_probe(stack: contextlib.ExitStack, guest: GuestRecord) -> Probe | None:
    """A probe on the guest's network, or None (network or dockerd gone: nothing to probe)."""
    if not guest.network:
        return None
    try:
        return stack.enter_context(_probe(guest))
    except LabError as exc:
        log.warning("no probe on network %s: %s", guest.network, exc)
        return None
