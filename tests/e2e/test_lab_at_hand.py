"""`macvtap-lab status | ssh | console` on a real lab, typed as a person types them: in a
shell on a pseudo-terminal, against a stack the real engine brought up."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import libvirt
import pexpect
import pytest

from macvtap_provider.compose import lab_name
from macvtap_provider.operate import PROBE_LABEL
from tests.conftest import ROOT
from tests.e2e.conftest import MVT, E2EStack, lab_cmd, make_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker, pytest.mark.libvirt,
              pytest.mark.guestfs]

MVT_DIR = Path(MVT).parent
PATH = os.environ.get("PATH", "/usr/bin:/bin")
SHELL_PROMPT = "TESTSHELL$ "
GUEST_PROMPT = re.compile(r"root@\S+:~# ")


@pytest.fixture
def shell_for() -> Iterator[Callable[[E2EStack], pexpect.spawn]]:
    """A bash on a pseudo-terminal with the stack's environment, where the test types as
    a user would."""
    shells: list[pexpect.spawn] = []

    def spawn(st: E2EStack) -> pexpect.spawn:
        sh = pexpect.spawn("bash", ["--norc", "--noprofile"], cwd=str(ROOT), encoding="utf-8",
                           timeout=60, dimensions=(50, 160),
                           env={**st.env, "PS1": SHELL_PROMPT, "PATH": f"{MVT_DIR}:{PATH}"})
        sh.expect_exact(SHELL_PROMPT)
        shells.append(sh)
        return sh

    yield spawn
    for sh in shells:
        sh.close(force=True)


def console_login(sh: pexpect.spawn, stack: str, password: str) -> None:
    """Type `macvtap-lab console`, then log in on the login prompt with the password."""
    sh.sendline(f"macvtap-lab console --stack {stack}")
    sh.expect_exact("Leave with Ctrl-]")
    sh.expect_exact("Escape character is ^]")
    sh.send("\r")
    if sh.expect(["login: ", GUEST_PROMPT], timeout=120) == 0:
        sh.sendline("root")
        sh.expect("Password: ")
        sh.sendline(password)
        sh.expect(GUEST_PROMPT)


def leave_console(sh: pexpect.spawn) -> None:
    """Ctrl-] returns to the shell, and the command exited 0."""
    sh.sendcontrol("]")
    sh.expect_exact(SHELL_PROMPT)
    sh.sendline("echo rc=$?")
    sh.expect_exact("rc=0")
    sh.expect_exact(SHELL_PROMPT)


def status_until(st: E2EStack, stack: str, rc: int, attempts: int = 4) -> str:
    """`macvtap-lab status`; retried a little while ARP and sshd settle."""
    for _ in range(attempts):
        proc = lab_cmd(st, "status", "--stack", stack)
        if proc.returncode == rc:
            return proc.stdout
        time.sleep(3)
    raise AssertionError(f"status exited {proc.returncode}, not {rc}:\n{proc.stdout}\n"
                         f"{proc.stderr[-2000:]}")


def secret_anywhere(password: str, container: str) -> list[str]:
    """Where a running ssh session shows the password: any process's argv or environment
    on this host, the probe containers' `docker inspect` (their execs too) and logs."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        for what in ("cmdline", "environ"):
            try:
                if password.encode() in Path(f"/proc/{pid}/{what}").read_bytes():
                    found.append(f"/proc/{pid}/{what}")
            except OSError:
                continue
    client = docker.from_env()
    try:
        for probe in client.containers.list(filters={"label": f"{PROBE_LABEL}={container}"}):
            if password in json.dumps(probe.attrs):
                found.append(f"docker inspect {probe.name}")
            for exec_id in probe.attrs.get("ExecIDs") or []:
                if password in json.dumps(client.api.exec_inspect(exec_id)):
                    found.append(f"docker inspect exec {exec_id}")
            if password.encode() in probe.logs():
                found.append(f"docker logs {probe.name}")
    finally:
        client.close()
    return found


def probes_of(container: str) -> list[str]:
    client = docker.from_env()
    try:
        return [c.name or "" for c in client.containers.list(
            all=True, filters={"label": f"{PROBE_LABEL}={container}"})]
    finally:
        client.close()


