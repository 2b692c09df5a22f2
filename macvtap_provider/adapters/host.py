"""What the host lets containers do: its capability bounding set and whether --privileged works."""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from macvtap_provider.builders.security import parse_capability_mask
from macvtap_provider.errors import DaemonUnreachableError, DockerError, NotFoundError

log = logging.getLogger(__name__)

SELF_STATUS = Path("/proc/self/status")
#: Label on every throw-away container, so a leftover can be found and removed.
PROBE_LABEL = "macvtap-lab.probe"
#: How long a probe container may live if its creator dies before removing it.
PROBE_SLEEP_S = 300


def read_capability_bounding(status_file: Path = SELF_STATUS) -> frozenset[str]:
    """The capability bounding set (CapBnd) of this process, as capability names.

    Args:
        status_file: A /proc/<pid>/status file; /proc/<dockerd pid>/status tells what the
            daemon itself may grant.

    Raises:
        NotFoundError: The file cannot be read or has no CapBnd line.
    """
    try:
        text = status_file.read_text()
    except OSError as exc:
        raise NotFoundError(f"cannot read {status_file}: {exc.strerror}") from exc
    match = re.search(r"^CapBnd:\s*([0-9a-fA-F]+)\s*$", text, re.MULTILINE)
    if match is None:
        raise NotFoundError(f"{status_file} has no CapBnd line: is this a Linux /proc?")
    return parse_capability_mask(match.group(1))


def _explain(exc: docker.errors.APIError) -> str:
    text = exc.explanation
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text or exc).strip()


@contextlib.contextmanager
def probe_container(
    client: docker.DockerClient,
    image: str,
    kwargs: dict[str, Any],
    name_prefix: str = "macvtap-lab-probe-",
) -> Iterator[Container]:
    """Create and start a throw-away container running `sleep`, without a network.

    The container is force-removed on exit, also when starting it fails.

    Args:
        client: An open docker client.
        image: A local image that has `sleep`.
        kwargs: Extra docker-py `containers.create` kwargs (e.g. the security kwargs).
        name_prefix: Its name is this prefix plus a random suffix.

    Raises:
        NotFoundError: The image does not exist locally.
        DockerError: The daemon refused to create or start it; the message holds its reason.
        DaemonUnreachableError: dockerd does not answer.
    """
    name = f"{name_prefix}{secrets.token_hex(4)}"
    create_kwargs = {
        "name": name,
        "command": ["sleep", str(PROBE_SLEEP_S)],
        "network_mode": "none",
        "labels": {PROBE_LABEL: "1"},
        "detach": True,
        **kwargs,
    }
    log.debug("docker create %s from %s: %s", name, image, kwargs)
    container: Container | None = None
    try:
        container = client.containers.create(image, **create_kwargs)
        container.start()
        yield container
    except docker.errors.ImageNotFound as exc:
        raise NotFoundError(
            f"image {image!r} is not available locally: run `macvtap-lab images build`"
        ) from exc
    except docker.errors.APIError as exc:
        raise DockerError(f"container {name}: {_explain(exc)}") from exc
    except docker.errors.DockerException as exc:
        raise DaemonUnreachableError(
            f"dockerd does not answer ({exc}): start it (`make setup` or `dockerd &`)"
        ) from exc
    finally:
        _remove(client, container, name)


def _remove(client: docker.DockerClient, container: Container | None, name: str) -> None:
    target = container
    if target is None:
        # create may have succeeded on the daemon although the call raised.
        with contextlib.suppress(docker.errors.DockerException):
            target = client.containers.get(name)
    if target is None:
        return
    try:
        log.debug("docker rm -f %s", name)
        target.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.DockerException as exc:
        log.warning("could not remove probe container %s: %s (remove it with docker rm -f)",
                    name, exc)


def privileged_allowed(
    client: docker.DockerClient, image: str, name_prefix: str = "macvtap-lab-probe-"
) -> tuple[bool, str]:
    """Start a tiny `--privileged` container and tell whether the daemon allowed it.

    Args:
        client: An open docker client.
        image: A local image that has `sleep`.
        name_prefix: Prefix of the throw-away container's name.

    Returns:
        (True, what happened) or (False, the daemon's error text, e.g. "... unable to apply
        caps: operation not permitted ...").

    Raises:
        NotFoundError: The image does not exist locally.
        DaemonUnreachableError: dockerd does not answer.
    """
    try:
        with probe_container(client, image, {"privileged": True}, name_prefix):
            pass
    except DockerError as exc:
        return False, str(exc)
    return True, "a --privileged container started"
