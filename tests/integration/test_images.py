"""The image builders for real: rootfs, docker base and libvirt images, the guest disk."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import docker
import docker.errors
import pytest
from docker.models.containers import Container
from docker.types import IPAMConfig, IPAMPool, Mount
from lxml import etree

from macvtap_provider.adapters.kvm import kvm_usable
from macvtap_provider.images import base, ensure_all, guest_image, libvirt_image

LIBVIRTD_READY_S = 60.0
BOOT_TIMEOUT_S = 180.0
LIBVIRT_TCP_PORTS = {16509, 16514}
TCP_LISTEN = "0A"


# ---- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="module")
def libvirt_tag() -> str:
    return libvirt_image.ensure_libvirt_image()


@pytest.fixture(scope="module")
def guest_qcow2() -> Path:
    return guest_image.ensure_guest_image()


@pytest.fixture
def lab_network(docker_client: docker.DockerClient) -> Iterator[str]:
    """An internal docker network (no route out) on a free /24 of 10.213.0.0/16."""
    name = f"macvtap-lab-test-images-{uuid.uuid4().hex[:8]}"
    octets = random.sample(range(200, 255), 10)
    network = None
    for octet in octets:
        subnet = ipaddress.ip_network(f"10.213.{octet}.0/24")
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet),
                                                 gateway=str(subnet.network_address + 1))])
        try:
            network = docker_client.networks.create(name, driver="bridge", internal=True,
                                                    ipam=ipam)
            break
        except docker.errors.APIError as exc:  # another lab holds that subnet: next one
            if "overlap" not in str(exc).lower():
                raise
    assert network is not None, "no free /24 in 10.213.200-254.0/24 for the test network"
    try:
        yield name
    finally:
        network.remove()


@contextlib.contextmanager
def running_libvirt_container(
    client: docker.DockerClient, tag: str, network: str, run_dir: Path,
    extra_mounts: tuple[Mount, ...] = (),
) -> Iterator[Container]:
    """The libvirt container, started the way that works on this host (not --privileged:
    the host's capability bounding set lacks CAP_SYS_RESOURCE)."""
    container = client.containers.run(
        tag, detach=True, init=True, name=f"macvtap-lab-test-libvirt-{uuid.uuid4().hex[:8]}",
        network=network, cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
        security_opt=["apparmor=unconfined", "seccomp=unconfined"],
        device_cgroup_rules=["a *:* rwm"],
        mounts=[Mount("/dev", "/dev", type="bind"),
                Mount("/run/libvirt", str(run_dir), type="bind"), *extra_mounts],
        labels={"org.macvtap-lab.test": "test_images"},
    )
    try:
        yield container
    finally:
        container.remove(force=True, v=True)


def wait_for_libvirtd(uri: str, container: Container) -> Any:
    import libvirt

    deadline = time.monotonic() + LIBVIRTD_READY_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            conn = libvirt.open(uri)
            if conn.getVersion() > 0:
                return conn
            conn.close()
        except libvirt.libvirtError as exc:
            last = exc
        container.reload()
        if container.status != "running":
            break
        time.sleep(0.5)
    logs = container.logs(tail=30).decode(errors="replace")
    pytest.fail(f"libvirtd did not answer on {uri} ({last}); container "
                f"{container.status}; logs:\n{logs}")


def container_exec(container: Container, *cmd: str) -> str:
    code, out = container.exec_run(list(cmd))
    text = cast(bytes, out).decode(errors="replace")
    assert code == 0, f"{cmd} failed in the container ({code}): {text}"
    return text


def tcp_listeners(proc_net_tcp: str) -> list[tuple[str, int]]:
    """(local address hex, port) of every LISTEN socket in /proc/net/tcp{,6} text."""
    found = []
    for line in proc_net_tcp.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == TCP_LISTEN:
            address, port = fields[1].rsplit(":", 1)
            found.append((address, int(port, 16)))
    return found


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def guestfs_handle(disk: Path, readonly: bool) -> Any:
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend("direct")
    if not kvm_usable():
        g.set_backend_setting("force_tcg", "1")
    g.add_drive_opts(str(disk), readonly=readonly)
    g.launch()
    return g


# ---- rootfs and base image ----------------------------------------------------------------


@pytest.mark.docker
def test_rootfs_is_a_debian_minbase_tarball_without_docs() -> None:
    rootfs = base.ensure_rootfs()

    assert rootfs.name == f"debian-bookworm-minbase-{base.rootfs_digest()[:12]}.tar"
    with tarfile.open(rootfs) as tar:
        names = set(tar.getnames())
        version = tar.extractfile("./etc/debian_version")
        assert version is not None
        assert version.read().decode().startswith("12.")
        sources = tar.extractfile("./etc/apt/sources.list")
        assert sources is not None
        assert f"{base.host_mirror()} bookworm main" in sources.read().decode()
    assert "./etc/dpkg/dpkg.cfg.d/01-macvtap-lab-nodoc" in names
    docs = [n for n in names if n.startswith("./usr/share/doc/") and n.count("/") > 4]
    assert docs, "copyright files should stay"
    assert all(n.endswith("/copyright") for n in docs), docs[:5]
    assert not list(rootfs.parent.glob(".work-*")), "a build left its work directory"


@pytest.mark.docker
def test_base_image_is_local_labelled_and_runs(docker_client: docker.DockerClient) -> None:
    tag = base.ensure_base_image()

    image = docker_client.images.get(tag)
    assert tag == f"{base.BASE_IMAGE_REPO}:{base.base_image_digest()[:12]}"
    assert image.labels[base.RECIPE_LABEL] == base.base_image_digest()
    out = docker_client.containers.run(tag, ["cat", "/etc/os-release"], remove=True,
                                       network_mode="none")
    assert b'VERSION_CODENAME=bookworm' in out


# ---- libvirt image ------------------------------------------------------------------------


@pytest.mark.docker
def test_libvirt_image_is_labelled_and_warm_call_rebuilds_nothing(
    docker_client: docker.DockerClient, libvirt_tag: str,
) -> None:
    before = docker_client.images.get(libvirt_tag).attrs
    again = libvirt_image.ensure_libvirt_image()

    assert again == libvirt_tag
    after = docker_client.images.get(libvirt_tag).attrs
    assert (after["Id"], after["Created"]) == (before["Id"], before["Created"])
    assert libvirt_tag.startswith(f"{libvirt_image.LIBVIRT_IMAGE_REPO}:")
    label = docker_client.images.get(libvirt_tag).labels[base.RECIPE_LABEL]
    assert label.startswith(libvirt_tag.rsplit(":", 1)[1])
    assert len(label) == 64


@pytest.mark.docker
@pytest.mark.libvirt
def test_libvirtd_answers_on_the_unix_socket_only(
    docker_client: docker.DockerClient, libvirt_tag: str, lab_network: str, tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with running_libvirt_container(docker_client, libvirt_tag, lab_network, run_dir) as box:
        uri = f"qemu:///system?socket={run_dir}/libvirt-sock"
        conn = wait_for_libvirtd(uri, box)
        try:
            caps = etree.fromstring(conn.getCapabilities().encode())
            networks = conn.listNetworks()
        finally:
            conn.close()
        tcp = container_exec(box, "cat", "/proc/net/tcp", "/proc/net/tcp6")
        links = container_exec(box, "ip", "-o", "link")
        processes = container_exec(box, "ps", "-eo", "pid,comm")
        sock_mode = (run_dir / "libvirt-sock").stat().st_mode & 0o777

    assert caps.xpath("//guest/arch/domain[@type='qemu']"), "no qemu domain type"
    assert caps.xpath("string(//host/secmodel/model)") in ("", "none")
    listeners = tcp_listeners(tcp)
    assert not [p for _, p in listeners if p in LIBVIRT_TCP_PORTS], listeners
    # Only docker's embedded DNS (127.0.0.11) may listen in the container's netns.
    assert all(address == "0B00007F" for address, _ in listeners), listeners
    assert networks == [], "the default network must not autostart"
    assert "virbr0" not in links
    pids = {line.split()[1]: line.split()[0] for line in processes.splitlines()[1:]}
    assert pids.get("docker-init") == "1"
    assert "libvirtd" in pids and "virtlogd" in pids
    assert sock_mode == 0o700


@pytest.mark.docker
@pytest.mark.libvirt
@pytest.mark.guestfs
@pytest.mark.slow
def test_guest_boots_under_libvirt_in_the_container(
    docker_client: docker.DockerClient, libvirt_tag: str, guest_qcow2: Path, lab_network: str,
    tmp_path: Path,
) -> None:
    # tmp_path is mounted at the same path in the container, so the paths agree.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(guest_qcow2), str(disk)], check=True)
    console = tmp_path / "console.log"
    mounts = (Mount(str(tmp_path), str(tmp_path), type="bind"),
              Mount(str(guest_qcow2.parent), str(guest_qcow2.parent), type="bind",
                    read_only=True))
    with running_libvirt_container(docker_client, libvirt_tag, lab_network, run_dir,
                                   mounts) as box:
        conn = wait_for_libvirtd(f"qemu:///system?socket={run_dir}/libvirt-sock", box)
        try:
            dom = conn.createXML(_domain_xml(disk, console), 0)
            try:
                text = _wait_for_text(console, "login:", BOOT_TIMEOUT_S)
            finally:
                dom.destroy()
        finally:
            conn.close()

    assert "lab-guest login:" in text, text[-2000:]


def _wait_for_text(path: Path, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_bytes().decode(errors="replace")
            if needle in text:
                break
        time.sleep(1)
    return text


def _domain_xml(disk: Path, console: Path) -> str:
    return f"""
<domain type='qemu'>
  <name>macvtap-lab-test-{uuid.uuid4().hex[:8]}</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='{console}'/><target port='0'/></serial>
  </devices>
</domain>"""


# ---- guest image --------------------------------------------------------------------------


@pytest.mark.guestfs
def test_guest_image_warm_call_rebuilds_nothing_and_is_recorded(guest_qcow2: Path) -> None:
    before = guest_qcow2.stat()
    again = guest_image.ensure_guest_image()

    assert again == guest_qcow2
    after = guest_qcow2.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    record = json.loads(guest_image.sidecar_path(guest_qcow2).read_text())
    assert record["recipe"] == base.recipe_hash(
        guest_image.guest_recipe(base.base_image_digest()))
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(guest_qcow2)],
                                     capture_output=True, check=True, text=True).stdout)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == guest_image.DISK_SIZE
    assert guest_qcow2.stat().st_size < 160 * 1024**2
    assert not list(guest_qcow2.parent.glob(f".work-{guest_qcow2.name}-*"))


