"""The libvirt container image (`macvtap-lab/libvirt:<hash12>`), built FROM the base image."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker.errors

from macvtap_provider.adapters.docker_api import docker_client
from macvtap_provider.errors import ImageBuildError
from macvtap_provider.images.base import (
    RECIPE_LABEL,
    build_lock,
    drop_replaced_image,
    ensure_base_image,
    image_exists,
    image_id,
    recipe_hash,
)

log = logging.getLogger(__name__)

LIBVIRT_IMAGE_REPO = "macvtap-lab/libvirt"
#: The build context: Dockerfile, qemu.conf, libvirtd.conf, entrypoint.sh.
CONTEXT_DIR = Path(__file__).resolve().parent / "libvirt"
_CONTEXT_SUFFIXES = (".conf", ".sh")


def context_files(directory: Path = CONTEXT_DIR) -> dict[str, str]:
    """The build context's files (name -> text): the Dockerfile and its *.conf / *.sh."""
    files = {
        path.name: path.read_text()
        for path in sorted(directory.iterdir())
        if path.is_file() and (path.name == "Dockerfile" or path.suffix in _CONTEXT_SUFFIXES)
    }
    if "Dockerfile" not in files:
        raise ImageBuildError(
            f"libvirt image: no Dockerfile in {directory}: reinstall macvtap-lab (the package "
            "data images/libvirt/* is missing)")
    return files


def libvirt_recipe(base_tag: str, files: Mapping[str, str]) -> dict[str, Any]:
    """Everything that decides the libvirt image: its base image and its build context."""
    return {"kind": "libvirt-image", "base": base_tag, "files": dict(files)}


def libvirt_tag(digest: str) -> str:
    return f"{LIBVIRT_IMAGE_REPO}:{digest[:12]}"


def ensure_libvirt_image(force: bool = False) -> str:
    """Build the libvirt container image when its tag is missing.

    The image runs virtlogd and libvirtd under a small watcher (`libvirtd-ctl
    start|stop|status` inside; unix sockets in /run/libvirt only, no TCP), qemu as root without cgroups, dynamic ownership or a security driver, and no
    default network. Run it with docker's init (init=True) and a host directory on
    /run/libvirt.

    Args:
        force: rebuild without docker's layer cache even when the tag exists (the base
            image and rootfs are reused).

    Returns:
        The tag `macvtap-lab/libvirt:<hash12>`; the image carries the full hash in the label
        `org.macvtap-lab.recipe`.

    Raises:
        ImageBuildError: dockerd is unreachable or the build failed.
    """
    base_tag = ensure_base_image()
    files = context_files()
    digest = recipe_hash(libvirt_recipe(base_tag, files))
    tag = libvirt_tag(digest)
    with docker_client() as client:
        if not force and image_exists(client, tag):
            log.debug("libvirt image %s exists", tag)
            return tag
    with build_lock("libvirt-image"), docker_client() as client:
        if not force and image_exists(client, tag):
            return tag
        started = time.monotonic()
        log.info("building docker image %s FROM %s (apt-get install libvirt, qemu; about "
                 "half a minute)", tag, base_tag)
        tail: deque[str] = deque(maxlen=15)
        try:
            old_id = image_id(client, tag)
            for chunk in client.api.build(
                path=str(CONTEXT_DIR), tag=tag, buildargs={"BASE": base_tag},
                labels={RECIPE_LABEL: digest}, pull=False, rm=True, forcerm=True,
                nocache=force, decode=True,
            ):
                _log_build_chunk(chunk, tail, tag)
            client.images.get(tag)
            drop_replaced_image(client, old_id, tag)
        except docker.errors.DockerException as exc:
            output = "\n  ".join(tail)
            raise ImageBuildError(
                f"libvirt image {tag}: docker build failed ({exc}): check that the Debian "
                f"mirror is reachable from containers and see the build output:\n  {output}"
            ) from exc
        log.info("libvirt image %s ready (%.0f s)", tag, time.monotonic() - started)
    return tag


def _log_build_chunk(chunk: Mapping[str, Any], tail: deque[str], tag: str) -> None:
    if "error" in chunk:
        output = "\n  ".join(tail)
        raise ImageBuildError(
            f"libvirt image {tag}: docker build failed: {str(chunk['error']).strip()}: check "
            f"that the Debian mirror is reachable from containers; build output:\n  {output}")
    for line in str(chunk.get("stream", "")).splitlines():
        if line.strip():
            log.debug("docker build: %s", line)
            tail.append(line)
