"""LibvirtContainerProvider for real: libvirtd in a docker container, reached from the host."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import libvirt
import pytest

from macvtap_provider import paths
from macvtap_provider.adapters import libvirt_api
from macvtap_provider.errors import DockerError, LabTimeoutError, SpecError
from macvtap_provider.images.libvirt_image import ensure_libvirt_image
from macvtap_provider.resources.libvirt_container import LABEL, LibvirtContainerProvider
from tests.integration.conftest import Lab, Made, exec_ok, lab_for, link_in, tcp_listen_ports

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.netns]

SUBNET = "10.213.102.0/24"
LIBVIRT_TCP_PORTS = {16509, 16514}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with lab_for("lvc", SUBNET, "docker") as lab:
        lab.network()
        yield lab


@pytest.fixture(scope="module")
def container(lab: Lab) -> Made:
    return lab.container("lv", host=10)


def test_outputs_match_docker_inspect_and_the_netns(lab: Lab, container: Made) -> None:
    attrs = lab.client.api.inspect_container(container.id)
    endpoint = attrs["NetworkSettings"]["Networks"][lab.net_name]
    outs = container.outs

    assert outs["container_id"] == container.id == attrs["Id"]
    assert outs["ip_address"] == endpoint["IPAddress"] == "10.213.102.10"
    assert outs["prefix"] == endpoint["IPPrefixLen"] == 24
    assert outs["gateway"] == endpoint["Gateway"] == "10.213.102.1"
    assert outs["mac_address"] == endpoint["MacAddress"].lower()
    assert outs["pid"] == attrs["State"]["Pid"]
    assert outs["netns"] == f"/proc/{attrs['State']['Pid']}/ns/net"
    assert outs["running"] is True
    assert outs["image_ref"] == ensure_libvirt_image()
    assert attrs["Config"]["Labels"][LABEL] == outs["name"]
    eth0 = link_in(outs["pid"], "eth0")
    assert eth0 is not None
    assert eth0.mac == outs["mac_address"]
    assert ("10.213.102.10", 24) in eth0.addresses


def test_libvirt_answers_on_the_uri_and_it_is_that_container(container: Made) -> None:
    uri = container.outs["libvirt_uri"]
    socket = Path(container.outs["work_dir"]) / "run" / "libvirt" / "libvirt-sock"

    assert uri == f"qemu:///system?socket={socket}"
    assert socket.is_socket()
    conn = libvirt.open(uri)
    try:
        assert conn.getLibVersion() > 0
        assert conn.getHostname() == container.outs["name"]  # hostname=name: this container
        assert conn.listAllDomains() == []
    finally:
        conn.close()


def test_privileged_is_refused_here_so_the_capability_set_is_used(
        lab: Lab, container: Made) -> None:
    attrs = lab.client.api.inspect_container(container.id)
    host_config = attrs["HostConfig"]

    assert container.outs["security_mode_used"] == "capabilities", (
        "this host's bounding set lacks CAP_SYS_RESOURCE, so --privileged must be refused")
    assert host_config["Privileged"] is False
    assert "SYS_RESOURCE" in (host_config["CapDrop"] or [])
    assert host_config["Init"] is True
    assert "a *:* rwm" in (host_config["DeviceCgroupRules"] or [])
    assert "/dev:/dev:rw" in host_config["Binds"]
    # The refused privileged attempt left no second container behind.
    same = lab.client.containers.list(all=True, filters={"label": f"{LABEL}={container.outs['name']}"})
    assert [c.id for c in same] == [container.id]


def test_libvirtd_listens_on_no_tcp_port(lab: Lab, container: Made) -> None:
    c = lab.client.containers.get(container.id)

    listening = tcp_listen_ports(exec_ok(c, ["cat", "/proc/net/tcp", "/proc/net/tcp6"]))
    processes = exec_ok(c, ["ps", "-eo", "comm"])

    assert "libvirtd" in processes
    assert not listening & LIBVIRT_TCP_PORTS, listening


def _answers(uri: str) -> bool:
    try:
        libvirt_api.wait_until_answering(uri, timeout_s=1.0)
    except LabTimeoutError:
        return False
    return True


def test_libvirtd_ctl_stops_and_starts_libvirtd_and_the_container_stays_up(
        lab: Lab, container: Made) -> None:
    c = lab.client.containers.get(container.id)
    uri = container.outs["libvirt_uri"]

    exec_ok(c, ["libvirtd-ctl", "stop"])
    time.sleep(2.5)  # the entry point's watch would have restarted it by now
    c.reload()
    stopped = (c.status, _answers(uri), c.exec_run(["libvirtd-ctl", "status"]).exit_code)
    exec_ok(c, ["libvirtd-ctl", "start"])

    assert stopped == ("running", False, 3)
    assert _answers(uri)


def test_libvirtd_dying_on_its_own_is_started_again(lab: Lab, container: Made) -> None:
    c = lab.client.containers.get(container.id)
    before = exec_ok(c, ["cat", "/run/libvirtd.pid"]).strip()

    exec_ok(c, ["kill", "-KILL", before])
    deadline = time.monotonic() + 15
    while not _answers(container.outs["libvirt_uri"]) and time.monotonic() < deadline:
        time.sleep(0.5)

    assert exec_ok(c, ["cat", "/run/libvirtd.pid"]).strip() != before
    assert _answers(container.outs["libvirt_uri"])


def test_a_leftover_container_of_an_interrupted_run_is_replaced(lab: Lab) -> None:
    provider = LibvirtContainerProvider()
    made = lab.container("left")  # made, but (as after a killed `up`) never recorded

    again = provider.create(dict(made.inputs))
    lab.made.append(Made("container", provider, again.id, dict(again.outs), dict(made.inputs)))

    assert again.id != made.id
    with pytest.raises(docker.errors.NotFound):
        lab.client.containers.get(made.id)
    assert _answers(again.outs["libvirt_uri"])


def test_a_name_taken_by_a_foreign_container_is_refused_and_left_alone(lab: Lab) -> None:
    name = lab.name("foreign")
    foreign = lab.client.containers.create(ensure_libvirt_image(), ["600"],
                                           entrypoint=["sleep"], name=name)
    try:
        props = {"name": name, "network": lab.net_name,
                 "work_dir": str(paths.work_root() / name)}
        provider = LibvirtContainerProvider()
        with pytest.raises(DockerError, match="not made by macvtap-lab"):
            provider.create(dict(provider.check({}, props).inputs))
        assert lab.client.containers.get(name).id == foreign.id
    finally:
        foreign.remove(force=True)


def test_read_reports_the_real_state(container: Made) -> None:
    read = LibvirtContainerProvider().read(container.id, dict(container.outs))

    assert read.id == container.id
    assert read.outs == container.outs


def test_diff_same_inputs_no_change_and_every_input_replaces(container: Made) -> None:
    provider = LibvirtContainerProvider()
    same = provider.diff(container.id, dict(container.outs), dict(container.inputs))
    moved = provider.diff(container.id, dict(container.outs),
                          {**container.inputs, "ipv4_address": "10.213.102.11"})

    assert not same.changes
    assert moved.changes
    assert moved.replaces == ["ipv4_address"]


def test_stop_then_docker_rm_out_of_band_is_seen_by_read(lab: Lab) -> None:
    provider = LibvirtContainerProvider()
    made = lab.container("oob")
    c = lab.client.containers.get(made.id)

    c.stop(timeout=5)
    stopped = provider.read(made.id, dict(made.outs))
    diff = provider.diff(made.id, dict(stopped.outs), dict(made.inputs))
    assert stopped.id == made.id
    assert stopped.outs["running"] is False
    assert diff.changes and "running" in diff.replaces

    c.remove(force=True)  # docker rm -f
    assert provider.read(made.id, dict(made.outs)).id == ""

    provider.delete(made.id, dict(made.outs))
    provider.delete(made.id, dict(made.outs))  # again: still fine
    assert not Path(made.outs["work_dir"]).exists()


def test_delete_removes_the_container_and_its_socket_dir(lab: Lab) -> None:
    provider = LibvirtContainerProvider()
    made = lab.container("del")

    provider.delete(made.id, dict(made.outs))

    with pytest.raises(docker.errors.NotFound):
        lab.client.containers.get(made.id)
    assert not Path(made.outs["work_dir"]).exists()
    assert provider.read(made.id, dict(made.outs)).id == ""
    provider.delete(made.id, dict(made.outs))


def test_create_on_a_missing_network_fails_and_leaves_nothing(lab: Lab) -> None:
    name = lab.name("nonet")
    work = paths.work_root() / name
    lab.work_dirs.append(work)  # teardown removes (and reports) it if it is left
    provider = LibvirtContainerProvider()
    props = provider.check({}, {"name": name, "network": lab.name("missing"),
                                "work_dir": str(work)}).inputs

    with pytest.raises(SpecError, match="does not exist"):
        provider.create(dict(props))

    assert lab.client.containers.list(all=True, filters={"name": name}) == []
    leftover = work.exists()
    shutil.rmtree(work, ignore_errors=True)
    assert not leftover, f"{work} was left behind by a failed create"