def test_status_ssh_console(e2e_tmp: Path,
                            shell_for: Callable[[E2EStack], pexpect.spawn]) -> None:
    stack = f"h{secrets.token_hex(3)}"
    lab = lab_name("macvtap-lab", stack)
    st = make_stack(e2e_tmp, ROOT, stack)
    password = secrets.token_urlsafe(12)
    third = 200 + secrets.randbelow(50)
    try:
        st.set_secret("rootPassword", password)
        st.config("subnet", f"10.213.{third}.0/24")
        st.up()
        out = st.outputs()
        shell = shell_for(st)
        ip, container = str(out["guest_ip"]), str(out["container_name"])

        # 1. status right after up: one table, nothing drifted.
        text = status_until(st, stack, 0)
        assert f"guest {lab}-guest  (stack {stack}" in text
        assert re.search(rf"guest IP +{re.escape(ip)} +answers \(.*the guest\) +ok", text), text
        assert re.search(r"TCP 22 +open +open +ok", text), text
        assert "no drift" in text

        # 2. ssh -- ip -br addr prints the address; the remote exit status comes back.
        proc = lab_cmd(st, "ssh", "--stack", stack, "--", "ip", "-br", "addr")
        assert proc.returncode == 0, proc.stderr
        assert re.search(rf"^eth0 +UP +{re.escape(ip)}/24", proc.stdout, re.M), proc.stdout
        assert lab_cmd(st, "ssh", "--stack", stack, "--", "exit 3").returncode == 3
        # ... an interactive login in the shell, whose exit status the shell sees.
        shell.sendline(f"macvtap-lab ssh --stack {stack}")
        shell.expect(GUEST_PROMPT)
        shell.sendline("exit 4")
        shell.expect_exact(SHELL_PROMPT)
        shell.sendline("echo rc=$?")
        shell.expect_exact("rc=4")
        shell.expect_exact(SHELL_PROMPT)
        # ... and while a session runs, the password is nowhere to be seen.
        session = pexpect.spawn(MVT, ["-v", "ssh", "--stack", stack, "--", "sleep 15; echo done"],
                                cwd=str(ROOT), env=st.env, encoding="utf-8", timeout=60)
        deadline = time.monotonic() + 40
        while not probes_of(container) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # the exec and the ssh login are under way
        assert probes_of(container), "no probe container seen during the session"
        assert secret_anywhere(password, container) == []
        session.expect(pexpect.EOF)
        session.close()
        assert session.exitstatus == 0 and "done" in (session.before or "")
        assert password not in (session.before or "")
        assert probes_of(container) == [], "the probe container was left behind"

        # 3. console: login prompt, login with the password, the guest's address, Ctrl-].
        console_login(shell, stack, password)
        shell.sendline("ip -br addr show eth0")
        shell.expect(rf"eth0 +UP +{re.escape(ip)}/24")
        shell.expect(GUEST_PROMPT)
        # Take the guest's network down from inside; the console does not need it.
        shell.sendline("ip link set eth0 down")
        shell.expect(GUEST_PROMPT)
        leave_console(shell)

        # 4. status sees a guest that does not answer, and says to repair it on the console.
        text = status_until(st, stack, 1)
        assert re.search(r"guest IP +\S+ +no answer +DRIFT", text), text
        assert re.search(r"TCP 22 +open +closed +DRIFT", text), text
        assert f"heal:  macvtap-lab console --stack {stack} --guest {lab}-guest" in text

        # ... which works with the network down.
        console_login(shell, stack, password)
        shell.sendline(f"ip link set eth0 up && ip route replace default via 10.213.{third}.1")
        shell.expect(GUEST_PROMPT)
        leave_console(shell)
        assert "no drift" in status_until(st, stack, 0)

        # 5. The address put back on the container out of band: drift, healed by the
        #    command status prints, clean afterwards.
        subprocess.run(["docker", "exec", container, "ip", "addr", "add", f"{ip}/24", "dev",
                        "eth0"], check=True)
        text = status_until(st, stack, 1)
        assert re.search(r"address on container +no +yes +DRIFT", text), text
        heal = re.search(r"heal:  (.*pulumi up --refresh --yes --stack \S+)$", text, re.M)
        assert heal, text
        assert heal.group(1) == f".tools/bin/pulumi up --refresh --yes --stack {stack}"
        proc = subprocess.run(shlex.split(heal.group(1)), cwd=ROOT, env=st.env,
                              capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        text = status_until(st, stack, 0)
        assert re.search(r"address on container +no +no +ok", text), text

        # 6. A domain that is not running: console refuses, naming the stack and the fix.
        conn = libvirt.open(str(out["libvirt_uri"]))
        try:
            conn.lookupByName(str(out["domain_name"])).destroy()
        finally:
            conn.close()
        proc = lab_cmd(st, "console", "--stack", stack)
        assert proc.returncode != 0
        assert f"guest '{lab}-guest' of stack '{stack}' is not running (domain state: " \
               "shutoff)" in proc.stderr, proc.stderr
        assert f"pulumi up --refresh --yes --stack {stack}" in proc.stderr
        assert re.search(r"domain state +running +shutoff +DRIFT", status_until(st, stack, 1))
    finally:
        st.destroy()
        st.remove()
    assert probes_of(f"{lab}-libvirt") == []
