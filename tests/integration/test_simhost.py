"""The simulated remote hosts (tests/simhost) are what the multi-host tests need them to be:
separate docker engines with their own filesystem, PIDs and images, reached only over ssh,
cut off when their sshd stops, and serving libvirt over qemu+ssh://."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import libvirt
import pytest
import requests.exceptions

from macvtap_provider.builders.security import SecurityMode, container_security_kwargs
from macvtap_provider.images.base import ensure_base_image
from macvtap_provider.images.libvirt_image import ensure_libvirt_image
from tests.simhost import SimHost, SimHosts

pytestmark = [pytest.mark.docker]


@pytest.fixture
def ssh_path(sim_hosts: SimHosts, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ssh` on PATH uses the run's key and known-hosts file (docker-py and libvirt run it)."""
    monkeypatch.setenv("PATH", sim_hosts.identity.env()["PATH"])


@contextlib.contextmanager
def remote_client(host: SimHost) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=host.docker_host, use_ssh_client=True, timeout=30)
    try:
        yield client
    finally:
        client.close()


def ensure_loaded(host: SimHost, client: docker.DockerClient, tag: str) -> None:
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        host.load_image(tag)


@pytest.mark.usefixtures("ssh_path")
def test_a_simulated_host_is_a_separate_engine_seen_only_over_ssh(sim_hosts: SimHosts) -> None:
    host = sim_hosts.hosts[0]
    base = ensure_base_image()
    local = docker.from_env()
    proof = f"/var/lib/macvtap-lab/simhost-proof-{secrets.token_hex(3)}"
    with remote_client(host) as remote:
        assert remote.info()["ID"] != local.info()["ID"]
        assert remote.info()["Name"] == host.name
        ensure_loaded(host, remote, base)
        # save | load over ssh keeps the image's identity.
        assert remote.images.get(base).id == local.images.get(base).id
        container = remote.containers.run(base, ["sleep", "300"], detach=True,
                                          name=f"mvtt-proof-{secrets.token_hex(3)}",
                                          volumes={proof: {"bind": "/proof", "mode": "rw"}})
        try:
            container.reload()
            pid = int(container.attrs["State"]["Pid"])
            assert container.status == "running" and pid > 0
            # Not in the local engine, its bind-mount source not on the local disk, and
            # its PID (the simulated host's PID namespace) names no process of it here.
            assert local.containers.list(all=True, filters={"id": container.id}) == []
            assert not Path(proof).exists()
            cgroup = Path(f"/proc/{pid}/cgroup")
            with contextlib.suppress(OSError):
                assert container.id not in cgroup.read_text()
        finally:
            container.remove(force=True, v=True)
    assert host.ssh(f"test -d {proof} && rm -rf {proof}").returncode == 0


@pytest.mark.usefixtures("ssh_path")
def test_stopping_sshd_cuts_the_wire_and_starting_it_restores_it(sim_hosts: SimHosts) -> None:
    host = sim_hosts.hosts[1]
    host.sshd("stop")
    try:
        errors = (docker.errors.DockerException, requests.exceptions.ConnectionError)
        with pytest.raises(errors), remote_client(host) as remote:
            remote.ping()
        assert host.ssh("true", timeout_s=30).returncode == 255
    finally:
        host.sshd("start")
    deadline = time.monotonic() + 20
    while host.ssh("true", timeout_s=30).returncode != 0:
        assert time.monotonic() < deadline, "sshd did not come back"
        time.sleep(0.2)
    with remote_client(host) as remote:
        assert remote.ping()


@pytest.mark.libvirt
@pytest.mark.usefixtures("ssh_path")
def test_libvirt_in_a_container_on_a_simulated_host_answers_over_qemu_ssh(
        sim_hosts: SimHosts) -> None:
    host = sim_hosts.hosts[1]
    tag = ensure_libvirt_image()
    work = f"/var/lib/macvtap-lab/simhost-lv-{secrets.token_hex(3)}"
    kwargs = container_security_kwargs(SecurityMode.CAPABILITIES, ["SYS_RESOURCE"])
    kwargs["volumes"][f"{work}/run/libvirt"] = {"bind": "/run/libvirt", "mode": "rw"}
    with remote_client(host) as remote:
        ensure_loaded(host, remote, tag)
        container = remote.containers.run(tag, detach=True, name=f"mvtt-lv-{secrets.token_hex(3)}",
                                          **kwargs)
        try:
            socket = f"{work}/run/libvirt/libvirt-sock"
            deadline = time.monotonic() + 60
            while host.ssh(f"test -S {socket}").returncode != 0:
                assert time.monotonic() < deadline, container.logs(tail=20)
                time.sleep(0.3)
            assert not Path(socket).exists()
            uri = (f"qemu+ssh://root@{host.address}/system?socket={socket}"
                   f"&keyfile={sim_hosts.identity.key}&no_tty=1")
            conn = libvirt.open(uri)
            try:
                assert conn.getLibVersion() > 0
                assert conn.listAllDomains() == []
            finally:
                conn.close()
        finally:
            container.remove(force=True, v=True)
    host.ssh(f"rm -rf {work}")
