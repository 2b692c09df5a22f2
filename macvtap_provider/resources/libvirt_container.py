"""LibvirtContainer: a docker container running libvirtd + qemu, reachable from the host.

The work directory is bind-mounted at the same path inside the container, so a
disk path is the same for the host (guestfs) and for qemu; libvirt's socket
directory is bind-mounted from `<work_dir>/run/libvirt`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource, UpdateResult

from macvtap_provider import paths
from macvtap_provider.adapters import docker_api
from macvtap_provider.adapters.docker_api import ContainerInfo
from macvtap_provider.adapters.lab_host import LabHost, for_endpoint
from macvtap_provider.builders.security import (
    SecurityMode,
    container_security_kwargs,
    missing_capabilities,
    modes_to_try,
)
from macvtap_provider.builders.validation import check_choice, check_ipv4, check_name
from macvtap_provider.errors import DockerError, LabError, LabTimeoutError, SpecError
from macvtap_provider.resources._base import (
    LabProvider,
    check_endpoint,
    fill_defaults,
    input_names,
    known,
    output_names,
    resource_props,
    spec_kwargs,
)

log = logging.getLogger(__name__)

LABEL = "org.macvtap-lab.container"
READY_TIMEOUT_S = 90.0


def socket_dir(work_dir: str) -> Path:
    return Path(work_dir) / "run" / "libvirt"


def socket_path(work_dir: str) -> str:
    """libvirtd's socket on the lab host (the container's /run/libvirt is mounted there)."""
    return f"{socket_dir(work_dir)}/libvirt-sock"


@dataclass(frozen=True)
class LibvirtContainerSpec:
    """A libvirt container's inputs, validated, with their defaults."""

    name: str
    network: str
    #: "" is filled in by `check`: <work root>/<name> (/var/lib/macvtap-lab/<name>).
    work_dir: str = ""
    #: "": the project's own libvirt image, built locally when missing.
    image: str = ""
    security_mode: str = SecurityMode.AUTO.value
    docker_host: str | None = None
    ipv4_address: str | None = None

    @staticmethod
    def from_props(props: dict[str, Any]) -> LibvirtContainerSpec:
        return LibvirtContainerSpec(**spec_kwargs(LibvirtContainerSpec, props))


@dataclass
class LibvirtContainerArgs:
    """Inputs of a LibvirtContainer; None: the default of `LibvirtContainerSpec`."""

    #: The container's name (and hostname).
    name: pulumi.Input[str]
    #: The docker network it joins (a LabNetwork's name).
    network: pulumi.Input[str]
    #: Host directory for its disks and libvirt socket, mounted at the same path.
    work_dir: pulumi.Input[str] | None = None
    #: Docker image with libvirtd + qemu (default: the project's, built when missing).
    image: pulumi.Input[str] | None = None
    #: privileged, capabilities, or auto (privileged if dockerd allows it, else capabilities).
    security_mode: pulumi.Input[str] | None = None
    #: Docker endpoint (unix://, tcp://, ssh://; default: the local socket).
    docker_host: pulumi.Input[str] | None = None
    #: Its address on the network (default: docker picks one from the lower half).
    ipv4_address: pulumi.Input[str] | None = None


