"""Stack selection, guests read from a state export, and `status` drift rules and table."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from macvtap_provider.builders import lab_view, stack_target, status
from macvtap_provider.builders.lab_view import GuestRecord
from macvtap_provider.builders.stack_target import StackTarget
from macvtap_provider.errors import NotFoundError, StackError

pytestmark = pytest.mark.unit

DYN = "pulumi-python:dynamic/macvtap:"
URI = "qemu:///system?socket=/var/lib/macvtap-lab/lab/run/libvirt/libvirt-sock"
GUEST_MAC, CONTAINER_MAC = "52:54:00:3b:eb:b4", "02:42:0a:d5:99:0a"


def secret(value: str) -> dict[str, str]:
    return {lab_view.SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270",
            "plaintext": json.dumps(value)}


def domain(name: str, disk: str, **outs: Any) -> dict[str, Any]:
    return {"type": f"{DYN}MacvtapDomain", "urn": f"urn:...::{name}-domain", "outputs": {
        "name": name, "container": "lab-libvirt", "libvirt_uri": URI, "disk_path": disk,
        "guest_mac": GUEST_MAC, "macvtap_mac": GUEST_MAC, "macvtap_device": "mvt53008",
        "mac_matches": True, "state": "running", "interface_type": "ethernet", **outs}}


def deployment(password: Any = None) -> list[dict[str, Any]]:
    password = secret("s3cret-pw") if password is None else password
    disk = "/var/lib/macvtap-lab/lab/images/lab-guest.qcow2"
    return [
        {"type": "pulumi:pulumi:Stack", "outputs": {"guest_ip": "10.213.5.10"}},
        {"type": "pulumi:providers:pulumi-python", "outputs": {}},
        {"type": f"{DYN}LabNetwork", "outputs": {"name": "lab-net"}},
        {"type": f"{DYN}LibvirtContainer", "outputs": {
            "name": "lab-libvirt", "network": "lab-net", "mac_address": CONTAINER_MAC,
            "image_ref": "macvtap-lab/libvirt:abc", "prefix": 24, "libvirt_uri": URI}},
        {"type": f"{DYN}CustomizedImage", "inputs": {"root_password": password},
         "outputs": {"path": disk, "authorized_keys": ["ssh-ed25519 AAAA me@host"]}},
        domain("lab-guest", disk),
        {"type": f"{DYN}GuestNetwork", "inputs": {"root_password": password}, "outputs": {
            "domain": "lab-guest", "container": "lab-libvirt", "network": "lab-net",
            "guest_ip": "10.213.5.10", "prefix": 24, "moved": True, "reachable": True}},
        # A replaced domain waiting for deletion is not a guest any more.
        {**domain("lab-old", "/x.qcow2"), "delete": True},
    ]


# -- stack selection ----------------------------------------------------------------------
def fs(*present: str) -> Callable[[Path], bool]:
    return lambda p: str(p) in present


def test_project_dir_is_the_nearest_pulumi_yaml_upwards() -> None:
    exists = fs("/work/lab/Pulumi.yaml")
    assert stack_target.find_project_dir(Path("/work/lab/stacks/x"), exists) == Path("/work/lab")
    with pytest.raises(StackError, match="--project-dir"):
        stack_target.find_project_dir(Path("/elsewhere"), exists)


def test_checkout_defaults_match_make_up() -> None:
    exists = fs("/co/.tools/bin/pulumi", "/co/.state/passphrase")
    t = stack_target.resolve_target(Path("/co/stacks/multi"), "s1", {}, exists)
    assert t.engine == "/co/.tools/bin/pulumi"
    assert t.env == {"PULUMI_BACKEND_URL": "file:///co/.state/pulumi",
                     "PULUMI_CONFIG_PASSPHRASE_FILE": "/co/.state/passphrase"}


@pytest.mark.parametrize("environ,kept", [
    ({"PULUMI_BACKEND_URL": "file:///mine"}, {"PULUMI_CONFIG_PASSPHRASE_FILE"}),
    ({"PULUMI_CONFIG_PASSPHRASE": "x"}, {"PULUMI_BACKEND_URL"}),
    ({"PULUMI_CONFIG_PASSPHRASE_FILE": "/p"}, {"PULUMI_BACKEND_URL"}),
    ({"PULUMI_BACKEND_URL": "s3://b", "PULUMI_CONFIG_PASSPHRASE": "x"}, set()),
])
def test_the_users_environment_wins(environ: dict[str, str], kept: set[str]) -> None:
    exists = fs("/co/.tools/bin/pulumi", "/co/.state/passphrase")
    assert set(stack_target.resolve_target(Path("/co"), None, environ, exists).env) == kept


def test_a_users_own_project_uses_the_official_cli_as_configured() -> None:
    t = stack_target.resolve_target(Path("/home/u/mylab"), None, {}, fs())
    assert (t.engine, dict(t.env), t.engine_root) == ("pulumi", {}, None)


def test_command_lines_as_a_user_types_them() -> None:
    t = StackTarget(Path("/co"), None, engine_root=Path("/co/.tools"))
    assert t.command("up", "--refresh", "--yes", stack="lab", cwd=Path("/co")) == \
        ".tools/bin/pulumi up --refresh --yes --stack lab"
    assert t.command("up", stack="lab", cwd=Path("/tmp")) == \
        "/co/.tools/bin/pulumi -C /co up --stack lab"
    user = StackTarget(Path("/home/u/my lab"))
    assert user.command("up", stack="dev", cwd=Path("/home/u")) == \
        "pulumi -C 'my lab' up --stack dev"


@pytest.mark.parametrize("named,current,available,chosen", [
    ("b", "a", ["a", "b"], "b"),
    (None, "a", ["a", "b"], "a"),
    (None, None, ["only"], "only"),
])
def test_choose_stack(named: str | None, current: str | None, available: list[str],
                      chosen: str) -> None:
    assert stack_target.choose_stack(named, current, available, Path("/p")) == chosen


@pytest.mark.parametrize("named,available,message", [
    ("nope", ["a", "b"], r"'nope' does not exist .*stacks: a, b.*make up STACK=nope"),
    (None, [], "no stack yet"),
    (None, ["a", "b"], r"several \(a, b\): pass --stack"),
])
def test_choose_stack_refuses_clearly(named: str | None, available: list[str],
                                      message: str) -> None:
    with pytest.raises(StackError, match=message):
        stack_target.choose_stack(named, None, available, Path("/p"))


# -- guests from the state ----------------------------------------------------------------
def test_guests_are_joined_from_the_resources() -> None:
    [g] = lab_view.guests_from_resources(deployment())
    assert (g.domain, g.container, g.network, g.guest_ip, g.prefix) == \
        ("lab-guest", "lab-libvirt", "lab-net", "10.213.5.10", 24)
    assert (g.guest_mac, g.container_mac, g.probe_image, g.moved) == \
        (GUEST_MAC, CONTAINER_MAC, "macvtap-lab/libvirt:abc", True)
    assert g.authorized_keys == ("ssh-ed25519 AAAA me@host",)
    assert g.root_password == "s3cret-pw"
    assert "s3cret-pw" not in repr(g)


def test_guests_come_in_name_order_whatever_order_the_state_has() -> None:
    resources = [domain("lab-g1", "/1.qcow2"), domain("lab-g0", "/0.qcow2"),
                 domain("lab-g2", "/2.qcow2")]
    assert [g.domain for g in lab_view.guests_from_resources(resources)] == \
        ["lab-g0", "lab-g1", "lab-g2"]


def test_a_ciphertext_password_is_not_a_password() -> None:
    cipher = {lab_view.SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "v1:x"}
    [g] = lab_view.guests_from_resources(deployment(password=cipher))
    assert g.root_password is None


def test_a_domain_without_network_is_still_a_guest() -> None:
    [g] = lab_view.guests_from_resources([domain("bare", "/d.qcow2")])
    assert (g.domain, g.guest_ip, g.network, g.root_password) == ("bare", None, None, None)


def guests(*names: str) -> list[GuestRecord]:
    return [GuestRecord(n, URI, "c", "running", GUEST_MAC, "mvt1", True, guest_ip=f"10.0.0.{i}")
            for i, n in enumerate(names, 10)]


def test_pick_guest() -> None:
    many = guests("lab-g0", "lab-g1")
    assert lab_view.pick_guest(many, "lab-g1", "s", "ssh").domain == "lab-g1"
    assert lab_view.pick_guest(many, "g0", "s", "ssh").domain == "lab-g0"
    assert lab_view.pick_guest(guests("one"), None, "s", "ssh").domain == "one"


def test_pick_guest_lists_the_guests_when_it_cannot_choose() -> None:
    many = guests("lab-g0", "lab-g1")
    with pytest.raises(NotFoundError, match="has 2 guests; pick one with `macvtap-lab console "
                       r"--guest NAME`:\n  lab-g0  10.0.0.10 +running\n  lab-g1  10.0.0.11"):
        lab_view.pick_guest(many, None, "s", "console")
    with pytest.raises(NotFoundError, match="no guest named 'x'; its guests:\n  lab-g0"):
        lab_view.pick_guest(many, "x", "s", "console")
    with pytest.raises(NotFoundError, match="bring the lab up first"):
        lab_view.pick_guest([], None, "s", "console")


# -- status -------------------------------------------------------------------------------
REC = lab_view.guests_from_resources(deployment())[0]
HEALTHY = status.LiveGuest(container="running", domain_state="running", guest_mac=GUEST_MAC,
                           macvtap_mac=GUEST_MAC, container_holds_address=False,
                           answered_by=GUEST_MAC, probed=True, tcp22=True)
UP, CONSOLE = "pulumi up --refresh --yes --stack s", "macvtap-lab console --stack s --guest g"


def verdicts(live: status.LiveGuest) -> dict[str, str]:
    return {r.check: r.verdict for r in status.evaluate(REC, live).rows}


def test_a_healthy_guest_has_no_drift(golden: Callable[[str, str], None]) -> None:
    result = status.evaluate(REC, HEALTHY)
    assert set(verdicts(HEALTHY).values()) == {status.OK}
    assert result.exit_code == status.EXIT_CLEAN
    golden("status_clean.txt", status.render(result, "s", UP, CONSOLE))


def test_the_address_back_on_the_container_is_drift_healed_by_up(
        golden: Callable[[str, str], None]) -> None:
    live = status.LiveGuest(**{**HEALTHY.__dict__, "container_holds_address": True,
                               "answered_by": CONTAINER_MAC})
    result = status.evaluate(REC, live)
    assert {r.check for r in result.drift} == {"address on container", "guest IP"}
    assert status.heal_commands(result, UP, CONSOLE) == [UP]
    golden("status_address_on_container.txt", status.render(result, "s", UP, CONSOLE))


@pytest.mark.parametrize("change,drifted,heal", [
    ({"container": "gone", "domain_state": None, "guest_mac": None, "macvtap_mac": None,
      "container_holds_address": None, "probed": False},
     {"container"}, ["up"]),
    ({"domain_state": "shutoff", "answered_by": None, "tcp22": False},
     {"domain state", "guest IP", "TCP 22"}, ["up"]),
    ({"domain_state": "undefined", "guest_mac": None, "macvtap_mac": None,
      "answered_by": None, "tcp22": False},
     {"domain state", "guest IP", "TCP 22"}, ["up"]),
    ({"macvtap_mac": ""}, {"mac_matches"}, ["up"]),
    ({"macvtap_mac": "52:54:00:00:00:01"}, {"mac_matches"}, ["up"]),
    # Everything in place but the guest does not answer: repair it on its console.
    ({"answered_by": None, "tcp22": False}, {"guest IP", "TCP 22"}, ["console"]),
    ({"tcp22": False}, {"TCP 22"}, ["console"]),
    ({"answered_by": "02:00:00:00:00:99"}, {"guest IP"}, ["console"]),
])
def test_drift_rules(change: dict[str, Any], drifted: set[str], heal: list[str]) -> None:
    result = status.evaluate(REC, status.LiveGuest(**{**HEALTHY.__dict__, **change}))
    assert {r.check for r in result.drift} == drifted
    assert result.exit_code == status.EXIT_DRIFT
    assert status.heal_commands(result, "up", "console") == heal


def test_what_could_not_be_read_is_unknown_not_drift() -> None:
    live = status.LiveGuest(container="running", notes=("libvirtd does not answer",))
    result = status.evaluate(REC, live)
    assert not result.drift
    assert result.exit_code == status.EXIT_UNREAD
    text = status.render(result, "s", UP, CONSOLE)
    assert "note: libvirtd does not answer" in text
    assert "no drift seen, but not read: domain state, guest IP, mac_matches" in text


def test_a_guest_without_network_has_nothing_to_probe() -> None:
    [rec] = lab_view.guests_from_resources([domain("bare", "/d.qcow2")])
    result = status.evaluate(rec, status.LiveGuest(**{**HEALTHY.__dict__, "probed": False,
                                                      "container_holds_address": None}))
    assert [r.check for r in result.rows if r.verdict == status.NA] == \
        ["guest IP", "address on container", "TCP 22"]
    assert result.exit_code == status.EXIT_CLEAN


@pytest.mark.parametrize("output,expected", [
    ("neigh 10.0.0.10 dev eth0 lladdr 52:54:00:3B:EB:B4 REACHABLE\ntcp22 open\n",
     ("52:54:00:3b:eb:b4", True)),
    ("neigh 10.0.0.10 dev eth0 lladdr 52:54:00:3b:eb:b4 STALE\ntcp22 closed\n",
     ("52:54:00:3b:eb:b4", False)),
    ("neigh 10.0.0.10 dev eth0 FAILED\ntcp22 closed\n", (None, False)),
    ("neigh 10.0.0.10 dev eth0 lladdr 52:54:00:3b:eb:b4 INCOMPLETE\ntcp22 closed\n",
     (None, False)),
    ("neigh \ntcp22 closed\n", (None, False)),
    ("", (None, None)),
])
def test_parse_probe(output: str, expected: tuple[str | None, bool | None]) -> None:
    assert status.parse_probe(output) == expected


def test_probe_script_targets_only_the_address() -> None:
    script = status.probe_script("10.213.5.10")
    assert "ping -c 1 -W 2 10.213.5.10" in script
    assert "/dev/tcp/10.213.5.10/22" in script


def test_ssh_picks_the_users_key_that_the_image_authorises(tmp_path: Path) -> None:
    from macvtap_provider.operate import _matching_key

    for name, pub in (("id_rsa", "ssh-rsa BBBB other"), ("id_ed25519", "ssh-ed25519 AAAA me@x"),
                      ("orphan", "ssh-ed25519 CCCC")):
        (tmp_path / f"{name}.pub").write_text(pub + "\n")
        if name != "orphan":
            (tmp_path / name).write_text("PRIVATE\n")
    assert _matching_key(("ssh-ed25519 AAAA me@host",), tmp_path) == tmp_path / "id_ed25519"
    assert _matching_key(("ssh-ed25519 CCCC",), tmp_path) is None  # no private half
    assert _matching_key(("ssh-ed25519 DDDD",), tmp_path) is None


@pytest.mark.parametrize("argv,remote", [
    (["ssh", "--", "ip", "-br", "addr"], ["ip", "-br", "addr"]),
    (["ssh", "-s", "lab", "-g", "g1", "--", "exit 3"], ["exit 3"]),
    (["ssh", "-s", "lab"], []),
])
def test_ssh_command_line(argv: list[str], remote: list[str]) -> None:
    from macvtap_provider import cli

    args = cli._build_parser().parse_args(argv)
    assert cli.remote_command(args.remote) == remote


SIGTERM_CHILD = """
import os, signal, sys, time
from macvtap_provider.operate import _finally_on_signals
with _finally_on_signals():
    try:
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        time.sleep(0.3)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status), flush=True)
    finally:
        print("finally in", "parent" if os.getpid() != pid else "child", flush=True)
"""


def test_a_forked_child_killed_by_sigterm_does_not_unwind_our_stack() -> None:
    """pyroute2 forks a child to enter a netns and stops it with SIGTERM; the handler the
    commands install must not run the parent's `finally` (which removes the probe) there."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", SIGTERM_CHILD], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.stdout.splitlines() == ["child exit 143", "finally in parent"], proc
