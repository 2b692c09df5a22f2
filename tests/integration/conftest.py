"""Integration plumbing: drive the real providers, always clean up, prove nothing is left.

A `Lab` creates throw-away objects through the providers themselves (check -> create),
records them, and on `teardown` deletes them in reverse order through the providers,
then looks for anything left behind (container, network, domain, macvtap link, /dev/tapN,
overlay files, work directory, probe containers), removes such leftovers by force so the
machine stays clean, and fails the test run if there were any.

Network safety: every lab network is a docker network created `internal` (no way out) on a
/24 inside 10.213.0.0/16 that its module picks; traffic goes only to lab addresses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from docker.models.containers import Container

from macvtap_provider import paths
from macvtap_provider.adapters import netlink
from macvtap_provider.adapters.netlink import LinkInfo
from macvtap_provider.resources.customized_image import (
    CustomizedImageProvider,
    base_link_path,
    marker_path,
    sha256_file,
)
from macvtap_provider.resources.guest_network import PROBE_LABEL, GuestNetworkProvider
from macvtap_provider.resources.lab_network import LabNetworkProvider
from macvtap_provider.resources.libvirt_container import LibvirtContainerProvider
from macvtap_provider.resources.macvtap_domain import MacvtapDomainProvider
from tests.conftest import require
from tests.output_types import mismatches, resource_of

#: Every lab subnet lives in here (and is created `internal`).
LAB_RANGE = ipaddress.IPv4Network("10.213.0.0/16")
#: Labels of the throw-away containers the tests themselves start (ssh/ping probes).
TEST_PROBE_LABEL = "org.macvtap-lab.test-probe"
#: Under TCG a guest boots to sshd in ~30 s; allow for a busy 2-core host.
SSH_TIMEOUT_S = 180.0


# ---- small helpers -------------------------------------------------------------------------


def checked(provider: Any, props: dict[str, Any]) -> dict[str, Any]:
    """The provider's `check` of `props`; fails the test when it reports a failure."""
    result = provider.check({}, dict(props))
    assert not result.failures, [(f.property, f.reason) for f in result.failures]
    return dict(result.inputs)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll `predicate` until it is true or `timeout_s` passed; its last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)


sha256_of = sha256_file


def file_identity(path: Path) -> tuple[str, int, int, int, int]:
    """sha256, owner, group, mode and mtime: what must not change on a base image."""
    st = path.stat()
    return sha256_of(path), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_mtime_ns


def container_pid(client: docker.DockerClient, name: str) -> int | None:
    try:
        container = client.containers.get(name)
    except docker.errors.NotFound:
        return None
    if container.status != "running":
        return None
    return int(container.attrs["State"]["Pid"])


def link_in(pid: int, name: str) -> LinkInfo | None:
    """The link `name` in the netns of process `pid` (None when it does not exist)."""
    with netlink.in_netns(pid) as ns:
        return netlink.link(ns, name)


def links_in(pid: int) -> list[LinkInfo]:
    with netlink.in_netns(pid) as ns:
        return netlink.links(ns)


def default_gateway_in(pid: int) -> str | None:
    with netlink.in_netns(pid) as ns:
        return netlink.default_gateway(ns)


def tap_node(index: int) -> Path:
    return Path(f"/dev/tap{index}")


def is_char_device(path: Path) -> bool:
    try:
        return stat.S_ISCHR(path.stat().st_mode)
    except FileNotFoundError:
        return False


def exec_ok(container: Container, cmd: list[str]) -> str:
    rc, out = container.exec_run(cmd)
    text = (out or b"").decode(errors="replace")
    assert rc == 0, f"{cmd} failed in {container.name} (exit {rc}): {text}"
    return text


def tcp_listen_ports(proc_net_tcp: str) -> set[int]:
    """Ports of every LISTEN socket in /proc/net/tcp{,6} text."""
    ports = set()
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# ---- probe: a throw-away container on the lab network ----------------------------------------


