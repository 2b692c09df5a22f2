"""`LabHost` for a docker engine on another machine (ssh://, or tcp:// with TLS).

Everything goes through that engine's API: netns work by `ip` in the lab's container,
files by short-lived helper containers that bind-mount the path, libvirt through
`virt-ssh-helper` run by docker exec in the lab's container, the KVM decision by qemu in
a container there, images uploaded once. No path or PID of the remote host is used here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from macvtap_provider.adapters import docker_api, libvirt_api, netexec, remote, remote_kvm
from macvtap_provider.adapters.netlink import LinkInfo
from macvtap_provider.builders.endpoint import DockerEndpoint, parse_endpoint, upload_lock_name
from macvtap_provider.builders.security import (
    SecurityMode,
    container_security_kwargs,
    parse_capability_mask,
)
from macvtap_provider.builders.tap import taps_in_dev
from macvtap_provider.errors import DockerError, NotFoundError

if TYPE_CHECKING:
    import docker
    import libvirt
    from docker import DockerClient
    from docker.models.containers import Container

    from macvtap_provider.adapters.docker_api import ContainerInfo

log = logging.getLogger(__name__)

#: Owner label value of the helper containers (docker_api.PROBE_LABEL).
HELPER_OWNER = "remote-host"
_NEWER_CAPABILITIES = frozenset({"PERFMON", "BPF", "CHECKPOINT_RESTORE"})


def helper_image() -> str:
    """The image helpers run on a remote host: the lab's libvirt image (it has sh, ip,
    qemu-img, qemu, procps), uploaded there once."""
    from macvtap_provider.images.libvirt_image import ensure_libvirt_image

    return ensure_libvirt_image()


class ExecNetns:
    """`Netns` of a container on a remote host, by `ip -j` in it (adapters/netexec)."""

    def __init__(self, container: Container) -> None:
        self.c = container

    def link(self, name: str) -> LinkInfo | None:
        return netexec.link(self.c, name)

    def links(self) -> list[LinkInfo]:
        return netexec.links(self.c)

    def used_indexes(self) -> set[int]:
        return netexec.used_indexes(self.c)

    def create_macvtap(self, parent: str, name: str, mac: str, mode: str,
                       index: int) -> LinkInfo:
        return netexec.create_macvtap(self.c, parent, name, mac, mode, index)

    def delete_link(self, name: str) -> bool:
        return netexec.delete_link(self.c, name)

    def remove_address(self, ifname: str, address: str, prefix: int) -> bool:
        return netexec.remove_address(self.c, ifname, address, prefix)

    def restore_address(self, ifname: str, address: str, prefix: int, gateway: str) -> None:
        netexec.restore_address(self.c, ifname, address, prefix, gateway)


class RemoteFiles:
    """`HostFiles` on a remote host: each operation in a helper container that bind-mounts
    the nearest existing directory of the path."""

    def __init__(self, host: RemoteHost) -> None:
        self.host = host

    def run(self, paths: list[str], script: str, *args: str) -> tuple[int, str]:
        """Run `sh -c script sh args...` in a helper that bind-mounts the top directory of
        each of `paths` (/var for /var/lib/...) at the same place."""
        tops = {"/" + path.strip("/").split("/", 1)[0] for path in paths}
        with self.host.helper({top: {"bind": top, "mode": "rw"} for top in tops}) as (client,
                                                                                    name):
            return docker_api.exec_in(client, name, ["sh", "-c", script, "sh", *args])

    def _run(self, path: str, script: str, *args: str) -> tuple[int, str]:
        return self.run([path], script, *args)

    def exists(self, path: str) -> bool:
        return self._run(path, 'test -e "$1"', path)[0] == 0

    def make_dirs(self, path: str) -> None:
        code, out = self._run(path, 'mkdir -p "$1"', path)
        if code != 0:
            raise DockerError(f"cannot make {path} on {self.host.label}: {out.strip()}")

    def remove_tree(self, path: str) -> None:
        self._run(path, 'rm -rf "$1"', path)

    def prune_empty_dirs(self, path: str, levels: int) -> None:
        from macvtap_provider import paths

        stop = str(paths.work_root())
        self._run(path, 'd=$1; i=0; while [ "$i" -lt "$2" ] && [ "$d" != "$3" ] && '
                        '[ "$d" != / ] && rmdir "$d" 2>/dev/null; do d=$(dirname "$d"); '
                        'i=$((i+1)); done', path, str(levels), stop)

    def image_in_use(self, path: str) -> bool:
        code, out = self._run(path, 'test -e "$1" || exit 0; qemu-img info "$1"', path)
        return code != 0 and "lock" in out.lower()

    def wait_released(self, path: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.image_in_use(path) and time.monotonic() < deadline:
            time.sleep(0.5)


class RemoteHost:
    """`LabHost` for an engine on another machine; nothing of it is kept between calls."""

    def __init__(self, docker_host: str) -> None:
        self.docker_host: str | None = docker_host
        self.endpoint: DockerEndpoint = parse_endpoint(docker_host)
        self.files = RemoteFiles(self)

    @property
    def label(self) -> str:
        return self.endpoint.label

    def docker(self) -> contextlib.AbstractContextManager[docker.DockerClient]:
        return docker_api.docker_client(self.docker_host)

    def container(self, name: str) -> ContainerInfo | None:
        with self.docker() as client:
            return docker_api.find_container(client, name)

    def ensure_image(self, tag: str, client: DockerClient | None = None) -> None:
        """Upload the local image `tag` unless the host has it (same image ID), through
        `client` (a client of this host's engine) if given, else a new one.

        One upload per host and image on this machine at a time (a lock named stably, see
        `upload_lock_name`); whoever gets the lock second finds the image there and skips.
        Uploaders on other machines are harmless: `docker load` of the same image twice
        leaves one image with that ID.
        """
        from macvtap_provider.images.base import build_lock

        with contextlib.ExitStack() as stack:
            stack.enter_context(build_lock(upload_lock_name(self.endpoint, f"image {tag}")))
            local = stack.enter_context(docker_api.docker_client())
            there = client if client is not None else stack.enter_context(self.docker())
            remote.upload_image(local, there, tag, self.label)

    @contextlib.contextmanager
    def helper(self, volumes: dict[str, dict[str, str]], devices: bool = False,
               **run: Any) -> Iterator[tuple[DockerClient, str]]:
        """A short-lived container on the host (the helper image, no network; `run`: more
        `containers.run` arguments)."""
        image = helper_image()
        kwargs: dict[str, Any] = {"volumes": dict(volumes)}
        if devices:  # /dev of the host, and what qemu needs to use it
            kwargs = container_security_kwargs(SecurityMode.CAPABILITIES, ["SYS_RESOURCE"])
            kwargs["volumes"].update(volumes)
        kwargs.update(run)
        # One tunnel for the image check and the helper: opening one costs ~0.3 s.
        with self.docker() as client:
            self.ensure_image(image, client)
            with docker_api.probe_container(
                    client, image, owner=HELPER_OWNER, name_prefix="macvtap-lab-helper-",
                    **kwargs) as info:
                yield client, info.name

    @contextlib.contextmanager
    def netns(self, container: str) -> Iterator[ExecNetns]:
        with self.docker() as client:
            info = docker_api.find_container(client, container)
            if info is None or not info.running:
                raise NotFoundError(f"container {container!r} on {self.label} is not running")
            yield ExecNetns(client.containers.get(container))

    def tap_indexes(self) -> set[int]:
        with self.helper({"/dev": {"bind": "/dev", "mode": "ro"}}) as (client, name):
            code, out = docker_api.exec_in(client, name, ["ls", "/dev"])
        if code != 0:
            raise DockerError(f"listing /dev on {self.label}: {out.strip()}")
        return taps_in_dev(out.split())

    def has_device(self, path: str) -> bool:
        with self.helper({"/dev": {"bind": "/dev", "mode": "ro"}}) as (client, name):
            return docker_api.exec_in(client, name, ["test", "-e", path])[0] == 0

    def capability_bounding(self) -> frozenset[str]:
        """What that host's dockerd may grant: its own CapBnd, read in the host's PID
        namespace."""
        with self.helper({}, pid_mode="host") as (client, name):
            code, out = docker_api.exec_in(client, name, [
                "sh", "-c", 'grep CapBnd "/proc/$(pidof -s dockerd || echo 1)/status"'])
            version = docker_api.engine_version(client)
        if code != 0 or ":" not in out:
            raise DockerError(f"reading dockerd's capabilities on {self.label}: {out.strip()}")
        bounding = parse_capability_mask(out.split(":", 1)[1].strip())
        if version.split(".")[0].isdigit() and int(version.split(".")[0]) < 21:
            # docker 20.10 knows no newer capability: "ALL" does not grant them there, and
            # naming them in cap_drop is refused ("unknown capability"). Nothing to drop.
            bounding |= _NEWER_CAPABILITIES
        return bounding

    def kvm_usable(self) -> bool:
        forced = os.environ.get("MACVTAP_LAB_KVM")
        if forced in ("0", "1"):
            return forced == "1"
        import json

        from macvtap_provider.paths import cache_dir

        # A probe can cost 20 s: remembered per host and kernel release, as the local one.
        with self.helper({}, devices=True) as (client, name):
            release = docker_api.exec_in(client, name, ["uname", "-r"])[1].strip()
            key = f"{self.endpoint.host}|{release}"
            cache = cache_dir() / "kvm-probe-remote.json"
            with contextlib.suppress(OSError, ValueError):
                known = json.loads(cache.read_text())
                if key in known:
                    return bool(known[key])
            probe = remote_kvm.probe_kvm(client.containers.get(name))
        log.info("KVM probe on %s: %s (%s)", self.label, probe.status.value, probe.detail)
        with contextlib.suppress(OSError, ValueError):
            cache.parent.mkdir(parents=True, exist_ok=True)
            known = json.loads(cache.read_text()) if cache.exists() else {}
            cache.write_text(json.dumps({**known, key: probe.usable}))
        return probe.usable

    def libvirt_uri(self, socket_path: str) -> str:
        # For people (virsh over ssh; the host then needs netcat-openbsd); the provider
        # itself goes through libvirt().
        user = f"{self.endpoint.user}@" if self.endpoint.user else ""
        port = f":{self.endpoint.port}" if self.endpoint.port else ""
        return f"qemu+ssh://{user}{self.endpoint.host}{port}/system?socket={socket_path}"

    @contextlib.contextmanager
    def libvirt(self, uri: str, container: str, hint: str = ""
                ) -> Iterator[libvirt.virConnect]:
        hint = hint or f"is container {container!r} on {self.label} running?"
        with (self.docker() as client, remote.libvirt_socket(client, container) as sock,
              libvirt_api.connection(f"qemu:///system?socket={sock}", hint) as conn):
            yield conn

    def wait_libvirt(self, uri: str, container: str, timeout_s: float) -> str:
        with self.docker() as client, remote.libvirt_socket(client, container) as sock:
            return libvirt_api.wait_until_answering(f"qemu:///system?socket={sock}", timeout_s)
