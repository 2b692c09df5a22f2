"""`macvtap-lab status`: drift rules and the table, from recorded and live facts (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from macvtap_provider.builders.lab_view import GuestRecord

OK, DRIFT, UNKNOWN, NA = "ok", "DRIFT", "?", "n/a"
#: `macvtap-lab status` exit codes: all read and as recorded, drift, something not read.
EXIT_CLEAN, EXIT_DRIFT, EXIT_UNREAD = 0, 1, 3


@dataclass(frozen=True)
class LiveGuest:
    """What is true right now for one guest; None where it could not be read."""

    container: str  # "running", "stopped" or "gone"
    domain_state: str | None = None  # libvirt's state name, or "undefined"
    guest_mac: str | None = None  # the NIC's MAC in the live domain XML
    macvtap_mac: str | None = None  # the macvtap link's MAC in the container's netns
    container_holds_address: bool | None = None
    answered_by: str | None = None  # the MAC that answered ARP for the guest's IP
    probed: bool = False  # whether a probe container tried the guest's IP
    tcp22: bool | None = None
    notes: tuple[str, ...] = ()  # what could not be read, and why

    @property
    def mac_matches(self) -> bool | None:
        if self.guest_mac is None or self.macvtap_mac is None:
            return None
        return bool(self.guest_mac) and self.guest_mac == self.macvtap_mac


@dataclass(frozen=True)
class Row:
    check: str
    recorded: str
    live: str
    verdict: str  # OK, DRIFT, UNKNOWN (could not be read) or NA (does not apply)
    heal: str = ""  # "up" (refresh + up) or "console" (repair inside the guest)


@dataclass(frozen=True)
class GuestStatus:
    guest: GuestRecord
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()

    @property
    def drift(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.verdict == DRIFT)

    @property
    def unread(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.verdict == UNKNOWN)

    @property
    def exit_code(self) -> int:
        return EXIT_DRIFT if self.drift else EXIT_UNREAD if self.unread else EXIT_CLEAN


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def _bool(value: bool | None) -> str:
    return "?" if value is None else str(value).lower()


def _verdict(ok: bool | None) -> str:
    return UNKNOWN if ok is None else (OK if ok else DRIFT)


def evaluate(rec: GuestRecord, live: LiveGuest) -> GuestStatus:
    """Compare one guest's recorded outputs with what is live.

    The stack wants: the container running, the domain running, the guest's MAC on its
    macvtap, the address on the guest and not on the container, sshd answering. Drift
    that `pulumi refresh` sees is healed by `up --refresh`; a guest that runs with
    everything in place but does not answer is repaired on its serial console.
    """
    container = Row("container", "running", live.container,
                    _verdict(live.container == "running"), "up")
    state_ok = None if live.domain_state is None else live.domain_state == "running"
    state = Row("domain state", rec.state or "-", live.domain_state or "?",
                _verdict(state_ok), "up")
    macs = Row("mac_matches", _bool(rec.mac_matches), _bool(live.mac_matches),
               _verdict(live.mac_matches), "up")
    recorded_holds = None if rec.moved is None else not rec.moved
    holds_ok = None if live.container_holds_address is None else not live.container_holds_address
    holds = Row("address on container", _yes_no(recorded_holds),
                _yes_no(live.container_holds_address),
                _verdict(holds_ok) if rec.guest_ip else NA, "up")
    structural_drift = any(r.verdict == DRIFT for r in (container, state, macs, holds))
    tcp_ok = live.tcp22 if live.probed else None
    tcp = Row("TCP 22", "open" if rec.reachable else _bool(rec.reachable),
              "?" if tcp_ok is None else ("open" if tcp_ok else "closed"),
              _verdict(tcp_ok) if rec.guest_ip else NA, "up" if structural_drift else "console")
    rows = (container, state, _ip_row(rec, live, structural_drift), macs, holds, tcp)
    return GuestStatus(rec, rows, live.notes)


def _ip_row(rec: GuestRecord, live: LiveGuest, structural_drift: bool) -> Row:
    if rec.guest_ip is None:
        return Row("guest IP", "-", "not probed (no GuestNetwork)", NA)
    if not live.probed:
        return Row("guest IP", rec.guest_ip, "?", UNKNOWN)
    heal = "up" if structural_drift else "console"
    if live.answered_by is None:
        return Row("guest IP", rec.guest_ip, "no answer", DRIFT, heal)
    who = live.answered_by
    if who == rec.guest_mac or (live.guest_mac and who == live.guest_mac):
        return Row("guest IP", rec.guest_ip, f"answers ({who}, the guest)", OK)
    if rec.container_mac and who == rec.container_mac:
        return Row("guest IP", rec.guest_ip, f"answered by the container ({who})", DRIFT, "up")
    return Row("guest IP", rec.guest_ip, f"answered by {who}, not the guest", DRIFT, heal)


def heal_commands(status: GuestStatus, up_command: str, console_command: str) -> list[str]:
    """The commands that heal this guest's drift, most effective first."""
    kinds = {r.heal for r in status.drift}
    out = []
    if "up" in kinds:
        out.append(up_command)
    if "console" in kinds:
        out.append(console_command)
    return out


def render(status: GuestStatus, stack: str, up_command: str, console_command: str) -> str:
    """One guest's table: each check with its recorded and live value, then the verdict."""
    g = status.guest
    header = ("CHECK", "RECORDED", "LIVE", "")
    table = [header] + [(r.check, r.recorded, r.live, r.verdict) for r in status.rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    lines = [f"guest {g.domain}  (stack {stack}, container {g.container})"]
    lines += ["  " + "  ".join(cell.ljust(widths[i]) if i < 3 else cell
                               for i, cell in enumerate(row)).rstrip() for row in table]
    lines += [f"  note: {n}" for n in status.notes]
    drift = status.drift
    if not drift:
        unread = [r.check for r in status.unread]
        lines.append(f"  no drift seen, but not read: {', '.join(unread)}" if unread
                     else "  no drift")
    else:
        lines.append(f"  drift: {', '.join(r.check for r in drift)}")
        for command in heal_commands(status, up_command, console_command):
            lines.append(f"  heal:  {command}")
    return "\n".join(lines) + "\n"


def probe_script(address: str) -> str:
    """A shell script for a fresh probe container on the lab network: one ARP-resolving
    ping (the reply's MAC lands in the probe's neighbour table), then TCP 22."""
    return (f"ping -c 1 -W 2 {address} >/dev/null 2>&1; "
            f"echo \"neigh $(ip neigh show {address})\"; "
            f"if (exec 3<>/dev/tcp/{address}/22) 2>/dev/null; then echo 'tcp22 open'; "
            "else echo 'tcp22 closed'; fi")


_MAC = re.compile(r"\blladdr ((?:[0-9a-f]{2}:){5}[0-9a-f]{2})\b")


def parse_probe(output: str) -> tuple[str | None, bool | None]:
    """(the MAC that answered for the address or None, whether TCP 22 is open) from the
    output of `probe_script`; None for what the output does not say."""
    answered_by: str | None = None
    tcp: bool | None = None
    for line in output.splitlines():
        if line.startswith("neigh "):
            match = _MAC.search(line.lower())
            if match and not re.search(r"\b(FAILED|INCOMPLETE)\b", line):
                answered_by = match.group(1)
        elif line.startswith("tcp22 "):
            tcp = line.split()[1] == "open"
    return answered_by, tcp
