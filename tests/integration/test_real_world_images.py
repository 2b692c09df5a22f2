"""CustomizedImage on the real-world layouts (tests/images fixtures), booted in a real lab.

Each fixture (GPT + ESP + cloud-init + netplan; LVM + XFS + NetworkManager + SELinux
enforcing; btrfs subvolume + systemd-networkd) is customised with no per-image option, a
static network written offline, then booted from its disk in its own libvirt container,
all three at once. A probe container on the lab network proves ping, TCP 22 and an ssh
password login as root; inside, the guest shows its own machine-id, cloud-init disabled and
(rhel-like) SELinux enforcing. The SELinux labels are also read back offline. Timings are
printed (`-s`) and kept as test properties.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from macvtap_provider.resources import guest_network
from tests.images import FIXTURES, ensure_fixture
from tests.images.recipes import fixed_machine_id
from tests.integration.conftest import Lab, Made, Probe, lab_for, probe_on

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.guestfs,
              pytest.mark.netns, pytest.mark.slow]

SUBNET = "10.213.110.0/24"
PASSWORD = f"rw pw ${secrets.token_hex(4)}!"
NAMES = tuple(FIXTURES)  # cloud-gpt, rhel-like, btrfs
#: Three guests boot at once on two cores under TCG: each alone takes ~70-105 s.
REACH_TIMEOUT_S = 600.0
#: A syntactically valid key nobody holds: proves authorized_keys is written and labelled.
ROOT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1hY3Z0YXAtbGFiIHJ3IHRlc3Q6IG5vIG9uZSBrZXkh rw"
#: Files whose SELinux label the guest's policy decides (read back offline on rhel-like).
LABELLED = {
    "/etc/ssh/ssh_host_ed25519_key": "sshd_key_t",
    "/root/.ssh/authorized_keys": "ssh_home_t",
    "/etc/shadow": "shadow_t",
    "/etc/ssh/sshd_config": "etc_t",
}

T = TypeVar("T")


@dataclass
class Guest:
    name: str
    container: Made
    image: Made | None = None
    domain: Made | None = None
    net: Made | None = None
    customise_s: float = 0.0
    boot_s: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def ip(self) -> str:
        return str(self.container.outs["ip_address"])


def _each(guests: list[Guest], work: Callable[[Guest], T]) -> list[T | BaseException]:
    """`work` for every guest at once; a failure is returned in its place, not raised."""
    def run(g: Guest) -> T | BaseException:
        try:
            return work(g)
        except BaseException as exc:  # noqa: BLE001 - reported per guest by the tests
            g.error = g.error or f"{type(exc).__name__}: {exc}"
            return exc

    with ThreadPoolExecutor(len(guests)) as pool:
        return list(pool.map(run, guests))


#: Run on the serial console when a guest does not answer or refuses ssh (for the report).
DIAGNOSE = ("ip -o addr; ip route; ls /etc/netplan /etc/NetworkManager/system-connections "
            "/etc/systemd/network 2>&1; systemctl --failed --no-legend; (getenforce || true); "
            "journalctl -b --no-pager | grep -iE 'avc|denied|sshd|NetworkManager.*(fail|err)' "
            "| tail -n 25")


def _diagnose(g: Guest) -> str:
    """What the guest says on its serial console (root logs in there with the password)."""
    from macvtap_provider.adapters import console

    assert g.domain is not None
    try:
        with console.serial_login(g.container.outs["libvirt_uri"], g.domain.outs["name"],
                                  PASSWORD, timeout_s=120) as session:
            return session.run(DIAGNOSE, timeout_s=60)[1]
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the failure
        return f"(no console diagnosis: {type(exc).__name__}: {exc})"


def _read_labels(path: str) -> dict[str, str]:
    from macvtap_provider.adapters import guestfs_api

    with guestfs_api.open_images([path], readonly=True) as appliance, \
            appliance.session(0) as session:
        g = session._g  # the session offers no xattrs: only this test reads them
        return {p: g.lgetxattr(p, "security.selinux").rstrip(b"\0").decode() for p in LABELLED}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_for("rw", SUBNET, "docker", "guestfs", "qemu") as lab:
        lab.network()
        yield lab


@pytest.fixture(scope="module")
def guests(lab: Lab) -> list[Guest]:
    bases = {name: ensure_fixture(name) for name in NAMES}  # cached by recipe hash
    out = [Guest(name, lab.container(f"rw{i}", host=10 + i)) for i, name in enumerate(NAMES)]

    def customise(g: Guest) -> None:
        started = time.monotonic()
        path = Path(g.container.outs["work_dir"]) / "images" / f"{g.name}.qcow2"
        g.image = lab.image(path, PASSWORD, base_image=str(bases[g.name]), hostname=g.name,
                            nameservers=[lab.gateway], authorized_keys=[ROOT_KEY],
                            network={"address": g.ip, "prefix": g.container.outs["prefix"],
                                     "gateway": g.container.outs["gateway"]})
        g.customise_s = round(time.monotonic() - started, 1)

    _each(out, customise)  # concurrent: they share what appliance launches they can
    rhel = next(g for g in out if g.name == "rhel-like")
    if rhel.image is not None:
        rhel.labels = _read_labels(rhel.image.outs["path"])
    for i, g in enumerate(out):
        if g.image is not None:
            g.domain = lab.domain(g.container, g.image, f"rvm{i}", boot="disk")

    def reach(g: Guest) -> None:
        assert g.domain is not None, "no domain"
        started = time.monotonic()
        g.net = lab.guest_network(g.container, g.domain, method="offline")
        g.boot_s = round(time.monotonic() - started, 1)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(guest_network, "REACH_TIMEOUT_S", REACH_TIMEOUT_S)
        _each([g for g in out if g.domain is not None], reach)
    for g in out:
        if g.domain is not None and g.net is None:
            g.error += "\nconsole:\n" + _diagnose(g)
    for g in out:
        print(f"\n{g.name}: customised in {g.customise_s} s, reachable {g.boot_s} s after "
              f"the domain started{'; ' + g.error if g.error else ''}")
    return out


@pytest.fixture(scope="module")
def probe(lab: Lab) -> Iterator[Probe]:
    with probe_on(lab.client, lab.net_name, lab.subnet) as probe:
        yield probe


@pytest.fixture(params=NAMES)
def guest(request: pytest.FixtureRequest, guests: list[Guest],
          record_property: Callable[[str, Any], None]) -> Guest:
    g = next(g for g in guests if g.name == request.param)
    record_property("customise_s", g.customise_s)
    record_property("reachable_s", g.boot_s)
    return g


def test_customised_with_no_per_image_option(guest: Guest) -> None:
    assert guest.image is not None, guest.error
    assert guest.image.outs["format"] == "qcow2" and guest.image.outs["backing_file"]


def test_selinux_labels_are_the_policys_offline(guests: list[Guest]) -> None:
    rhel = next(g for g in guests if g.name == "rhel-like")
    assert rhel.labels, rhel.error
    assert {p: label.split(":")[2] for p, label in rhel.labels.items()} == LABELLED


def test_guest_answers_ping_and_tcp_22(guest: Guest, probe: Probe) -> None:
    assert guest.net is not None, guest.error
    assert guest.net.outs["reachable"] is True
    assert probe.ping(guest.ip)
    assert probe.tcp_open(guest.ip, 22)


def test_root_logs_in_with_the_password_over_ssh(guest: Guest, probe: Probe) -> None:
    assert guest.net is not None, guest.error
    command = ("hostname; cat /etc/machine-id; (getenforce 2>/dev/null || echo no-selinux); "
               "test -e /etc/cloud/cloud-init.disabled && echo cloud-init-disabled; "
               "ip -4 -o addr show; sshd -T 2>/dev/null | grep -i '^passwordauthentication'")
    rc, out = 1, ""
    for _ in range(10):  # sshd may still be starting
        rc, out = probe.ssh(guest.ip, PASSWORD, command)
        if rc == 0:
            break
        time.sleep(3)
    assert rc == 0, f"ssh root@{guest.ip}: exit {rc}: {out[-300:]}\n{_diagnose(guest)}"
    lines = out.split("\n")
    assert lines[0] == guest.name, out
    machine_id = lines[1].strip()
    assert len(machine_id) == 32 and machine_id != fixed_machine_id(guest.name), out
    assert f"inet {guest.ip}/24" in out, out
    assert "passwordauthentication yes" in out, out
    if guest.name == "rhel-like":
        assert lines[2] == "Enforcing", out
    if guest.name in ("cloud-gpt", "rhel-like"):  # both ship cloud-init
        assert "cloud-init-disabled" in out, out


def test_every_guest_has_its_own_machine_id(guests: list[Guest], probe: Probe) -> None:
    ids = {probe.ssh_when_up(g.ip, PASSWORD, "cat /etc/machine-id").strip()
           for g in guests if g.net is not None}
    assert len(ids) == len(NAMES)
