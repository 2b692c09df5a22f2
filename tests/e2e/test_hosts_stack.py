"""stacks/hosts on two simulated remote hosts, through the real engine (Automation API):
up (each guest reached by ssh from a probe on its own host), preview without changes, an
out-of-band deletion on a remote host seen by refresh and healed by up, a host whose sshd
stops (refresh fails naming it, the state kept), sshd back (refresh clean), destroy leaving
nothing on either. Then the labs on the hosts' LAN (`uplink`): the guest on one host pings
and ssh-es the guest on the other."""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from pathlib import Path

import pytest

from macvtap_provider.adapters import docker_api
from macvtap_provider.adapters.remote_disk import base_store
from macvtap_provider.adapters.remote_host import RemoteHost
from macvtap_provider.paths import default_guest_image, work_root
from macvtap_provider.resources.customized_image import sha256_file
from tests.conftest import ROOT
from tests.e2e.conftest import make_stack, refused
from tests.simhost import SimHosts

pytestmark = [pytest.mark.e2e, pytest.mark.slow]



def ssh_from_probe(docker_host: str, network: str, image: str, ip: str, password: str,
                   command: str = "hostname") -> str:
    """`command`'s output on the guest, by ssh from a throw-away container on its own host
    (docker's ContainerError if it fails)."""
    with docker_api.docker_client(docker_host) as client:
        out = client.containers.run(
            image, ["-e", "ssh", "-o", "StrictHostKeyChecking=no", "-o",
                    "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", f"root@{ip}",
                    command],
            entrypoint=["sshpass"], environment={"SSHPASS": password}, network=network,
            remove=True)
    return bytes(out).decode().strip()


def test_two_host_stack(sim_hosts: SimHosts, tmp_path: Path) -> None:
    stack = f"h{secrets.token_hex(3)}"
    st = make_stack(tmp_path, ROOT / "stacks" / "hosts", stack)
    endpoints = [h.endpoint for h in sim_hosts.hosts]
    st.config("hosts", json.dumps(endpoints))
    st.config("subnet", "10.213.108.0/24")
    st.config("memoryMib", "256")
    remote = [RemoteHost(e) for e in endpoints]
    labs: list[str] = []
    try:
        st.up()
        out = st.outputs()
        hosts = out["hosts"]
        assert isinstance(hosts, list) and len(hosts) == 2
        passwords = out["root_passwords"]
        assert isinstance(passwords, list)
        for i, host in enumerate(hosts):
            labs.append(host["container_name"].removesuffix("-libvirt"))
            assert host["mac_matches"] == [True]
            assert not Path(work_root() / labs[-1]).exists()  # everything is over there
            name = ssh_from_probe(endpoints[i], host["network_name"],
                                  str(_image_of(endpoints[i], host["container_name"])),
                                  host["guest_ips"][0], str(passwords[i]))
            assert name.startswith(labs[-1]), name
        st.preview(expect_no_changes=True)

        # Out of band on host 1: its libvirt container (and the guest in it) removed.
        with remote[1].docker() as client:
            docker_api.remove_container(client, hosts[1]["container_name"])
        st.refresh()
        refused(st, expect_no_changes=True)
        st.up()
        assert st.outputs()["hosts"][1]["mac_matches"] == [True]  # type: ignore[index]

        # Host 1's sshd stops: refresh fails naming it, and keeps the state.
        sim_hosts.hosts[1].sshd("stop")
        try:
            text = refused(st, "refresh")
            assert f"docker host root@{sim_hosts.hosts[1].address} is unreachable over ssh" in text
            assert len(st.resources()) > 10
        finally:
            sim_hosts.hosts[1].sshd("start")
        st.refresh(expect_no_changes=True)
    finally:
        st.destroy()
        st.remove()
    for host, lab in zip(remote, labs, strict=True):
        assert host.container(f"{lab}-libvirt") is None
        with host.docker() as client:
            assert not client.networks.list(names=[f"{lab}-net"])
            assert not client.containers.list(all=True)
        assert not host.files.exists(str(work_root() / lab))
        assert not host.files.exists(base_store(sha256_file(default_guest_image())))


