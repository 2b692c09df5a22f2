"""`pulumi import` of the lab's resources is refused with a clear message, and nothing
lands in the state."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import make_cli

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

KINDS = ("LabNetwork", "LibvirtContainer", "CustomizedImage", "MacvtapDomain", "GuestNetwork",
         "GeneratedPassword", "GuestCommand")


@pytest.mark.parametrize("kind", KINDS)
def test_import_is_refused_clearly(tmp_path: Path, kind: str) -> None:
    cli = make_cli(tmp_path, ROOT, f"imp{secrets.token_hex(3)}")
    cli.set_secret("rootPassword", "not-used-here-0")

    try:
        proc = cli.run("import", f"pulumi-python:dynamic/macvtap:{kind}",
                       f"imported-{kind.lower()}", "0123456789ab", "--yes", check=False)
        state = json.loads(cli.run("stack", "export").stdout)
    finally:
        cli.run("stack", "rm", "--yes", "--force")
    text = proc.stdout + proc.stderr

    assert proc.returncode != 0
    assert "`pulumi import` is not supported for dynamic resources" in text
    assert "Declare the resource in a stack and run `pulumi up`" in text
    assert "KeyError" not in text and "Traceback" not in text
    assert [r["type"] for r in state["deployment"].get("resources") or []
            if r["type"] != "pulumi:pulumi:Stack"] == []
