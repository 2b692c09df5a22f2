"""Several libvirt containers on one host: two containers on one lab network, one guest each.

This is where the seed's `<interface type='direct'>` breaks (both containers number their
macvtap from the same small ifindex, and /dev/tapN lives in the one shared /dev). The
provider's `ethernet` backend gives each macvtap a host-wide unique ifindex. One guest is
configured offline (in its image), the other over the serial console: both routes are
proven with the same two boots (the console one after a refused wrong password).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from macvtap_provider.errors import ConsoleError
from tests.integration.conftest import (
    Lab,
    Made,
    Probe,
    is_char_device,
    lab_for,
    link_in,
    probe_on,
    remember_tap,
    tap_node,
)

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.guestfs,
              pytest.mark.netns, pytest.mark.slow]

SUBNET = "10.213.105.0/24"
PASSWORD = f"two pw ${secrets.token_hex(4)}!"


@dataclass
class Guest:
    container: Made
    image: Made
    domain: Made
    net: Made
    hostname: str

    @property
    def ip(self) -> str:
        return str(self.container.outs["ip_address"])


@dataclass
class Guests:
    pair: list[Guest]
    wrong_password_error: Exception | None
    b_addresses_after_wrong_password: tuple[tuple[str, int], ...]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_for("two", SUBNET, "docker", "guestfs") as lab:
        lab.network()
        yield lab


@pytest.fixture(scope="module")
def lab_guests(lab: Lab) -> Guests:
    a_box, b_box = lab.container("lva", host=10), lab.container("lvb", host=11)
    a_img = lab.guest_image(a_box, PASSWORD, "guest-a")  # static eth0 written offline
    # Guest a boots (one core) while image b is customised (the other core). It boots as
    # a PC does (firmware, extlinux, Debian's initramfs); b boots its kernel directly.
    a_dom = lab.domain(a_box, a_img, "vma", boot="disk")
    b_img = lab.guest_image(b_box, PASSWORD, "guest-b", static=False)  # set on the console
    b_dom = lab.domain(b_box, b_img, "vmb")
    remember_tap(a_dom, a_box.outs["pid"])
    remember_tap(b_dom, b_box.outs["pid"])
    a_net = lab.guest_network(a_box, a_dom, method="offline")
    # A wrong password first: the console login fails and nothing may be handed over.
    try:
        lab.guest_network(b_box, b_dom, password=PASSWORD + "-wrong", method="console")
        wrong: Exception | None = None
    except ConsoleError as exc:
        wrong = exc
    eth0 = link_in(b_box.outs["pid"], "eth0")
    b_net = lab.guest_network(b_box, b_dom, password=PASSWORD, method="console")
    return Guests(
        [Guest(a_box, a_img, a_dom, a_net, "guest-a"), Guest(b_box, b_img, b_dom, b_net, "guest-b")],
        wrong, eth0.addresses if eth0 else ())


@pytest.fixture(scope="module")
def guests(lab_guests: Guests) -> list[Guest]:
    return lab_guests.pair


@pytest.fixture(scope="module")
def probe(lab: Lab) -> Iterator[Probe]:
    with probe_on(lab.client, lab.net_name, lab.subnet) as probe:
        yield probe


def test_each_guest_has_its_own_tap_device(guests: list[Guest]) -> None:
    a, b = guests
    assert a.domain.tap_index is not None and b.domain.tap_index is not None

    assert a.domain.tap_index != b.domain.tap_index
    for g in guests:
        index = g.domain.tap_index
        assert index is not None
        info = link_in(g.container.outs["pid"], g.domain.outs["macvtap_device"])
        assert info is not None and info.index == index
        assert info.mac == g.domain.outs["guest_mac"] == g.domain.outs["macvtap_mac"]
        assert g.domain.outs["mac_matches"] is True
        assert is_char_device(tap_node(index))
    assert a.domain.outs["guest_mac"] != b.domain.outs["guest_mac"]
    # Both ways to boot the default guest reach the network and sshd (tests below).
    assert (a.domain.outs["boot_used"], b.domain.outs["boot_used"]) == ("disk", "kernel")
    # Neither container sees the other's link (each made its own, in its own netns).
    assert link_in(b.container.outs["pid"], a.domain.outs["macvtap_device"]) is None
    assert link_in(a.container.outs["pid"], b.domain.outs["macvtap_device"]) is None


def test_both_guests_answer_ping_and_tcp_22(guests: list[Guest], probe: Probe) -> None:
    for g in guests:
        assert g.net.outs["reachable"] is True and g.net.outs["moved"] is True
        assert probe.ping(g.ip), g.ip
        assert probe.tcp_open(g.ip, 22), g.ip


def test_each_ssh_login_lands_on_its_own_guest(guests: list[Guest], probe: Probe) -> None:
    for g in guests:
        out = probe.ssh_when_up(g.ip, PASSWORD, "hostname; ip -4 addr show eth0")

        assert out.split()[0] == g.hostname, out
        assert f"inet {g.ip}/24" in out, out
        others = [o.ip for o in guests if o is not g]
        assert all(f"inet {ip}/" not in out for ip in others), out


def test_the_containers_gave_their_addresses_away(guests: list[Guest]) -> None:
    for g in guests:
        eth0 = link_in(g.container.outs["pid"], "eth0")
        assert eth0 is not None and (g.ip, 24) not in eth0.addresses


def test_no_state_holds_the_password(guests: list[Guest]) -> None:
    for g in guests:
        for made in (g.container, g.image, g.domain, g.net):
            assert PASSWORD not in json.dumps(made.outs), made.kind


def test_a_wrong_console_password_is_refused_and_nothing_handed_over(
        lab_guests: Guests) -> None:
    b = lab_guests.pair[1]
    error = lab_guests.wrong_password_error

    assert isinstance(error, ConsoleError)
    assert "refused" in str(error)
    assert PASSWORD not in str(error)
    assert (b.ip, 24) in lab_guests.b_addresses_after_wrong_password
