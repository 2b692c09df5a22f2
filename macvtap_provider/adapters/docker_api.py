"""Thin adapter around the docker SDK: the one client factory, error translation, and the
container, network, exec and probe operations the resources need.

Resources never touch the SDK: they get plain snapshots (`ContainerInfo`, `NetworkInfo`)
and pass names, so an operation reads the same against a local socket, `tcp://` or
`ssh://` endpoint. The SDK is imported by the first operation, not with this module, so a
Pulumi program (which only declares resources) does not load it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import secrets
import socket
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from macvtap_provider.errors import DaemonUnreachableError, DockerError, NotFoundError

if TYPE_CHECKING:  # the SDK (and requests) cost ~80 ms to import: only operations pay
    import docker
    from docker.models.containers import Container

log = logging.getLogger(__name__)

#: Label on every throw-away container (value: who made it), so a leftover can be found.
PROBE_LABEL = "org.macvtap-lab.probe"
#: How long a probe container may live if its creator dies before removing it.
PROBE_SLEEP_S = 900
#: URL schemes a docker endpoint may use (docker-py's own transports).
ENDPOINT_SCHEMES = ("unix", "tcp", "ssh")


def _explain(exc: docker.errors.APIError) -> str:
    text = exc.explanation
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return str(text or exc).strip()


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Map docker SDK exceptions to the lab's error tree, once, here."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise NotFoundError(f"{what}: image not found ({_explain(exc)}): build it with "
                            "`macvtap-lab images build`") from exc
    except docker.errors.NotFound as exc:
        raise NotFoundError(f"{what}: not found ({_explain(exc)})") from exc
    except docker.errors.APIError as exc:
        raise DockerError(f"{what}: the docker engine refused: {_explain(exc)}") from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise DaemonUnreachableError(
            f"{what}: dockerd is unreachable ({exc}); start it (`make setup` does) or "
            "check the docker_host input") from exc


@contextlib.contextmanager
def docker_client(host: str | None = None,
                  timeout_s: float | None = None) -> Iterator[docker.DockerClient]:
    """A connected client for `host` (unix://, tcp:// or ssh://; None: the local default,
    DOCKER_HOST honoured), closed afterwards. The only place a docker client is made.

    An ssh:// host is reached through an ssh tunnel to its engine's socket, and a tcp://
    host with the TLS files its URL names (adapters/remote, builders/endpoint): docker-py's
    own ssh transport loses exec output and opens an ssh connection per request.
    """
    import docker

    from macvtap_provider.builders.endpoint import parse_endpoint

    endpoint = parse_endpoint(host)
    if endpoint.scheme == "ssh" or endpoint.tls:
        from macvtap_provider.adapters import remote

        with remote.docker_client(endpoint, timeout_s) as client:
            yield client
        return
    kwargs: dict[str, Any] = {} if timeout_s is None else {"timeout": int(timeout_s)}
    with translate_errors(f"connecting to docker at {host or 'the local socket'}"):
        if host:
            client = docker.DockerClient(base_url=endpoint.url, **kwargs)
        else:
            client = docker.from_env(**kwargs)
        try:
            client.ping()
        except BaseException:
            client.close()
            raise
    try:
        yield client
    finally:
        client.close()


def engine_version(client: docker.DockerClient) -> str:
    """The docker engine's version string."""
    with translate_errors("reading the docker engine's version"):
        return str(client.version().get("Version", "?"))


def image_tags(client: docker.DockerClient, prefix: str) -> list[tuple[str, int, str]]:
    """(tag, size in bytes, short id) of every local image tag starting with `prefix`."""
    with translate_errors("listing images"):
        return sorted((tag, int(image.attrs.get("Size", 0)), str(image.short_id))
                      for image in client.images.list()
                      for tag in image.tags if tag.startswith(prefix))


