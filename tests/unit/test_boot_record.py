"""Boot records: direct kernel boot of images macvtap-lab built, none for the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from macvtap_provider import boot_record as boot

pytestmark = pytest.mark.unit


def _image(tmp_path: Path, record: object, files: tuple[str, ...] = ("g.vmlinuz", "g.initrd")
           ) -> Path:
    image = tmp_path / "g.qcow2"
    image.write_bytes(b"qcow")
    for name in files:
        (tmp_path / name).write_bytes(b"x")
    boot.sidecar_path(image).write_text(json.dumps({"recipe": "r", "boot": record}))
    return image


def test_record_names_files_beside_the_image(tmp_path: Path) -> None:
    image = _image(tmp_path, {"kernel": "g.vmlinuz", "initrd": "g.initrd", "cmdline": "quiet"})
    assert boot.read_boot_record(image) == boot.BootRecord(
        tmp_path / "g.vmlinuz", tmp_path / "g.initrd", "quiet")


def test_record_without_initrd(tmp_path: Path) -> None:
    image = _image(tmp_path, {"kernel": "g.vmlinuz"}, files=("g.vmlinuz",))
    assert boot.read_boot_record(image) == boot.BootRecord(tmp_path / "g.vmlinuz", None, "")


@pytest.mark.parametrize("record", [None, "text", {}, {"kernel": ""}], ids=str)
def test_no_record_means_disk_boot(tmp_path: Path, record: object) -> None:
    assert boot.read_boot_record(_image(tmp_path, record)) is None


def test_no_sidecar_means_disk_boot(tmp_path: Path) -> None:
    image = tmp_path / "vendor.qcow2"
    image.write_bytes(b"qcow")
    assert boot.read_boot_record(image) is None


def test_missing_files_mean_disk_boot(tmp_path: Path) -> None:
    image = _image(tmp_path, {"kernel": "g.vmlinuz", "initrd": "g.initrd"}, files=("g.vmlinuz",))
    assert boot.read_boot_record(image) is None


def test_files_beside_a_disk_and_their_removal(tmp_path: Path) -> None:
    disk = tmp_path / "images" / "guest.qcow2"
    disk.parent.mkdir()
    kernel, initrd = boot.boot_files_beside(disk)
    assert (kernel, initrd) == (disk.with_suffix(".vmlinuz"), disk.with_suffix(".initrd"))
    kernel.write_bytes(b"k")
    initrd.write_bytes(b"i")
    boot.remove_boot_files(disk)
    assert not kernel.exists() and not initrd.exists()
    boot.remove_boot_files(disk)  # already gone is fine
