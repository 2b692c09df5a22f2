"""Changes behind Pulumi's back: `pulumi refresh` reports each, `pulumi up` makes again
only what is missing (and what depends on it), and the lab works again."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import docker
import libvirt
import pytest

from macvtap_provider import paths
from macvtap_provider.compose import lab_name
from tests.conftest import ROOT
from tests.e2e import lab_probe
from tests.e2e.conftest import E2EStack, make_stack, planned

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker,
              pytest.mark.libvirt, pytest.mark.guestfs, pytest.mark.netns]


def _resources(st: E2EStack) -> dict[str, dict[str, object]]:
    return {r["urn"].rsplit("::", 1)[1]: r.get("outputs", {}) for r in st.resources()}


def refresh_changes(st: E2EStack) -> dict[str, str]:
    """resource name -> what `pulumi refresh` recorded: "delete" (gone) or "update" (drift)."""
    before = _resources(st)
    st.refresh()
    after = _resources(st)
    return {name: "delete" if name not in after else "update"
            for name, outs in before.items() if after.get(name) != outs}


def up_ops(st: E2EStack) -> dict[str, str]:
    ops = planned(st)
    st.up()
    return ops


def works(st: E2EStack, password: str) -> None:
    """ssh logs in and the guest holds the address (GuestNetwork proved reachability during
    `up`, so no waiting here), and the container no longer holds it."""
    out = st.outputs()
    image = docker.from_env().containers.get(out["container_name"]).attrs["Config"]["Image"]
    rc, text = lab_probe.ssh(str(out["network_name"]), image, str(out["guest_ip"]), password,
                             "ip -4 -o addr show eth0")
    assert rc == 0 and str(out["guest_ip"]) in text, text
    assert str(out["guest_ip"]) + "/" not in lab_probe.container_ipv4(str(out["container_name"]))


def test_out_of_band_changes_heal(tmp_path: Path) -> None:
    stack = f"o{secrets.token_hex(3)}"
    lab = lab_name("macvtap-lab", stack)
    st = make_stack(tmp_path, ROOT, stack)
    password = secrets.token_urlsafe(12)
    names = {k: f"{lab}-{k}" for k in ("net", "libvirt", "guest-image", "guest-domain",
                                       "guest-network")}
    try:
        st.set_secret("rootPassword", password)
        st.config("subnet", f"10.213.{60 + secrets.randbelow(30)}.0/24")
        st.up()
        out = st.outputs()
        uri, container = str(out["libvirt_uri"]), str(out["container_name"])
        works(st, password)

        # 1. The address is put back on the container's eth0.
        ip = str(out["guest_ip"])
        subprocess.run(["docker", "exec", container, "ip", "addr", "add", f"{ip}/24", "dev",
                        "eth0"], check=True)
        assert names["guest-network"] in refresh_changes(st)
        assert up_ops(st) == {names["guest-network"]: "replace"}
        works(st, password)

        # 2. The domain is destroyed and undefined (virsh destroy + undefine).
        conn = libvirt.open(uri)
        dom = conn.lookupByName(str(out["domain_name"]))
        dom.destroy()
        dom.undefine()
        conn.close()
        assert refresh_changes(st).get(names["guest-domain"]) == "delete"
        ops = up_ops(st)
        assert ops.get(names["guest-domain"]) == "create"
        assert ops.get(names["guest-network"]) == "replace"  # a new domain, its network again
        assert names["libvirt"] not in ops and names["guest-image"] not in ops
        works(st, password)

        # 3. The overlay file is removed (rm), so the image and what runs on it are remade.
        Path(str(out["image_path"])).unlink()
        assert refresh_changes(st).get(names["guest-image"]) == "delete"
        ops = up_ops(st)
        assert ops.get(names["guest-image"]) == "create"
        assert names["libvirt"] not in ops and names["net"] not in ops
        works(st, password)

        # 4. The container is removed (docker rm -f): it and what lived in it come back.
        docker.from_env().containers.get(container).remove(force=True)
        found = refresh_changes(st)
        assert found.get(names["libvirt"]) == "delete"
        assert found.get(names["guest-domain"]) == "delete"
        ops = up_ops(st)
        assert ops.get(names["libvirt"]) == "create"
        assert names["guest-image"] not in ops and names["net"] not in ops
        works(st, password)

        # 5. A domain shut off out of band is destroyed without error.
        conn = libvirt.open(uri)
        conn.lookupByName(str(out["domain_name"])).destroy()
        conn.close()
    finally:
        st.destroy()
        st.remove()
    assert not (paths.work_root() / lab).exists()