# -- containers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerInfo:
    """What a resource may know about a container: a snapshot, not a handle."""

    id: str
    name: str
    status: str
    pid: int
    labels: Mapping[str, str] = field(default_factory=dict)
    networks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status == "running"

    def endpoint(self, network: str) -> dict[str, Any]:
        """Its endpoint on `network` (IPAddress, IPPrefixLen, Gateway, MacAddress)."""
        if network not in self.networks:
            raise NotFoundError(f"container {self.name!r} is not attached to network "
                                f"{network!r}")
        return dict(self.networks[network])


def _info(container: Container) -> ContainerInfo:
    attrs = container.attrs
    return ContainerInfo(
        id=str(container.id), name=str(container.name), status=str(container.status),
        pid=int((attrs.get("State") or {}).get("Pid") or 0),
        labels=dict(container.labels or {}),
        networks=dict((attrs.get("NetworkSettings") or {}).get("Networks") or {}))


def _find(client: docker.DockerClient, name: str) -> Container | None:
    import docker.errors

    with translate_errors(f"looking up container {name!r}"):
        try:
            return client.containers.get(name)
        except docker.errors.NotFound:
            return None


def find_container(client: docker.DockerClient, name: str) -> ContainerInfo | None:
    """The container called `name` (or with that id), or None when there is none."""
    container = _find(client, name)
    return None if container is None else _info(container)


def remove_container(client: docker.DockerClient, name: str) -> bool:
    """Force-remove a container and its anonymous volumes; False when it was already gone."""
    import docker.errors

    container = _find(client, name)
    if container is None:
        return False
    log.debug("docker rm -f %s", name)
    with translate_errors(f"removing container {name!r}"):
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            return False
    return True


def create_container(client: docker.DockerClient, image: str, name: str, *, network: str,
                     labels: Mapping[str, str], ipv4_address: str | None = None,
                     **kwargs: Any) -> ContainerInfo:
    """Create and start a container on `network`, optionally at a pinned address.

    `kwargs` are docker-py `containers.create` arguments (security settings, volumes...).
    """
    log.debug("docker run %s from %s on %s (%s)", name, image, network, sorted(kwargs))
    with translate_errors(f"starting container {name!r}"):
        container = client.containers.create(image, name=name, hostname=name, detach=True,
                                             labels=dict(labels), network=network, **kwargs)
        if ipv4_address:
            # Pin the address (docker picks one otherwise) on the lab network.
            net = client.networks.get(network)
            net.disconnect(container)
            net.connect(container, ipv4_address=ipv4_address)
        container.start()
        container.reload()
    return _info(container)


def container_logs(client: docker.DockerClient, name: str, lines: int = 20) -> str:
    """The last `lines` of a container's output, for error messages (never raises)."""
    import docker.errors

    try:
        raw: bytes = client.containers.get(name).logs(tail=lines)
        return raw.decode(errors="replace").strip()
    except docker.errors.DockerException as exc:
        return f"(logs unavailable: {exc})"