@pytest.mark.guestfs
def test_guest_image_contents(guest_qcow2: Path) -> None:
    g = guestfs_handle(guest_qcow2, readonly=True)
    try:
        assert g.list_partitions() == ["/dev/sda1"]
        assert g.part_get_bootable("/dev/sda", 1)
        assert g.vfs_label("/dev/sda1") == guest_image.ROOT_LABEL
        mbr = g.pread_device("/dev/sda", 440, 0)
        g.mount_ro("/dev/sda1", "/")

        def cat(path: str) -> str:
            return str(g.cat(path))

        def exists(path: str) -> bool:
            return bool(g.exists(path))

        hostname = cat("/etc/hostname")
        resolv = cat("/etc/resolv.conf")
        fstab = cat("/etc/fstab")
        interfaces = cat("/etc/network/interfaces")
        shadow_root = next(line for line in cat("/etc/shadow").splitlines()
                           if line.startswith("root:"))
        extlinux = cat("/boot/extlinux/extlinux.conf")
        host_keys = g.glob_expand("/etc/ssh/ssh_host_*")
        unit = guest_image.HOSTKEYS_UNIT
        unit_enabled = exists(f"/etc/systemd/system/multi-user.target.wants/{unit}")
        machine_id = cat("/etc/machine-id")
        docs = [d for d in g.find("/usr/share/doc") if g.is_file(f"/usr/share/doc{d}")]
        sshd = exists("/usr/sbin/sshd")
        cloud_init = exists("/usr/bin/cloud-init")
        dockerenv = exists("/.dockerenv")
        policy_rc = exists("/usr/sbin/policy-rc.d")
        ldlinux = exists("/boot/extlinux/ldlinux.sys")
        kernel = extlinux.split("LINUX ", 1)[1].split()[0]
        kernel_present = exists(kernel)
        # Owners survive the export and tar-in (numeric ids, not the appliance's names).
        apt_uid = g.statns("/var/cache/apt/archives/partial")["st_uid"]
    finally:
        g.close()

    assert mbr == guest_image.SYSLINUX_MBR.read_bytes()[:440]
    assert hostname.strip() == "lab-guest"
    assert "nameserver" not in resolv
    assert f"LABEL={guest_image.ROOT_LABEL}" in fstab
    assert "source /etc/network/interfaces.d/*" in interfaces and "iface lo" in interfaces
    assert shadow_root.split(":")[1] in ("*", "!", "!*"), "root must stay locked"
    assert "console=ttyS0,115200n8" in extlinux and "net.ifnames=0" in extlinux
    assert kernel_present and ldlinux
    assert host_keys == []
    assert unit_enabled
    assert machine_id == ""
    assert sshd and not cloud_init and not dockerenv and not policy_rc
    assert docs and all(d.endswith("/copyright") for d in docs), docs[:5]
    assert apt_uid == 42, "_apt's files must keep uid 42"


