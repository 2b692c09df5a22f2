"""Size independence: customising a base of 10 GiB virtual size vs one of 1 GiB.

The two bases are real resizes of the cached guest base (2 GiB), not just bigger
containers: disk, partition and ext4 filesystem are 1 GiB or 10 GiB. They are built once
(about 15 s each under TCG, never timed) and kept in the cache, keyed by the base's digest.
The timing is the CustomizedImage provider's own `create` (overlay, one isolated libguestfs
launch), as `pulumi up` calls it, without the engine around it. The appliance's launch time
under TCG comes in whole-second steps (9.7 s or 10.7 s here, whatever the disk), so the
medians of 5 alternating repetitions are compared.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import guestfs

from bench.common import BenchError, median, run, say, token, work_dir
from macvtap_provider import paths
from macvtap_provider.adapters import qemu_img
from macvtap_provider.adapters.kvm import kvm_usable
from macvtap_provider.resources.customized_image import CustomizedImageProvider, sha256_file

GIB = 1024**3
MIB = 1024**2
SIZES_GIB = (1, 10)


def bench_cache() -> Path:
    return paths.cache_dir() / "bench"


def resized_base(base: Path, size_gib: int) -> Path:
    """A copy of `base` whose disk, partition 1 and ext4 filesystem span `size_gib` GiB."""
    digest = sha256_file(base)[:12]
    out = bench_cache() / f"base-{size_gib}g-{digest}.qcow2"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    say(f"building a {size_gib} GiB base from {base.name} (once, not timed)")
    shutil.copyfile(base, tmp)
    target = size_gib * GIB
    grow = target > int(qemu_img.info(tmp)["virtual-size"])
    if grow:
        run(["qemu-img", "resize", "-q", str(tmp), str(target)])
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.set_backend("direct")
        if not kvm_usable():
            g.set_backend_settings(["force_tcg"])
        g.add_drive_opts(str(tmp), format="qcow2")
        g.launch()
        part = g.part_list("/dev/sda")[0]
        start = int(part["part_start"])
        bootable = g.part_get_bootable("/dev/sda", 1)
        end_bytes = target - 4 * MIB  # room for the partition table's alignment
        g.e2fsck("/dev/sda1", forceall=True)
        if not grow:
            g.resize2fs_size("/dev/sda1", end_bytes - start)
        # parted refuses to shrink in place without a prompt: delete and re-add, same start.
        g.part_del("/dev/sda", 1)
        g.part_add("/dev/sda", "p", start // 512, end_bytes // 512 - 1)
        g.part_set_bootable("/dev/sda", 1, bootable)
        if grow:
            g.resize2fs("/dev/sda1")
        g.e2fsck("/dev/sda1", forceall=True)
        g.shutdown()
    except RuntimeError as exc:
        tmp.unlink(missing_ok=True)
        raise BenchError(f"resizing {base} to {size_gib} GiB failed: {exc}") from exc
    finally:
        g.close()
    if not grow:
        run(["qemu-img", "resize", "-q", "--shrink", str(tmp), str(target)])
    tmp.replace(out)
    return out


def customize_once(base: Path, out: Path, password: str) -> float:
    """Seconds the provider's create takes for an overlay of `base` (then deleted)."""
    provider = CustomizedImageProvider()
    props: dict[str, Any] = {"base_image": str(base), "output_path": str(out),
                             "root_password": password, "nameservers": ["10.213.200.1"],
                             "hostname": "bench-size"}
    check = provider.check({}, props)
    if check.failures:
        raise BenchError(f"CustomizedImage check failed: {check.failures}")
    started = time.monotonic()
    result = provider.create(check.inputs)
    elapsed = time.monotonic() - started
    provider.delete(result.id, result.outs or {})
    return elapsed


def measure(base: Path, reps: int) -> dict[str, Any]:
    bases = {size: resized_base(base, size) for size in SIZES_GIB}
    work = work_dir(f"bench-size-{token()}")
    password = token() + token() + "Bench"
    times: dict[int, list[float]] = {size: [] for size in SIZES_GIB}
    try:
        for rep in range(reps):
            order = SIZES_GIB if rep % 2 == 0 else tuple(reversed(SIZES_GIB))
            for size in order:
                elapsed = customize_once(bases[size], work / "images" / f"g{size}.qcow2",
                                         password)
                times[size].append(round(elapsed, 2))
                say(f"customize {size} GiB base: {elapsed:.1f}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small, big = median(times[1]), median(times[10])
    return {"bases": {f"{s}GiB": str(p) for s, p in bases.items()},
            "seconds": {f"{s}GiB": t for s, t in times.items()},
            "median_1GiB_s": round(small, 2), "median_10GiB_s": round(big, 2),
            "ratio": round(big / small, 3)}
