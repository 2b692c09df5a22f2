"""The multi-guest stack and the examples, through the real engine (Automation API)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import docker
import pytest

from macvtap_provider import paths
from macvtap_provider.compose import lab_name
from tests.conftest import ROOT
from tests.e2e import lab_probe
from tests.e2e.conftest import FORK_NOISE, TOOLCHAINS, lab_cmd, make_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker, pytest.mark.libvirt,
              pytest.mark.guestfs]


def subnet() -> str:
    return f"10.213.{150 + secrets.randbelow(45)}.0/24"


def assert_nothing_left(lab: str) -> None:
    left = lab_probe.leftovers(lab, paths.work_root() / lab)
    assert left == {"containers": [], "networks": [], "work_dir_exists": False, "files": []}


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_multi_guest_stack(e2e_tmp: Path, toolchain: str) -> None:
    stack = f"m{secrets.token_hex(3)}"
    lab = lab_name("macvtap-lab-multi", stack)
    st = make_stack(e2e_tmp, ROOT / "stacks" / "multi", stack, toolchain)
    try:
        st.config("subnet", subnet())
        up = st.up("multi_up")
        assert FORK_NOISE not in up.stdout + up.stderr
        out = st.outputs()
        ips = [str(ip) for ip in out["guest_ips"]]  # type: ignore[union-attr]
        assert len(ips) == 2 and len(set(ips)) == 2
        assert out["mac_matches"] == [True, True]
        assert len(set(out["macvtap_devices"])) == 2  # type: ignore[arg-type]
        image = docker.from_env().containers.get(out["container_name"]).attrs["Config"]["Image"]
        for me, other in ((ips[0], ips[1]), (ips[1], ips[0])):
            rc, text = lab_probe.ssh(str(out["network_name"]), image, me,
                                     str(out["root_password"]), f"ping -c 2 -W 3 {other}")
            assert rc == 0, f"{me} cannot reach {other}: {text}"
        st.preview(expect_no_changes=True)

        # The lab at hand with several guests: console lists them, status shows a table
        # for each, ssh reaches the one named.
        guests = [f"{lab}-g0", f"{lab}-g1"]
        proc = lab_cmd(st, "console", "--stack", stack)
        assert proc.returncode == 2
        assert f"stack '{stack}' has 2 guests; pick one with `macvtap-lab console --guest " \
               "NAME`" in proc.stderr, proc.stderr
        for name, ip in zip(guests, ips, strict=True):
            assert re.search(rf"^  {name}  {re.escape(ip)} +running$", proc.stderr, re.M)
        proc = lab_cmd(st, "status", "--stack", stack)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert [line.split()[1] for line in proc.stdout.splitlines()
                if line.startswith("guest ")] == guests
        assert proc.stdout.count("no drift") == 2
        proc = lab_cmd(st, "ssh", "--stack", stack, "--guest", "g1", "--", "ip -br addr")
        assert proc.returncode == 0, proc.stderr
        assert re.search(rf"^eth0 +UP +{re.escape(ips[1])}/24", proc.stdout, re.M), proc.stdout
    finally:
        st.destroy("multi_destroy")
        st.remove()
    assert_nothing_left(lab)


def test_examples_guest_command_and_stack_reference(e2e_tmp: Path) -> None:
    stack = f"x{secrets.token_hex(3)}"
    lab = lab_name("gc", stack)
    producer = make_stack(e2e_tmp, ROOT / "examples" / "guest_command", stack)
    consumer = make_stack(e2e_tmp, ROOT / "examples" / "stack_reference", stack)
    try:
        producer.config("subnet", subnet())
        producer.up("example_up")
        out = producer.outputs()
        assert str(out["guest_kernel"]).startswith("6.")  # Debian bookworm's kernel
        assert out["guest_cidr"] == f"{out['guest_ip']}/24"
        assert "root_password" in producer.secret_outputs()  # shown as [secret]
        consumer.config("labStack", f"organization/macvtap-lab-guest-command/{stack}")
        consumer.up("consumer_up")
        used = consumer.outputs()
        assert used["lab_guest_ip"] == out["guest_ip"]
        assert float(used["lab_guest_uptime_s"]) > 0  # type: ignore[arg-type]
    finally:
        consumer.destroy()
        consumer.remove()
        producer.destroy()
        producer.remove()
    assert_nothing_left(lab)
