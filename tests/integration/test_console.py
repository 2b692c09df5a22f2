"""The serial-console adapter against a stand-in console (a getty that execs a shell):
login, commands and their exit codes, a refused password, and no fork of this process
(a fork in the gRPC provider process prints gRPC's "skipping fork() handlers")."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

from macvtap_provider.adapters import console
from macvtap_provider.errors import ConsoleError

_FORKS: list[int] = []
os.register_at_fork(before=lambda: _FORKS.append(os.getpid()))

FAKE_CONSOLE = r'''
import os, sys
def say(text):
    sys.stdout.write(text)
    sys.stdout.flush()
say("Connected to domain 'fake'\r\nEscape character is ^] (Ctrl + ])\r\n")
sys.stdin.readline()
while True:
    say("\r\nfake login: ")
    user = sys.stdin.readline().strip()
    say("Password: ")
    if sys.stdin.readline().strip() == "right" and user == "root":
        break
    say("\r\nLogin incorrect\r\n")
say("root@fake:~# ")
os.execvp("sh", ["sh", "-i"])
'''

login = contextlib.contextmanager(console._login)


def test_login_and_commands_without_forking(tmp_path: Path) -> None:
    fake = tmp_path / "console.py"
    fake.write_text(FAKE_CONSOLE)
    before = len(_FORKS)
    with console.on_pty([sys.executable, str(fake)], 30) as child, \
            login(child, "fake", "right", 30, "root") as shell:
        assert shell.run("echo hello") == (0, "hello")
        assert shell.run("false")[0] == 1
        with pytest.raises(ConsoleError, match="exit 3"):
            shell.check("exit_with() { return 3; }; exit_with")
    assert len(_FORKS) == before


def test_wrong_password_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "console.py"
    fake.write_text(FAKE_CONSOLE)
    with pytest.raises(ConsoleError, match="wrong root password"), \
            console.on_pty([sys.executable, str(fake)], 30) as child, \
            login(child, "fake", "wrong", 30, "root"):
        pass