class LibvirtContainerProvider(LabProvider):
    INPUTS = input_names(LibvirtContainerArgs)
    REPLACE_ON = frozenset(INPUTS)
    KIND = "LibvirtContainer"

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        fill_defaults(props, LibvirtContainerSpec)
        name = known(props, "name", lambda v: check_name(v, "name"))
        known(props, "network", lambda v: check_name(v, "network"))
        check_endpoint(props)
        known(props, "security_mode",
              lambda v: check_choice(v, "security_mode", [m.value for m in SecurityMode]))
        if not props.get("work_dir") and name:
            props["work_dir"] = str(paths.work_root() / name)
        work = known(props, "work_dir", str)
        if work is not None and not Path(work).is_absolute():
            raise SpecError("work_dir", f"{work!r} is not an absolute path")
        known(props, "ipv4_address", lambda v: check_ipv4(v, "ipv4_address"))
        return props

    # -- create ---------------------------------------------------------------------------
    def create(self, props: dict[str, Any]) -> CreateResult:
        spec = LibvirtContainerSpec.from_props(props)
        host = for_endpoint(spec.docker_host)
        image = spec.image or self._project_image()
        with host.docker() as client:
            existing = docker_api.find_container(client, spec.name)
            if existing is not None:
                if existing.labels.get(LABEL) != spec.name:
                    raise DockerError(f"container {spec.name!r} already exists and was not made "
                                      f"by macvtap-lab: remove it (docker rm -f {spec.name}) or "
                                      "rename")
                # Ours, but not in the state: an interrupted `up` made it. Start afresh.
                log.info("removing container %s left by an interrupted run", spec.name)
                docker_api.remove_container(client, spec.name)
            if docker_api.find_network(client, spec.network) is None:
                raise SpecError("network", f"docker network {spec.network!r} does not exist: "
                                "create it first (LabNetwork) or fix the name")
        host.files.make_dirs(str(socket_dir(spec.work_dir)))  # only once the checks passed
        try:
            host.ensure_image(image)  # a remote host gets it once, through the docker API
            info, mode = self._start(host, spec, image)
            version = self._wait_ready(host, spec)
            log.info("container %s ready: libvirt %s (%s mode)", spec.name, version, mode)
            with host.docker() as client:
                info = docker_api.find_container(client, spec.name) or info
            outs = self._outs(props, host, info, spec, image, mode)
        except BaseException:
            self._remove(host, spec)
            raise
        return CreateResult(info.id, outs)

    @staticmethod
    def _project_image() -> str:
        from macvtap_provider.images.libvirt_image import ensure_libvirt_image

        log.info("making sure the libvirt container image is built (first time: ~1-2 min)")
        return ensure_libvirt_image()

    @staticmethod
    def _start(host: LabHost, spec: LibvirtContainerSpec,
               image: str) -> tuple[ContainerInfo, str]:
        """Start it in the first security mode the daemon accepts (`auto`: privileged,
        else capabilities)."""
        modes = modes_to_try(SecurityMode(spec.security_mode))
        missing = missing_capabilities(host.capability_bounding())
        last: LabError | None = None
        with host.docker() as client:
            for mode in modes:
                kwargs = container_security_kwargs(mode, missing)
                kwargs["volumes"].update({
                    spec.work_dir: {"bind": spec.work_dir, "mode": "rw"},
                    str(socket_dir(spec.work_dir)): {"bind": "/run/libvirt", "mode": "rw"},
                })
                try:
                    info = docker_api.create_container(
                        client, image, spec.name, network=spec.network,
                        labels={LABEL: spec.name}, ipv4_address=spec.ipv4_address, **kwargs)
                    return info, mode.value
                except DockerError as exc:
                    last = exc
                    docker_api.remove_container(client, spec.name)
                    if mode is not modes[-1]:
                        log.info("%s mode refused by this host (%s); trying %s", mode.value,
                                 exc, modes[modes.index(mode) + 1].value)
                        continue
                    raise
        assert last is not None
        raise last

    @staticmethod
    def _wait_ready(host: LabHost, spec: LibvirtContainerSpec) -> str:
        uri = host.libvirt_uri(socket_path(spec.work_dir))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            with host.docker() as client:
                info = docker_api.find_container(client, spec.name)
                if info is None or info.status not in ("created", "running"):
                    raise DockerError(
                        f"container {spec.name!r} stopped while libvirtd was starting "
                        f"({info.status if info else 'removed'}); last log lines:\n"
                        f"{docker_api.container_logs(client, spec.name)}")
            try:
                return host.wait_libvirt(uri, spec.name, timeout_s=2.0)
            except LabTimeoutError:
                if time.monotonic() > deadline:
                    with host.docker() as client:
                        logs = docker_api.container_logs(client, spec.name)
                    raise LabTimeoutError(
                        f"container {spec.name!r}: libvirtd did not answer on {uri} within "
                        f"{READY_TIMEOUT_S:.0f}s; last log lines:\n{logs}") from None

    @staticmethod
    def _outs(props: dict[str, Any], host: LabHost, info: ContainerInfo,
              spec: LibvirtContainerSpec, image: str, mode: str) -> dict[str, Any]:
        endpoint = info.endpoint(spec.network)
        return {
            **props,
            "container_id": info.id,
            "image_ref": image,
            "security_mode_used": mode,
            "libvirt_uri": host.libvirt_uri(socket_path(spec.work_dir)),
            "ip_address": endpoint.get("IPAddress", ""),
            "prefix": int(endpoint.get("IPPrefixLen") or 0),
            "gateway": endpoint.get("Gateway", ""),
            "mac_address": str(endpoint.get("MacAddress", "")).lower(),
            "pid": info.pid,
            "netns": f"/proc/{info.pid}/ns/net",
            "running": info.running,
        }

    # -- read / update / delete -------------------------------------------------------------
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        spec = LibvirtContainerSpec.from_props(props)
        host = for_endpoint(spec.docker_host)
        with host.docker() as client:
            info = docker_api.find_container(client, spec.name)
        if info is None or info.id != id_:
            return self.read_missing()
        if not info.running:
            return ReadResult(id_, {**props, "running": False})
        return ReadResult(id_, self._outs(props, host, info, spec,
                                          props.get("image_ref") or spec.image,
                                          props.get("security_mode_used") or ""))

    def drift_replaces(self, olds: dict[str, Any]) -> list[str]:
        # A stopped container (refresh saw it) is made again on the next `up`.
        return ["running"] if olds.get("running") is False else []

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # Every input replaces; nothing to update in place.
        return UpdateResult(news)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        spec = LibvirtContainerSpec.from_props(props)
        log.info("removing container %s", spec.name)
        self._remove(for_endpoint(spec.docker_host), spec)

    @staticmethod
    def _remove(host: LabHost, spec: LibvirtContainerSpec) -> None:
        with host.docker() as client:
            docker_api.remove_container(client, spec.name)
        # Only what this resource made: the socket dir (images and disks belong to others).
        host.files.remove_tree(str(Path(spec.work_dir) / "run"))
        host.files.prune_empty_dirs(spec.work_dir, levels=1)


