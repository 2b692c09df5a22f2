"""The boot figure's pure parts: the bare initramfs archive and the phase arithmetic."""

from __future__ import annotations

import pytest

from bench.boot import GuestBoot, guest_phases, newc_archive

pytestmark = pytest.mark.unit


def test_newc_archive_layout() -> None:
    data = newc_archive([("dev", 0o040755, b"", (0, 0)), ("dev/console", 0o020600, b"", (5, 1)),
                         ("init", 0o100755, b"\x7fELF", (0, 0))])
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    assert data.count(b"070701") == 4  # three entries and the trailer
    assert b"TRAILER!!!\0" in data
    console = data.index(b"dev/console\0")
    header = data[console - 110:console]
    fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
    assert fields[1] == 0o020600 and (fields[9], fields[10]) == (5, 1)
    assert fields[11] == len(b"dev/console\0")


def test_phases_with_an_initramfs() -> None:
    boot = GuestBoot(sshd_s=9.0, kernel_start_s=1.0, run_init_s=2.5, first_process="/init",
                     userspace_s=3.0)
    assert guest_phases(boot) == {"firmware_bootloader": 1.0, "kernel": 2.5, "initramfs": 0.5,
                                  "systemd_to_sshd": 5.0}


def test_phases_without_an_initramfs_and_with_a_gap() -> None:
    boot = GuestBoot(sshd_s=9.0, kernel_start_s=1.0, run_init_s=2.5,
                     first_process="/sbin/init", userspace_s=2.6)
    assert guest_phases(boot)["initramfs"] == 0.0
    assert guest_phases(GuestBoot(sshd_s=9.0)) == {}
