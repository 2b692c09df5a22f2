"""LibvirtContainer: a docker container running libvirtd + qemu, reachable from the host.

The work directory is bind-mounted at the same path inside the container, so a
disk path is the same for the host (guestfs) and for qemu; libvirt's socket
directory is bind-mounted from `<work_dir>/run/libvirt`.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from docker.models.containers import Container
from pulumi.dynamic import CreateResult, ReadResult, Resource, UpdateResult

from macvtap_provider import paths
from macvtap_provider.adapters import docker_api, libvirt_api
from macvtap_provider.adapters.host import read_capability_bounding
from macvtap_provider.builders.security import (
    SecurityMode,
    container_security_kwargs,
    missing_capabilities,
)
from macvtap_provider.builders.validation import check_choice, check_ipv4, check_name
from macvtap_provider.errors import DockerError, LabError, LabTimeoutError, SpecError
from macvtap_provider.resources._base import LabProvider, known, resource_props

log = logging.getLogger(__name__)

LABEL = "org.macvtap-lab.container"
READY_TIMEOUT_S = 90.0


def socket_dir(work_dir: str) -> Path:
    return Path(work_dir) / "run" / "libvirt"


def libvirt_uri(work_dir: str) -> str:
    return f"qemu:///system?socket={socket_dir(work_dir)}/libvirt-sock"


@dataclass(frozen=True)
class LibvirtContainerSpec:
    name: str
    network: str
    work_dir: str
    image: str = ""  # "" = the project's own libvirt image, built locally when missing
    security_mode: str = "auto"
    docker_host: str | None = None
    ipv4_address: str | None = None
    extra_volumes: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def from_props(props: dict[str, Any]) -> LibvirtContainerSpec:
        return LibvirtContainerSpec(
            name=props["name"], network=props["network"], work_dir=props["work_dir"],
            image=props.get("image") or "", security_mode=props.get("security_mode") or "auto",
            docker_host=props.get("docker_host"), ipv4_address=props.get("ipv4_address"))


class LibvirtContainerProvider(LabProvider):
    INPUTS = ("name", "network", "work_dir", "image", "security_mode", "docker_host",
              "ipv4_address")
    REPLACE_ON = frozenset(INPUTS)
    KIND = "LibvirtContainer"

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        name = known(props, "name", lambda v: check_name(v, "name"))
        known(props, "network", lambda v: check_name(v, "network"))
        if props.get("security_mode") is None:
            props["security_mode"] = "auto"
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
        image = spec.image or self._project_image()
        run_dir = socket_dir(spec.work_dir)
        with docker_api.docker_client(spec.docker_host) as client:
            existing = docker_api.find_container(client, spec.name)
            if existing is not None:
                if existing.labels.get(LABEL) != spec.name:
                    raise DockerError(f"container {spec.name!r} already exists and was not made "
                                      f"by macvtap-lab: remove it (docker rm -f {spec.name}) or "
                                      "rename")
                # Ours, but not in the state: an interrupted `up` made it. Start afresh.
                log.info("removing container %s left by an interrupted run", spec.name)
                docker_api.remove_container(client, spec.name)
            with docker_api.translate_errors(f"checking network {spec.network!r}"):
                if not client.networks.list(names=[spec.network]):
                    raise SpecError("network", f"docker network {spec.network!r} does not exist: "
                                    "create it first (LabNetwork) or fix the name")
            run_dir.mkdir(parents=True, exist_ok=True)  # only once the checks passed
            try:
                container, mode = self._start(client, spec, image)
                version = self._wait_ready(container, spec)
                log.info("container %s ready: libvirt %s (%s mode)", spec.name, version, mode)
                outs = self._outs(props, container, spec, image, mode)
            except BaseException:
                docker_api.remove_container(client, spec.name)
                shutil.rmtree(Path(spec.work_dir) / "run", ignore_errors=True)
                paths.prune_empty_dirs(Path(spec.work_dir), levels=1)
                raise
        return CreateResult(str(container.id), outs)

    @staticmethod
    def _project_image() -> str:
        from macvtap_provider.images.libvirt_image import ensure_libvirt_image

        log.info("making sure the libvirt container image is built (first time: ~1-2 min)")
        return ensure_libvirt_image()

    def _start(self, client: Any, spec: LibvirtContainerSpec, image: str) -> tuple[Container, str]:
        modes = [SecurityMode(spec.security_mode)]
        if modes[0] is SecurityMode.AUTO:
            # Try what `--privileged` gives; hosts lacking a capability refuse it at start.
            modes = [SecurityMode.PRIVILEGED, SecurityMode.CAPABILITIES]
        missing = missing_capabilities(read_capability_bounding())
        last: LabError | None = None
        for mode in modes:
            kwargs = container_security_kwargs(mode, missing)
            kwargs["volumes"].update({
                spec.work_dir: {"bind": spec.work_dir, "mode": "rw"},
                str(socket_dir(spec.work_dir)): {"bind": "/run/libvirt", "mode": "rw"},
            })
            log.debug("docker run %s (%s mode, network %s)", spec.name, mode.value, spec.network)
            try:
                with docker_api.translate_errors(f"starting container {spec.name!r}"):
                    container = client.containers.create(
                        image, name=spec.name, hostname=spec.name, detach=True,
                        labels={LABEL: spec.name}, network=spec.network, **kwargs)
                    if spec.ipv4_address:
                        # Pin the address (docker picks one otherwise) on the lab network.
                        net = client.networks.get(spec.network)
                        net.disconnect(container)
                        net.connect(container, ipv4_address=spec.ipv4_address)
                    container.start()
                    container.reload()
                return container, mode.value
            except DockerError as exc:
                last = exc
                docker_api.remove_container(client, spec.name)
                if mode is SecurityMode.PRIVILEGED and len(modes) > 1:
                    log.info("privileged mode refused by this host (%s); using the explicit "
                             "capability set", exc)
                    continue
                raise
        assert last is not None
        raise last

    @staticmethod
    def _wait_ready(container: Container, spec: LibvirtContainerSpec) -> str:
        uri = libvirt_uri(spec.work_dir)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            container.reload()
            if container.status not in ("created", "running"):
                raise DockerError(
                    f"container {spec.name!r} stopped while libvirtd was starting "
                    f"({container.status}); last log lines:\n{docker_api.container_logs(container)}")
            try:
                return libvirt_api.wait_until_answering(uri, timeout_s=2.0)
            except LabTimeoutError:
                if time.monotonic() > deadline:
                    raise LabTimeoutError(
                        f"container {spec.name!r}: libvirtd did not answer on {uri} within "
                        f"{READY_TIMEOUT_S:.0f}s; last log lines:\n"
                        f"{docker_api.container_logs(container)}") from None

    @staticmethod
    def _outs(props: dict[str, Any], container: Container, spec: LibvirtContainerSpec,
              image: str, mode: str) -> dict[str, Any]:
        endpoint = docker_api.network_settings(container, spec.network)
        return {
            **props,
            "container_id": container.id,
            "image_ref": image,
            "security_mode_used": mode,
            "libvirt_uri": libvirt_uri(spec.work_dir),
            "ip_address": endpoint.get("IPAddress", ""),
            "prefix": int(endpoint.get("IPPrefixLen") or 0),
            "gateway": endpoint.get("Gateway", ""),
            "mac_address": str(endpoint.get("MacAddress", "")).lower(),
            "pid": int(container.attrs["State"]["Pid"]),
            "netns": f"/proc/{container.attrs['State']['Pid']}/ns/net",
            "running": container.status == "running",
        }

    # -- read / update / delete -------------------------------------------------------------
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        spec = LibvirtContainerSpec.from_props(props)
        with docker_api.docker_client(spec.docker_host) as client:
            container = docker_api.find_container(client, spec.name)
            if container is None or container.id != id_:
                return self.read_missing()
            if container.status != "running":
                return ReadResult(id_, {**props, "running": False})
            return ReadResult(id_, self._outs(props, container, spec,
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
        with docker_api.docker_client(spec.docker_host) as client:
            docker_api.remove_container(client, spec.name)
        # Only what this resource made: the socket dir (images and disks belong to others).
        shutil.rmtree(Path(spec.work_dir) / "run", ignore_errors=True)
        paths.prune_empty_dirs(Path(spec.work_dir), levels=1)


@dataclass
class LibvirtContainerArgs:
    name: pulumi.Input[str]
    network: pulumi.Input[str]
    work_dir: pulumi.Input[str] | None = None
    image: pulumi.Input[str] | None = None
    security_mode: pulumi.Input[str] = "auto"
    docker_host: pulumi.Input[str] | None = None
    ipv4_address: pulumi.Input[str] | None = None


OUTPUTS = ("container_id", "libvirt_uri", "ip_address", "prefix", "gateway", "mac_address",
           "pid", "netns", "security_mode_used", "image_ref", "running")


class LibvirtContainer(Resource, module="macvtap", name="LibvirtContainer"):
    """libvirtd + qemu in a docker container with /dev mounted; libvirt_uri reaches it."""

    container_id: pulumi.Output[str]
    name: pulumi.Output[str]
    network: pulumi.Output[str]
    work_dir: pulumi.Output[str]
    libvirt_uri: pulumi.Output[str]
    ip_address: pulumi.Output[str]
    prefix: pulumi.Output[int]
    gateway: pulumi.Output[str]
    mac_address: pulumi.Output[str]
    pid: pulumi.Output[int]
    netns: pulumi.Output[str]
    security_mode_used: pulumi.Output[str]
    docker_host: pulumi.Output[str]
    image_ref: pulumi.Output[str]

    def __init__(self, resource_name: str, args: LibvirtContainerArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props, opts = resource_props(args, OUTPUTS, opts=opts)
        super().__init__(LibvirtContainerProvider(), resource_name, props, opts)
