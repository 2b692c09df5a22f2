"""The remote adapters against a simulated remote host, over the wire only: the docker
engine through an ssh tunnel with the run's key and known-hosts file, images and files
uploaded through the docker API, libvirt through `docker exec`, netns work by `ip` in the
container."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import libvirt
import pytest

from macvtap_provider.adapters import kvm, libvirt_api, netexec, remote, remote_kvm
from macvtap_provider.adapters.docker_api import exec_in
from macvtap_provider.builders.endpoint import DockerEndpoint
from macvtap_provider.builders.security import SecurityMode, container_security_kwargs
from macvtap_provider.builders.tap import macvtap_name, pick_tap_index
from macvtap_provider.errors import DaemonUnreachableError
from macvtap_provider.images.libvirt_image import ensure_libvirt_image
from macvtap_provider.paths import default_guest_image
from tests.simhost import SimHost, SimHosts

pytestmark = [pytest.mark.docker, pytest.mark.libvirt, pytest.mark.netns]


def endpoint_of(host: SimHost) -> DockerEndpoint:
    return DockerEndpoint(url=host.docker_host, ssh_key=str(host.identity.key),
                          known_hosts=str(host.identity.known_hosts))


@pytest.fixture(scope="module")
def lab_container(sim_hosts: SimHosts) -> Iterator[tuple[SimHost, str]]:
    """A libvirt container on simulated host 0, created through the remote adapter."""
    host = sim_hosts.hosts[0]
    tag = ensure_libvirt_image()
    name = f"mvtt-remote-{secrets.token_hex(3)}"
    kwargs = container_security_kwargs(SecurityMode.CAPABILITIES, ["SYS_RESOURCE"])
    local = docker.from_env()
    with remote.docker_client(endpoint_of(host)) as client:
        remote.upload_image(local, client, tag, host.name)
        client.containers.run(tag, name=name, detach=True, **kwargs)
    yield host, name
    with remote.docker_client(endpoint_of(host)) as client:
        client.containers.get(name).remove(force=True, v=True)


def test_the_tunnel_uses_the_given_key_and_known_hosts_file(sim_hosts: SimHosts) -> None:
    host = sim_hosts.hosts[0]
    with remote.docker_client(endpoint_of(host)) as client:
        assert client.info()["Name"] == host.name
        assert client.info()["ID"] != docker.from_env().info()["ID"]


def test_an_unknown_host_key_is_refused_naming_host_and_fix(sim_hosts: SimHosts,
                                                             tmp_path: Path) -> None:
    host = sim_hosts.hosts[0]
    empty = tmp_path / "known_hosts"
    empty.touch()
    endpoint = DockerEndpoint(url=host.docker_host, ssh_key=str(host.identity.key),
                              known_hosts=str(empty))
    with pytest.raises(DaemonUnreachableError) as caught, remote.docker_client(endpoint):
        pass
    message = str(caught.value)
    assert f"root@{host.address}" in message and "Host key verification failed" in message
    assert f"ssh-keyscan {host.address} >> {empty}" in message


def test_an_image_is_uploaded_once(sim_hosts: SimHosts) -> None:
    host = sim_hosts.hosts[1]
    tag = ensure_libvirt_image()
    local = docker.from_env()
    with remote.docker_client(endpoint_of(host)) as client:
        remote.upload_image(local, client, tag, host.name)  # may be there from another test
        assert client.images.get(tag).id == local.images.get(tag).id
        assert remote.upload_image(local, client, tag, host.name) is False


def test_a_file_reaches_the_host_verified_by_sha256(lab_container: tuple[SimHost, str]) -> None:
    host, _ = lab_container
    source = default_guest_image()
    if not source.exists():
        pytest.skip("the default guest image is not built (make setup builds it)")
    target = f"/var/lib/macvtap-lab/mvtt-upload-{secrets.token_hex(3)}/base.qcow2"
    with remote.docker_client(endpoint_of(host)) as client:
        digest = remote.upload_file(client, ensure_libvirt_image(), source, target, host.name)
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    assert not Path(target).exists()
    assert host.ssh(f"sha256sum {target}").stdout.split()[0] == digest
    host.ssh(f"rm -rf {Path(target).parent}")


def test_libvirt_answers_through_docker_exec(lab_container: tuple[SimHost, str]) -> None:
    host, name = lab_container
    with (remote.docker_client(endpoint_of(host)) as client,
          remote.libvirt_socket(client, name) as sock):
        uri = f"qemu:///system?socket={sock}"
        libvirt_api.wait_until_answering(uri, timeout_s=60)
        with libvirt_api.connection(uri) as conn:
            assert conn.getLibVersion() > 0
            assert conn.getHostname() == client.containers.get(name).attrs["Config"]["Hostname"]
            assert conn.listAllDomains() == []
        conn2 = libvirt.open(uri)  # a second connection through the same relay
        assert conn2.getLibVersion() > 0
        conn2.close()


def test_netns_work_through_ip_in_the_container(lab_container: tuple[SimHost, str]) -> None:
    host, name = lab_container
    with remote.docker_client(endpoint_of(host)) as client:
        container = client.containers.get(name)
        eth0 = netexec.link(container, "eth0")
        assert eth0 is not None and eth0.addresses
        address, prefix = eth0.addresses[0]
        gateway = netexec.default_gateway(container)
        assert gateway is not None
        index = pick_tap_index(name, netexec.used_indexes(container) | netexec.tap_indexes(container))
        mac = "52:54:00:12:34:56"
        created = netexec.create_macvtap(container, "eth0", macvtap_name(index), mac, "bridge", index)
        try:
            assert (created.index, created.mac, created.kind) == (index, mac, "macvtap")
            assert index in netexec.tap_indexes(container)
        finally:
            assert netexec.delete_link(container, macvtap_name(index)) is True
        assert netexec.delete_link(container, macvtap_name(index)) is False
        assert netexec.remove_address(container, "eth0", address, prefix) is True
        assert netexec.remove_address(container, "eth0", address, prefix) is False
        netexec.restore_address(container, "eth0", address, prefix, gateway)
        assert (address, prefix) in (netexec.link(container, "eth0") or eth0).addresses
        assert netexec.default_gateway(container) == gateway
        assert exec_in(client, name, ["true"])[0] == 0


def test_a_stopped_sshd_fails_clearly(sim_hosts: SimHosts) -> None:
    host = sim_hosts.hosts[1]
    host.sshd("stop")
    try:
        with pytest.raises(DaemonUnreachableError) as caught, \
                remote.docker_client(endpoint_of(host)):
            pass
    finally:
        host.sshd("start")
    assert f"docker host root@{host.address} is unreachable over ssh" in str(caught.value)
    assert "sshd answers" in str(caught.value)


def test_the_kvm_decision_is_made_on_the_remote_host(lab_container: tuple[SimHost, str]) -> None:
    host, name = lab_container
    with remote.docker_client(endpoint_of(host)) as client:
        container = client.containers.get(name)
        probe = remote_kvm.probe_kvm(container, timeout_s=20)
        vhost = remote_kvm.vhost_usable(container)
    # The simulated host shares this machine's kernel, so both probes must agree.
    assert probe.status is kvm.probe_kvm(timeout=20).status, probe.detail
    assert vhost is Path("/dev/vhost-net").exists()


def test_a_content_addressed_upload_never_replaces_what_is_there(
        lab_container: tuple[SimHost, str], tmp_path: Path) -> None:
    """replace=False (the guest bases' store): a concurrent uploader that got there first
    keeps its file, inode and all (disks already hard-linked to it stay linked)."""
    host, _ = lab_container
    target = f"/var/lib/macvtap-lab/mvtt-upload-{secrets.token_hex(3)}/store.qcow2"
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_bytes(b"first" * 1000)
    second.write_bytes(b"second" * 1000)
    try:
        with remote.docker_client(endpoint_of(host)) as client:
            remote.upload_file(client, ensure_libvirt_image(), first, target, host.name,
                               replace=False)
            inode = host.ssh(f"stat -c %i {target}").stdout.strip()
            remote.upload_file(client, ensure_libvirt_image(), second, target, host.name,
                               replace=False)
        assert host.ssh(f"stat -c %i {target}").stdout.strip() == inode
        assert host.ssh(f"cat {target}").stdout == "first" * 1000
        assert host.ssh(f"ls -A {Path(target).parent}").stdout.split() == ["store.qcow2"]
    finally:
        host.ssh(f"rm -rf {Path(target).parent}")
