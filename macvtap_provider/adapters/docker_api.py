"""Thin adapter around the docker SDK: one client factory and error translation."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from macvtap_provider.errors import DaemonUnreachableError, DockerError, NotFoundError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Map docker SDK exceptions to the lab's error tree, once, here."""
    try:
        yield
    except docker.errors.NotFound as exc:
        raise NotFoundError(f"{what}: not found ({exc.explanation})") from exc
    except docker.errors.APIError as exc:
        raise DockerError(f"{what}: the docker engine refused: {exc.explanation}") from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise DaemonUnreachableError(
            f"{what}: dockerd is unreachable ({exc}); start it (`make setup` does) or "
            "check the docker_host input") from exc


@contextlib.contextmanager
def docker_client(host: str | None = None) -> Iterator[docker.DockerClient]:
    """A connected client for `host` (unix://, tcp:// or ssh://; None: the local default)."""
    with translate_errors(f"connecting to docker at {host or 'the local socket'}"):
        if host:
            client = docker.DockerClient(base_url=host, use_ssh_client=host.startswith("ssh://"))
        else:
            client = docker.from_env()
        client.ping()
    try:
        yield client
    finally:
        client.close()


def find_container(client: docker.DockerClient, name: str) -> Container | None:
    with translate_errors(f"looking up container {name!r}"):
        try:
            return client.containers.get(name)
        except docker.errors.NotFound:
            return None


def remove_container(client: docker.DockerClient, name: str) -> bool:
    """Force-remove a container; False when it was already gone."""
    container = find_container(client, name)
    if container is None:
        return False
    log.debug("docker rm -f %s", name)
    with translate_errors(f"removing container {name!r}"):
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            return False
    return True


def container_logs(container: Container, lines: int = 20) -> str:
    try:
        raw: bytes = container.logs(tail=lines)
        return raw.decode(errors="replace").strip()
    except docker.errors.DockerException as exc:
        return f"(logs unavailable: {exc})"


def exec_in(container: Container, cmd: list[str], env: dict[str, str] | None = None,
            timeout_s: int | None = None) -> tuple[int, str]:
    """Run a command in a container; returns (exit code, combined output)."""
    if timeout_s:
        cmd = ["timeout", str(timeout_s), *cmd]
    log.debug("docker exec %s %s", container.name, " ".join(cmd))
    with translate_errors(f"running a command in container {container.name!r}"):
        result: Any = container.exec_run(cmd, environment=env or {}, demux=False)
    output = (result.output or b"").decode(errors="replace")
    return int(result.exit_code), output


def network_settings(container: Container, network: str) -> dict[str, Any]:
    """The container's endpoint on `network` (IPAddress, IPPrefixLen, Gateway, MacAddress)."""
    nets: dict[str, Any] = container.attrs.get("NetworkSettings", {}).get("Networks", {})
    if network not in nets:
        raise NotFoundError(f"container {container.name!r} is not attached to network {network!r}")
    return dict(nets[network])
