"""macvtap-lab as a user consumes it: the wheel built from this tree, installed into a
venv of a brand-new Pulumi project outside the repository, driven by the official CLI's
launch contract (stock toolchain). The project's program uses only the public API.

This proves that the package data (Dockerfiles, configs, scripts) ships in the wheel and
that nothing depends on the checkout (scripts/, tools/, the repository's venv).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from macvtap_provider import paths
from macvtap_provider.compose import lab_name
from macvtap_provider.images import libvirt_image
from tests.conftest import ROOT, require
from tests.e2e import lab_probe
from tests.e2e.conftest import FORK_NOISE, make_stack, pulumi_env, pulumi_typed

pytestmark = [pytest.mark.e2e]

#: The system Python: python3-guestfs is built for it (README, "Supported versions").
SYSTEM_PYTHON = "/usr/bin/python3"

PROGRAM = '''
"""A lab of my own, through macvtap-lab's public API only."""
import pulumi

import macvtap_provider as mvt

config = pulumi.Config()
lab = mvt.Lab(mvt.lab_name(pulumi.get_project(), pulumi.get_stack()),
              subnet=config.require("subnet"),
              root_password=config.require_secret("rootPassword"))
vm = mvt.Guest(f"{lab.lab_name}-vm", lab)

pulumi.export("library", mvt.__file__)
pulumi.export("guest_ip", vm.guest_ip)
pulumi.export("mac_matches", vm.mac_matches)
pulumi.export("network_name", lab.network_name)
pulumi.export("probe_image", lab.probe_image)
pulumi.export("lab", lab.lab_name)
'''


def run(*cmd: str, cwd: Path | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree, built as `pip wheel` builds it (isolated build)."""
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT))
    (built,) = out.glob("macvtap_lab-*.whl")
    return built


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Path]:
    """A venv as the README tells users to make one: the system Python, its site packages
    (guestfs, libvirt), the wheel and its dependencies from the package index."""
    if not Path(SYSTEM_PYTHON).exists():
        pytest.fail(f"{SYSTEM_PYTHON} is missing")
    venv = tmp_path_factory.mktemp("user") / "venv"
    run(SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv))
    run(str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
        str(wheel))
    yield venv


def test_the_wheel_carries_every_module_and_data_file(wheel: Path) -> None:
    package = ROOT / "macvtap_provider"
    expected = {str(p.relative_to(ROOT)) for p in package.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    with zipfile.ZipFile(wheel) as z:
        shipped = {n for n in z.namelist() if n.startswith("macvtap_provider/")}
    assert expected - shipped == set()
    assert not [n for n in shipped if "__pycache__" in n or n.endswith(".pyc")]


INSPECT = """
import json, guestfs, macvtap_provider as mvt
from macvtap_provider.images import libvirt_image
print(json.dumps({"library": mvt.__file__, "api": [mvt.Lab.__name__, mvt.Guest.__name__],
                  "context": str(libvirt_image.CONTEXT_DIR),
                  "files": libvirt_image.context_files()}))
"""


def test_the_installed_library_stands_alone(user_venv: Path) -> None:
    """Imported from the venv, not the checkout; guestfs comes from the system Python; the
    libvirt image's build context ships whole (so it has the same recipe, the same tag)."""
    out = json.loads(run(str(user_venv / "bin" / "python"), "-c", INSPECT, cwd=user_venv.parent))
    for key in ("library", "context"):
        assert Path(out[key]).is_relative_to(user_venv) and not Path(out[key]).is_relative_to(ROOT)
    assert out["api"] == ["Lab", "Guest"]
    assert out["files"] == libvirt_image.context_files()


def new_project(base: Path, venv: Path, name: str) -> Path:
    project = base / name
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        f"name: {name}\nruntime:\n  name: python\n  options:\n    virtualenv: venv\n")
    (project / "__main__.py").write_text(PROGRAM)
    (project / "venv").symlink_to(venv)
    return project


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.libvirt
@pytest.mark.guestfs
def test_a_new_project_brings_a_lab_up_and_down(tmp_path: Path, user_venv: Path) -> None:
    require("pulumi", "docker", "guestfs")
    project = new_project(tmp_path, user_venv, "my-own-lab")
    assert not project.is_relative_to(ROOT)
    stack = f"u{secrets.token_hex(3)}"
    lab = lab_name("my-own-lab", stack)
    st = make_stack(tmp_path, project, stack, toolchain="stock")
    password = secrets.token_urlsafe(12)
    st.set_secret("rootPassword", password)
    st.config("subnet", f"10.213.{150 + secrets.randbelow(45)}.0/24")
    try:
        up = st.up("user_up")
        assert FORK_NOISE not in up.stdout + up.stderr
        out = st.outputs()
        assert out["lab"] == lab
        # Through the project's venv link: the wheel installed in the user's venv.
        assert Path(str(out["library"])).resolve().is_relative_to(user_venv.resolve())
        assert out["mac_matches"] is True
        rc, text = lab_probe.ssh(str(out["network_name"]), str(out["probe_image"]),
                                 str(out["guest_ip"]), password, "cat /etc/hostname")
        assert rc == 0, text
        st.preview(expect_no_changes=True)
    finally:
        st.destroy("user_destroy")
        st.remove()
    left = lab_probe.leftovers(lab, paths.work_root() / lab)
    assert left == {"containers": [], "networks": [], "work_dir_exists": False, "files": []}


def test_the_template_makes_a_project_that_previews(tmp_path: Path, user_venv: Path) -> None:
    """`pulumi new ./templates/lab` works offline; the project previews a lab."""
    require("pulumi", "docker")
    project = tmp_path / "from-template"
    # `pulumi new` has no Automation API counterpart: typed, as the README says to.
    env = pulumi_env(tmp_path, "stock")
    pulumi_typed(tmp_path, env, "new", str(ROOT / "templates" / "lab"), "--dir", str(project),
                 "--name", "templated-lab", "--description", "A lab from the template",
                 "--generate-only", "--yes")
    assert "name: templated-lab" in (project / "Pulumi.yaml").read_text()
    assert '"""A lab from the template"""' in (project / "__main__.py").read_text()
    (project / "venv").symlink_to(user_venv)
    st = make_stack(tmp_path, project, f"t{secrets.token_hex(3)}", toolchain="stock")
    try:
        preview = st.preview()
        assert "to create" in preview.stdout
    finally:
        st.remove()
