"""The machine a lab runs on, as the resources see it: its docker engine, the network
namespaces of its containers, its device nodes, its files and what its kernel allows.

Resources reach a host only through `for_endpoint(docker_host)`, never through a PID,
/proc or a local path of their own, so that a host reached over `ssh://` or `tcp://` can
get an implementation of `LabHost` that does the same work over the wire:
`adapters/remote_host.RemoteHost` (netns work by `ip` in the lab's container, files in
helper containers, libvirt through `docker exec` of virt-ssh-helper, the KVM probe run
there). An engine on this machine gets `LocalHost`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from macvtap_provider import paths
from macvtap_provider.adapters import docker_api, netlink, qemu_img
from macvtap_provider.builders.security import parse_capability_mask
from macvtap_provider.builders.tap import taps_in_dev
from macvtap_provider.errors import GuestfsError, NotFoundError

if TYPE_CHECKING:
    import docker
    import libvirt

    from macvtap_provider.adapters.docker_api import ContainerInfo
    from macvtap_provider.adapters.netlink import Netns

log = logging.getLogger(__name__)

SELF_STATUS = Path("/proc/self/status")
VHOST_NET = "/dev/vhost-net"


class HostFiles(Protocol):
    """File operations on the lab host (work directories, disks, sockets)."""

    def exists(self, path: str) -> bool: ...

    def make_dirs(self, path: str) -> None: ...

    def remove_tree(self, path: str) -> None: ...

    def prune_empty_dirs(self, path: str, levels: int) -> None: ...

    def image_in_use(self, path: str) -> bool: ...

    def wait_released(self, path: str, timeout_s: float) -> None: ...


class LabHost(Protocol):
    """What a resource may ask of the host its docker endpoint runs on."""

    @property
    def docker_host(self) -> str | None: ...

    @property
    def files(self) -> HostFiles: ...

    def docker(self) -> contextlib.AbstractContextManager[docker.DockerClient]: ...

    def container(self, name: str) -> ContainerInfo | None: ...

    def netns(self, container: str) -> contextlib.AbstractContextManager[Netns]: ...

    def tap_indexes(self) -> set[int]: ...

    def has_device(self, path: str) -> bool: ...

    def capability_bounding(self) -> frozenset[str]: ...

    def kvm_usable(self) -> bool: ...

    def libvirt_uri(self, socket_path: str) -> str: ...

    def libvirt(self, uri: str, container: str,
                hint: str = "") -> contextlib.AbstractContextManager[libvirt.virConnect]: ...

    def wait_libvirt(self, uri: str, container: str, timeout_s: float) -> str: ...

    def ensure_image(self, tag: str) -> None: ...


def read_capability_bounding(status_file: Path = SELF_STATUS) -> frozenset[str]:
    """The capability bounding set (CapBnd) of this process, as capability names.

    Args:
        status_file: A /proc/<pid>/status file.

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


class LocalFiles:
    """`HostFiles` on this machine."""

    def exists(self, path: str) -> bool:
        return Path(path).exists()

    def make_dirs(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def prune_empty_dirs(self, path: str, levels: int) -> None:
        paths.prune_empty_dirs(Path(path), levels)

    def image_in_use(self, path: str) -> bool:
        return Path(path).exists() and qemu_img.in_use(Path(path))

    def link_or_copy(self, src: str, dst: str) -> None:
        """`dst` becomes a hard link to `src` (same inode: the base is only ever read), or
        a (reflinked where possible) copy when they are on different filesystems."""
        Path(dst).unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            log.info("%s is on another filesystem than %s: copying it", src, dst)
            cmd = ["cp", "--reflink=auto", src, dst]
            log.debug("%s", " ".join(cmd))
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise GuestfsError(f"copying {src} to {dst} failed: "
                                   f"{proc.stderr.strip()}") from None

    def wait_released(self, path: str, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) until no qemu holds the image `path` open."""
        deadline = time.monotonic() + timeout_s
        while self.image_in_use(path) and time.monotonic() < deadline:
            time.sleep(0.2)


class LocalHost:
    """`LabHost` for a docker engine whose containers run on this machine."""

    def __init__(self, docker_host: str | None = None) -> None:
        self.docker_host = docker_host
        self.files = LocalFiles()

    def docker(self) -> contextlib.AbstractContextManager[docker.DockerClient]:
        return docker_api.docker_client(self.docker_host)

    def container(self, name: str) -> ContainerInfo | None:
        with self.docker() as client:
            return docker_api.find_container(client, name)

    @contextlib.contextmanager
    def netns(self, container: str) -> Iterator[Netns]:
        info = self.container(container)
        if info is None or not info.running or not info.pid:
            raise NotFoundError(f"container {container!r} is not running")
        with netlink.in_netns(info.pid) as ns:
            yield netlink.PyrouteNetns(ns)

    def tap_indexes(self) -> set[int]:
        # /dev/tapN is named by the macvtap's ifindex in the host's one /dev, shared by
        # every container that bind-mounts it.
        return taps_in_dev(os.listdir("/dev"))

    def has_device(self, path: str) -> bool:
        return Path(path).exists()

    def capability_bounding(self) -> frozenset[str]:
        return read_capability_bounding()

    def kvm_usable(self) -> bool:
        from macvtap_provider.adapters.kvm import kvm_usable

        return kvm_usable()

    def libvirt_uri(self, socket_path: str) -> str:
        return f"qemu:///system?socket={socket_path}"

    def libvirt(self, uri: str, container: str,
                hint: str = "") -> contextlib.AbstractContextManager[libvirt.virConnect]:
        from macvtap_provider.adapters import libvirt_api

        return libvirt_api.connection(uri, hint)

    def wait_libvirt(self, uri: str, container: str, timeout_s: float) -> str:
        from macvtap_provider.adapters import libvirt_api

        return libvirt_api.wait_until_answering(uri, timeout_s)

    def ensure_image(self, tag: str) -> None:
        """Nothing to do: the image was built on this machine's engine."""


def for_endpoint(docker_host: str | None) -> LabHost:
    """The host behind a docker endpoint (None: the local default).

    The one place a remote implementation plugs in; providers call it inside each
    operation and keep nothing of it (they are pickled into the state). An engine on
    this machine (the local socket, tcp:// to loopback) gets LocalHost, the fast path;
    ssh:// and other tcp:// endpoints get RemoteHost, which goes over the wire only.
    """
    from macvtap_provider.builders.endpoint import parse_endpoint

    if docker_host and not parse_endpoint(docker_host).is_local:
        from macvtap_provider.adapters.remote_host import RemoteHost

        return RemoteHost(docker_host)
    return LocalHost(docker_host)
