"""The doctor's docker checks against the real dockerd of this machine."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import docker.errors
import pytest

from macvtap_provider import doctor
from macvtap_provider.adapters import docker_api
from macvtap_provider.adapters.docker_api import PROBE_LABEL, privileged_allowed, probe_container
from macvtap_provider.adapters.lab_host import read_capability_bounding
from macvtap_provider.builders.security import (
    SecurityMode,
    container_security_kwargs,
    missing_capabilities,
)
from macvtap_provider.doctor import Status
from tests.conftest import require

pytestmark = pytest.mark.docker

NOT_DOCKER = ["kvm", "tun", "vhost-net", "guestfs", "pulumi"]


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    require("docker")
    handle = docker.from_env()
    yield handle
    handle.close()


@pytest.fixture(scope="module")
def base_image(client: docker.DockerClient) -> str:
    from macvtap_provider.images.base import ensure_base_image

    return ensure_base_image()


def _probe_containers(client: docker.DockerClient) -> list[str]:
    found = client.containers.list(all=True, filters={"label": PROBE_LABEL})
    return sorted(str(c.name) for c in found)


def test_doctor_docker_checks(client: docker.DockerClient, base_image: str) -> None:
    before = _probe_containers(client)
    results = {r.name: r for r in doctor.run_checks(NOT_DOCKER, image=base_image)}

    assert results["docker"].status is Status.PASS
    if missing_capabilities(read_capability_bounding()):
        # This host: runc cannot apply the full set, so capability mode takes over.
        assert results["privileged"].status is Status.WARN
        assert "unable to apply caps" in results["privileged"].detail
        assert "capability mode is used" in results["privileged"].detail
    else:
        assert results["privileged"].status is Status.PASS
    assert results["dev"].status is Status.PASS, results["dev"].detail
    assert "/dev/net/tun" in results["dev"].detail
    assert {results[name].status for name in NOT_DOCKER} == {Status.SKIP}
    assert doctor.exit_code(list(results.values())) == 0
    assert _probe_containers(client) == before


def test_privileged_probe_removes_its_container(
    client: docker.DockerClient, base_image: str
) -> None:
    before = _probe_containers(client)
    ok, why = privileged_allowed(client, base_image)
    if missing_capabilities(read_capability_bounding()):
        assert not ok
        assert "operation not permitted" in why
    assert _probe_containers(client) == before


def test_without_dev_mount_tun_is_absent(client: docker.DockerClient, base_image: str) -> None:
    """What the /dev check guards against: docker's own /dev has no /dev/net/tun."""
    missing = missing_capabilities(read_capability_bounding())
    kwargs = container_security_kwargs(SecurityMode.CAPABILITIES, missing)
    del kwargs["volumes"]
    with probe_container(client, base_image, owner="test", **kwargs) as container:
        code, _ = docker_api.exec_in(client, container.name, ["sh", "-c", "exec 3<>/dev/net/tun"])
        assert code != 0
    with_dev = container_security_kwargs(SecurityMode.CAPABILITIES, missing)
    with probe_container(client, base_image, owner="test", **with_dev) as container:
        code, _ = docker_api.exec_in(client, container.name, ["sh", "-c", "exec 3<>/dev/net/tun"])
        assert code == 0


@pytest.mark.guestfs
def test_whole_doctor_says_ready_on_this_machine(client: docker.DockerClient) -> None:
    """Every check runs for real; the blockers are absent after `make setup`. Where this
    host lacks something optional (KVM that works, --privileged, vhost-net) it is a WARN
    with a fix, never a FAIL."""
    require("docker", "guestfs", "pulumi", "qemu")
    results = {r.name: r for r in doctor.run_checks()}
    for name in ("docker", "dev", "tun", "guestfs", "pulumi"):
        assert results[name].status is Status.PASS, results[name]
    for name in ("privileged", "kvm", "vhost-net"):
        assert results[name].status in (Status.PASS, Status.WARN), results[name]
        if results[name].status is Status.WARN:
            assert results[name].fix
    assert doctor.exit_code(list(results.values())) == 0
