"""The pexpect terminal adapter against a real program on a pseudo-terminal: the password
is typed at the prompt (not in argv), output is relayed, the exit status comes back."""

from __future__ import annotations

import io
import sys

import pytest

from macvtap_provider.adapters import terminal
from macvtap_provider.errors import ConsoleError

pytestmark = pytest.mark.unit

# Asks like ssh does (hidden input on the terminal), then exits with a status of its own.
ASKER = ("import getpass, sys\n"
         "pw = getpass.getpass('root@10.0.0.10\\'s password: ')\n"
         "print('argv:', sys.argv[1:]); print('line one'); print('line two')\n"
         "sys.exit(0 if pw == 'hunter2-pw' else 5)\n")


def run(password: str | None, script: str = ASKER, *args: str) -> tuple[int, str]:
    out = io.BytesIO()
    login = None if password is None else terminal.password_answer(password, "test", 10)
    rc = terminal.run([sys.executable, "-c", script, *args], login=login, interactive=False,
                      out=out)
    return rc, out.getvalue().decode()


def test_password_typed_at_the_prompt_and_output_relayed() -> None:
    rc, text = run("hunter2-pw", ASKER, "visible-arg")
    assert rc == 0
    assert text == "argv: ['visible-arg']\nline one\nline two\n"
    assert "hunter2" not in text


def test_the_programs_exit_status_comes_back() -> None:
    assert run("wrong")[0] == 5
    assert run(None, "import sys; print('hi'); sys.exit(7)") == (7, "hi\n")


def test_a_program_that_ends_before_asking_shows_why() -> None:
    rc, text = run("pw", "import sys; print('connection refused'); sys.exit(255)")
    assert (rc, text) == (255, "connection refused\n")


def test_a_program_that_never_asks_is_reported() -> None:
    with pytest.raises(ConsoleError, match="no password prompt within 1s"):
        terminal.run([sys.executable, "-c", "import time; time.sleep(30)"],
                     login=terminal.password_answer("pw", "test", 1), interactive=False,
                     out=io.BytesIO())
