"""Interrupted runs: `pulumi up` killed with SIGKILL at a bad moment, then the next
`pulumi refresh` + `pulumi up` converge: one of each object, no "already exists", no
process left running, and `destroy` leaves nothing.

Two moments: while the guest image is being customised (libguestfs's appliance is up),
and between the domain's define and its start (held there by the provider's pause point,
`MACVTAP_LAB_PAUSE_AT`, so the kill lands exactly there).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import docker
import libvirt
import pytest
from pulumi import automation as auto

from macvtap_provider import faults, paths
from macvtap_provider.compose import lab_name
from tests.conftest import ROOT
from tests.e2e import lab_probe
from tests.e2e.conftest import PULUMI, TOOLCHAINS, E2EStack, make_stack, refused
from tests.reliability.test_out_of_band import works

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker,
              pytest.mark.libvirt, pytest.mark.guestfs, pytest.mark.netns]


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, cmdline) of every process."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        table[int(entry.name)] = (ppid, cmdline.strip())
    return table


def descendants(pid: int) -> dict[int, str]:
    table = process_table()
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, cmd) in table.items():
            if ppid == parent and child not in found:
                found[child] = cmd
                todo.append(child)
    return found


def alive(pids: dict[int, str]) -> dict[int, str]:
    """Those of `pids` still running (zombies count as gone) with the same command line."""
    table = process_table()
    still = {}
    for pid, cmd in pids.items():
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and table.get(pid, (0, ""))[1] == cmd:
            still[pid] = cmd
    return still


def kill_up_when(st: E2EStack, ready: Callable[[dict[int, str]], bool], what: str,
                 timeout: float = 300) -> dict[int, str]:
    """Start `pulumi up`, SIGKILL the engine once `ready(its descendants)` holds, and return
    the processes it had started.

    Typed, not through the Automation API: the kill needs the engine's own pid, which the
    API does not expose (and a user's killed `pulumi up` is what this reproduces)."""
    proc = subprocess.Popen([str(PULUMI), "up", "--yes", "--skip-preview", "--non-interactive",
                             "--stack", st.name], cwd=st.cwd, env=st.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while True:
            children = descendants(proc.pid)
            if ready(children):
                break
            if proc.poll() is not None:
                raise AssertionError(f"`pulumi up` ended ({proc.returncode}) before {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:.0f}s")
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # the wrapper exec'd the engine: this is the engine
        proc.wait(timeout=10)
        return children
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


#: The official language host (a Go binary, not ours) notices a dead engine only at its
#: health check, every 5 minutes; it holds nothing of the lab (README: "the official CLI").
OFFICIAL_HOST = "pulumi-language-python"


def assert_no_processes_left(children: dict[int, str], within: float = 20,
                             toolchain: str = "ours") -> None:
    """The language host, the program and the provider (with its libguestfs child and that
    child's appliance) all end once their engine is gone; under the stock toolchain all
    but the official language host."""
    def ours(cmd: str) -> bool:
        return toolchain != "stock" or Path(cmd.split(" ", 1)[0]).name != OFFICIAL_HOST

    watched = {pid: cmd for pid, cmd in children.items() if ours(cmd)}
    deadline = time.monotonic() + within
    while alive(watched) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(watched), f"processes outlived the killed engine: {alive(watched)}"


def lab_objects(lab: str) -> dict[str, list[str]]:
    """What exists on the host for one lab, by kind."""
    client = docker.from_env()
    try:
        containers = sorted(c.name or "" for c in client.containers.list(all=True)
                            if (c.name or "").startswith(lab))
        networks = sorted(n.name or "" for n in client.networks.list() if (n.name or "").startswith(lab))
    finally:
        client.close()
    work = paths.work_root() / lab
    files = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()) \
        if work.exists() else []
    return {"containers": containers, "networks": networks, "files": files}


def domains(uri: str) -> list[str]:
    conn = libvirt.open(uri)
    try:
        return sorted(d.name() for d in conn.listAllDomains())
    finally:
        conn.close()


def make_up(st: E2EStack, stack: str) -> str:
    """`make up`'s script for `stack` on the test's backend; its output."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "lab.sh"), "up", stack],
                          env=st.env, capture_output=True, text=True, timeout=900, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-6000:]
    return text


def converge(st: E2EStack, password: str, lab: str, stack: str,
             by_make_up: bool = False) -> None:
    """refresh + up succeed without "already exists"; exactly one of each object; it works.

    The killed engine could not release its lock on the stack; the engine says so and names
    the fix, `pulumi cancel`. `make up` (scripts/lab.sh) does that itself when the process
    named in the lock is gone, then refreshes and brings the lab up."""
    assert "pulumi cancel" in refused(st, "refresh")
    if by_make_up:
        text = make_up(st, stack)
        assert "locked by a run that no longer exists" in text
        # Once healed, a plain `make up` finds no stale lock and changes nothing.
        again = make_up(st, stack)
        assert "no longer exists" not in again and "cancel" not in again
    else:
        st.stack.cancel()
        text = st.refresh().stdout
        text += st.up().stdout
    assert "already exists" not in text
    st.preview(expect_no_changes=True)
    out = st.outputs()
    objects = lab_objects(lab)
    assert objects["containers"] == [f"{lab}-libvirt"], objects
    assert objects["networks"] == [f"{lab}-net"], objects
    images = [f for f in objects["files"] if f.startswith("images/")]
    assert f"images/{lab}-guest.qcow2" in images
    assert not [f for f in images if f.endswith(".tmp")], images
    assert domains(str(out["libvirt_uri"])) == [f"{lab}-guest"]
    pid = docker.from_env().containers.get(f"{lab}-libvirt").attrs["State"]["Pid"]
    macvtaps = lab_probe.macvtap_links(pid)
    assert len(macvtaps) == 1, macvtaps
    works(st, password)


def new_lab(tmp: Path, label: str, toolchain: str = "ours") -> tuple[E2EStack, str, str, str]:
    stack = f"{label}{secrets.token_hex(3)}"
    st = make_stack(tmp, ROOT, stack, toolchain)
    password = secrets.token_urlsafe(12)
    st.set_secret("rootPassword", password)
    st.config("subnet", f"10.213.{150 + secrets.randbelow(40)}.0/24")
    return st, password, lab_name("macvtap-lab", stack), stack


def finish(st: E2EStack, lab: str) -> None:
    with contextlib.suppress(auto.CommandError):
        st.stack.cancel()  # when the test failed before the lock was released
    st.destroy()
    st.remove()
    assert lab_objects(lab) == {"containers": [], "networks": [], "files": []}
    assert not (paths.work_root() / lab).exists()


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_killed_during_image_customisation(tmp_path: Path, toolchain: str) -> None:
    st, password, lab, stack = new_lab(tmp_path, "ki", toolchain)

    def customising(children: dict[int, str]) -> bool:
        # libguestfs's appliance: a qemu run by the provider's isolated child.
        return any("qemu-system" in cmd and "guestfs" in cmd for cmd in children.values())

    try:
        children = kill_up_when(st, customising, "libguestfs appliance")
        time.sleep(0.5)
        assert_no_processes_left(children, toolchain=toolchain)
        converge(st, password, lab, stack, by_make_up=True)
    finally:
        finish(st, lab)


def test_killed_between_domain_define_and_start(tmp_path: Path) -> None:
    st, password, lab, stack = new_lab(tmp_path, "kd")
    domain = f"{lab}-guest"
    uri = f"qemu:///system?socket={paths.work_root() / lab}/run/libvirt/libvirt-sock"
    st.setenv(faults.ENV, f"{faults.DOMAIN_DEFINED}:300")

    def defined_not_started(_children: dict[int, str]) -> bool:
        if not Path(uri.split("socket=", 1)[1]).is_socket():
            return False
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError:
            return False
        try:
            return any(d.name() == domain and not d.isActive() for d in conn.listAllDomains())
        finally:
            conn.close()

    try:
        children = kill_up_when(st, defined_not_started, "defined domain")
        assert_no_processes_left(children)
        st.setenv(faults.ENV, None)
        assert domains(uri) == [domain]  # the leftover: defined, never started
        converge(st, password, lab, stack)
    finally:
        st.setenv(faults.ENV, None)
        finish(st, lab)
