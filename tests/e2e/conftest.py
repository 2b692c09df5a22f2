"""End-to-end plumbing: real stacks on a throw-away local file backend, driven through
Pulumi's Automation API (`pulumi.automation`) on the project's engine (.tools/bin/pulumi).

What the API does not cover, or must not stand in for, runs `pulumi` exactly as a user
types it (`E2EStack.typed`, `pulumi_typed`): `pulumi new`, `pulumi import TYPE NAME ID`,
an `up` whose engine a test kills (it needs the engine's pid), `pulumi version`, and the
launch-contract checks of the stock toolchain.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from macvtap_provider.adapters import pulumi_stack
from macvtap_provider.builders.stack_target import StackTarget
from tests.conftest import ROOT, require

PULUMI = ROOT / ".tools" / "bin" / "pulumi"
#: How `pulumi` starts Python: "ours" (the project's language host and plugin) or
#: "stock" (tools/pulumi's reproduction of the official CLI's host and plugin script,
#: MACVTAP_LAB_STOCK=1: the official venv resolution, working directories and
#: environment, and the SDK's own `python -m pulumi.dynamic` server).
TOOLCHAINS = ("ours", "stock")
#: What gRPC prints when something forks the provider process while it serves.
FORK_NOISE = "skipping fork() handlers"
MVT = str(ROOT / ".venv" / "bin" / "macvtap-lab")
#: No engine command of a test runs longer than this (the Automation API has no timeout).
ENGINE_TIMEOUT_S = 900


def pulumi_env(tmp: Path, toolchain: str = "ours") -> dict[str, str]:
    """The environment of `pulumi` with its own backend, passphrase and home under `tmp`."""
    assert toolchain in TOOLCHAINS, toolchain
    backend = tmp / "backend"
    backend.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "PULUMI_BACKEND_URL": f"file://{backend}",
        "PULUMI_CONFIG_PASSPHRASE": "e2e-passphrase-not-a-secret",
        "PULUMI_HOME": str(tmp / "pulumi-home"),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    })
    env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
    if toolchain == "stock":
        env["MACVTAP_LAB_STOCK"] = "1"
        env.pop("PULUMI_PYTHON_CMD", None)  # the official CLI sets no interpreter
    return env


def pulumi_typed(cwd: Path, env: dict[str, str], *args: str, check: bool = True,
                 timeout: float = ENGINE_TIMEOUT_S,
                 stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`pulumi ARGS --non-interactive`, exactly as a user types it."""
    proc = subprocess.run([str(PULUMI), *args, "--non-interactive"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, input=stdin,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"pulumi {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    return proc


@contextlib.contextmanager
def engine_deadline(seconds: float, what: str) -> Iterator[None]:
    """An engine command still running after `seconds` is interrupted (as Ctrl-C does) and
    the test fails, instead of hanging the test run."""
    with pulumi_stack.interrupt_after(seconds) as fired:
        try:
            yield
        except auto.CommandError as exc:
            if fired.is_set():
                raise AssertionError(f"{what} did not finish within {seconds:.0f}s") from exc
            raise


@dataclass
class E2EStack:
    """A stack on its own backend: `stack` is the Automation API's handle; `env` is the
    whole environment its engine runs with (for `typed` and for `macvtap-lab`)."""

    stack: auto.Stack
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.stack.name

    @property
    def cwd(self) -> Path:
        return Path(self.stack.workspace.work_dir)

    @contextlib.contextmanager
    def timed(self, label: str | None = None,
              timeout: float = ENGINE_TIMEOUT_S) -> Iterator[None]:
        """Time an engine command (recorded under `label`), interrupted after `timeout`."""
        started = time.monotonic()
        with engine_deadline(timeout, label or "a pulumi command"):
            yield
        if label:
            self.timings[label] = round(time.monotonic() - started, 1)

    def up(self, label: str | None = None, **kwargs: Any) -> auto.UpResult:
        with self.timed(label):
            return self.stack.up(**kwargs)

    def preview(self, label: str | None = None, **kwargs: Any) -> auto.PreviewResult:
        with self.timed(label):
            return self.stack.preview(**kwargs)

    def refresh(self, label: str | None = None, **kwargs: Any) -> auto.RefreshResult:
        with self.timed(label):
            return self.stack.refresh(**kwargs)

    def destroy(self, label: str | None = None, **kwargs: Any) -> auto.DestroyResult:
        with self.timed(label):
            return self.stack.destroy(**kwargs)

    def outputs(self) -> dict[str, Any]:
        """The stack's outputs, secrets decrypted (the API always decrypts them)."""
        return {key: out.value for key, out in self.stack.outputs().items()}

    def secret_outputs(self) -> set[str]:
        return {key for key, out in self.stack.outputs().items() if out.secret}

    def config(self, key: str, value: str) -> None:
        self.stack.set_config(key, auto.ConfigValue(value))

    def set_secret(self, key: str, value: str) -> None:
        # Through stdin: the API's set_config would put the value in argv.
        pulumi_stack.set_secret(self.stack.workspace, self.name, key, value)

    def setenv(self, key: str, value: str | None) -> None:
        """Set (None: unset) a variable for the engine, through the API and typed alike."""
        ws_env = self.stack.workspace.env_vars
        if value is None:
            self.env.pop(key, None)
            ws_env.pop(key, None)  # type: ignore[attr-defined]
        else:
            self.env[key] = ws_env[key] = value  # type: ignore[index]

    def resources(self) -> list[dict[str, Any]]:
        """The state's resources (exported with secrets decrypted, as the API does)."""
        deployment = self.stack.export_stack().deployment or {}
        return list(deployment.get("resources") or [])

    def state_at_rest(self) -> str:
        """Every file of the stack's backend (checkpoints, history, backups), as stored."""
        backend = Path(self.env["PULUMI_BACKEND_URL"].removeprefix("file://"))
        return "\n".join(p.read_text(errors="replace") for p in sorted(backend.rglob("*"))
                         if p.is_file())

    def typed(self, *args: str, check: bool = True, timeout: float = ENGINE_TIMEOUT_S,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`pulumi ARGS --stack NAME`, exactly as a user types it."""
        return pulumi_typed(self.cwd, self.env, *args, "--stack", self.name, check=check,
                            timeout=timeout, stdin=stdin)

    def remove(self) -> None:
        self.stack.workspace.remove_stack(self.name, force=True)


def make_stack(tmp: Path, project_dir: Path, stack: str, toolchain: str = "ours") -> E2EStack:
    """A new stack of `project_dir` on a backend under `tmp`, through the Automation API."""
    require("pulumi", "docker")
    env = pulumi_env(tmp, toolchain)
    added = {k: v for k, v in env.items() if os.environ.get(k) != v}
    # The API only adds variables: an empty value unsets one for the engine.
    added.update({k: "" for k in os.environ if k not in env})
    ws = pulumi_stack.workspace(StackTarget(project_dir, stack, engine_root=PULUMI.parent.parent,
                                            env=added))
    return E2EStack(auto.Stack.create(stack, ws), env)


def ops_of(events: list[auto.EngineEvent], by_type: bool = False) -> dict[str, str]:
    """resource name (or type) -> the operation the engine planned or did, as `pulumi
    preview --json` lists its steps: "same" and provider resources left out, a
    replacement's three steps (create-replacement, replace, delete-replaced) as "replace"."""
    ops: dict[str, str] = {}
    for event in events:
        pre = event.resource_pre_event
        if pre is None or pre.metadata.type.startswith("pulumi:providers:"):
            continue
        op = str(getattr(pre.metadata.op, "value", pre.metadata.op))
        name = pre.metadata.type if by_type else pre.metadata.urn.rsplit("::", 1)[1]
        if op in ("create-replacement", "delete-replaced", "replace"):
            op = "replace"
        if op != "same":
            ops[name] = op
    return ops


def planned(lab: E2EStack, by_type: bool = False) -> dict[str, str]:
    """What `preview` plans, by resource name (or type); see `ops_of`."""
    events: list[auto.EngineEvent] = []
    lab.preview(on_event=events.append)
    return ops_of(events, by_type)


def refused(lab: E2EStack, what: str = "preview", timeout: float = ENGINE_TIMEOUT_S,
            **kwargs: Any) -> str:
    """Run `preview` (or `refresh`, `up`), which must fail; what the engine printed."""
    with pytest.raises(auto.CommandError) as failed, lab.timed(timeout=timeout):
        getattr(lab.stack, what)(**kwargs)
    return str(failed.value)


def lab_cmd(lab: E2EStack, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`macvtap-lab ARGS` in the stack's project directory and environment, no terminal."""
    return subprocess.run([MVT, *args], cwd=lab.cwd, env=lab.env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture
def e2e_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("e2e")
