"""The serial-console login dialog against a real program on a pseudo-terminal that acts
like a guest's getty: a getty that restarts after the user name was typed (its input
flushed, a fresh prompt) gets the name again; one that keeps restarting is reported."""

from __future__ import annotations

import sys

import pytest

from macvtap_provider.adapters import console
from macvtap_provider.errors import ConsoleError

pytestmark = pytest.mark.unit

# A getty whose first `restarts` prompts forget the name typed at them (as when `login`
# times out and systemd starts the getty again), then a login that wants "pw-ok".
GETTY = """
import sys
restarts = int(sys.argv[1])
print("Escape character is ^]", flush=True)
while True:
    sys.stdout.write("\\r\\nguest login: "); sys.stdout.flush()
    user = sys.stdin.readline().strip()
    if not user:
        continue
    if restarts:
        restarts -= 1
        continue
    sys.stdout.write("Password: "); sys.stdout.flush()
    ok = sys.stdin.readline().strip() == "pw-ok"
    if ok:
        sys.stdout.write("root@guest:~# "); sys.stdout.flush()
        for line in sys.stdin:
            if line.startswith("export PS1="):
                sys.stdout.write(line.split("'")[1]); sys.stdout.flush()
            elif line.strip() == "exit":
                sys.exit(0)
    print("\\r\\nLogin incorrect", flush=True)
"""


@pytest.fixture(autouse=True)
def _short_password_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "PASSWORD_PROMPT_S", 1.0)


def login(restarts: int, password: str = "pw-ok") -> None:
    cmd = [sys.executable, "-c", GETTY, str(restarts)]
    with console.on_pty(cmd, timeout_s=20) as child:
        for _session in console._login(child, "guest", password, 20, "root"):
            pass


@pytest.mark.parametrize("restarts", [0, 1, console.LOGIN_ATTEMPTS - 1])
def test_a_getty_that_restarts_gets_the_user_name_again(restarts: int) -> None:
    # The empty lines typed to wake the getty queue stale prompts: the name typed again
    # at one of them would be taken as the password (and the login refused).
    login(restarts)


def test_a_getty_that_keeps_restarting_is_reported() -> None:
    with pytest.raises(ConsoleError, match="kept restarting"):
        login(console.LOGIN_ATTEMPTS)


def test_a_wrong_password_is_refused() -> None:
    with pytest.raises(ConsoleError, match="wrong root password"):
        login(0, "pw-bad")
