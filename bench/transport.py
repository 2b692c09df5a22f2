"""Remote transport: what reaching a lab host over ssh costs, on two simulated remote hosts
(tests/simhost: their own dockerd and sshd, reached only over ssh on an --internal network).

Measured through the provider's own remote adapters (adapters/remote.py): opening the ssh
tunnel to a host's engine, a docker API round trip and a `docker exec` over it against the
local engine, libvirt through the exec relay, the libvirt image's first upload to a fresh
host (and the check that skips it afterwards), and the guest base's upload verified by
sha256. Every figure is INFO: these are the costs the multi-host figures carry.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from bench.common import CachedImages, say
from macvtap_provider.adapters import libvirt_api, remote
from macvtap_provider.builders.endpoint import DockerEndpoint
from macvtap_provider.builders.security import SecurityMode, container_security_kwargs
from tests.simhost import SimHost, SimHosts

REPS = 9


def _median_s(action: Callable[[], object], reps: int = REPS) -> float:
    times = []
    for _ in range(reps):
        started = time.monotonic()
        action()
        times.append(time.monotonic() - started)
    return round(statistics.median(times), 4)


def _timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return round(time.monotonic() - started, 3)


def endpoint_of(host: SimHost) -> DockerEndpoint:
    return DockerEndpoint(url=host.docker_host, ssh_key=str(host.identity.key),
                          known_hosts=str(host.identity.known_hosts))


def measure(tmp: Path, images: CachedImages) -> dict[str, Any]:
    local = docker.from_env()
    size_mb = round(float(local.images.get(images.libvirt).attrs["Size"]) / 1e6)
    result: dict[str, Any] = {"libvirt_image_mb": size_mb}
    with SimHosts(2, tmp / "transport") as hosts:
        result["hosts_start_s"] = round(hosts.startup_seconds, 2)
        host = hosts.hosts[0]
        endpoint = endpoint_of(host)

        def open_tunnel() -> None:
            with remote.docker_client(endpoint) as client:
                client.ping()

        result["tunnel_open_s"] = _median_s(open_tunnel, 5)
        helper = local.containers.run(images.libvirt, ["sleep", "600"], entrypoint=[],
                                      detach=True, network_mode="none",
                                      name=f"bench-transport-{secrets.token_hex(3)}")
        try:
            result["local_ping_s"] = _median_s(local.ping)
            result["local_exec_s"] = _median_s(lambda: remote.exec_output(helper, ["true"]))
        finally:
            helper.remove(force=True)
        with remote.docker_client(endpoint) as client:
            result["image_upload_s"] = _timed(
                lambda: remote.upload_image(local, client, images.libvirt, host.name))
            result["image_recheck_s"] = _timed(
                lambda: remote.upload_image(local, client, images.libvirt, host.name))
            result["remote_ping_s"] = _median_s(client.ping)
            kwargs = container_security_kwargs(SecurityMode.CAPABILITIES, ["SYS_RESOURCE"])
            name = f"bench-transport-lv-{secrets.token_hex(3)}"
            container = client.containers.run(images.libvirt, name=name, detach=True, **kwargs)
            result["remote_exec_s"] = _median_s(lambda: remote.exec_output(container, ["true"]))
            with remote.libvirt_socket(client, name) as sock:
                uri = f"qemu:///system?socket={sock}"
                libvirt_api.wait_until_answering(uri, timeout_s=60)

                def libvirt_call() -> None:
                    with libvirt_api.connection(uri) as conn:
                        conn.listAllDomains()

                result["libvirt_open_call_s"] = _median_s(libvirt_call, 5)
            base = images.guest_base
            result["base_mb"] = round(base.stat().st_size / 1e6)
            target = f"/var/lib/macvtap-lab/bench-transport/{base.name}"
            result["base_upload_s"] = _timed(
                lambda: remote.upload_file(client, images.libvirt, base, target, host.name))
    say(f"transport: tunnel {result['tunnel_open_s']}s, exec {result['remote_exec_s']}s vs "
        f"{result['local_exec_s']}s local, image {size_mb} MB {result['image_upload_s']}s, "
        f"base {result['base_mb']} MB {result['base_upload_s']}s")
    return result
