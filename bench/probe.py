"""Observe a guest as a user would: ssh from a probe container, the serial login prompt."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import time

import pexpect

from bench.common import LABEL, BenchError

LOGIN_RE = re.compile(rb"login: ?$", re.M)
SSH_ATTEMPT_TIMEOUT_S = 40


def ssh_once(network: str, image: str, address: str, password: str,
             command: str = "true") -> tuple[int, str]:
    """One `ssh root@address command` from a throw-away container on the lab network.

    The password travels in the environment (SSHPASS), never in argv.
    """
    cmd = ["docker", "run", "--rm", "--network", network, "--label", f"{LABEL}=probe",
           "--entrypoint", "sshpass", "-e", "SSHPASS", image, "-e", "ssh",
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
           "-o", "ConnectTimeout=5", "-o", "NumberOfPasswordPrompts=1", "-o", "LogLevel=ERROR",
           f"root@{address}", command]
    env = dict(os.environ, SSHPASS=password)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=SSH_ATTEMPT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return 124, "ssh attempt timed out"
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def wait_for_ssh(network: str, image: str, address: str, password: str,
                 timeout_s: float = 240) -> float:
    """Retry ssh until it succeeds; returns the monotonic time of the first success."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        rc, out = ssh_once(network, image, address, password)
        if rc == 0:
            return time.monotonic()
        last = out[-300:]
        time.sleep(0.5)
    raise BenchError(f"ssh root@{address} on {network} did not succeed in {timeout_s:.0f}s: "
                     f"{last}")


class ConsoleWatcher(threading.Thread):
    """Attaches to a domain's serial console and notes when the getty's `login:` appears.

    Passive: it types nothing unless nothing was seen for `nudge_after_s` (then Enter,
    as a person would), so a guest whose prompt was missed is still noticed.
    """

    def __init__(self, uri: str, domain: str, timeout_s: float = 240,
                 nudge_after_s: float = 90) -> None:
        super().__init__(name=f"console-{domain}", daemon=True)
        self.uri, self.domain = uri, domain
        self.timeout_s, self.nudge_after_s = timeout_s, nudge_after_s
        self.seen_at: float | None = None
        self.error = ""
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)

    def run(self) -> None:
        started = time.monotonic()
        child = pexpect.spawn("virsh", ["-c", self.uri, "console", self.domain], echo=False,
                              timeout=5)
        try:
            child.expect_exact("Escape character", timeout=30)
            while not self._stop_event.is_set():
                waited = time.monotonic() - started
                if waited > self.timeout_s:
                    self.error = f"no login prompt within {self.timeout_s:.0f}s"
                    return
                idx = child.expect([LOGIN_RE, pexpect.TIMEOUT], timeout=0.5)
                if idx == 0:
                    self.seen_at = time.monotonic()
                    return
                if waited > self.nudge_after_s:
                    child.sendline("")
        except (pexpect.EOF, pexpect.TIMEOUT) as exc:
            self.error = f"console closed: {type(exc).__name__}"
        finally:
            with contextlib.suppress(Exception):
                child.sendcontrol("]")
            child.close(force=True)
