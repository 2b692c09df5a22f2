"""`pulumi import` of the lab's resources is refused with a clear message, and nothing
lands in the state.

Under the official CLI's plugin (the SDK's own server) no code of ours runs during an
import (it runs no program, and the server fails before it unpickles anything), so the
refusal cannot be ours there: the SDK's `KeyError: '__provider'` ends it, still with
nothing in the state. The README says so; the stock case checks that it still holds."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import E2EStack, make_stack

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

KINDS = ("LabNetwork", "LibvirtContainer", "CustomizedImage", "MacvtapDomain", "GuestNetwork",
         "GeneratedPassword", "GuestCommand")


def try_import(tmp_path: Path, kind: str, toolchain: str) -> tuple[int, str, list[str]]:
    """(exit status, output, resource types in the state) of one `pulumi import`."""
    st: E2EStack = make_stack(tmp_path, ROOT, f"imp{secrets.token_hex(3)}", toolchain)
    st.set_secret("rootPassword", "not-used-here-0")
    try:
        # Typed as the user types it: the refusal they read is the point (the API's
        # import_resources goes through `pulumi import --file`, another path).
        proc = st.typed("import", f"pulumi-python:dynamic/macvtap:{kind}",
                        f"imported-{kind.lower()}", "0123456789ab", "--yes", check=False)
        resources = st.resources()
    finally:
        st.remove()
    types = [r["type"] for r in resources if r["type"] != "pulumi:pulumi:Stack"]
    return proc.returncode, proc.stdout + proc.stderr, types


@pytest.mark.parametrize("kind", KINDS)
def test_import_is_refused_clearly(tmp_path: Path, kind: str) -> None:
    code, text, types = try_import(tmp_path, kind, "ours")
    assert code != 0
    assert "`pulumi import` is not supported for dynamic resources" in text
    assert "Declare the resource in a stack and run `pulumi up`" in text
    assert "KeyError" not in text and "Traceback" not in text
    assert types == []


def test_import_under_the_stock_server_fails_as_documented(tmp_path: Path) -> None:
    code, text, types = try_import(tmp_path, "LabNetwork", "stock")
    assert code != 0
    assert "KeyError: '__provider'" in text
    assert types == []
