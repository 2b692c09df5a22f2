"""Thin pexpect adapter: run a program on a pseudo-terminal, answer its password prompt
(typed on the terminal: never in argv, an environment or a log), then hand the terminal
to the user or relay the program's output."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import pexpect

from macvtap_provider.errors import ConsoleError

log = logging.getLogger(__name__)

PASSWORD_PROMPT = re.compile(rb"[Pp]assword: ?$", re.M)


def _size() -> tuple[int, int]:
    cols, rows = shutil.get_terminal_size((80, 24))
    return rows, cols


@contextlib.contextmanager
def _follow_resizes(child: pexpect.spawn) -> Iterator[None]:
    """Pass the user's window size on to the program while it runs interactively."""
    def resize(_signum: int, _frame: Any) -> None:
        with contextlib.suppress(OSError):
            child.setwinsize(*_size())

    previous = signal.signal(signal.SIGWINCH, resize)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


def _relay(child: pexpect.spawn, out: BinaryIO) -> None:
    """Copy the program's output until it ends (terminal CRLF turned back into LF)."""
    while True:
        try:
            chunk: bytes = child.read_nonblocking(65536, timeout=None)
        except pexpect.EOF:
            return
        out.write(chunk.replace(b"\r\n", b"\n"))
        out.flush()


#: Drives the program before the hand-over; returns what the user should see of it.
Login = Callable[[pexpect.spawn], bytes]


def password_answer(password: str, what: str, timeout_s: float = 60) -> Login:
    """A login step that types `password` at the program's first password prompt.

    Raises (when run):
        ConsoleError: the program ended or stalled before asking.
    """
    def answer(child: pexpect.spawn) -> bytes:
        idx = child.expect([PASSWORD_PROMPT, pexpect.EOF, pexpect.TIMEOUT], timeout=timeout_s)
        if idx == 1:
            # It ended before asking (e.g. connection refused): show why.
            return child.before or b""
        if idx == 2:
            raise ConsoleError(f"{what}: no password prompt within {timeout_s:.0f}s")
        child.sendline(password)
        # The program ends the hidden input with a newline of its own: not output.
        with contextlib.suppress(pexpect.TIMEOUT, pexpect.EOF):
            child.expect_exact(b"\n", timeout=timeout_s)
        return b""
    return answer


def run(argv: list[str], login: Login | None = None, interactive: bool | None = None,
        out: BinaryIO | None = None) -> int:
    """Run `argv` on a pseudo-terminal and return its exit status.

    Args:
        argv: the program and its arguments (no secret in them).
        login: a step that drives the program first (e.g. `password_answer`).
        interactive: hand the terminal to the user (default: when stdin is a terminal);
            otherwise the program's output is relayed to `out` until it ends.
        out: where relayed output goes (default: stdout).
    """
    interactive = sys.stdin.isatty() if interactive is None else interactive
    out = out or sys.stdout.buffer
    log.debug("spawn %s", " ".join(argv))
    child = pexpect.spawn(argv[0], argv[1:], echo=False, dimensions=_size())
    try:
        pending = login(child) if login is not None else b""
        pending += child.buffer
        child.buffer = b""
        if interactive:
            sys.stdout.buffer.write(pending)
            sys.stdout.buffer.flush()
            if child.isalive():
                with _follow_resizes(child):
                    # None: Ctrl-] and every other key reach the program.
                    child.interact(escape_character=None)
        else:
            out.write(pending.replace(b"\r\n", b"\n"))
            _relay(child, out)
    finally:
        child.close()
    if child.signalstatus is not None:
        return 128 + int(child.signalstatus)
    return int(child.exitstatus or 0)


def require_terminal(what: str) -> None:
    """Refuse, before any side effect, when stdin is not a terminal."""
    if not os.isatty(0):
        raise ConsoleError(f"{what} needs a terminal: run it in an interactive shell "
                           "(stdin is not a tty)")
