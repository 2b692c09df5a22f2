"""Thin pexpect adapter: log in on a guest's serial console through `virsh console`."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import termios
import time
from collections.abc import Callable, Iterator

import pexpect
from pexpect.fdpexpect import fdspawn
from pexpect.spawnbase import SpawnBase

from macvtap_provider.errors import ConsoleError, LabTimeoutError

log = logging.getLogger(__name__)

PROMPT = "MVTLAB# "
_LOGIN = re.compile(rb"login: ?$", re.M)
#: The same prompt as the last thing on the console (not merely at a line's end).
_AT_LOGIN = re.compile(rb"login: ?$")


class SerialSession:
    """A logged-in root shell on a serial console. Never logs what it types."""

    def __init__(self, child: SpawnBase) -> None:
        self._child = child

    def run(self, command: str, timeout_s: float = 30) -> tuple[int, str]:
        """Run one shell command; returns (exit status, output)."""
        log.debug("console: %s", command)
        marker = f"__RC_{int(time.monotonic() * 1000)}__"
        self._child.sendline(f"{command}; echo {marker}$?")
        try:
            self._child.expect(re.escape(marker) + r"(\d+)", timeout=timeout_s)
        except (pexpect.TIMEOUT, pexpect.EOF) as exc:
            raise ConsoleError(f"console command did not finish in {timeout_s:.0f}s: {command}") from exc
        # The tty does not echo (stty -echo at login): `before` is the command's output.
        output = self._child.before.decode(errors="replace").replace("\r", "")
        rc = int(self._child.match.group(1))
        self._child.expect_exact(PROMPT, timeout=timeout_s)
        return rc, output.strip()

    def check(self, command: str, timeout_s: float = 30) -> str:
        rc, out = self.run(command, timeout_s)
        if rc != 0:
            raise ConsoleError(f"`{command}` failed in the guest (exit {rc}): {out[-300:]}")
        return out


_SHELL = re.compile(rb"[#$] ?$", re.M)


def _wait_for_login(child: SpawnBase, domain: str, deadline: float) -> int:
    """Wake the getty until it answers (boot may still be running): 0 at a login
    prompt, 1 at a shell prompt."""
    while True:
        child.sendline("")
        idx = int(child.expect([_LOGIN, _SHELL, pexpect.TIMEOUT], timeout=5))
        if idx in (0, 1):
            return idx
        if time.monotonic() > deadline:
            raise LabTimeoutError(
                f"domain {domain!r}: no login prompt on the serial console in time; check "
                "the guest boots (console=ttyS0 in its kernel command line, cloud-init "
                "disabled)")


#: How often the user name is typed in all, and how long each wait for "Password:" is.
LOGIN_ATTEMPTS = 3
PASSWORD_PROMPT_S = 30.0


def _log_in(child: SpawnBase, domain: str, user: str, password: str) -> None:
    """Answer the login prompt; the password is typed on the console only.

    A getty that restarts just then (an earlier `login` timing out after the guest's
    LOGIN_TIMEOUT, or systemd starting the getty again late in boot) flushes what was
    typed and shows a fresh prompt. The name is typed again only once no password prompt
    came in time and the console ends at a login prompt: a prompt already queued when the
    name was typed must not take the name again as the password.
    """
    for _ in range(LOGIN_ATTEMPTS):
        child.sendline(user)
        if child.expect(["assword:", pexpect.TIMEOUT], timeout=PASSWORD_PROMPT_S) == 0:
            break
        if not _AT_LOGIN.search(child.before or b""):
            raise LabTimeoutError(f"domain {domain!r}: no password prompt on the serial "
                                  f"console {PASSWORD_PROMPT_S:.0f}s after the user name")
        log.debug("domain %s: the getty forgot the user name (a fresh login prompt); typing "
                  "it again", domain)
    else:
        raise ConsoleError(f"domain {domain!r}: the serial console's getty kept restarting "
                           "instead of asking for the password; look at the guest's console "
                           "(`macvtap-lab console`) for what restarts it")
    child.sendline(password)
    if child.expect([_SHELL, "Login incorrect", _LOGIN], timeout=60) != 0:
        raise ConsoleError(f"domain {domain!r}: {user} login on the serial console was "
                           "refused (wrong root password?)")


@contextlib.contextmanager
def on_pty(cmd: list[str], timeout_s: float) -> Iterator[fdspawn]:
    """Run `cmd` on a new pseudo-terminal (no echo) and drive it with pexpect.

    pexpect.spawn forks this process (pty.fork): in the gRPC provider process that
    prints gRPC's "skipping fork() handlers" into the user's output. subprocess starts
    the command without running fork handlers; a terminal on stdin is all `virsh
    console` asks for (it need not be the controlling one).
    """
    primary, secondary = os.openpty()
    try:
        attrs = termios.tcgetattr(secondary)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(secondary, termios.TCSANOW, attrs)
        proc = subprocess.Popen(cmd, stdin=secondary, stdout=secondary, stderr=secondary,
                                start_new_session=True)
    except BaseException:
        os.close(primary)
        raise
    finally:
        os.close(secondary)
    child = fdspawn(primary, timeout=timeout_s)
    try:
        yield child
    finally:
        with contextlib.suppress(OSError):
            child.close()
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def serial_login(uri: str, domain: str, password: str, timeout_s: float = 180,
                 user: str = "root") -> Iterator[SerialSession]:
    """Attach to `domain`'s console, wait for the login prompt, log in as root.

    The password is sent on the console (never in argv or logs). Boot under TCG
    takes ~20 s to the prompt; `timeout_s` covers boot plus login.
    """
    cmd = ["virsh", "-c", uri, "console", domain, "--force"]
    log.debug("spawn %s", " ".join(cmd))
    with on_pty(cmd, timeout_s) as child:
        yield from _login(child, domain, password, timeout_s, user)


def _login(child: SpawnBase, domain: str, password: str, timeout_s: float,
           user: str) -> Iterator[SerialSession]:
    deadline = time.monotonic() + timeout_s
    try:
        child.expect_exact("Escape character", timeout=30)
        if _wait_for_login(child, domain, deadline) == 1:
            # Already a shell (an earlier session stayed logged in): log out first.
            child.sendline("exit")
            child.expect(_LOGIN, timeout=30)
        _log_in(child, domain, user, password)
        child.sendline(f"export PS1='{PROMPT}' TERM=dumb; stty -echo")
        child.expect_exact(PROMPT, timeout=30)
        yield SerialSession(child)
        child.sendline("exit")
    except pexpect.EOF as exc:
        raise ConsoleError(f"domain {domain!r}: the console closed (is the domain running?): "
                           f"{(child.before or b'').decode(errors='replace')[-200:]}") from exc
    except pexpect.TIMEOUT as exc:
        raise LabTimeoutError(f"domain {domain!r}: the serial console stopped answering") from exc
    finally:
        with contextlib.suppress(Exception):
            child.send(b"\x1d")  # Ctrl-]: detach from the console


#: Noise virsh prints on a terminal when no polkit agent can start (root needs none).
_POLKIT_NOISE = re.compile(rb"^Authorization not available\..*\r?\n?", re.M)


def attach_step(domain: str, password: str | None = None, timeout_s: float = 180,
                user: str = "root") -> Callable[[pexpect.spawn], bytes]:
    """A step for `terminal.run` on `virsh console`: wait until virsh is attached and,
    with a password, log in as `user` (typed on the console, never in argv or logs).
    Returns what virsh printed, for the user.

    Raises (when run):
        LabTimeoutError: no login prompt in time.
        ConsoleError: the console closed or the login was refused.
    """
    def step(child: pexpect.spawn) -> bytes:
        try:
            if child.expect([re.compile(rb"Escape character.*\n"), pexpect.EOF],
                            timeout=30) == 1:
                return _POLKIT_NOISE.sub(b"", child.before or b"")  # virsh's own error
            shown = _POLKIT_NOISE.sub(b"", child.before or b"") + (child.after or b"")
            if password is None:
                return shown
            if _wait_for_login(child, domain, time.monotonic() + timeout_s) == 1:
                return shown  # a shell is already open on the console
            _log_in(child, domain, user, password)
            child.sendline("")  # a fresh prompt for the user
            return shown
        except pexpect.EOF as exc:
            raise ConsoleError(f"domain {domain!r}: the console closed: "
                               f"{(child.before or b'').decode(errors='replace')[-200:]}") from exc
    return step
