"""Thin adapter around Pulumi's Automation API: open a lab's stack and read it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from macvtap_provider.builders import stack_target
from macvtap_provider.builders.stack_target import StackTarget
from macvtap_provider.errors import StackError

log = logging.getLogger(__name__)


def _stderr(exc: auto.CommandError) -> str:
    """The engine's stderr from a failed command (never its stdout, which may hold
    decrypted values), trimmed for a message."""
    text = str(exc)
    _, _, err = text.partition(" stderr: ")
    return (err or text.splitlines()[-1] if text else "").strip()[-600:]


@contextlib.contextmanager
def translate_errors(what: str, target: StackTarget) -> Iterator[None]:
    """Map Automation API failures to StackError, naming the project and what to check."""
    try:
        yield
    except auto.CommandError as exc:
        raise StackError(
            f"{what} (project {target.project_dir}, engine {target.engine}): {_stderr(exc)}; "
            "check PULUMI_BACKEND_URL and PULUMI_CONFIG_PASSPHRASE[_FILE] (or `pulumi login`)"
        ) from exc
    except FileNotFoundError as exc:
        raise StackError(f"{what}: the Pulumi CLI {target.engine!r} was not found: install "
                         "Pulumi or run `make setup` in a macvtap-lab checkout") from exc


def locate(project_dir: Path | None, stack: str | None) -> StackTarget:
    """The target for `project_dir` (default: the nearest Pulumi project from here)."""
    start = (project_dir or Path.cwd()).resolve()
    found = stack_target.find_project_dir(start, Path.exists)
    return stack_target.resolve_target(found, stack, os.environ, Path.exists)


@dataclass
class LabStack:
    """One stack of a project, read through the Automation API's workspace.

    Every read names the stack (`--stack`), so the workspace's selected stack is left
    as it was, as `pulumi -s NAME` leaves it.
    """

    target: StackTarget
    workspace: auto.LocalWorkspace
    name: str

    def resources(self) -> list[dict[str, Any]]:
        """The state's resources, secrets decrypted (`pulumi stack export --show-secrets`):
        keep what is read from them out of logs and messages."""
        log.debug("pulumi stack export --stack %s", self.name)
        with translate_errors(f"reading the state of stack {self.name!r}", self.target):
            deployment = self.workspace.export_stack(self.name).deployment or {}
        return list(deployment.get("resources") or [])

    def outputs(self) -> dict[str, Any]:
        log.debug("pulumi stack output --stack %s", self.name)
        with translate_errors(f"reading the outputs of stack {self.name!r}", self.target):
            return {k: v.value for k, v in self.workspace.stack_outputs(self.name).items()}


def workspace(target: StackTarget) -> auto.LocalWorkspace:
    """An Automation API workspace on the target's project, engine and environment.

    Raises:
        auto.CommandError: the engine does not run.
    """
    command = auto.PulumiCommand(str(target.engine_root) if target.engine_root else None,
                                 skip_version_check=True)
    return auto.LocalWorkspace(work_dir=str(target.project_dir), env_vars=dict(target.env),
                               pulumi_command=command)


def set_secret(ws: auto.Workspace, stack: str, key: str, value: str) -> None:
    """`pulumi config set --secret KEY` with the value on stdin.

    The Automation API's `set_config` passes the value in argv (visible in `ps` and
    /proc/PID/cmdline while it runs): secrets go through stdin instead.

    Raises:
        StackError: the engine refused.
    """
    env = {**os.environ, **ws.env_vars}
    log.debug("pulumi config set --secret %s --stack %s (value on stdin)", key, stack)
    proc = subprocess.run(
        [ws.pulumi_command.command, "config", "set", "--secret", key, "--stack", stack,
         "--non-interactive"], input=value, text=True, capture_output=True, env=env,
        cwd=ws.work_dir, check=False)
    if proc.returncode != 0:
        raise StackError(f"setting secret {key!r} of stack {stack!r} failed "
                         f"({proc.returncode}): {proc.stderr.strip()[-600:]}")


def _engine_children() -> list[int]:
    """This process's children that run `pulumi` (the Automation API's engine runs)."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            comm = stat[stat.find("(") + 1:stat.rfind(")")]
            if int(stat[stat.rfind(")") + 2:].split()[1]) == me and comm.startswith("pulumi"):
                found.append(int(entry))
    return found


@contextlib.contextmanager
def interrupt_after(seconds: float) -> Iterator[threading.Event]:
    """Interrupt (SIGINT, as Ctrl-C does: the engine then records its state) every
    `pulumi` this process still runs after `seconds`; the Automation API has no timeout
    of its own, so its call then fails instead of hanging. Yields an event set when it
    fired."""
    fired = threading.Event()

    def interrupt() -> None:
        fired.set()
        for pid in _engine_children():
            log.warning("pulumi (pid %d) still runs after %.0fs: interrupting it", pid, seconds)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def open_stack(target: StackTarget) -> LabStack:
    """The target's stack: the named one, else the workspace's current one, else the
    only one.

    Raises:
        StackError: no such stack, none to choose, or the engine cannot read the project.
    """
    with translate_errors("opening the Pulumi project", target):
        ws = workspace(target)
        stacks = ws.list_stacks()
    current = next((s.name for s in stacks if s.current), None)
    name = stack_target.choose_stack(target.stack, current, [s.name for s in stacks],
                                     target.project_dir)
    return LabStack(target, ws, name)