def _image_of(docker_host: str, container: str) -> str:
    """The image a container on that host runs (the lab's: it has ssh and sshpass)."""
    with docker_api.docker_client(docker_host) as client:
        return str(client.containers.get(container).attrs["Config"]["Image"])


def _replies(ping_output: str) -> int:
    """How many echo replies `ping` reports ("3 packets transmitted, 2 received")."""
    found = re.search(r"(\d+) (?:packets )?received", ping_output)
    return int(found.group(1)) if found else 0


def test_guests_on_two_hosts_of_one_lan_reach_each_other(sim_hosts: SimHosts,
                                                         tmp_path: Path) -> None:
    """`uplink eth0`: each host's lab is a macvlan network on that host's eth0, whose LAN is
    the simulated hosts' own --internal network, and `ipRange` (its free upper half) is split
    between the hosts. The guest on host 0 pings the guest on host 1 and logs in to it with
    ssh, over that L2 (its neighbour entry is the other guest's own MAC: no router between)."""
    st = make_stack(tmp_path, ROOT / "stacks" / "hosts", f"l{secrets.token_hex(3)}")
    endpoints = [h.endpoint for h in sim_hosts.hosts]
    st.config("hosts", json.dumps(endpoints))
    st.config("uplink", "eth0")
    st.config("subnet", str(sim_hosts.subnet))
    st.config("ipRange", sim_hosts.lan_range)
    st.config("memoryMib", "256")
    remote = [RemoteHost(e) for e in endpoints]
    try:
        st.up()
        out = st.outputs()
        hosts, passwords = out["hosts"], out["root_passwords"]
        ranges = [ipaddress.IPv4Network(h["ip_range"]) for h in hosts]
        assert not ranges[0].overlaps(ranges[1])
        ips = [h["guest_ips"][0] for h in hosts]
        for endpoint, host, rng, ip in zip(endpoints, hosts, ranges, ips, strict=True):
            assert host["mac_matches"] == [True] and ipaddress.IPv4Address(ip) in rng
            with docker_api.docker_client(endpoint) as client:
                attrs = client.networks.get(host["network_name"]).attrs
            assert (attrs["Driver"], attrs["Options"]["parent"]) == ("macvlan", "eth0")

        def on_guest(i: int, command: str) -> str:
            return ssh_from_probe(endpoints[i], hosts[i]["network_name"],
                                  _image_of(endpoints[i], hosts[i]["container_name"]), ips[i],
                                  str(passwords[i]), command)

        # Reached: replies come back (the first request may go while ARP still resolves
        # on a guest that has just booted under TCG).
        pinged = on_guest(0, f"ping -c 3 -W 5 {ips[1]}")
        assert _replies(pinged) >= 2, pinged
        neighbour = on_guest(0, f"ip neigh show {ips[1]}")
        assert hosts[1]["macvtap_macs"][0] in neighbour.lower(), neighbour
        key = on_guest(0, "ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/lan_e2e && "
                          "cat /root/.ssh/lan_e2e.pub")
        on_guest(1, f"mkdir -p -m 700 /root/.ssh && echo '{key}' >> /root/.ssh/authorized_keys")
        name = on_guest(0, "ssh -i /root/.ssh/lan_e2e -o BatchMode=yes -o ConnectTimeout=10 "
                           "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                           f"root@{ips[1]} hostname")
        assert name == on_guest(1, "hostname") and name.startswith(
            hosts[1]["container_name"].removesuffix("-libvirt")), name
        pinged = on_guest(1, f"ping -c 3 -W 5 {ips[0]}")
        assert _replies(pinged) >= 2, pinged
        st.preview(expect_no_changes=True)
    finally:
        st.destroy()
        st.remove()
    for host in remote:
        with host.docker() as client:
            assert not [n for n in client.networks.list() if n.attrs["Driver"] == "macvlan"]
            assert not client.containers.list(all=True)
