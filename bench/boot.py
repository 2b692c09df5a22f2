"""Figure 6: boot to sshd of the default guest vs a bare boot of the same kernel.

Both boot under plain qemu on this host with the machine and devices a lab's domain gets
(i440fx, the accelerator the providers pick, the lab's memory and vCPUs, a virtio disk, a
virtio NIC, a virtio RNG, a USB controller as libvirt adds, the serial port read as it
prints), one after
the other, alternating, `reps` times each:

- guest: a fresh clone of the default guest image for every boot, customised as a lab
  customises it (root password, host keys, static eth0 written offline), booted the way
  MacvtapDomain boots it (its kernel directly when the image has a boot record, else its
  disk). Its NIC is qemu's user network with `restrict=on` (nothing leaves it) and a
  loopback port forwarded to the guest's port 22: sshd is ready at the first SSH banner
  read through it. Then root logs in on the serial console, which also checks that path.
- bare: the same kernel, `console=ttyS0,115200n8 quiet`, and an initramfs holding only a
  static /init that prints the guest's CLOCK_MONOTONIC on the console and powers off.

Phases of a guest boot on the host's clock (seconds since qemu started), from the guest's
own timestamps read back over the serial console and anchored by a /proc/uptime line:
firmware + bootloader (until the kernel's clock starts; includes qemu's start and the
kernel's decompression), kernel (until the first userspace process), initramfs (until
systemd starts), systemd to sshd (until the banner).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pexpect

from bench.common import BenchError, say, token
from macvtap_provider.adapters.kvm import kvm_usable
from macvtap_provider.boot_record import BootRecord, read_boot_record

#: The lab guest's static address on qemu's user network (its defaults) and the password.
GUEST_ADDRESS, GUEST_GATEWAY = "10.0.2.15", "10.0.2.2"
PASSWORD_BYTES = 9
BARE_CMDLINE = "console=ttyS0,115200n8 quiet rdinit=/init"
BARE_MARK = re.compile(rb"BARE-USERSPACE monotonic=(\d+\.\d+)")
LOGIN_RE = re.compile(rb"login: ?$", re.M)
RUN_INIT_RE = re.compile(r"^\[\s*(\d+\.\d+)\] Run (\S+) as init process")
PROMPT = "BENCHBOOT# "
BOOT_TIMEOUT_S = 240

BARE_INIT_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <sys/reboot.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    int fd = open("/dev/console", O_WRONLY | O_NOCTTY);
    dprintf(fd < 0 ? 1 : fd, "\nBARE-USERSPACE monotonic=%ld.%06ld\n", (long)t.tv_sec,
            t.tv_nsec / 1000);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
"""


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) a process has used: the work a TCG boot
    took, less sensitive to other load on the machine than the wall clock."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


@dataclass
class GuestBoot:
    """One boot of the guest: host seconds since qemu started, guest clock readings."""

    sshd_s: float
    #: qemu's CPU seconds when the banner came.
    sshd_cpu_s: float | None = None
    login_prompt_s: float | None = None
    kernel_start_s: float | None = None  # host time of the guest clock's zero
    run_init_s: float | None = None  # guest clock: first userspace process
    first_process: str = ""
    userspace_s: float | None = None  # guest clock: systemd started
    phases: dict[str, float | None] = field(default_factory=dict)


@dataclass
class BareBoot:
    userspace_s: float  # host seconds since qemu started
    kernel_start_s: float
    userspace_cpu_s: float | None = None


@dataclass(frozen=True)
class Machine:
    """The qemu command line a lab's domain gets, minus what differs per boot."""

    memory_mib: int = 512
    vcpus: int = 1

    def args(self, disk: Path, port: int | None) -> list[str]:
        accel = ["-accel", "kvm", "-cpu", "host"] if kvm_usable() else \
            ["-accel", "tcg", "-cpu", "qemu64"]
        net = "user,id=n0,restrict=on" + (
            f",hostfwd=tcp:127.0.0.1:{port}-{GUEST_ADDRESS}:22" if port else "")
        return ["qemu-system-x86_64", "-machine", "pc,usb=off", *accel,
                "-m", str(self.memory_mib), "-smp", str(self.vcpus), "-nodefaults",
                "-no-user-config", "-display", "none", "-monitor", "none", "-rtc", "base=utc",
                "-device", "piix3-usb-uhci",
                "-drive", f"file={disk},if=none,id=d0,format=qcow2",
                "-device", "virtio-blk-pci,drive=d0",
                "-netdev", net, "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
                "-object", "rng-random,filename=/dev/urandom,id=rng0",
                "-device", "virtio-rng-pci,rng=rng0",
                "-chardev", "stdio,id=s0,signal=off", "-serial", "chardev:s0"]


