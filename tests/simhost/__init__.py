"""Simulated remote docker hosts on this machine, reached only over ssh.

A simulated host is a container of the local dockerd (the image built from this
directory, FROM the project's debootstrap base image) that runs its own dockerd and sshd:
its own filesystem, PID and network namespaces, its own images and containers. It sits on
an `--internal` docker network that `SimHosts` creates; the code under test reaches it as
`ssh://root@<address>` with a key and a known-hosts file made for the run, so nothing of
it is reachable through a local path or PID: a work directory, socket or PID on the
simulated host means nothing on this machine.

What the simulation shares with this machine, and a real remote host would not: the
kernel, hence `/dev` (bind-mounted, as the libvirt container needs /dev/net/tun, /dev/kvm
and the /dev/tapN nodes the kernel creates for macvtap links: devtmpfs is one instance per
kernel, so tap device numbers are unique across this machine and all its simulated hosts,
not per host), the CPUs, and the KVM verdict (the same nested-KVM breakage everywhere).

The harness side (this module) may use the local docker engine to create, inspect and
remove the simulated hosts, and to stop or start their sshd out of band; the code under
test gets only the ssh endpoint, the key and the known-hosts file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import IPAMConfig, IPAMPool

from macvtap_provider.adapters.docker_api import container_logs, docker_client, exec_in
from macvtap_provider.builders.security import SecurityMode, container_security_kwargs
from macvtap_provider.images.base import (
    RECIPE_LABEL,
    build_lock,
    ensure_base_image,
    image_exists,
    recipe_hash,
)

log = logging.getLogger(__name__)

IMAGE_REPO = "macvtap-lab/simhost"
CONTEXT_DIR = Path(__file__).resolve().parent
_CONTEXT_FILES = ("Dockerfile", "entrypoint.sh", "sshd-ctl.sh", "sshd_config")
#: Label on every object a SimHosts run creates (containers, volumes, the network).
LABEL = "org.macvtap-lab.simhost"
#: The networks of simulated hosts are /24s in here (each run takes a free one).
HOSTS_RANGE = ipaddress.IPv4Network("10.213.248.0/21")
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10")
READY_TIMEOUT_S = 90.0
#: Inner containers' cgroups live under CGROUP_ROOT/<host name> in every v1 hierarchy.
CGROUP_ROOT = "macvtap-lab-simhost"
CGROUP_FS = Path("/sys/fs/cgroup")


# ---- the image ---------------------------------------------------------------------------


def image_recipe(base_tag: str) -> dict[str, Any]:
    files = {name: (CONTEXT_DIR / name).read_text() for name in _CONTEXT_FILES}
    return {"kind": "simhost-image", "base": base_tag, "files": files}


def ensure_image() -> str:
    """The simulated-host image `macvtap-lab/simhost:<hash12>`, built when missing."""
    base_tag = ensure_base_image()
    digest = recipe_hash(image_recipe(base_tag))
    tag = f"{IMAGE_REPO}:{digest[:12]}"
    with docker_client() as client:
        if image_exists(client, tag):
            return tag
    with build_lock("simhost-image"), docker_client() as client:
        if image_exists(client, tag):
            return tag
        started = time.monotonic()
        log.info("building %s FROM %s (docker.io, openssh-server)", tag, base_tag)
        last: list[str] = []
        for chunk in client.api.build(path=str(CONTEXT_DIR), tag=tag, buildargs={"BASE": base_tag},
                                      labels={RECIPE_LABEL: digest}, pull=False, rm=True,
                                      forcerm=True, decode=True):
            if "error" in chunk:
                raise RuntimeError(f"building {tag} failed: {chunk['error']}\n" + "".join(last))
            last = [*last[-15:], str(chunk.get("stream", ""))]
        client.images.get(tag)
        log.info("%s built in %.0f s", tag, time.monotonic() - started)
    return tag


# ---- ssh identity ------------------------------------------------------------------------


@dataclass(frozen=True)
class SshIdentity:
    """A key pair and a known-hosts file made for one run, and an ssh config naming them.

    `bin_dir` holds an `ssh` that runs /usr/bin/ssh with that config: put it first on PATH
    for tools that run `ssh` themselves (the docker CLI, docker-py's `use_ssh_client`).
    """

    directory: Path
    key: Path
    known_hosts: Path
    config: Path
    bin_dir: Path

    @classmethod
    def create(cls, directory: Path) -> SshIdentity:
        directory.mkdir(parents=True, exist_ok=True)
        key = directory / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "macvtap-lab-simhost",
                        "-f", str(key)], check=True)
        known_hosts = directory / "known_hosts"
        known_hosts.touch()
        config = directory / "ssh_config"
        config.write_text(
            f"Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known_hosts}\n  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n  ConnectTimeout 10\n")
        bin_dir = directory / "bin"
        bin_dir.mkdir(exist_ok=True)
        wrapper = bin_dir / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {shlex.quote(str(config))} "$@"\n')
        wrapper.chmod(0o755)
        return cls(directory, key, known_hosts, config, bin_dir)

    @property
    def public_key(self) -> str:
        return self.key.with_suffix(".pub").read_text().strip()

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment whose `ssh` uses this identity."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '')}"
        return env


# ---- one simulated host ------------------------------------------------------------------


@dataclass(frozen=True)
class SimHost:
    """A running simulated host: `docker_host` is all the code under test may use."""

    name: str
    address: str
    identity: SshIdentity
    container_id: str = field(repr=False)

    @property
    def docker_host(self) -> str:
        return f"ssh://root@{self.address}"

    @property
    def endpoint(self) -> str:
        """`docker_host` with the run's key and known-hosts file, as a lab is given it."""
        return (f"{self.docker_host}?keyfile={quote(str(self.identity.key))}"
                f"&known_hosts={quote(str(self.identity.known_hosts))}")

    def ssh_argv(self, command: str) -> list[str]:
        return ["/usr/bin/ssh", "-F", str(self.identity.config), *SSH_OPTIONS,
                f"root@{self.address}", command]

    def ssh(self, command: str, timeout_s: float = 120,
            stdin: Any = None) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the host over ssh (over the wire, as a user would)."""
        return subprocess.run(self.ssh_argv(command), capture_output=True, text=True,
                              timeout=timeout_s, stdin=stdin, check=False)

    def sshd(self, action: str) -> None:
        """`sshd-ctl start|stop` on the host, out of band (through the local engine)."""
        with docker_client() as client:
            code, out = exec_in(client, self.container_id, ["sshd-ctl", action])
        if code != 0:
            raise RuntimeError(f"sshd-ctl {action} on {self.name}: {out}")

    def exec_out_of_band(self, cmd: Sequence[str]) -> tuple[int, str]:
        """Run a command in the host container through the local engine (harness only)."""
        with docker_client() as client:
            return exec_in(client, self.container_id, list(cmd))

    def load_image(self, tag: str) -> float:
        """`docker save TAG | ssh host docker load`; the seconds it took."""
        started = time.monotonic()
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        try:
            result = self.ssh("docker load -q", timeout_s=900, stdin=save.stdout)
        finally:
            assert save.stdout is not None
            save.stdout.close()
            save.wait()
        if save.returncode != 0 or result.returncode != 0:
            raise RuntimeError(f"loading {tag} into {self.name}: {result.stderr.strip()}")
        return time.monotonic() - started


# ---- a set of simulated hosts ------------------------------------------------------------


def _free_subnet(client: docker.DockerClient) -> ipaddress.IPv4Network:
    used = set()
    for net in client.networks.list():
        for pool in (net.attrs.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError, KeyError):
                used.add(ipaddress.ip_network(pool["Subnet"]))
    for subnet in HOSTS_RANGE.subnets(new_prefix=24):
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise RuntimeError(f"no free /24 in {HOSTS_RANGE} for simulated hosts")


class SimHosts:
    """Start `count` simulated hosts on a fresh `--internal` network; `close()` removes all.

    Use as a context manager. Images named in `images` are loaded into every host over
    ssh (`docker save | ssh docker load`), in parallel across hosts.
    """

    def __init__(self, count: int, workdir: Path, prefix: str | None = None,
                 images: Sequence[str] = ()) -> None:
        self.count = count
        self.prefix = prefix or f"mvt-simhost-{secrets.token_hex(3)}"
        self.identity = SshIdentity.create(workdir / self.prefix)
        self.images = tuple(images)
        self.hosts: list[SimHost] = []
        self.network: str | None = None
        #: The hosts' network: their LAN (eth0 of each host), the lower half theirs.
        self.subnet: ipaddress.IPv4Network | None = None
        self.load_seconds: dict[str, float] = {}
        self.startup_seconds = 0.0

    def __enter__(self) -> SimHosts:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        started = time.monotonic()
        tag = ensure_image()
        with docker_client() as client:
            self._create_network(client)
            containers = [self._run(client, tag, i) for i in range(self.count)]
            for container in containers:
                self.hosts.append(self._wait_ready(client, container))
        self.startup_seconds = time.monotonic() - started
        for image in self.images:
            self._load_everywhere(image)

    def _create_network(self, client: docker.DockerClient) -> None:
        for _ in range(5):
            subnet = _free_subnet(client)
            # The hosts get addresses from the lower half; the upper half is free for labs
            # that join the hosts' LAN (uplink), as free addresses of a real LAN would be.
            ipam = IPAMConfig(pool_configs=[IPAMPool(
                subnet=str(subnet), gateway=str(subnet.network_address + 1),
                iprange=str(next(subnet.subnets(prefixlen_diff=1))))])
            try:
                client.networks.create(f"{self.prefix}-net", driver="bridge", internal=True,
                                       ipam=ipam, labels={LABEL: self.prefix})
            except docker.errors.APIError as exc:  # raced another run for that subnet
                log.debug("subnet %s taken: %s", subnet, exc)
                continue
            self.network = f"{self.prefix}-net"
            self.subnet = subnet
            return
        raise RuntimeError("could not create a network for the simulated hosts")

    def _run(self, client: docker.DockerClient, tag: str, index: int) -> Container:
        name = f"{self.prefix}-{index}"
        kwargs = container_security_kwargs(SecurityMode.CAPABILITIES, ["SYS_RESOURCE"])
        kwargs["volumes"].update({
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
            f"{name}-docker": {"bind": "/var/lib/docker", "mode": "rw"},
        })
        client.volumes.create(f"{name}-docker", labels={LABEL: self.prefix})
        return client.containers.run(
            tag, name=name, hostname=name, detach=True, network=self.network,
            tmpfs={"/run": "exec"}, labels={LABEL: self.prefix},
            environment={"SIMHOST_AUTHORIZED_KEY": self.identity.public_key,
                         "SIMHOST_CGROUP_PARENT": f"/{CGROUP_ROOT}/{name}",
                         "SIMHOST_STORAGE_DRIVER": os.environ.get("SIMHOST_STORAGE_DRIVER",
                                                                  "overlay2")},
            **kwargs)

    def _wait_ready(self, client: docker.DockerClient, container: Container) -> SimHost:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            container.reload()
            if container.status != "running":
                raise RuntimeError(f"simulated host {container.name} exited: "
                                   f"{container_logs(client, str(container.name))}")
            # `docker info` exits 0 with no daemon; `docker version` does not. sshd started
            # before dockerd, so its host key exists by then.
            code, _ = exec_in(client, str(container.name), ["docker", "version", "-f", "{{.Server.Version}}"])
            if code == 0:
                break
            if time.monotonic() > deadline:
                _, log_text = exec_in(client, str(container.name), ["tail", "-n", "20", "/var/log/dockerd.log"])
                raise RuntimeError(f"dockerd in {container.name} not ready: {log_text}")
            time.sleep(0.3)
        address = container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        _, hostkey = exec_in(client, str(container.name), ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"])
        key_type, key_data = hostkey.split()[:2]
        with open(self.identity.known_hosts, "a") as known:
            known.write(f"{address} {key_type} {key_data}\n")
        return SimHost(str(container.name), address, self.identity, str(container.id))

    @property
    def lan_range(self) -> str:
        """The upper half of the hosts' subnet: addresses no host or docker hands out, for
        labs that join the hosts' LAN."""
        assert self.subnet is not None, "the hosts are not started"
        return str(list(self.subnet.subnets(prefixlen_diff=1))[1])

    def _load_everywhere(self, image: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(self.hosts) or 1) as pool:
            took = list(pool.map(lambda h: h.load_image(image), self.hosts))
        self.load_seconds[image] = max(took, default=0.0)

    def close(self) -> None:
        """Remove the hosts (their engines, containers and guests go with them), their
        volumes and the network; tolerant of a half-made set."""
        with docker_client() as client:
            for container in client.containers.list(all=True,
                                                    filters={"label": f"{LABEL}={self.prefix}"}):
                with contextlib.suppress(docker.errors.NotFound):
                    container.remove(force=True, v=True)
            for volume in client.volumes.list(filters={"label": f"{LABEL}={self.prefix}"}):
                with contextlib.suppress(docker.errors.NotFound):
                    volume.remove(force=True)
            for net in client.networks.list(filters={"label": f"{LABEL}={self.prefix}"}):
                with contextlib.suppress(docker.errors.NotFound):
                    net.remove()
        for index in range(self.count):
            remove_cgroups(f"{self.prefix}-{index}")
        self.hosts.clear()


def remove_cgroups(host_name: str) -> None:
    """Remove the (empty, once the host is gone) cgroups its inner containers had."""
    for hierarchy in CGROUP_FS.glob("*"):
        top = hierarchy / CGROUP_ROOT / host_name
        if not top.is_dir() or top.is_symlink():
            continue
        for directory, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        with contextlib.suppress(OSError):
            os.rmdir(top.parent)  # only when no other host's cgroups remain


@contextlib.contextmanager
def sim_hosts(count: int, workdir: Path, images: Sequence[str] = ()) -> Iterator[SimHosts]:
    with SimHosts(count, workdir, images=images) as hosts:
        yield hosts
