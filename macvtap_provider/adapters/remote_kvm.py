"""The KVM and vhost decision for a lab on another host, made on that host: the same real
boot probe as adapters.kvm, run by qemu inside the lab's container there (its /dev is
that host's), reached through the docker API."""

from __future__ import annotations

import io
import logging
import secrets
import tarfile
from pathlib import Path

from docker.models.containers import Container

from macvtap_provider.adapters.docker_api import translate_errors
from macvtap_provider.adapters.kvm import (
    BOOT_SECTOR,
    KERNEL_GLOB,
    PROBE_TIMEOUT_S,
    QEMU,
    KvmProbe,
    KvmStatus,
)
from macvtap_provider.adapters.remote import exec_output

log = logging.getLogger(__name__)


def _archive(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _probe_payload() -> tuple[bytes, list[str], str, int]:
    """(file, qemu arguments for it, text expected on the serial port, exit code).

    A real kernel is what counts (with broken nested KVM a one-sector guest still runs
    while a kernel hangs): this machine's kernel, copied over, booted without a root disk
    until it panics. Without one, the one-sector guest (a weaker test)."""
    kernels = sorted(Path("/").glob(KERNEL_GLOB.lstrip("/")))
    if kernels:
        return (kernels[-1].read_bytes(), ["-append", "console=ttyS0 panic=-1 quiet"],
                "Kernel panic", 0)
    return (BOOT_SECTOR, ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"], "OK", 1)


def probe_kvm(container: Container, timeout_s: float = PROBE_TIMEOUT_S) -> KvmProbe:
    """Tell whether KVM runs a guest on the container's host: /dev/kvm there, then a tiny
    guest under `-accel kvm` by qemu in the container, which must end by itself."""
    code, _ = exec_output(container, ["test", "-c", "/dev/kvm"])
    if code != 0:
        code, _ = exec_output(container, ["grep", "-qwE", "vmx|svm", "/proc/cpuinfo"])
        if code == 0:
            return KvmProbe(KvmStatus.DISABLED_IN_BIOS, "the host's CPU has vmx/svm but "
                                                        "/dev/kvm is missing there")
        return KvmProbe(KvmStatus.NO_DEVICE, "/dev/kvm does not exist on the host")
    payload, args, expect, want_code = _probe_payload()
    name = f"macvtap-lab-kvm-probe-{secrets.token_hex(4)}"
    with translate_errors(f"copying the KVM probe into container {container.name!r}"):
        container.put_archive("/tmp", _archive(name, payload))
    boot = (["-kernel", f"/tmp/{name}"] if want_code == 0
            else ["-drive", f"file=/tmp/{name},format=raw,if=ide"])
    try:
        code, out = exec_output(container, [
            "timeout", str(int(timeout_s)), QEMU, "-accel", "kvm", "-machine", "pc", "-m", "128",
            "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
            *boot, *args])
    finally:
        exec_output(container, ["rm", "-f", f"/tmp/{name}"])
    log.debug("remote KVM probe in %s: exit %d, %s", container.name, code, out.strip()[-200:])
    if code == want_code and expect in out:
        return KvmProbe(KvmStatus.USABLE, "a kvm guest booted and finished on the host")
    if code == 124:
        return KvmProbe(KvmStatus.HANGS, f"a kvm guest did not finish within {timeout_s:.0f}s "
                                         "on the host")
    lines = out.strip().splitlines()
    detail = lines[-1] if lines else f"qemu exited with {code}"
    if "permission denied" in detail.lower():
        return KvmProbe(KvmStatus.PERMISSION_DENIED, detail)
    return KvmProbe(KvmStatus.FAILS, detail)


def vhost_usable(container: Container) -> bool:
    """True when the container's host has /dev/vhost-net."""
    return exec_output(container, ["test", "-c", "/dev/vhost-net"])[0] == 0
