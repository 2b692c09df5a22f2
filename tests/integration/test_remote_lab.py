"""The providers against a simulated remote host, given only `docker_host=ssh://...` with
its key and known-hosts file: network, libvirt container (image uploaded once), a disk
customised here and uploaded there (its base once, by sha256), a domain
with its macvtap made by `ip` in the container there and the KVM decision taken there;
read sees them, delete leaves nothing on that host; nothing of it exists on this machine."""

from __future__ import annotations

import secrets
from pathlib import Path

import docker
import pytest

from macvtap_provider.adapters import lab_host, remote_disk
from macvtap_provider.adapters.remote_host import RemoteHost
from macvtap_provider.errors import DockerError
from macvtap_provider.paths import default_guest_image
from macvtap_provider.resources.customized_image import CustomizedImageProvider, sha256_file
from macvtap_provider.resources.lab_network import LabNetworkProvider
from macvtap_provider.resources.libvirt_container import LibvirtContainerProvider
from macvtap_provider.resources.macvtap_domain import MacvtapDomainProvider
from tests.integration.conftest import checked
from tests.simhost import SimHosts

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.guestfs, pytest.mark.netns,
              pytest.mark.slow]



def test_a_lab_on_a_remote_host_goes_over_the_wire_only(sim_hosts: SimHosts) -> None:
    host = sim_hosts.hosts[0]
    endpoint = host.endpoint
    assert isinstance(lab_host.for_endpoint(endpoint), RemoteHost)
    suffix = secrets.token_hex(3)
    work = f"/var/lib/macvtap-lab/mvtt-rl-{suffix}"
    disk = f"{work}/disk.qcow2"
    netp, conp, domp = LabNetworkProvider(), LibvirtContainerProvider(), MacvtapDomainProvider()
    imgp = CustomizedImageProvider()
    net_in = checked(netp, {"name": f"mvtt-rl-{suffix}", "subnet": "10.213.107.0/24",
                            "docker_host": endpoint})
    net = netp.create(net_in)
    con = dom = img = None
    try:
        con_in = checked(conp, {"name": f"mvtt-rl-lv-{suffix}", "network": net_in["name"],
                                "work_dir": work, "docker_host": endpoint})
        con = conp.create(con_in)
        assert con.outs["libvirt_uri"].startswith(f"qemu+ssh://root@{host.address}/system?")
        assert not Path(work).exists()
        assert not docker.from_env().containers.list(all=True, filters={"id": con.id})
        assert conp.read(con.id, con.outs).id == con.id
        img = imgp.create(checked(imgp, {"output_path": disk, "root_password": "pw-remote-1",
                                         "docker_host": endpoint}))
        rhost = RemoteHost(endpoint)
        store = remote_disk.base_store(sha256_file(default_guest_image()))
        assert not Path(disk).exists() and not Path(store).exists()
        assert rhost.files.exists(disk) and rhost.files.exists(store)
        assert imgp.read(img.id, img.outs).id == img.id
        # The default guest's kernel and initrd went with it (qemu loads them there).
        kernel, initrd = img.outs["kernel_path"], img.outs["initrd_path"]
        assert kernel == f"{work}/disk.vmlinuz" and initrd == f"{work}/disk.initrd"
        assert rhost.files.exists(kernel) and rhost.files.exists(initrd)
        assert not Path(kernel).exists()
        dom_in = checked(domp, {"name": f"mvtt-rl-vm-{suffix}", "libvirt_uri": con.outs["libvirt_uri"],
                                "container": con.outs["name"], "disk_path": disk,
                                "memory_mib": 256, "docker_host": endpoint, "kernel": kernel,
                                "initrd": initrd, "cmdline": img.outs["kernel_cmdline"]})
        dom = domp.create(dom_in)
        assert dom.outs["state"] == "running" and dom.outs["mac_matches"] is True
        assert dom.outs["boot_used"] == "kernel"
        assert dom.outs["domain_type_used"] == "qemu"  # the remote probe: nested KVM hangs
        rhost = RemoteHost(endpoint)
        with rhost.netns(con.outs["name"]) as ns:
            link = ns.link(dom.outs["macvtap_device"])
        assert link is not None and link.mac == dom.outs["guest_mac"] and link.kind == "macvtap"
        assert domp.read(dom.id, dom.outs).id == dom.id
    finally:
        if dom is not None:
            domp.delete(dom.id, dom.outs)
            domp.delete(dom.id, dom.outs)
        if img is not None:
            imgp.delete(img.id, img.outs)
            imgp.delete(img.id, img.outs)
        if con is not None:
            conp.delete(con.id, con.outs)
            conp.delete(con.id, con.outs)
        netp.delete(net.id, net.outs)
    rhost = RemoteHost(endpoint)
    assert rhost.container(f"mvtt-rl-lv-{suffix}") is None
    assert not rhost.files.exists(work)
    assert not rhost.files.exists(remote_disk.base_store(sha256_file(default_guest_image())))
    with rhost.docker() as client:
        assert not client.networks.list(names=[f"mvtt-rl-{suffix}"])
        assert not client.containers.list(all=True, filters={"label": "org.macvtap-lab.probe"})


def test_a_lab_network_on_the_hosts_lan(sim_hosts: SimHosts) -> None:
    """parent=eth0: a macvlan network on the remote host's NIC (not internal: it is that
    LAN); a leftover of an interrupted run is taken over, a bridge of the same name is not."""
    host = sim_hosts.hosts[1]
    netp = LabNetworkProvider()
    name = f"mvtt-lan-{secrets.token_hex(3)}"
    props = checked(netp, {"name": name, "subnet": str(sim_hosts.subnet), "parent": "eth0",
                           "ip_range": sim_hosts.lan_range, "docker_host": host.endpoint})
    net = netp.create(props)
    try:
        assert net.outs["bridge"] == "" and net.outs["internal"] is False
        with RemoteHost(host.endpoint).docker() as client:
            attrs = client.networks.get(net.id).attrs
        assert (attrs["Driver"], attrs["Options"], attrs["Internal"]) == (
            "macvlan", {"parent": "eth0"}, False)
        assert attrs["IPAM"]["Config"][0]["IPRange"] == sim_hosts.lan_range
        assert netp.create(props).id == net.id  # an interrupted run's network: taken over
        with pytest.raises(DockerError, match="already exists and is not this stack's"):
            netp.create({**props, "parent": None, "internal": True})
        assert netp.read(net.id, net.outs).id == net.id
    finally:
        netp.delete(net.id, net.outs)
    assert netp.read(net.id, net.outs).id == ""