def newc_archive(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A cpio archive in the kernel's `newc` format: (name, mode, data, (major, minor))."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, rdev: tuple[int, int], ino: int) -> None:
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        add(name, mode, data, rdev, ino)
    add("TRAILER!!!", 0, b"", (0, 0), 0)
    return bytes(out)


def bare_initramfs(tmp: Path) -> Path:
    """The bare boot's initramfs: /dev/console and a static /init (compiled here)."""
    if shutil.which("gcc") is None:
        raise BenchError("the bare boot needs gcc and libc6-dev (a static /init): "
                         "apt-get install gcc libc6-dev")
    source, binary = tmp / "bare-init.c", tmp / "bare-init"
    source.write_text(BARE_INIT_C)
    proc = subprocess.run(["gcc", "-static", "-Os", "-o", str(binary), str(source)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"compiling the bare /init failed (install libc6-dev):\n{proc.stderr}")
    archive = tmp / "bare.cpio"
    archive.write_bytes(newc_archive([
        ("dev", 0o040755, b"", (0, 0)),
        ("dev/console", 0o020600, b"", (5, 1)),
        ("init", 0o100755, binary.read_bytes(), (0, 0)),
    ]))
    return archive


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Console:
    """qemu with its serial port on our pty: lines stamped with host seconds since start."""

    def __init__(self, argv: list[str]) -> None:
        self.started = time.monotonic()
        self.child = pexpect.spawn(argv[0], argv[1:], echo=False, timeout=30, maxread=65536)
        self.lines: list[tuple[float, str]] = []
        self._partial = b""

    def now(self) -> float:
        return time.monotonic() - self.started

    def pump(self, pattern: re.Pattern[bytes] | None, timeout: float) -> re.Match[bytes] | None:
        """Read for up to `timeout` s; stop at the first chunk where `pattern` matches."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.child.read_nonblocking(65536, timeout=0.1)
            except pexpect.TIMEOUT:
                data = b""
            except pexpect.EOF:
                raise BenchError("qemu exited: " + self.tail()) from None
            self._partial += data
            *complete, self._partial = self._partial.split(b"\n")
            for line in complete:
                self.lines.append((self.now(), line.decode(errors="replace").rstrip("\r")))
            if pattern is not None:
                for chunk in (*complete, self._partial):
                    found = pattern.search(chunk.rstrip(b"\r"))
                    if found:
                        return found
        return None

    def tail(self, count: int = 15) -> str:
        return "\n  ".join(line for _, line in self.lines[-count:])

    def close(self) -> None:
        self.child.close(force=True)


@contextlib.contextmanager
def running(argv: list[str]) -> Iterator[Console]:
    console = Console(argv)
    try:
        yield console
    finally:
        console.close()


def wait_banner(port: int, console: Console, stop: threading.Event,
                result: list[float | None]) -> None:
    """Poll 127.0.0.1:`port` until it sends an SSH banner; append the host time and qemu's
    CPU seconds to result."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(5)
                if s.recv(64).startswith(b"SSH-"):
                    result += [console.now(), cpu_seconds(console.child.pid)]
                    return
        except OSError:
            pass
        stop.wait(0.1)


def boot_bare(machine: Machine, kernel: Path, initramfs: Path, disk: Path) -> BareBoot:
    argv = [*machine.args(disk, None), "-kernel", str(kernel), "-initrd", str(initramfs),
            "-append", BARE_CMDLINE]
    with running(argv) as console:
        found = console.pump(BARE_MARK, BOOT_TIMEOUT_S)
        if found is None:
            raise BenchError(f"bare boot: no userspace mark within {BOOT_TIMEOUT_S}s:\n  "
                             + console.tail())
        at, cpu = console.now(), cpu_seconds(console.child.pid)
        monotonic = float(found.group(1))
    return BareBoot(round(at, 2), round(at - monotonic, 2), cpu)


def boot_guest(machine: Machine, disk: Path, record: BootRecord | None,
               password: str) -> GuestBoot:
    port = free_port()
    argv = machine.args(disk, port)
    if record is not None:
        argv += ["-kernel", str(record.kernel), "-append", record.cmdline]
        if record.initrd is not None:
            argv += ["-initrd", str(record.initrd)]
    stop, banner = threading.Event(), list[float | None]()
    with running(argv) as console:
        prober = threading.Thread(target=wait_banner, args=(port, console, stop, banner),
                                  daemon=True)
        prober.start()
        try:
            login = console.pump(LOGIN_RE, BOOT_TIMEOUT_S)
            login_at = console.now() if login else None
            deadline = time.monotonic() + BOOT_TIMEOUT_S
            while not banner and time.monotonic() < deadline:
                console.pump(None, 0.5)
            if not banner:
                raise BenchError(f"guest boot: no SSH banner within {BOOT_TIMEOUT_S}s:\n  "
                                 + console.tail())
            if login is None:
                raise BenchError("guest boot: no login prompt on the serial console:\n  "
                                 + console.tail())
            assert banner[0] is not None
            boot = GuestBoot(sshd_s=round(banner[0], 2), sshd_cpu_s=banner[1],
                             login_prompt_s=round(login_at or 0, 2))
            read_guest_clock(console, password, boot)
        finally:
            stop.set()
            prober.join(timeout=10)
    return boot


def read_guest_clock(console: Console, password: str, boot: GuestBoot) -> None:
    """Log in as root on the serial console and read the guest's boot timestamps."""
    child = console.child
    child.sendline("root")
    child.expect("assword:", timeout=60)
    child.sendline(password)
    if child.expect([r"[#$] ?$", "Login incorrect"], timeout=60) != 0:
        raise BenchError("guest boot: root login on the serial console was refused")
    # Quoted apart, so that the echo of this line does not look like the prompt.
    half = len(PROMPT) // 2
    child.sendline(f"stty -echo; export PS1='{PROMPT[:half]}''{PROMPT[half:]}' TERM=dumb "
                   "SYSTEMD_PAGER=")
    child.expect_exact(PROMPT, timeout=60)
    # The line's arrival on the host's clock against the guest's uptime: the clocks' offset.
    child.sendline("cat /proc/uptime")
    child.expect(r"(\d+\.\d+) \d+\.\d+\r*\n", timeout=60)
    boot.kernel_start_s = round(console.now() - float(child.match.group(1)), 2)
    child.expect_exact(PROMPT, timeout=60)
    child.sendline("dmesg | grep -m1 ' as init process'; systemctl show "
                   "-p UserspaceTimestampMonotonic --value; echo BENCH''-END")
    child.expect_exact("BENCH-END", timeout=60)
    for line in (child.before or b"").decode(errors="replace").splitlines():
        line = line.strip()
        if m := RUN_INIT_RE.match(line):
            boot.run_init_s, boot.first_process = float(m.group(1)), m.group(2)
        elif line.isdigit():
            boot.userspace_s = int(line) / 1e6
    boot.phases = guest_phases(boot)


def guest_phases(boot: GuestBoot) -> dict[str, float | None]:
    """Seconds per phase on the host's clock (None when a timestamp is missing)."""
    start, run_init, userspace = boot.kernel_start_s, boot.run_init_s, boot.userspace_s
    if start is None or run_init is None or userspace is None:
        return {}
    initramfs = boot.first_process != "/sbin/init" and boot.first_process != "/lib/systemd/systemd"
    return {
        "firmware_bootloader": round(start, 2),
        "kernel": round(run_init, 2),
        "initramfs": round(userspace - run_init, 2) if initramfs else 0.0,
        "systemd_to_sshd": round(boot.sshd_s - start - userspace, 2),
    }


def prepare_clones(image: Path, tmp: Path, count: int, password: str) -> list[Path]:
    """`count` clones of `image`, customised as a lab does, in one appliance launch."""
    from macvtap_provider.images.customize import build_images
    from macvtap_provider.resources.customized_image import CustomizedImageSpec, StaticNetwork

    specs = [CustomizedImageSpec(
        base_image=image, output_path=tmp / f"guest-{i}.qcow2", root_password=password,
        nameservers=(GUEST_GATEWAY,), hostname="bench-guest",
        network=StaticNetwork(GUEST_ADDRESS, 24, GUEST_GATEWAY)) for i in range(count)]
    errors = [e for e in build_images(specs) if e]
    if errors:
        raise BenchError("customising the guest clones failed: " + "; ".join(errors))
    return [s.output_path for s in specs]


def image_kernel(image: Path, tmp: Path) -> Path:
    """The image's kernel: from its boot record, else copied out of its /boot."""
    record = read_boot_record(image)
    if record is not None:
        return record.kernel
    out = tmp / "kernel"
    out.mkdir(exist_ok=True)
    env = dict(os.environ, LIBGUESTFS_BACKEND="direct")
    if not kvm_usable():
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    proc = subprocess.run(["guestfish", "--ro", "-a", str(image), "-i", "glob", "copy-out",
                           "/boot/vmlinuz-*", str(out)], capture_output=True, text=True,
                          env=env, check=False)
    kernels = sorted(out.glob("vmlinuz-*"))
    if proc.returncode != 0 or len(kernels) != 1:
        raise BenchError(f"copying the kernel out of {image} failed: {proc.stderr[-500:]}")
    return kernels[0]


def median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None


def measure(image: Path, reps: int = 3, machine: Machine | None = None) -> dict[str, Any]:
    """Alternate `reps` bare and guest boots; medians, per-boot data and the ratio."""
    machine = machine or Machine()
    with tempfile.TemporaryDirectory(prefix="bench-boot-") as name:
        tmp = Path(name)
        record = read_boot_record(image)
        password = token() + token() + "Boot"
        say(f"boot: {reps} guest clone(s) of {image.name} "
            f"({'direct kernel boot' if record else 'disk boot'}); bare kernel init")
        kernel = image_kernel(image, tmp)
        initramfs = bare_initramfs(tmp)
        clones = prepare_clones(image, tmp, reps, password)
        bare: list[BareBoot] = []
        guest: list[GuestBoot] = []
        for i, clone in enumerate(clones):
            bare.append(boot_bare(machine, kernel, initramfs, clones[0]))
            guest.append(boot_guest(machine, clone, record, password))
            say(f"boot {i + 1}/{reps}: bare {bare[-1].userspace_s:.2f} s, guest sshd "
                f"{guest[-1].sshd_s:.2f} s (login prompt {guest[-1].login_prompt_s} s), "
                f"phases {guest[-1].phases}")
    bare_s = median_or_none([b.userspace_s for b in bare])
    guest_s = median_or_none([g.sshd_s for g in guest])
    phases = {name: median_or_none([g.phases.get(name) for g in guest])
              for name in ("firmware_bootloader", "kernel", "initramfs", "systemd_to_sshd")}
    return {
        "image": str(image), "boot": "kernel" if record else "disk",
        "cmdline": record.cmdline if record else "(the image's bootloader)",
        "bare_cmdline": BARE_CMDLINE, "memory_mib": machine.memory_mib,
        "vcpus": machine.vcpus, "accel": "kvm" if kvm_usable() else "tcg", "reps": reps,
        "guest_sshd_s": guest_s, "bare_userspace_s": bare_s,
        "guest_login_prompt_s": median_or_none([g.login_prompt_s for g in guest]),
        "bare_kernel_start_s": median_or_none([b.kernel_start_s for b in bare]),
        "guest_sshd_cpu_s": median_or_none([g.sshd_cpu_s for g in guest]),
        "bare_userspace_cpu_s": median_or_none([b.userspace_cpu_s for b in bare]),
        "phases": phases, "ratio": None if not bare_s or guest_s is None else guest_s / bare_s,
        "runs": {"guest": [asdict(g) for g in guest], "bare": [asdict(b) for b in bare]},
    }


def render(fig: dict[str, Any]) -> str:
    """The phase table of the guest boot next to the bare boot (medians, host seconds)."""
    p = fig["phases"]
    rows = [("firmware + bootloader", p.get("firmware_bootloader"), fig["bare_kernel_start_s"]),
            ("kernel", p.get("kernel"),
             None if fig["bare_userspace_s"] is None or fig["bare_kernel_start_s"] is None
             else round(fig["bare_userspace_s"] - fig["bare_kernel_start_s"], 2)),
            ("initramfs", p.get("initramfs"), None),
            ("systemd to sshd", p.get("systemd_to_sshd"), None),
            ("total: sshd / bare userspace", fig["guest_sshd_s"], fig["bare_userspace_s"]),
            ("(serial login prompt)", fig["guest_login_prompt_s"], None),
            ("(qemu CPU seconds to the total)", fig["guest_sshd_cpu_s"],
             fig["bare_userspace_cpu_s"])]

    def cell(v: float | None) -> str:
        return f"{'-' if v is None else f'{v:.2f} s':>12}"

    lines = [f"  {'phase (median of ' + str(fig['reps']) + ')':<30}{'guest':>12}{'bare':>12}"]
    lines += [f"  {name:<30}{cell(g)}{cell(b)}" for name, g, b in rows]
    lines.append(f"  guest: {fig['boot']} boot, {fig['cmdline']}; bare: {fig['bare_cmdline']}; "
                 f"{fig['accel']}, {fig['memory_mib']} MiB, {fig['vcpus']} vCPU")
    return "\n".join(lines)
