"""Changes behind Pulumi's back: `pulumi refresh` reports each, `pulumi up` makes again
only what is missing (and what depends on it), and the lab works again."""

from __future__ import annotations

import json
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
from tests.e2e.conftest import Cli, make_cli

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker,
              pytest.mark.libvirt, pytest.mark.guestfs, pytest.mark.netns]


def _resources(cli: Cli) -> dict[str, dict[str, object]]:
    state = json.loads(cli.run("stack", "export").stdout)
    return {r["urn"].rsplit("::", 1)[1]: r.get("outputs", {})
            for r in state["deployment"].get("resources", [])}


def refresh_changes(cli: Cli) -> dict[str, str]:
    """resource name -> what `pulumi refresh` recorded: "delete" (gone) or "update" (drift)."""
    before = _resources(cli)
    cli.run("refresh", "--yes", "--skip-preview")
    after = _resources(cli)
    return {name: "delete" if name not in after else "update"
            for name, outs in before.items() if after.get(name) != outs}


def up_ops(cli: Cli) -> dict[str, str]:
    data = json.loads(cli.run("preview", "--json").stdout)
    ops = {s["urn"].rsplit("::", 1)[1]: s["op"] for s in data.get("steps", []) if s["op"] != "same"}
    cli.run("up", "--yes", "--skip-preview")
    return ops


def works(cli: Cli, password: str) -> None:
    """ssh logs in and the guest holds the address (GuestNetwork proved reachability during
    `up`, so no waiting here), and the container no longer holds it."""
    out = cli.outputs()
    image = docker.from_env().containers.get(out["container_name"]).attrs["Config"]["Image"]
    rc, text = lab_probe.ssh(str(out["network_name"]), image, str(out["guest_ip"]), password,
                             "ip -4 -o addr show eth0")
    assert rc == 0 and str(out["guest_ip"]) in text, text
    assert str(out["guest_ip"]) + "/" not in lab_probe.container_ipv4(str(out["container_name"]))


def test_out_of_band_changes_heal(tmp_path: Path) -> None:
    stack = f"o{secrets.token_hex(3)}"
    lab = lab_name("macvtap-lab", stack)
    cli = make_cli(tmp_path, ROOT, stack)
    password = secrets.token_urlsafe(12)
    names = {k: f"{lab}-{k}" for k in ("net", "libvirt", "guest-image", "guest-domain",
                                       "guest-network")}
    try:
        cli.set_secret("rootPassword", password)
        cli.run("config", "set", "subnet", f"10.213.{60 + secrets.randbelow(30)}.0/24")
        cli.run("up", "--yes", "--skip-preview")
        out = cli.outputs()
        uri, container = str(out["libvirt_uri"]), str(out["container_name"])
        works(cli, password)

        # 1. The address is put back on the container's eth0.
        ip = str(out["guest_ip"])
        subprocess.run(["docker", "exec", container, "ip", "addr", "add", f"{ip}/24", "dev",
                        "eth0"], check=True)
        assert names["guest-network"] in refresh_changes(cli)
        assert up_ops(cli) == {names["guest-network"]: "replace"}
        works(cli, password)

        # 2. The domain is destroyed and undefined (virsh destroy + undefine).
        conn = libvirt.open(uri)
        dom = conn.lookupByName(str(out["domain_name"]))
        dom.destroy()
        dom.undefine()
        conn.close()
        assert refresh_changes(cli).get(names["guest-domain"]) == "delete"
        ops = up_ops(cli)
        assert ops.get(names["guest-domain"]) == "create"
        assert ops.get(names["guest-network"]) == "replace"  # a new domain, its network again
        assert names["libvirt"] not in ops and names["guest-image"] not in ops
        works(cli, password)

        # 3. The overlay file is removed (rm), so the image and what runs on it are remade.
        Path(str(out["image_path"])).unlink()
        assert refresh_changes(cli).get(names["guest-image"]) == "delete"
        ops = up_ops(cli)
        assert ops.get(names["guest-image"]) == "create"
        assert names["libvirt"] not in ops and names["net"] not in ops
        works(cli, password)

        # 4. The container is removed (docker rm -f): it and what lived in it come back.
        docker.from_env().containers.get(container).remove(force=True)
        found = refresh_changes(cli)
        assert found.get(names["libvirt"]) == "delete"
        assert found.get(names["guest-domain"]) == "delete"
        ops = up_ops(cli)
        assert ops.get(names["libvirt"]) == "create"
        assert names["guest-image"] not in ops and names["net"] not in ops
        works(cli, password)

        # 5. A domain shut off out of band is destroyed without error.
        conn = libvirt.open(uri)
        conn.lookupByName(str(out["domain_name"])).destroy()
        conn.close()
    finally:
        cli.run("destroy", "--yes", "--skip-preview")
        cli.run("stack", "rm", "--yes", "--force")
    assert not (paths.work_root() / lab).exists()