class LibvirtContainer(Resource, module="macvtap", name="LibvirtContainer"):
    """libvirtd + qemu in a docker container with /dev mounted; libvirt_uri reaches it."""

    name: pulumi.Output[str]
    network: pulumi.Output[str]
    work_dir: pulumi.Output[str]
    image: pulumi.Output[str]
    security_mode: pulumi.Output[str]
    docker_host: pulumi.Output[str | None]
    ipv4_address: pulumi.Output[str | None]
    #: The docker container's id.
    container_id: pulumi.Output[str]
    #: How the host reaches libvirtd in it (qemu:///system?socket=<work_dir>/run/...).
    libvirt_uri: pulumi.Output[str]
    #: Its address, prefix length, gateway and MAC on the lab network.
    ip_address: pulumi.Output[str]
    prefix: pulumi.Output[int]
    gateway: pulumi.Output[str]
    mac_address: pulumi.Output[str]
    #: Its init's PID and network namespace path on the docker host.
    pid: pulumi.Output[int]
    netns: pulumi.Output[str]
    #: The mode it was started in: privileged or capabilities.
    security_mode_used: pulumi.Output[str]
    #: The image it runs (the project's image tag when `image` was not given).
    image_ref: pulumi.Output[str]
    #: False when refresh found it stopped (the next `up` makes it again).
    running: pulumi.Output[bool]

    def __init__(self, resource_name: str, args: LibvirtContainerArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props, opts = resource_props(args, OUTPUTS, opts=opts)
        super().__init__(LibvirtContainerProvider(), resource_name, props, opts)


OUTPUTS = output_names(LibvirtContainer, LibvirtContainerArgs)
