"""Boot a disk under plain qemu (TCG, user networking that reaches nothing) and time it.

Used to prove a fixture is a real bootable guest: it must reach its serial login prompt
and answer SSH on the address qemu's own DHCP server gives it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

GUEST_ADDRESS = "10.0.2.15"  # what slirp's DHCP server hands out first


@dataclass
class BootResult:
    """Seconds from qemu's start to each milestone, and what the console printed."""

    login_s: float | None = None
    ssh_s: float | None = None
    host_key: str = ""
    console: str = ""
    milestones: dict[str, float] = field(default_factory=dict)


def free_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nocloud_seed(directory: Path, hostname: str) -> Path:
    """A NoCloud seed (meta-data, user-data) that qemu presents as a FAT disk labelled
    cidata: cloud-init's stock datasource for a machine without a metadata server."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "meta-data").write_text(f"instance-id: {hostname}-boot\n"
                                         f"local-hostname: {hostname}\n")
    (directory / "user-data").write_text("#cloud-config\n{}\n")
    return directory


def qemu_command(disk: Path, fmt: str, port: int, seed: Path | None = None,
                 memory_mib: int = 512) -> list[str]:
    """qemu under TCG, the disk as a throw-away snapshot, the serial port on stdio, one
    virtio NIC on user networking restricted to the forwarded SSH port."""
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mib), "-nographic",
           "-nodefaults", "-serial", "stdio", "-no-reboot", "-snapshot",
           "-drive", f"file={disk},format={fmt},if=virtio",
           "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-{GUEST_ADDRESS}:22",
           "-device", "virtio-net-pci,netdev=n0"]
    if seed is not None:
        cmd += ["-drive", f"driver=vvfat,dir={seed},label=cidata,if=virtio,readonly=on"]
    return cmd


def boot(disk: Path, fmt: str = "qcow2", seed: Path | None = None, login_timeout: float = 240,
         ssh_timeout: float = 180, milestones: tuple[str, ...] = ()) -> BootResult:
    """Boot `disk` until the serial login prompt and an SSH host key, then stop qemu.

    Args:
        disk: the image (never written: qemu runs it as a snapshot).
        fmt: its format.
        seed: a NoCloud seed directory to attach (see nocloud_seed).
        login_timeout: seconds allowed to reach "login:" on the console.
        ssh_timeout: seconds allowed after that for sshd to offer its host key.
        milestones: console patterns (regular expressions) to time on the way, in the
            order they appear; one that never appears is left out of the result.

    Returns:
        The timings and the console text; a milestone not reached stays None/absent.
    """
    import pexpect

    result = BootResult()
    port = free_local_port()
    cmd = qemu_command(disk, fmt, port, seed)
    started = time.monotonic()
    console = pexpect.spawn(cmd[0], cmd[1:], timeout=login_timeout, encoding="utf-8",
                            codec_errors="replace")
    text: list[str] = []
    try:
        remaining = [*milestones, "login:"]
        while remaining:
            left = login_timeout - (time.monotonic() - started)
            index = console.expect([*remaining, pexpect.TIMEOUT, pexpect.EOF],
                                   timeout=max(left, 1))
            text.append(str(console.before) + str(console.after))
            if index >= len(remaining):
                break
            # A milestone that never shows (a quiet kernel) is skipped, not waited for.
            result.milestones[remaining[index]] = round(time.monotonic() - started, 1)
            remaining = remaining[index + 1:]
        result.login_s = result.milestones.pop("login:", None)
        if result.login_s is not None:
            result.host_key = _keyscan(console, port, time.monotonic() + ssh_timeout, text)
            if result.host_key:
                result.ssh_s = round(time.monotonic() - started, 1)
    finally:
        with contextlib.suppress(pexpect.ExceptionPexpect):
            text.append(console.read_nonblocking(1 << 20, timeout=0))
        console.terminate(force=True)
    result.console = "".join(text)
    return result


def _keyscan(console: object, port: int, deadline: float, text: list[str]) -> str:
    """The ed25519 host key sshd offers on the forwarded port, or '' by `deadline`; the
    console is drained meanwhile so the guest never blocks on a full serial buffer."""
    import pexpect

    assert isinstance(console, pexpect.spawn)
    while time.monotonic() < deadline:
        # One key type per scan: under TCG each handshake is slow.
        out = subprocess.run(["ssh-keyscan", "-t", "ed25519", "-T", "10", "-p", str(port),
                              "127.0.0.1"], capture_output=True, text=True, check=False).stdout
        if "ssh-ed25519" in out:
            return out
        with contextlib.suppress(pexpect.TIMEOUT, pexpect.EOF):
            console.expect(pexpect.TIMEOUT, timeout=2)
        text.append(str(console.before))
    return ""
