"""The engine, our language host and the dynamic-provider plugin work together."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pulumi import automation as auto

from tests.conftest import ROOT, require
from tests.e2e.conftest import PULUMI, make_stack

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
    st = make_stack(e2e_tmp, project, "dev")
    preview = st.preview()
    assert "+ 2 to create" in preview.stdout
    assert preview.change_summary == {"create": 2}
    st.up()
    assert st.outputs()["length"] == 5
    st.config("text", "hello world")
    assert "~ 1 to update" in st.preview().stdout
    st.destroy()


def test_program_error_is_reported(e2e_tmp: Path) -> None:
    project = e2e_tmp / "broken"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: broken\nruntime: python\n")
    (project / "__main__.py").write_text("raise RuntimeError('boom from the program')\n")
    st = make_stack(e2e_tmp, project, "dev")
    with pytest.raises(auto.CommandError) as failed:
        st.preview()
    assert "boom from the program" in str(failed.value)


CONTRACT = '''
import os, sys
import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

class Where(ResourceProvider):
    def create(self, props):
        with open(f"/proc/{os.getppid()}/comm") as comm:
            parent = comm.read().strip()
        return CreateResult("where-1", {"cwd": os.getcwd(), "python": sys.executable,
                                        "parent": parent})

class WhereResource(Resource):
    cwd: pulumi.Output[str]
    python: pulumi.Output[str]
    parent: pulumi.Output[str]
    def __init__(self, name):
        super().__init__(Where(), name, {"cwd": None, "python": None, "parent": None})

where = WhereResource("where")
pulumi.export("program", {"cwd": os.getcwd(), "python": sys.executable,
                          "virtual_env": os.environ.get("VIRTUAL_ENV"),
                          "env": sorted(k for k in os.environ if k in OURS_ONLY)})
pulumi.export("provider", {"cwd": where.cwd, "python": where.python, "parent": where.parent})
'''
#: Variables our language host adds for the program; the official one sets none of them.
OURS_ONLY = ("PULUMI_PROJECT", "PULUMI_STACK", "PULUMI_DRY_RUN", "PULUMI_MONITOR", "PULUMI_ENGINE")


def test_stock_launch_contract(e2e_tmp: Path) -> None:
    """MACVTAP_LAB_STOCK=1 starts Python as the official CLI does: the program runs in the
    `main:` directory on the venv resolved from the project root, with no variables of
    ours; the provider plugin runs in the same directory on the venv resolved from there,
    as a child of the plugin's shell script. A venv missing where the plugin looks fails
    the run with the official script's message (the issue's first failure)."""
    project = e2e_tmp / "contract"
    app = project / "app"
    app.mkdir(parents=True)
    (project / "Pulumi.yaml").write_text(
        "name: contract\nmain: app/\nruntime:\n  name: python\n  options:\n    virtualenv: venv\n")
    (app / "__main__.py").write_text(f"OURS_ONLY = {OURS_ONLY!r}\n{CONTRACT}")
    (project / "venv").symlink_to(ROOT / ".venv")
    (app / "venv").symlink_to(ROOT / ".venv")
    # The launch contract is what the official CLI does when a user types `pulumi up`:
    # typed, not through the Automation API (which adds variables of its own).
    st = make_stack(e2e_tmp, project, "dev", toolchain="stock")
    st.typed("up", "--yes", "--skip-preview")
    out = st.outputs()
    assert out["program"] == {"cwd": str(app), "python": str(project / "venv" / "bin" / "python"),
                              "virtual_env": str(project / "venv"), "env": []}
    # The parent is the shell running the plugin script (its comm: the script's name).
    assert out["provider"] == {"cwd": str(app), "python": str(app / "venv" / "bin" / "python"),
                               "parent": "pulumi-resource"}
    st.typed("destroy", "--yes", "--skip-preview")

    (app / "venv").unlink()
    proc = st.typed("up", "--yes", "--skip-preview", check=False)
    assert proc.returncode != 0
    assert (f"The 'virtualenv' option in Pulumi.yaml is set to \"{app / 'venv'}\", but "
            f"\"{app / 'venv'}\" doesn't exist") in proc.stdout + proc.stderr
