"""Every Pulumi project in the repository finds the venv under both contracts.

The official language host resolves a relative `virtualenv` option against the project
root (the directory of Pulumi.yaml); the official dynamic-provider plugin script,
started by the engine in the program directory (`main:`), resolves it against that
directory. Both must reach the repository's venv.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.unit

PROJECTS = sorted(p.parent for p in [ROOT / "Pulumi.yaml", *ROOT.glob("stacks/*/Pulumi.yaml"),
                                      *ROOT.glob("examples/*/Pulumi.yaml")])


def venv_option(project: Path) -> tuple[str, Path]:
    """(virtualenv option, program directory) of a project."""
    data = yaml.safe_load((project / "Pulumi.yaml").read_text())
    runtime = data["runtime"]
    assert isinstance(runtime, dict), f"{project}: runtime options missing"
    return runtime["options"]["virtualenv"], project / data.get("main", ".")


@pytest.mark.parametrize("project", PROJECTS, ids=lambda p: str(p.relative_to(ROOT)) or "root")
def test_host_and_plugin_resolve_the_same_venv(project: Path) -> None:
    option, program_dir = venv_option(project)
    by_host = project / option
    by_plugin = program_dir / option
    # The repository's venv, whether or not `make setup` has made it yet.
    assert os.path.realpath(by_host) == os.path.realpath(ROOT / ".venv")
    assert os.path.realpath(by_plugin) == os.path.realpath(ROOT / ".venv")


def test_every_project_is_covered() -> None:
    names = {str(p.relative_to(ROOT)) for p in PROJECTS}
    assert {".", "stacks/multi"} <= names and any(n.startswith("examples/") for n in names)
