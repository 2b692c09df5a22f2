"""A stack made before the components existed (every resource at the top level, as the
stacks were written before `Lab` and `Guest`) keeps every resource when its program moves
to the component API: the children's aliases map the old URNs, so preview plans nothing but
the two components, and the upgraded state refreshes and destroys."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from macvtap_provider import paths
from macvtap_provider.compose import lab_name
from tests.conftest import ROOT
from tests.e2e import lab_probe
from tests.e2e.conftest import make_stack, planned

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker, pytest.mark.libvirt,
              pytest.mark.guestfs]

# The stacks' layout before the components: the same resources, names and inputs, with
# no parent (what `stacks/lab` made until the component API).
TOP_LEVEL_PROGRAM = """
import pulumi
from macvtap_provider import paths
from macvtap_provider.builders import lab_config
from macvtap_provider.compose import lab_name
from macvtap_provider.resources.customized_image import CustomizedImage, CustomizedImageArgs
from macvtap_provider.resources.guest_network import GuestNetwork, GuestNetworkArgs
from macvtap_provider.resources.lab_network import LabNetwork, LabNetworkArgs
from macvtap_provider.resources.libvirt_container import LibvirtContainer, LibvirtContainerArgs
from macvtap_provider.resources.macvtap_domain import MacvtapDomain, MacvtapDomainArgs

config = pulumi.Config()
name = lab_name(pulumi.get_project(), pulumi.get_stack())
subnet = config.require("subnet")
gateway, ip = lab_config.host_address(subnet, 1), lab_config.host_address(subnet, 10)
password = config.require_secret("rootPassword")
work_dir = str(paths.work_root() / name)
network = LabNetwork(f"{name}-net", LabNetworkArgs(name=f"{name}-net", subnet=subnet,
                                                   gateway=gateway))
container = LibvirtContainer(f"{name}-libvirt", LibvirtContainerArgs(
    name=f"{name}-libvirt", network=network.name, work_dir=work_dir, security_mode="auto",
    ipv4_address=ip))
guest = f"{name}-guest"
image = CustomizedImage(f"{guest}-image", CustomizedImageArgs(
    output_path=f"{work_dir}/images/{guest}.qcow2", root_password=password,
    nameservers=[gateway], hostname=guest, network={"address": ip, "prefix": 24,
                                                    "gateway": gateway}))
domain = MacvtapDomain(f"{guest}-domain", MacvtapDomainArgs(
    name=guest, libvirt_uri=container.libvirt_uri, container=container.name,
    disk_path=image.path, memory_mib=512, vcpus=1, image_digest=image.digest))
GuestNetwork(f"{guest}-network", GuestNetworkArgs(
    domain=domain.name, libvirt_uri=container.libvirt_uri, container=container.name,
    network=network.name, address=ip, prefix=24, gateway=gateway, root_password=password,
    method="offline", nameservers=[gateway], domain_id=domain.id))
"""


def test_top_level_stack_upgrades_to_components_in_place(e2e_tmp: Path) -> None:
    project = e2e_tmp / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        "name: macvtap-lab\nruntime:\n  name: python\n  options:\n"
        f"    virtualenv: {ROOT / '.venv'}\n")
    program = project / "__main__.py"
    program.write_text(TOP_LEVEL_PROGRAM)
    stack = f"u{secrets.token_hex(3)}"
    lab = lab_name("macvtap-lab", stack)
    st = make_stack(e2e_tmp, project, stack)
    try:
        st.set_secret("rootPassword", secrets.token_urlsafe(12))
        st.config("subnet", f"10.213.{150 + secrets.randbelow(45)}.0/24")
        st.up("up_top_level")

        program.write_text((ROOT / "stacks" / "lab" / "__main__.py").read_text())
        ops = planned(st, by_type=True)
        # Only the components are new; no resource is replaced, updated or deleted.
        assert ops == {"macvtap:index:Lab": "create", "macvtap:index:Guest": "create"}, ops
        st.up("up_components")
        st.refresh()
        st.preview(expect_no_changes=True)
    finally:
        st.destroy()
        st.remove()
    left = lab_probe.leftovers(lab, paths.work_root() / lab)
    assert left == {"containers": [], "networks": [], "work_dir_exists": False, "files": []}