@pytest.mark.guestfs
@pytest.mark.slow
def test_guest_boots_to_login_and_serves_ssh(guest_qcow2: Path, tmp_path: Path) -> None:
    import pexpect

    disk = tmp_path / "clone.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(guest_qcow2), str(disk)], check=True)
    # The lab's way to configure a NIC: a file in interfaces.d (slirp's guest address).
    g = guestfs_handle(disk, readonly=False)
    try:
        g.mount("/dev/sda1", "/")
        g.write("/etc/network/interfaces.d/eth0",
                b"auto eth0\niface eth0 inet static\n  address 10.0.2.15/24\n")
        g.shutdown()
    finally:
        g.close()
    port = free_local_port()
    # restrict=on: the guest reaches nothing outside; only the forwarded port reaches it.
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic", "-nodefaults",
           "-serial", "stdio", "-no-reboot", "-snapshot",
           "-drive", f"file={disk},format=qcow2,if=virtio",
           "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-10.0.2.15:22",
           "-device", "virtio-net-pci,netdev=n0"]
    console = pexpect.spawn(cmd[0], cmd[1:], timeout=BOOT_TIMEOUT_S, encoding="utf-8",
                            codec_errors="replace")
    try:
        console.expect("lab-guest login:")  # raises pexpect.TIMEOUT after BOOT_TIMEOUT_S
        keys = _ssh_keyscan(port, deadline=time.monotonic() + 90)
    finally:
        console.terminate(force=True)

    assert "ssh-ed25519" in keys, keys


def _ssh_keyscan(port: int, deadline: float) -> str:
    """The ed25519 host key the guest's sshd offers (made at first boot), or ''."""
    while time.monotonic() < deadline:
        # One key type per scan: under TCG each handshake is slow.
        out = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-T", "20", "-p", str(port),
                              "127.0.0.1"], capture_output=True, text=True, check=False).stdout
        if "ssh-ed25519" in out:
            return out
        time.sleep(2)
    return ""


@pytest.mark.docker
@pytest.mark.guestfs
def test_ensure_all_returns_both(libvirt_tag: str, guest_qcow2: Path) -> None:
    assert ensure_all() == {"libvirt_image": libvirt_tag, "guest_image": str(guest_qcow2)}
