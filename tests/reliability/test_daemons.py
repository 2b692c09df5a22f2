"""A daemon the lab needs is unreachable: `pulumi refresh` fails with a clear error and the
state keeps every resource (nothing silently dropped); once the daemon is back, refresh
finds no change and the lab works.

dockerd is stopped for real (SIGTERM) and started again with its own command line; it
must run with --live-restore (scripts/setup.sh starts it so) or stopping it would stop
every container on the host. libvirtd is stopped inside the lab's container with
`libvirtd-ctl stop`; the guest keeps running meanwhile.

The same lab also shows least privilege in the guest: sshd runs exactly the configured
settings, nothing more.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from macvtap_provider import paths
from macvtap_provider.builders import guest_config
from macvtap_provider.compose import lab_name
from tests.conftest import ROOT, absent
from tests.e2e import lab_probe
from tests.e2e.conftest import E2EStack, make_stack, refused
from tests.reliability.test_out_of_band import works

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker,
              pytest.mark.libvirt, pytest.mark.guestfs, pytest.mark.netns]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[E2EStack, str]]:
    stack = f"d{secrets.token_hex(3)}"
    st = make_stack(tmp_path_factory.mktemp("daemons"), ROOT, stack)
    password = secrets.token_urlsafe(12)
    try:
        st.set_secret("rootPassword", password)
        st.config("subnet", f"10.213.{110 + secrets.randbelow(30)}.0/24")
        st.up()
        yield st, password
    finally:
        st.destroy()
        st.remove()
        assert not (paths.work_root() / lab_name("macvtap-lab", stack)).exists()


def state_resources(st: E2EStack) -> dict[str, tuple[str, str]]:
    """urn -> (id, outputs as JSON) of every resource in the state."""
    return {r["urn"]: (r.get("id", ""), json.dumps(r.get("outputs", {}), sort_keys=True))
            for r in st.resources()}


def refresh_fails_and_keeps_state(st: E2EStack, expected: str) -> str:
    before = state_resources(st)
    text = refused(st, "refresh", timeout=300)
    assert expected in text, text[-4000:]
    after = state_resources(st)
    assert set(after) == set(before), "refresh dropped resources from the state"
    assert {u: i for u, (i, _) in after.items()} == {u: i for u, (i, _) in before.items()}
    return text


def dockerd() -> tuple[int, list[str]]:
    """pid and argv of this machine's dockerd: the one in this PID namespace, not the
    dockerd of a simulated host (a container of its own, whose processes /proc lists too)."""
    ours = os.readlink("/proc/self/ns/pid")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if os.readlink(entry / "ns" / "pid") != ours:
                    continue
            except OSError:
                continue
            if argv and os.path.basename(argv[0].decode()) == "dockerd":
                return int(entry.name), [a.decode() for a in argv if a]
    raise AssertionError("no dockerd process found")


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def test_dockerd_stopped_refresh_fails_clearly_and_keeps_the_state(lab: tuple[E2EStack, str]) -> None:
    st, password = lab
    if not docker.from_env().info().get("LiveRestoreEnabled"):
        absent("dockerd runs without --live-restore: stopping it would stop every container "
               "(scripts/setup.sh starts dockerd with --live-restore)")
    pid, argv = dockerd()
    log = paths.cache_dir() / "dockerd.log"
    os.kill(pid, signal.SIGTERM)
    try:
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not docker_answers()
        text = refresh_fails_and_keeps_state(st, "dockerd is unreachable")
        assert "start it" in text
    finally:
        if not docker_answers():
            with log.open("ab") as out:
                subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
            deadline = time.monotonic() + 60
            while not docker_answers() and time.monotonic() < deadline:
                time.sleep(0.5)
    assert docker_answers(), f"dockerd did not come back; see {log}"
    st.refresh(expect_no_changes=True)
    works(st, password)


def test_libvirtd_stopped_refresh_fails_clearly_and_keeps_the_state(lab: tuple[E2EStack, str]) -> None:
    st, password = lab
    container = docker.from_env().containers.get(str(st.outputs()["container_name"]))
    assert container.exec_run(["libvirtd-ctl", "stop"]).exit_code == 0
    try:
        text = refresh_fails_and_keeps_state(st, "does not answer")
        assert f"docker exec {container.name} libvirtd-ctl start" in text
    finally:
        assert container.exec_run(["libvirtd-ctl", "start"]).exit_code == 0
    st.refresh(expect_no_changes=True)
    works(st, password)


def test_the_guest_sshd_runs_exactly_the_configured_settings(lab: tuple[E2EStack, str]) -> None:
    """Least privilege in the guest: sshd's effective settings differ from the image's stock
    ones only in the keys the lab configures, and have the configured values."""
    st, password = lab
    out = st.outputs()
    image = docker.from_env().containers.get(str(out["container_name"])).attrs["Config"]["Image"]
    stock = (f"sed '/^{guest_config.BEGIN_MARK}$/,/^{guest_config.END_MARK}$/d' "
             "/etc/ssh/sshd_config > /tmp/stock_sshd_config && "
             "sshd -T -f /tmp/stock_sshd_config | sort > /tmp/stock && sshd -T | sort > /tmp/now"
             " && diff /tmp/stock /tmp/now; true")
    rc, text = lab_probe.ssh(str(out["network_name"]), image, str(out["guest_ip"]), password,
                             stock)
    assert rc == 0, text
    changed = {line[2:].split(" ", 1)[0] for line in text.splitlines() if line.startswith("> ")}
    now = {line[2:].split(" ", 1)[0]: line[2:].split(" ", 1)[1]
           for line in text.splitlines() if line.startswith("> ")}
    configured = {k.lower(): v for k, v in guest_config.DEFAULT_SSHD_SETTINGS.items()}
    assert "permitrootlogin" in changed, text  # Debian's stock value is without-password
    assert changed <= set(configured), f"sshd settings changed beyond the configured: {text}"
    assert all(now[k] == configured[k] for k in changed), text
    rc, effective = lab_probe.ssh(str(out["network_name"]), image, str(out["guest_ip"]),
                                  password, "sshd -T")
    settings = dict(line.split(" ", 1) for line in effective.splitlines() if " " in line)
    assert {k: settings.get(k) for k in configured} == configured
