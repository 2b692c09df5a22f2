"""The engine, our language host and the dynamic-provider plugin work together."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, require
from tests.e2e.conftest import PULUMI, make_cli

pytestmark = pytest.mark.e2e

PROGRAM = '''
import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

class Echo(ResourceProvider):
    def create(self, props):
        return CreateResult("echo-1", {"text": props["text"], "length": len(props["text"])})

class EchoResource(Resource):
    text: pulumi.Output[str]
    length: pulumi.Output[int]
    def __init__(self, name, text):
        super().__init__(Echo(), name, {"text": text, "length": None})

echo = EchoResource("one", pulumi.Config().get("text") or "hello")
pulumi.export("length", echo.length)
'''


def test_pinned_version() -> None:
    require("pulumi")
    version = (ROOT / "tools" / "pulumi" / "VERSION").read_text().strip()
    out = subprocess.run([str(PULUMI), "version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"v{version}"


def test_one_resource_dynamic_program(e2e_tmp: Path) -> None:
    project = e2e_tmp / "echo"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: echo\nruntime: python\n")
    (project / "__main__.py").write_text(PROGRAM)
    cli = make_cli(e2e_tmp, project, "dev")
    preview = cli.run("preview")
    assert "+ 2 to create" in preview.stdout
    cli.run("up", "--yes", "--skip-preview")
    assert cli.outputs()["length"] == 5
    cli.run("config", "set", "text", "hello world")
    assert "~ 1 to update" in cli.run("preview").stdout
    cli.run("destroy", "--yes", "--skip-preview")


def test_program_error_is_reported(e2e_tmp: Path) -> None:
    project = e2e_tmp / "broken"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: broken\nruntime: python\n")
    (project / "__main__.py").write_text("raise RuntimeError('boom from the program')\n")
    cli = make_cli(e2e_tmp, project, "dev")
    proc = cli.run("preview", check=False)
    assert proc.returncode != 0
    assert "boom from the program" in proc.stdout + proc.stderr