def exec_socket(client: docker.DockerClient, name: str, cmd: list[str],
                env: dict[str, str] | None = None) -> tuple[str, socket.socket]:
    """Start `cmd` in a container by docker exec, held until released; (exec id, its raw
    socket: write stdin to it, read its framed output with exec_frames).

    docker-py reads exec output from the raw socket behind the HTTP response, so output
    that arrives together with the response's headers (over an ssh tunnel it often does)
    stays in the response's buffer and is lost. So the command first waits for one line on
    its stdin: it cannot print anything before the socket is ours; the newline is sent here.
    """
    api: Any = client.api
    held = ["sh", "-c", 'read -r _ && exec "$@"', "macvtap-lab-exec", *cmd]
    exec_id = api.exec_create(name, held, stdin=True, stdout=True, stderr=True, tty=False,
                              environment=env)["Id"]
    sock: Any = api.exec_start(exec_id, socket=True)
    raw: socket.socket = getattr(sock, "_sock", sock)
    raw.settimeout(None)
    raw.sendall(b"\n")
    return str(exec_id), raw


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def exec_frames(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """(stream, payload) frames of a tty-less exec (8-byte header: stream, 0, 0, 0, size)."""
    while True:
        header = _read_exact(sock, 8)
        if len(header) < 8:
            return
        size = int.from_bytes(header[4:], "big")
        payload = _read_exact(sock, size) if size else b""
        if len(payload) < size:
            return
        yield header[0], payload


def exec_in(client: docker.DockerClient, name: str, cmd: list[str],
            timeout_s: int | None = None) -> tuple[int, str]:
    """Run a command in a running container; returns (exit code, combined output).

    Works the same on a local engine and on one behind an ssh tunnel (see exec_socket).
    """
    if timeout_s:
        cmd = ["timeout", str(timeout_s), *cmd]
    log.debug("docker exec %s %s", name, " ".join(cmd))
    with translate_errors(f"running a command in container {name!r}"):
        exec_id, sock = exec_socket(client, name, cmd)
        try:
            sock.shutdown(socket.SHUT_WR)
            output = b"".join(payload for _, payload in exec_frames(sock))
        finally:
            sock.close()
        code = client.api.exec_inspect(exec_id).get("ExitCode")
    return (-1 if code is None else int(code)), output.decode(errors="replace")


def put_file(client: docker.DockerClient, name: str, path: str, data: bytes,
             mode: int = 0o600) -> None:
    """Write a file into a running container through the API (its directory is made
    0700 when missing): the content never appears in argv, env or `docker inspect`."""
    directory, _, filename = path.rpartition("/")
    exec_in(client, name, ["mkdir", "-p", "-m", "0700", directory or "/"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(filename)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))
    log.debug("docker cp (%d bytes) %s:%s", len(data), name, path)
    with translate_errors(f"copying a file into container {name!r}"):
        client.containers.get(name).put_archive(directory or "/", buf.getvalue())


def exec_with_input(client: docker.DockerClient, name: str, cmd: list[str], data: bytes,
                    timeout_s: int | None = None) -> tuple[int, str, str]:
    """Run a command in a container with `data` written to its stdin.

    For secrets: `data` travels over the exec's attached stream only, never in argv,
    the environment or anything `docker inspect` shows. Returns (exit code, stdout, stderr).
    """
    if timeout_s:
        cmd = ["timeout", str(timeout_s), *cmd]
    import docker.utils.socket

    log.debug("docker exec -i %s %s (%d bytes on stdin)", name, " ".join(cmd), len(data))
    api = client.api
    with translate_errors(f"running a command in container {name!r}"):
        exec_id = api.exec_create(name, cmd, stdin=True, stdout=True, stderr=True)["Id"]
        sock = api.exec_start(exec_id, socket=True)
        try:
            raw: Any = getattr(sock, "_sock", sock)
            raw.sendall(data)
            frames = docker.utils.socket.frames_iter(sock, tty=False)  # type: ignore[no-untyped-call]
            demuxed = (docker.utils.socket.demux_adaptor(*frame) for frame in frames)
            out, err = docker.utils.socket.consume_socket_output(demuxed, demux=True)
        finally:
            sock.close()
        code = api.exec_inspect(exec_id).get("ExitCode")
    return (-1 if code is None else int(code),
            (out or b"").decode(errors="replace"), (err or b"").decode(errors="replace"))


@contextlib.contextmanager
def probe_container(client: docker.DockerClient, image: str, *, owner: str,
                    network: str | None = None, name_prefix: str = "macvtap-lab-probe-",
                    lifetime_s: int = PROBE_SLEEP_S, **kwargs: Any) -> Iterator[ContainerInfo]:
    """A throw-away container running `sleep` (docker's init in front), removed on exit.

    The one helper for every probe: on `network` (None: no network at all), labelled
    `PROBE_LABEL=owner` so a leftover can be found; it ends by itself after `lifetime_s`
    if its creator dies first. `kwargs` are extra docker-py `containers.create` arguments
    (security settings for the doctor's probes).

    Raises:
        NotFoundError: The image does not exist on that docker host.
        DockerError: The daemon refused to create or start it; the message holds its reason.
        DaemonUnreachableError: dockerd does not answer.
    """
    name = f"{name_prefix}{secrets.token_hex(4)}"
    options: dict[str, Any] = {
        "name": name, "command": [str(lifetime_s)], "entrypoint": ["sleep"],
        "labels": {PROBE_LABEL: owner}, "detach": True, "init": True, **kwargs}
    if network:
        options["network"] = network
    else:
        options["network_mode"] = "none"
    log.debug("docker run %s from %s (probe for %s, network %s)", name, image, owner,
              network or "none")
    creator = os.getpid()
    try:
        with translate_errors(f"probe container {name}"):
            container = client.containers.create(image, **options)
            container.start()
            container.reload()
        yield _info(container)
    finally:
        # create may have succeeded on the daemon although the call raised. Never from a
        # forked child unwinding a copy of this stack (pyroute2 forks to enter a netns).
        try:
            if os.getpid() == creator:
                remove_container(client, name)
        except (DockerError, DaemonUnreachableError) as exc:
            log.warning("could not remove probe container %s: %s (remove it with docker "
                        "rm -f)", name, exc)


def privileged_allowed(client: docker.DockerClient, image: str,
                       name_prefix: str = "macvtap-lab-probe-") -> tuple[bool, str]:
    """Start a tiny `--privileged` container and tell whether the daemon allowed it.

    Returns:
        (True, what happened) or (False, the daemon's error text, e.g. "... unable to apply
        caps: operation not permitted ...").

    Raises:
        NotFoundError: The image does not exist locally.
        DaemonUnreachableError: dockerd does not answer.
    """
    try:
        with probe_container(client, image, owner="privileged-check",
                             name_prefix=name_prefix, privileged=True):
            pass
    except DockerError as exc:
        return False, str(exc)
    return True, "a --privileged container started"


# -- networks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkInfo:
    id: str
    name: str
    attrs: Mapping[str, Any]

    @property
    def bridge(self) -> str:
        """The Linux bridge behind a bridge network; "" for other drivers (macvlan)."""
        if self.attrs.get("Driver", "bridge") != "bridge":
            return ""
        options = self.attrs.get("Options") or {}
        return str(options.get("com.docker.network.bridge.name") or f"br-{self.id[:12]}")


def find_network(client: docker.DockerClient, name: str) -> NetworkInfo | None:
    """The network called exactly `name`, or None."""
    with translate_errors(f"looking up network {name!r}"):
        for net in client.networks.list(names=[name]):
            if net.name == name:
                net.reload()
                return NetworkInfo(str(net.id), name, dict(net.attrs))
    return None


def network_by_id(client: docker.DockerClient, network_id: str) -> NetworkInfo | None:
    import docker.errors

    with translate_errors(f"reading network {network_id[:12]}"):
        try:
            net = client.networks.get(network_id)
        except docker.errors.NotFound:
            return None
    return NetworkInfo(str(net.id), str(net.name), dict(net.attrs))


def create_network(client: docker.DockerClient, name: str, *, subnet: str, gateway: str | None,
                   ip_range: str | None, internal: bool, labels: Mapping[str, str],
                   parent: str | None = None) -> NetworkInfo:
    """A network with one IPv4 pool: a bridge, or with `parent` a macvlan network on that
    NIC of the engine's host (bridge mode)."""
    import docker.types

    pool = docker.types.IPAMPool(subnet=subnet, gateway=gateway, iprange=ip_range)
    driver, options = ("macvlan", {"parent": parent}) if parent else ("bridge", None)
    log.debug("docker network create %s (%s, %s%s, internal=%s)", name, subnet, driver,
              f" on {parent}" if parent else "", internal)
    with translate_errors(f"creating network {name!r}"):
        net = client.networks.create(
            name, driver=driver, options=options, internal=internal,
            ipam=docker.types.IPAMConfig(pool_configs=[pool]), labels=dict(labels),
            check_duplicate=True)
        net.reload()
    return NetworkInfo(str(net.id), name, dict(net.attrs))


def remove_network(client: docker.DockerClient, network_id: str) -> bool:
    """Remove a network; False when it was already gone."""
    import docker.errors

    with translate_errors(f"removing network {network_id[:12]}"):
        try:
            client.networks.get(network_id).remove()
        except docker.errors.NotFound:
            return False
    return True
