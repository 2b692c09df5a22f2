"""The docker adapter against the real dockerd: a probe container, and a secret written to
an exec's stdin that reaches the process and nothing `docker inspect` shows."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import docker
import pytest

from macvtap_provider.adapters import docker_api
from tests.conftest import require

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def image() -> str:
    require("docker")
    from macvtap_provider.images.base import ensure_base_image

    return ensure_base_image()


@pytest.fixture
def client() -> Iterator[docker.DockerClient]:
    with docker_api.docker_client() as handle:
        yield handle


def test_exec_with_input_feeds_stdin_and_nothing_else(client: docker.DockerClient,
                                                      image: str) -> None:
    secret = "pw-" + secrets.token_hex(8)
    with docker_api.probe_container(client, image, owner="test-docker-api") as probe:
        code, out, err = docker_api.exec_with_input(
            client, probe.name, ["sh", "-c", "read -r pw; echo \"len=${#pw}\"; echo oops >&2; "
                                 "exit 3"], f"{secret}\n".encode(), timeout_s=30)
        attrs = client.api.inspect_container(probe.id)
        execs = [client.api.exec_inspect(e) for e in attrs.get("ExecIDs") or []]
    assert (code, out, err) == (3, f"len={len(secret)}\n", "oops\n")
    assert secret not in json.dumps(attrs) and secret not in json.dumps(execs)
    assert attrs["Config"]["Labels"][docker_api.PROBE_LABEL] == "test-docker-api"
    assert docker_api.find_container(client, probe.name) is None  # removed on exit


def test_probe_container_on_no_network_by_default(client: docker.DockerClient,
                                                  image: str) -> None:
    with docker_api.probe_container(client, image, owner="test-docker-api") as probe:
        assert probe.running and list(probe.networks) == ["none"]
        code, out = docker_api.exec_in(client, probe.name, ["sh", "-c", "echo hi"])
    assert (code, out) == (0, "hi\n")
