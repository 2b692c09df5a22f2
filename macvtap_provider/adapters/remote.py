"""Thin adapter for docker engines on other hosts: an ssh tunnel to the engine's socket (or
tcp:// with TLS), libvirt reached through `docker exec` in the lab's container, and uploads
of docker images and files through the docker API.

Nothing here uses a path or PID of the remote host on this machine: the only local objects
are a private directory holding the tunnel's and the libvirt relay's sockets.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.tls
import requests.exceptions
from docker.models.containers import Container

from macvtap_provider.adapters import docker_api
from macvtap_provider.builders.endpoint import DockerEndpoint, ssh_fix, ssh_tunnel_argv
from macvtap_provider.errors import DaemonUnreachableError, DockerError, NotFoundError

log = logging.getLogger(__name__)

TUNNEL_TIMEOUT_S = 30.0
#: Label of the short-lived helper containers that carry file uploads.
HELPER_LABEL = "macvtap-lab.upload"
_CHUNK = 1 << 20
_PDEATHSIG = ("setpriv", "--pdeathsig", "TERM", "--") if shutil.which("setpriv") else ()


# ---- the docker engine ---------------------------------------------------------------------


@contextlib.contextmanager
def ssh_tunnel(endpoint: DockerEndpoint, remote_socket: str | None = None,
               timeout_s: float = TUNNEL_TIMEOUT_S) -> Iterator[str]:
    """Forward a private local unix socket to `remote_socket` on an ssh:// endpoint.

    Yields:
        The local socket's path (in a 0700 directory of its own, removed afterwards).

    Raises:
        DaemonUnreachableError: ssh failed (host down, sshd stopped, key refused, unknown
            host key); the message names the host and what to check.
    """
    directory = tempfile.mkdtemp(prefix="mvt-ssh-")
    local = os.path.join(directory, "sock")
    argv = (ssh_tunnel_argv(endpoint, local, remote_socket) if remote_socket
            else ssh_tunnel_argv(endpoint, local))
    log.debug("ssh tunnel to %s: %s", endpoint.label, " ".join(argv))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        errors = stack.enter_context(tempfile.TemporaryFile())
        try:
            # setpriv --pdeathsig: the tunnel ends with its thread, even on SIGKILL.
            proc = subprocess.Popen([*_PDEATHSIG, *argv], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=errors)
        except OSError as exc:
            raise DaemonUnreachableError(
                f"docker host {endpoint.label}: cannot run ssh ({exc.strerror}): install "
                "openssh-client") from exc
        stack.callback(_end, proc)
        deadline = time.monotonic() + timeout_s
        while not os.path.exists(local):
            if proc.poll() is not None or time.monotonic() > deadline:
                errors.seek(0)
                lines = errors.read().decode(errors="replace").strip().splitlines()
                why = lines[-1] if lines else (f"ssh exited with {proc.returncode}"
                                               if proc.returncode is not None
                                               else f"no connection within {timeout_s:.0f} s")
                raise DaemonUnreachableError(
                    f"docker host {endpoint.label} is unreachable over ssh ({why}): "
                    f"{ssh_fix(endpoint)}")
            time.sleep(0.01)
        yield local


def _end(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def docker_client(endpoint: DockerEndpoint,
                  timeout_s: float | None = None) -> Iterator[docker.DockerClient]:
    """A connected docker client for a remote endpoint (ssh:// tunnel, or tcp:// + TLS);
    docker_api.docker_client calls it for such endpoints."""
    with contextlib.ExitStack() as stack:
        if endpoint.scheme == "ssh":
            base_url = "unix://" + stack.enter_context(ssh_tunnel(endpoint))
            tls: Any = False
        else:
            base_url, tls = str(endpoint.url), _tls_config(endpoint)
        try:
            kwargs: dict[str, Any] = {} if timeout_s is None else {"timeout": int(timeout_s)}
            client = docker.DockerClient(base_url=base_url, tls=tls, **kwargs)
            stack.callback(client.close)
            client.ping()
        except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
            fix = (ssh_fix(endpoint) if endpoint.scheme == "ssh" else
                   "check that dockerd listens there with TLS and trusts the client certificate")
            raise DaemonUnreachableError(
                f"docker host {endpoint.label}: the docker engine does not answer ({exc}): "
                f"{fix}; is dockerd running there?") from exc
        yield client


def _tls_config(endpoint: DockerEndpoint) -> docker.tls.TLSConfig | bool:
    if not endpoint.tls:
        return False
    for name in ("tls_ca_cert", "tls_cert", "tls_key"):
        path = getattr(endpoint, name)
        if path and not Path(path).is_file():
            raise DaemonUnreachableError(
                f"docker host {endpoint.label}: {name} {path} does not exist: point {name} "
                "at the file")
    cert = (endpoint.tls_cert, endpoint.tls_key) if endpoint.tls_cert and endpoint.tls_key else None
    return docker.tls.TLSConfig(client_cert=cert, ca_cert=endpoint.tls_ca_cert,
                                verify=endpoint.tls_ca_cert or True)


# ---- libvirt through docker exec -----------------------------------------------------------


def exec_output(container: Container, cmd: list[str]) -> tuple[int, str]:
    """docker_api.exec_in for a container object (its client and name)."""
    return docker_api.exec_in(container.client, str(container.name), cmd)  # type: ignore[arg-type]


class _Relay:
    """Accepts local connections and pipes each to `virt-ssh-helper` in the container."""

    def __init__(self, client: docker.DockerClient, container: str, path: str) -> None:
        self.client, self.container, self.path = client, container, path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.stopping = threading.Event()
        self.open: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept_loop)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            try:
                _, remote = docker_api.exec_socket(self.client, self.container,
                                                   ["virt-ssh-helper", "qemu:///system"])
            except (docker.errors.DockerException, requests.exceptions.RequestException,
                    OSError) as exc:
                log.warning("libvirt relay to %s: docker exec failed: %s", self.container, exc)
                conn.close()
                continue
            self.open += [conn, remote]
            self._spawn(self._to_remote, conn, remote)
            self._spawn(self._to_local, remote, conn)

    @staticmethod
    def _to_remote(local: socket.socket, remote: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := local.recv(65536):
                remote.sendall(data)
        with contextlib.suppress(OSError):
            remote.shutdown(socket.SHUT_WR)

    def _to_local(self, remote: socket.socket, local: socket.socket) -> None:
        with contextlib.suppress(OSError):
            for stream, payload in docker_api.exec_frames(remote):
                if stream == 1:
                    local.sendall(payload)
                elif payload:
                    log.debug("virt-ssh-helper in %s: %s", self.container,
                              payload.decode(errors="replace").strip())
        with contextlib.suppress(OSError):
            local.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self.threads:
            thread.join(5)


@contextlib.contextmanager
def libvirt_socket(client: docker.DockerClient, container: str) -> Iterator[str]:
    """A local unix socket that reaches libvirtd inside `container` on the client's host.

    Each connection to it runs `virt-ssh-helper qemu:///system` (libvirt's own socket
    proxy, part of the libvirt image) by `docker exec`, so libvirt travels over the docker
    API's channel (the ssh tunnel, or TLS): libvirtd never listens on TCP, and the remote
    host needs nothing but docker. Connect with `qemu:///system?socket=<the path>`.
    """
    directory = tempfile.mkdtemp(prefix="mvt-lv-")
    relay = _Relay(client, container, os.path.join(directory, "libvirt-sock"))
    try:
        yield relay.path
    finally:
        relay.close()
        shutil.rmtree(directory, ignore_errors=True)


# ---- images and files ----------------------------------------------------------------------


def image_id(client: docker.DockerClient, tag: str) -> str | None:
    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None


def upload_image(local: docker.DockerClient, remote: docker.DockerClient, tag: str,
                 host_label: str) -> bool:
    """Make the remote engine hold the local image `tag` (same image ID): stream `docker
    save` into `docker load` through the API when it does not already. True if uploaded.

    Raises:
        NotFoundError: `tag` is not a local image.
        DockerError: the remote engine refused it, or loaded something else.
    """
    want = image_id(local, tag)
    if want is None:
        raise NotFoundError(f"image {tag} is not available locally: run `macvtap-lab images build`")
    if image_id(remote, tag) == want:
        return False
    started = time.monotonic()
    log.info("uploading docker image %s to %s (once per host and image)", tag, host_label)
    try:
        api: Any = remote.api
        for line in api.load_image(local.api.get_image(tag, chunk_size=_CHUNK)):
            log.debug("docker load on %s: %s", host_label, line)
    except docker.errors.DockerException as exc:
        raise DockerError(f"uploading image {tag} to {host_label} failed ({exc}): check free "
                          "space on that host and rerun") from exc
    if image_id(remote, tag) != want:
        raise DockerError(f"uploading image {tag} to {host_label}: the loaded image differs "
                          "from the local one: rerun; if it persists, remove it there")
    log.info("image %s on %s (%.1f s)", tag, host_label, time.monotonic() - started)
    return True


def _tar_stream(source: Path, name: str, digest: Any) -> Iterator[bytes]:
    """A tar archive of one file, streamed (the file is never copied or held in memory)."""
    info = tarfile.TarInfo(name)
    info.size = source.stat().st_size
    info.mode = 0o644
    info.mtime = int(time.time())
    yield info.tobuf(format=tarfile.GNU_FORMAT)
    with open(source, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            yield chunk
    yield b"\0" * ((-info.size) % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE)


def upload_file(client: docker.DockerClient, image: str, source: Path, target: str,
                host_label: str, replace: bool = True) -> str:
    """Copy a local file to `target` (absolute) on the client's host, verified by sha256.

    A short-lived helper container from `image` (already on that host) bind-mounts the
    target's directory; the file is streamed in through the docker API under a temporary
    name of its own, its sha256 checked there, then renamed into place (atomic: a reader
    sees the old file or the whole new one). With `replace` False the target is made only
    if it does not exist yet (a hard link, atomic too), for content-addressed files: when
    a concurrent uploader got there first, its file (same name, same content) is kept and
    ours dropped, so whatever already links to it stays linked.

    Returns:
        The file's sha256 (hex).

    Raises:
        DockerError: the upload failed or arrived damaged.
    """
    directory, name = os.path.split(target)
    part = f".{name}.part-{secrets.token_hex(4)}"
    digest = hashlib.sha256()
    try:
        helper = client.containers.run(
            image, ["sleep", "3600"], entrypoint=[], detach=True, network_mode="none",
            name=f"macvtap-lab-upload-{secrets.token_hex(4)}", labels={HELPER_LABEL: "1"},
            volumes={directory: {"bind": directory, "mode": "rw"}})
    except docker.errors.DockerException as exc:
        raise DockerError(f"uploading {source.name} to {host_label}: cannot start a helper "
                          f"container from {image} ({exc})") from exc
    try:
        started = time.monotonic()
        if not helper.put_archive(directory, _tar_stream(source, part, digest)):
            raise DockerError(f"uploading {source.name} to {host_label}: the engine refused it")
        code, out = exec_output(helper, ["sha256sum", f"{directory}/{part}"])
        remote_digest = out.split()[0] if code == 0 and out else ""
        if remote_digest != digest.hexdigest():
            exec_output(helper, ["rm", "-f", f"{directory}/{part}"])
            raise DockerError(f"uploading {source.name} to {host_label}: sha256 differs after "
                              "the transfer: rerun")
        if replace:
            code, out = exec_output(helper, ["mv", "-f", f"{directory}/{part}", target])
        else:
            code, out = exec_output(helper, [
                "sh", "-c", 'ln -- "$1" "$2" 2>/dev/null; rm -f -- "$1"; test -e "$2"', "sh",
                f"{directory}/{part}", target])
        if code != 0:
            raise DockerError(f"uploading {source.name} to {host_label}: {out.strip()}")
        log.info("uploaded %s to %s:%s (%.0f MB, %.1f s)", source.name, host_label, target,
                 source.stat().st_size / 1e6, time.monotonic() - started)
        return digest.hexdigest()
    except docker.errors.DockerException as exc:
        raise DockerError(f"uploading {source.name} to {host_label} failed ({exc}): rerun") from exc
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            helper.remove(force=True)