class Probe:
    """A container on a lab network that pings and logs in to lab guests (and nothing else)."""

    def __init__(self, container: Container, subnet: ipaddress.IPv4Network) -> None:
        self.container = container
        self.subnet = subnet

    def _target(self, address: str) -> str:
        # Traffic only ever goes to the lab's own addresses.
        assert ipaddress.IPv4Address(address) in self.subnet, address
        return address

    def run(self, cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        rc, out = self.container.exec_run(cmd, environment=env or {})
        return int(rc), (out or b"").decode(errors="replace")

    def ping(self, address: str, attempts: int = 5) -> bool:
        """True once one echo is answered (a lost first packet, e.g. ARP, is not a failure)."""
        target = self._target(address)
        return any(self.run(["ping", "-c", "1", "-W", "2", target])[0] == 0
                   for _ in range(attempts))

    def tcp_open(self, address: str, port: int = 22, attempts: int = 3) -> bool:
        cmd = ["timeout", "5", "bash", "-c", f"exec 3<>/dev/tcp/{self._target(address)}/{port}"]
        return any(self.run(cmd)[0] == 0 for _ in range(attempts))

    def ssh(self, address: str, password: str, command: str,
            timeout_s: int = 60) -> tuple[int, str]:
        """`sshpass -e ssh root@address command` (password in the environment, not argv)."""
        return self.run(
            ["timeout", str(timeout_s), "sshpass", "-e", "ssh",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
             "-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=15", "-o", "LogLevel=ERROR",
             f"root@{self._target(address)}", command],
            env={"SSHPASS": password})

    def ssh_when_up(self, address: str, password: str, command: str,
                    timeout_s: float = SSH_TIMEOUT_S) -> str:
        """Retry `ssh` until it succeeds (sshd may still be starting); its output."""
        deadline = time.monotonic() + timeout_s
        last = (0, "")
        while time.monotonic() < deadline:
            last = self.ssh(address, password, command)
            if last[0] == 0:
                return last[1]
            time.sleep(3)
        pytest.fail(f"ssh root@{address} did not succeed within {timeout_s:.0f}s: "
                    f"exit {last[0]}: {last[1][-300:]}")


@contextlib.contextmanager
def probe_on(client: docker.DockerClient, network: str,
             subnet: ipaddress.IPv4Network) -> Iterator[Probe]:
    """A probe container (the libvirt image: it has ping, ssh and sshpass), always removed."""
    from macvtap_provider.images.libvirt_image import ensure_libvirt_image

    name = f"{network}-testprobe-{secrets.token_hex(3)}"
    container = client.containers.run(
        ensure_libvirt_image(), ["600"], entrypoint=["sleep"], name=name, detach=True,
        network=network, init=True, labels={TEST_PROBE_LABEL: network})
    try:
        yield Probe(container, subnet)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)


# ---- the lab: objects made by the providers, removed and verified in teardown -----------------


@dataclass
class Made:
    kind: str
    provider: Any
    id: str
    outs: dict[str, Any]
    inputs: dict[str, Any]
    #: For a domain with a macvtap: the link's ifindex, so teardown checks /dev/tapN is gone.
    tap_index: int | None = None


