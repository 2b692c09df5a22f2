"""The seed's lab through the real engine (Automation API): up, no-op preview/refresh,
in-place memory change, password change (image + domain replaced, container kept),
destroy leaving nothing."""

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
from tests.e2e.conftest import FORK_NOISE, TOOLCHAINS, make_stack, planned

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker, pytest.mark.libvirt,
              pytest.mark.guestfs]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_lab_lifecycle(e2e_tmp: Path, toolchain: str) -> None:
    stack = f"e2e{secrets.token_hex(3)}"
    lab = lab_name("macvtap-lab", stack)
    work_dir = paths.work_root() / lab
    base = paths.default_guest_image()
    st = make_stack(e2e_tmp, ROOT, stack, toolchain)
    password, new_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    devices: set[str] = set()  # every macvtap this stack made (mvtN -> /dev/tapN)
    base_digest = sha256(base) if base.exists() else None
    try:
        st.set_secret("rootPassword", password)
        st.config("subnet", f"10.213.{200 + secrets.randbelow(50)}.0/24")

        # 1. up
        up = st.up("up")
        assert FORK_NOISE not in up.stdout + up.stderr
        out = st.outputs()
        devices.add(str(out["macvtap_device"]))
        assert out["mac_matches"] is True
        assert out["guest_mac"] == out["macvtap_mac"]
        ip = str(out["guest_ip"])
        image = docker.from_env().containers.get(out["container_name"]).attrs["Config"]["Image"]
        rc, text = lab_probe.ssh(str(out["network_name"]), image, ip, password, "ip -4 addr show eth0")
        assert rc == 0, text
        assert f"inet {ip}/" in text
        assert f"inet {ip}/" not in lab_probe.container_ipv4(str(out["container_name"]))
        assert password not in st.state_at_rest()
        container_id = docker.from_env().containers.get(out["container_name"]).id

        # 2. nothing to do
        st.preview("noop_preview", expect_no_changes=True)
        st.refresh("noop_refresh", expect_no_changes=True)

        # 3. memory: exactly one in-place update of the domain
        st.config("memoryMib", "640")
        assert planned(st) == {f"{lab}-guest-domain": "update"}
        st.up("memory_update")
        assert docker.from_env().containers.get(out["container_name"]).id == container_id
        assert st.outputs()["image_path"] == out["image_path"]

        # 4. password: image and domain replaced, container kept
        st.set_secret("rootPassword", new_password)
        ops = planned(st)
        assert ops.get(f"{lab}-guest-image") == "replace"
        assert ops.get(f"{lab}-guest-domain") == "replace"
        assert f"{lab}-libvirt" not in ops and f"{lab}-net" not in ops
        st.up("password_update")
        devices.add(str(st.outputs()["macvtap_device"]))
        assert docker.from_env().containers.get(out["container_name"]).id == container_id
        rc, text = lab_probe.ssh(str(out["network_name"]), image, ip, new_password, "hostname")
        assert rc == 0, text
        rc, text = lab_probe.ssh(str(out["network_name"]), image, ip, password, "hostname")
        assert rc != 0, "the old password still logs in"
        state = st.state_at_rest()
        assert password not in state and new_password not in state
    finally:
        # 5. destroy leaves nothing, and the base image is untouched
        st.destroy("destroy")
        print("timings:", json.dumps(st.timings))
        left = lab_probe.leftovers(lab, work_dir)
        assert left == {"containers": [], "networks": [], "work_dir_exists": False, "files": []}
        taps = {f"tap{d.removeprefix('mvt')}" for d in devices}
        assert not taps & lab_probe.dev_taps(), f"tap devices left: {taps & lab_probe.dev_taps()}"
        st.remove()
    assert base_digest is None or sha256(base) == base_digest
