"""The public API: what `import macvtap_provider as mvt` gives, lazily, and the README's
reference generated from it is current."""

from __future__ import annotations

import subprocess
import sys

import pytest

import macvtap_provider as mvt
from tests.conftest import ROOT

pytestmark = pytest.mark.unit


def test_all_lists_every_export() -> None:
    assert sorted(mvt.__all__) == sorted(mvt._EXPORTS)
    for name in mvt.__all__:
        assert getattr(mvt, name) is not None
    assert set(mvt.__all__) <= set(dir(mvt))


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = mvt.Nope  # type: ignore[attr-defined]


def test_import_loads_nothing_heavy() -> None:
    """`import macvtap_provider` alone loads no resource module; a program that declares a
    whole lab loads no SDK (docker, libvirt, pyroute2, guestfs, pexpect's spawn...): those
    come with the first provider operation, in the plugin process."""
    code = (
        "import sys, macvtap_provider as mvt\n"
        "assert not [m for m in sys.modules if m.startswith('macvtap_provider.')], "
        "sorted(m for m in sys.modules if m.startswith('macvtap_provider.'))\n"
        "mvt.Lab, mvt.Guest, mvt.GuestCommand\n"
        "heavy = [m for m in ('docker', 'libvirt', 'pyroute2', 'guestfs', 'requests') "
        "if m in sys.modules]\n"
        "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_readme_reference_is_current() -> None:
    proc = subprocess.run([sys.executable, "scripts/api_reference.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