@dataclass
class Lab:
    """Throw-away lab objects made through the real providers.

    `tag` makes every name unique to this run; `subnet` is the module's own /24.
    """

    module: str
    subnet: ipaddress.IPv4Network
    #: None for a lab that needs no docker (images only).
    docker_client: docker.DockerClient | None
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    made: list[Made] = field(default_factory=list)
    work_dirs: list[Path] = field(default_factory=list)
    extra_files: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.subnet.subnet_of(LAB_RANGE), self.subnet

    @property
    def client(self) -> docker.DockerClient:
        assert self.docker_client is not None, "this lab was made without docker"
        return self.docker_client

    # names and addresses
    def name(self, what: str) -> str:
        return f"mvtt-{self.module}-{what}-{self.tag}"

    def host(self, n: int) -> str:
        return str(self.subnet.network_address + n)

    @property
    def gateway(self) -> str:
        return self.host(1)

    @property
    def net_name(self) -> str:
        return self.name("net")

    # creation through the providers
    def _create(self, kind: str, provider: Any, props: dict[str, Any]) -> Made:
        inputs = checked(provider, props)
        result = provider.create(dict(inputs))
        # What the provider returns is what its Resource class declares (names and types).
        assert mismatches(resource_of(provider), dict(result.outs)) == []
        made = Made(kind, provider, str(result.id), dict(result.outs), inputs)
        self.made.append(made)
        return made

    def network(self) -> Made:
        return self._create("network", LabNetworkProvider(),
                            {"name": self.net_name, "subnet": str(self.subnet)})

    def container(self, what: str, host: int | None = None) -> Made:
        name = self.name(what)
        work = paths.work_root() / name
        self.work_dirs.append(work)
        props: dict[str, Any] = {"name": name, "network": self.net_name, "work_dir": str(work)}
        if host is not None:
            props["ipv4_address"] = self.host(host)
        return self._create("container", LibvirtContainerProvider(), props)

    def image(self, output_path: Path, password: str, **props: Any) -> Made:
        self.extra_files.append(output_path)
        return self._create("image", CustomizedImageProvider(),
                            {"output_path": str(output_path), "root_password": password, **props})

    def guest_image(self, container: Made, password: str, hostname: str,
                    static: bool = True) -> Made:
        """An overlay in the container's work dir with the guest's static eth0 written offline."""
        out = Path(container.outs["work_dir"]) / "images" / f"{hostname}.qcow2"
        net = ({"address": container.outs["ip_address"], "prefix": container.outs["prefix"],
                "gateway": container.outs["gateway"]} if static else None)
        return self.image(out, password, hostname=hostname, nameservers=[self.gateway],
                          network=net)

    def domain(self, container: Made, image: Made | str, what: str, **props: Any) -> Made:
        """A domain on `image`: a CustomizedImage (wired as `Guest` wires it: its kernel,
        initrd and command line too, so the default guest boots its kernel directly) or
        a disk path."""
        boot: dict[str, Any] = {"disk_path": image} if isinstance(image, str) else {
            "disk_path": image.outs["path"], "kernel": image.outs.get("kernel_path"),
            "initrd": image.outs.get("initrd_path"), "cmdline": image.outs.get("kernel_cmdline")}
        return self._create("domain", MacvtapDomainProvider(), {
            "name": self.name(what), "libvirt_uri": container.outs["libvirt_uri"],
            "container": container.outs["name"], "memory_mib": 512, **boot, **props})

    def blank_disk(self, container: Made, what: str, content: bytes | None = None) -> Made:
        """A blank qcow2 in the container's work dir: enough for a domain that need not boot.

        With `content`, a file holding just that (not a disk image at all).
        """
        path = Path(container.outs["work_dir"]) / "images" / f"{what}.qcow2"
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"],
                           check=True)
        else:
            path.write_bytes(content)
        made = Made("files", _Files(), str(path), {"paths": [str(path)]}, {})
        self.made.append(made)
        return made

    def guest_network(self, container: Made, domain: Made, password: str | None = None,
                      method: str = "offline") -> Made:
        props = {
            "domain": domain.outs["name"], "libvirt_uri": container.outs["libvirt_uri"],
            "container": container.outs["name"], "network": self.net_name,
            "address": container.outs["ip_address"], "prefix": container.outs["prefix"],
            "gateway": container.outs["gateway"], "method": method,
            "nameservers": [self.gateway]}
        if password is not None:
            props["root_password"] = password
        return self._create("guest_network", GuestNetworkProvider(), props)

    # teardown
    def teardown(self) -> None:
        """Delete everything through the providers (reverse order), then prove nothing is left.

        Leftovers are removed by force so the machine stays clean, then reported as a failure.
        """
        errors: list[str] = []
        for made in reversed(self.made):
            # Every step is attempted, whatever failed before it: the machine must end clean.
            try:
                made.provider.delete(made.id, dict(made.outs))
            except Exception as exc:  # noqa: BLE001 - report every failed delete, go on
                errors.append(f"delete of {made.kind} {made.id} failed: {exc!r}")
            try:
                errors += self._leftovers_of(made)
            except Exception as exc:  # noqa: BLE001 - a failed check is a finding too
                errors.append(f"checking what {made.kind} {made.id} left failed: {exc!r}")
        self.made.clear()
        errors += self._sweep()
        assert not errors, "teardown found problems:\n" + "\n".join(errors)

    def _leftovers_of(self, made: Made) -> list[str]:
        outs, found = made.outs, []
        if made.kind == "guest_network":
            pid = container_pid(self.client, outs["container"])
            if pid is not None:
                eth0 = link_in(pid, outs.get("container_dev") or "eth0")
                if eth0 is None or (outs["address"], int(outs["prefix"])) not in eth0.addresses:
                    found.append(f"{outs['address']} was not given back to {outs['container']}")
        elif made.kind == "domain":
            found += self._domain_leftovers(made)
        elif made.kind == "image":
            out = Path(outs["output_path"])
            for path in (out, base_link_path(out), marker_path(out),
                         out.with_name(out.name + ".tmp")):
                if path.exists():
                    found.append(f"image file {path} left behind")
                    path.unlink()
        elif made.kind == "container":
            try:
                self.client.containers.get(outs["name"]).remove(force=True, v=True)
                found.append(f"container {outs['name']} left behind")
            except docker.errors.NotFound:
                pass
            if (Path(outs["work_dir"]) / "run").exists():
                found.append(f"{outs['work_dir']}/run left behind")
        elif made.kind == "files":
            found += [f"{p} left behind" for p in outs["paths"] if Path(p).exists()]
        elif made.kind == "network":
            for net in self.client.networks.list(names=[outs["name"]]):
                if net.name == outs["name"]:
                    found.append(f"network {outs['name']} left behind")
                    net.remove()
        return found

    def _domain_leftovers(self, made: Made) -> list[str]:
        outs, found = made.outs, []
        pid = container_pid(self.client, outs["container"])
        if pid is not None:
            import libvirt

            conn = libvirt.open(outs["libvirt_uri"])
            try:
                if outs["name"] in [d.name() for d in conn.listAllDomains()]:
                    found.append(f"domain {outs['name']} left behind")
            finally:
                conn.close()
            device = outs.get("macvtap_device")
            if device and link_in(pid, device) is not None:
                found.append(f"macvtap {device} left behind in {outs['container']}")
        index = made.tap_index
        if index is not None and not wait_until(lambda: not tap_node(index).exists(), 5):
            found.append(f"{tap_node(index)} left behind")
        return found

    def _sweep(self) -> list[str]:
        found = []
        for work in self.work_dirs:
            if work.exists():
                found.append(f"work directory {work} left behind: {sorted(os.listdir(work))}")
                shutil.rmtree(work, ignore_errors=True)
        for path in self.extra_files:
            if path.exists():
                found.append(f"{path} left behind")
                path.unlink()
        if self.docker_client is None:
            return found
        for container in self.client.containers.list(all=True, filters={"name": self.tag}):
            found.append(f"container {container.name} left behind")
            container.remove(force=True, v=True)
        for label in (PROBE_LABEL, TEST_PROBE_LABEL):
            for container in self.client.containers.list(all=True, filters={"label": label}):
                if self.tag in container.name:
                    found.append(f"probe container {container.name} left behind")
                    container.remove(force=True, v=True)
        for net in self.client.networks.list(names=[self.net_name]):
            if net.name == self.net_name:
                found.append(f"network {net.name} left behind")
                net.remove()
        return found


class _Files:
    """Test-made files, removed in their place in the teardown order (before the container)."""

    def delete(self, _id: str, outs: dict[str, Any]) -> None:
        for path in map(Path, outs["paths"]):
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()


def remember_tap(domain: Made, pid: int) -> int:
    """Record the ifindex of a domain's macvtap (its /dev/tapN) so teardown checks it is gone."""
    info = link_in(pid, domain.outs["macvtap_device"])
    assert info is not None, domain.outs["macvtap_device"]
    domain.tap_index = info.index
    return info.index


@contextlib.contextmanager
def lab_for(module: str, subnet: str, *components: str) -> Iterator[Lab]:
    """A Lab whose teardown always runs, once `require(*components)` let it start."""
    require(*components)
    client = docker.from_env() if "docker" in components else None
    lab = Lab(module, ipaddress.IPv4Network(subnet), client)
    try:
        yield lab
    finally:
        try:
            lab.teardown()
        finally:
            if client is not None:
                client.close()


def openssl_sha512_crypt(password: str, salt: str) -> str:
    """An independent $6$ hash (openssl, password on stdin) to verify /etc/shadow against."""
    proc = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
                          input=password.encode(), capture_output=True, check=True)
    return proc.stdout.decode().strip()
