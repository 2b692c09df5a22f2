"""Detect whether KVM really works, by booting a tiny guest with a deadline.

/dev/kvm can exist and still be unusable (disabled in the BIOS, permission denied,
or broken nested virtualisation where the BIOS runs and the kernel then hangs), so
only a real boot counts: the host's kernel is booted without a root disk until it
panics (a second under KVM), or, without a kernel, a one-sector real-mode guest.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KVM_DEVICE = Path("/dev/kvm")
QEMU = "qemu-system-x86_64"
PROBE_TIMEOUT_S = 20.0
KERNEL_GLOB = "/boot/vmlinuz-*"

# A boot sector that writes "OK" to COM1 and leaves through isa-debug-exit (port 0xf4).
_BOOT_CODE = b"".join([
    bytes([0xBA, 0xF8, 0x03]),  # mov dx, 0x3f8
    bytes([0xB0, ord("O"), 0xEE]),  # mov al, 'O'; out dx, al
    bytes([0xB0, ord("K"), 0xEE]),  # mov al, 'K'; out dx, al
    bytes([0xBA, 0xF4, 0x00, 0xB0, 0x00, 0xEE]),  # mov dx, 0xf4; mov al, 0; out dx, al
    bytes([0xF4, 0xEB, 0xFD]),  # hlt; jmp $-1
])
BOOT_SECTOR = _BOOT_CODE + bytes(510 - len(_BOOT_CODE)) + b"\x55\xaa"


class KvmStatus(enum.Enum):
    USABLE = "usable"
    NO_DEVICE = "no-device"
    DISABLED_IN_BIOS = "disabled-in-bios"
    PERMISSION_DENIED = "permission-denied"
    HANGS = "hangs"
    FAILS = "fails"
    NO_QEMU = "no-qemu"


@dataclass(frozen=True)
class KvmProbe:
    status: KvmStatus
    detail: str

    @property
    def usable(self) -> bool:
        return self.status is KvmStatus.USABLE

    @property
    def fix(self) -> str:
        """What the user can do about it (empty when KVM is usable)."""
        return {
            KvmStatus.USABLE: "",
            KvmStatus.NO_DEVICE: "load the kvm_intel/kvm_amd module, or run under TCG (slower)",
            KvmStatus.DISABLED_IN_BIOS: "enable VT-x/AMD-V in the BIOS/UEFI setup, or run under TCG",
            KvmStatus.PERMISSION_DENIED: "run as root or add the user to the 'kvm' group "
            "(chmod 0660 /dev/kvm, group kvm)",
            KvmStatus.HANGS: "KVM is present but guests hang (typical of broken nested "
            "virtualisation): labs run under TCG; fix nesting on the outer hypervisor for speed",
            KvmStatus.FAILS: "qemu cannot start a KVM guest: see the detail; labs run under TCG",
            KvmStatus.NO_QEMU: "install qemu-system-x86 (make setup does)",
        }[self.status]


def _cpu_has_virt_flags() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " vmx" in text or " svm" in text


def _probe_kernel() -> Path | None:
    kernels = sorted(Path("/").glob(KERNEL_GLOB.lstrip("/")))
    return kernels[-1] if kernels else None


def _boot_probe(accel: str, timeout: float) -> tuple[bool, str]:
    """Boot a tiny guest with `accel`; True when it ran to its end by itself."""
    base = [QEMU, "-accel", accel, "-machine", "pc", "-m", "128", "-nodefaults",
            "-display", "none", "-serial", "stdio", "-no-reboot"]
    kernel = _probe_kernel()
    with tempfile.TemporaryDirectory(prefix="kvm-probe-") as tmp:
        if kernel is not None:
            # No root disk: the kernel boots, panics, and -no-reboot ends qemu.
            cmd = [*base, "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1 quiet"]
            expect, code = "Kernel panic", 0
        else:
            disk = Path(tmp) / "boot.img"
            disk.write_bytes(BOOT_SECTOR)
            # isa-debug-exit makes qemu exit with (value << 1) | 1 == 1.
            cmd = [*base, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                   "-drive", f"file={disk},format=raw,if=ide"]
            expect, code = "OK", 1
        log.debug("kvm probe: %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return False, f"a {accel} guest did not finish within {timeout:.0f}s"
    out = proc.stdout.decode(errors="replace")
    if expect in out and proc.returncode == code:
        return True, f"a {accel} guest booted and finished"
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    return False, (err[-1] if err else f"qemu exited with {proc.returncode}")


def probe_kvm(timeout: float = PROBE_TIMEOUT_S) -> KvmProbe:
    """Tell whether KVM can run a guest on this host, and if not, why."""
    if shutil.which(QEMU) is None:
        return KvmProbe(KvmStatus.NO_QEMU, f"{QEMU} is not on PATH")
    if not KVM_DEVICE.exists():
        if _cpu_has_virt_flags():
            # The CPU can do it, yet the kernel has no /dev/kvm: usually the firmware switch.
            return KvmProbe(KvmStatus.DISABLED_IN_BIOS,
                            "the CPU has vmx/svm but /dev/kvm is missing (kvm: disabled by bios?)")
        return KvmProbe(KvmStatus.NO_DEVICE, "/dev/kvm does not exist")
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR)
        os.close(fd)
    except PermissionError:
        return KvmProbe(KvmStatus.PERMISSION_DENIED, "open /dev/kvm: permission denied")
    except OSError as exc:
        return KvmProbe(KvmStatus.FAILS, f"open /dev/kvm: {exc.strerror}")
    ok, detail = _boot_probe("kvm", timeout)
    if ok:
        return KvmProbe(KvmStatus.USABLE, detail)
    if "did not finish" in detail:
        return KvmProbe(KvmStatus.HANGS, detail)
    if "disabled by bios" in detail.lower():
        return KvmProbe(KvmStatus.DISABLED_IN_BIOS, detail)
    return KvmProbe(KvmStatus.FAILS, detail)


def _cache_key() -> str:
    qemu = shutil.which(QEMU) or QEMU
    try:
        qemu_stamp = str(os.stat(qemu).st_mtime_ns)
    except OSError:
        qemu_stamp = "missing"
    return f"{os.uname().release}|{qemu}|{qemu_stamp}"


def cached_probe(cache_file: Path | None = None) -> KvmProbe:
    """probe_kvm(), remembered on disk per kernel and qemu build (a probe can cost 20 s)."""
    from macvtap_provider.paths import cache_dir

    path = cache_file or cache_dir() / "kvm-probe.json"
    key = _cache_key()
    try:
        data = json.loads(path.read_text())
        if data.get("key") == key:
            return KvmProbe(KvmStatus(data["status"]), data["detail"])
    except (OSError, ValueError, KeyError):
        pass
    result = probe_kvm()
    log.info("KVM probe: %s (%s)", result.status.value, result.detail)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": key, "status": result.status.value,
                                    "detail": result.detail}))
    except OSError as exc:
        log.debug("cannot cache the KVM probe in %s: %s", path, exc)
    return result


@functools.cache
def kvm_usable() -> bool:
    """True only when a KVM guest really boots here. MACVTAP_LAB_KVM=0/1 overrides."""
    forced = os.environ.get("MACVTAP_LAB_KVM")
    if forced in ("0", "1"):
        return forced == "1"
    return cached_probe().usable

