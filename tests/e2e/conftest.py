"""End-to-end plumbing: run the real Pulumi CLI (.tools/bin/pulumi) on a throw-away
local file backend, exactly as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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


@dataclass
class Cli:
    """`pulumi` in one project directory with its own backend and passphrase."""

    cwd: Path
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True, timeout: float = 900,
            stdin: str | None = None, label: str | None = None) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = subprocess.run([str(PULUMI), *args, "--non-interactive"], cwd=self.cwd,
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=stdin, check=False)
        elapsed = time.monotonic() - started
        if label:
            self.timings[label] = round(elapsed, 1)
        if check and proc.returncode != 0:
            raise AssertionError(f"pulumi {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
        return proc

    def outputs(self, show_secrets: bool = False) -> dict[str, object]:
        args = ["stack", "output", "--json"] + (["--show-secrets"] if show_secrets else [])
        return json.loads(self.run(*args).stdout)  # type: ignore[no-any-return]

    def set_secret(self, key: str, value: str) -> None:
        # The value goes through stdin, never argv.
        self.run("config", "set", "--secret", key, stdin=value)


def lab_cmd(cli: Cli, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`macvtap-lab ARGS` in the stack's project directory and environment, no terminal."""
    return subprocess.run([MVT, *args], cwd=cli.cwd, env=cli.env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


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


def make_cli(tmp: Path, project_dir: Path, stack: str, toolchain: str = "ours") -> Cli:
    require("pulumi", "docker")
    cli = Cli(project_dir, pulumi_env(tmp, toolchain))
    cli.run("stack", "init", stack)
    return cli


@pytest.fixture
def e2e_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("e2e")
