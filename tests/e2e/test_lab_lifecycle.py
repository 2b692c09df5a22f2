"""The seed's lab through the real CLI: up, no-op preview/refresh, in-place memory change,
password change (image + domain replaced, container kept), destroy leaving nothing."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import docker
import pytest

from macvtap_provider import paths
from macvtap_provider.compose import lab_name
from tests.conftest import ROOT
from tests.e2e import lab_probe
from tests.e2e.conftest import FORK_NOISE, TOOLCHAINS, Cli, make_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker, pytest.mark.libvirt,
              pytest.mark.guestfs]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def preview_ops(cli: Cli) -> dict[str, str]:
    """resource name -> operation planned by `pulumi preview`."""
    data = json.loads(cli.run("preview", "--json").stdout)
    return {step["urn"].rsplit("::", 1)[1]: step["op"] for step in data.get("steps", [])
            if step["op"] != "same"}


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_lab_lifecycle(e2e_tmp: Path, toolchain: str) -> None:
    stack = f"e2e{secrets.token_hex(3)}"
    lab = lab_name("macvtap-lab", stack)
    work_dir = paths.work_root() / lab
    base = paths.default_guest_image()
    cli = make_cli(e2e_tmp, ROOT, stack, toolchain)
    password, new_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    devices: set[str] = set()  # every macvtap this stack made (mvtN -> /dev/tapN)
    base_digest = sha256(base) if base.exists() else None
    try:
        cli.set_secret("rootPassword", password)
        cli.run("config", "set", "subnet", f"10.213.{200 + secrets.randbelow(50)}.0/24")

        # 1. up
        up = cli.run("up", "--yes", "--skip-preview", label="up")
        assert FORK_NOISE not in up.stdout + up.stderr
        out = cli.outputs()
        devices.add(str(out["macvtap_device"]))
        assert out["mac_matches"] is True
        assert out["guest_mac"] == out["macvtap_mac"]
        ip = str(out["guest_ip"])
        image = docker.from_env().containers.get(out["container_name"]).attrs["Config"]["Image"]
        rc, text = lab_probe.ssh(str(out["network_name"]), image, ip, password, "ip -4 addr show eth0")
        assert rc == 0, text
        assert f"inet {ip}/" in text
        assert f"inet {ip}/" not in lab_probe.container_ipv4(str(out["container_name"]))
        state = cli.run("stack", "export").stdout
        assert password not in state
        container_id = docker.from_env().containers.get(out["container_name"]).id

        # 2. nothing to do
        cli.run("preview", "--expect-no-changes", label="noop_preview")
        cli.run("refresh", "--yes", "--expect-no-changes", label="noop_refresh")

        # 3. memory: exactly one in-place update of the domain
        cli.run("config", "set", "memoryMib", "640")
        assert preview_ops(cli) == {f"{lab}-guest-domain": "update"}
        cli.run("up", "--yes", "--skip-preview", label="memory_update")
        assert docker.from_env().containers.get(out["container_name"]).id == container_id
        assert cli.outputs()["image_path"] == out["image_path"]

        # 4. password: image and domain replaced, container kept
        cli.set_secret("rootPassword", new_password)
        ops = preview_ops(cli)
        assert ops.get(f"{lab}-guest-image") == "replace"
        assert ops.get(f"{lab}-guest-domain") == "replace"
        assert f"{lab}-libvirt" not in ops and f"{lab}-net" not in ops
        cli.run("up", "--yes", "--skip-preview", label="password_update")
        devices.add(str(cli.outputs()["macvtap_device"]))
        assert docker.from_env().containers.get(out["container_name"]).id == container_id
        rc, text = lab_probe.ssh(str(out["network_name"]), image, ip, new_password, "hostname")
        assert rc == 0, text
        rc, text = lab_probe.ssh(str(out["network_name"]), image, ip, password, "hostname")
        assert rc != 0, "the old password still logs in"
        state = cli.run("stack", "export").stdout
        assert password not in state and new_password not in state
    finally:
        # 5. destroy leaves nothing, and the base image is untouched
        cli.run("destroy", "--yes", "--skip-preview", label="destroy")
        print("timings:", json.dumps(cli.timings))
        left = lab_probe.leftovers(lab, work_dir)
        assert left == {"containers": [], "networks": [], "work_dir_exists": False, "files": []}
        taps = {f"tap{d.removeprefix('mvt')}" for d in devices}
        assert not taps & lab_probe.dev_taps(), f"tap devices left: {taps & lab_probe.dev_taps()}"
        cli.run("stack", "rm", "--yes", "--force")
    assert base_digest is None or sha256(base) == base_digest
