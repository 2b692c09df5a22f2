"""Run the benchmark's figures side by side on this machine, print the table, record JSON.

Figures (all by default; a subset with `--only lab,noop` or BENCH_ONLY=lab,noop):

  lab    1. `pulumi up` of stacks/lab vs the manual script (bench/manual.py), both to ssh
            ready, with their phase timelines, and vs the critical-path floor
  noop   2. no-op `pulumi preview` / `pulumi up` on the lab vs an empty stack, and vs as
            many trivial Python dynamic resources (the dynamic-provider floor)
  size   3. customising a 10 GiB base vs a 1 GiB base
  scale  4. 4 guests in one stack vs 4 single-guest labs one after another
  rss    5. peak RSS of the provider processes during the lab's `pulumi up`
  toolchain 6. the 4-guest stack under our plugin vs the official CLI's launch (stock
            mode), and vs stock with the SDK's 4 worker threads
  hosts     8. 2 simulated remote hosts x 2 guests from one stack (stacks/hosts) vs the same 4
            guests on this machine (stacks/multi); the image upload and tunnel apart
  transport 7. the cost of reaching a remote lab host over ssh (two simulated hosts):
            tunnel, API and exec round trips, libvirt relay, image and base uploads
  boot      9. boot to sshd of the default guest vs a bare boot of its kernel (plain qemu,
            the lab's machine; BENCH_BOOT_IMAGE=<qcow2> measures another image)

lab, noop and rss share one `pulumi up` of the lab.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import boot, hosts, manual, noop, scale, size, toolchains, transport
from bench.common import (
    BenchError,
    CachedImages,
    cached_images,
    free_subnet,
    git_commit,
    host_facts,
    ratio,
    say,
)
from bench.lab import PulumiLab
from bench.report import Row, table, write
from bench.timeline import Timeline, render

FIGURES = ("lab", "noop", "size", "scale", "rss", "toolchain", "transport", "hosts", "boot")
TARGETS = {"lab_vs_manual": 0.85, "lab_vs_floor": 1.15, "noop": 1.5, "noop_floor": 1.2,
           "size": 1.1, "scale": 0.5, "boot": 1.5}


def critical_path_floor(t: Timeline, boot_to_sshd_s: float | None = None) -> dict[str, Any]:
    """max(container ready, image customized) + guest boot to sshd + network move.

    Boot to sshd is figure 9's (the same image booted the way MacvtapDomain boots it, to
    its SSH banner, in the same run) when given. Otherwise it runs from the domain's start
    to the provider's first successful TCP 22 probe or the network move, whichever came
    first. The serial login prompt is no sign of sshd: the default guest starts its getty
    before sshd (figure 9: login prompt ~8 s, sshd ~13 s). The network move is the handover
    step itself (GuestNetwork starting -> the address removed from the container; with the
    default `offline` method the guest's eth0 is configured during its boot).
    """
    c, i, d = t.get("container_ready"), t.get("image_customized"), t.get("domain_started")
    if c is None or i is None or d is None:
        return {"floor_s": None, "why": "phases missing"}
    if boot_to_sshd_s is not None:
        source, boot_s = "figure 9's boot to the SSH banner", boot_to_sshd_s
    else:
        signs = {name: t.get(phase) for name, phase in (
            ("provider TCP 22 probe", "provider_probe_ok"), ("network moved", "network_moved"))}
        seen = {name: at for name, at in signs.items() if at is not None}
        if not seen:
            return {"floor_s": None, "why": "phases missing"}
        source = min(seen, key=lambda name: seen[name])
        boot_s = seen[source] - d
    started, done = t.get("handover_started"), t.get("handover_done")
    move = max(0.0, done - started) if started is not None and done is not None else 0.0
    floor = max(c, i) + boot_s + move
    return {"floor_s": round(floor, 2), "ready_s": max(c, i), "boot_to_sshd_s": round(boot_s, 2),
            "boot_measured_to": source, "network_move_s": round(move, 2)}


def lab_figures(selected: set[str], images: CachedImages, tmp: Path, record: dict[str, Any],
                rows: list[Row], noop_reps: int) -> None:
    pulumi_tl: Timeline | None = None
    lab = PulumiLab.create(tmp, "lab", free_subnet())
    try:
        pulumi_tl = lab.up_to_ssh(images, "pulumi")
        assert lab.traced is not None
        rss = lab.traced.rss
        record["rss"] = rss
        if "noop" in selected:
            say("no-op preview/up vs an empty stack")
            record["noop"] = noop.measure(lab.stack, tmp, noop_reps)
    finally:
        lab.destroy()
    if "lab" in selected:
        manual_tl = manual.run_manual(images, free_subnet())
        boot_fig = record.get("boot") or {}
        floor = critical_path_floor(pulumi_tl, boot_fig.get("guest_sshd_s"))
        total, manual_total = pulumi_tl.total, manual_tl.total
        record["lab"] = {"pulumi": pulumi_tl.as_dict(), "manual": manual_tl.as_dict(),
                         "floor": floor, "ratio_vs_manual": ratio(total, manual_total),
                         "ratio_vs_floor": ratio(total, floor["floor_s"]),
                         "pulumi_network_method": "offline (stack default)",
                         "manual_disk": "copy (cp, as the seed)", "manual_nic": "ethernet"}
        print("\nFigure 1: phase timeline, seconds from the start of each path\n"
              + render([pulumi_tl, manual_tl]), flush=True)
        print(f"  critical-path floor (pulumi run): max(container, image) {floor.get('ready_s')}"
              f" + boot to sshd {floor.get('boot_to_sshd_s')} ("
              f"{floor.get('boot_measured_to')}) + network move {floor.get('network_move_s')}"
              f" = {floor['floor_s']} s", flush=True)
        rows.append(Row("1", "lab up: pulumi vs manual script",
                        f"{total:.1f} s / {manual_total:.1f} s",
                        ratio(total, manual_total), TARGETS["lab_vs_manual"]))
        rows.append(Row("1", "lab up: pulumi vs critical-path floor",
                        f"{total:.1f} s / {floor['floor_s']} s",
                        ratio(total, floor["floor_s"]), TARGETS["lab_vs_floor"]))
    if "noop" in selected:
        for name in ("preview", "up"):
            fig = record["noop"][name]
            rows.append(Row("2", f"no-op {name}: lab vs empty stack",
                            f"{fig['lab_s']:.2f} s / {fig['empty_s']:.2f} s", fig["ratio"],
                            TARGETS["noop"]))
            floor = record["noop"]["floor_stack"]
            rows.append(Row("2", f"no-op {name}: lab vs {floor['dynamic']} trivial dyn. res.",
                            f"{fig['lab_s']:.2f} s / {fig['trivial_s']:.2f} s",
                            fig["ratio_floor"], TARGETS["noop_floor"]))
    if "rss" in selected:
        rss = record["rss"]
        largest = rss.get("largest_process") or {}
        rows.append(Row("5", "provider peak RSS during up (sum)",
                        f"{rss['peak_sum_mib']:.0f} MiB", None, None,
                        f"largest process: {largest.get('name')} {largest.get('mib')} MiB; "
                        f"per kind: {rss.get('per_kind_peak_mib')}"))


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""),
                    help="comma-separated subset of " + ",".join(FIGURES) + " (env BENCH_ONLY)")
    ap.add_argument("--noop-reps", type=int, default=int(os.environ.get("BENCH_NOOP_REPS", 5)))
    ap.add_argument("--size-reps", type=int, default=int(os.environ.get("BENCH_SIZE_REPS", 5)))
    ap.add_argument("--boot-reps", type=int, default=int(os.environ.get("BENCH_BOOT_REPS", 3)))
    ap.add_argument("--boot-image", default=os.environ.get("BENCH_BOOT_IMAGE", ""),
                    help="qcow2 for the boot figure (default: the default guest image)")
    args = ap.parse_args(argv)
    chosen = [f.strip() for f in args.only.split(",") if f.strip()] or list(FIGURES)
    unknown = set(chosen) - set(FIGURES)
    if unknown:
        ap.error(f"unknown figure(s) {sorted(unknown)}: choose from {', '.join(FIGURES)}")
    args.selected = [f for f in FIGURES if f in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    selected = set(args.selected)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    record: dict[str, Any] = {"started": stamp, "commit": git_commit(), "host": host_facts(),
                              "figures": args.selected, "targets": TARGETS}
    rows: list[Row] = []
    errors: list[str] = []
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="macvtap-bench-"))
    keep_tmp = False
    try:
        images = cached_images()
        record["images"] = {"libvirt": images.libvirt, "guest_base": str(images.guest_base)}
        say(f"figures: {', '.join(args.selected)}; images {images.libvirt}, {images.guest_base}")
        steps: list[tuple[str, Callable[[], None]]] = []
        if "boot" in selected:
            # First: figure 1's floor takes its boot to sshd from this figure.
            image = Path(args.boot_image) if args.boot_image else images.guest_base
            steps.append(("boot", lambda: boot_figure(image, record, rows, args.boot_reps)))
        if selected & {"lab", "noop", "rss"}:
            steps.append(("lab/noop/rss", lambda: lab_figures(selected, images, tmp, record,
                                                              rows, args.noop_reps)))
        if "size" in selected:
            steps.append(("size", lambda: size_figure(images, record, rows, args.size_reps)))
        if "scale" in selected:
            steps.append(("scale", lambda: scale_figure(images, tmp, record, rows)))
        if "toolchain" in selected:
            steps.append(("toolchain", lambda: toolchain_figure(images, tmp, record, rows)))
        if "transport" in selected:
            steps.append(("transport", lambda: transport_figure(images, tmp, record, rows)))
        if "hosts" in selected:
            steps.append(("hosts", lambda: hosts_figure(images, tmp, record, rows)))
        record["loadavg"] = {}
        for name, step in steps:
            before = os.getloadavg()
            try:
                step()
            except (BenchError, OSError, RuntimeError) as exc:
                keep_tmp = True
                errors.append(f"{name}: {exc}")
                say(f"figure {name} failed: {exc}")
                traceback.print_exc()
            finally:
                # Other work on the machine skews timings: the 1-minute load around each step.
                record["loadavg"][name] = {"before": round(before[0], 2),
                                           "after": round(os.getloadavg()[0], 2)}
    finally:
        record["duration_s"] = round(time.monotonic() - started, 1)
        record["errors"] = errors
        rows.sort(key=lambda r: r.figure)
        path = write(record, rows, stamp)
        print(f"\nmacvtap-lab benchmark {stamp} ({record['commit']}, "
              f"{record['duration_s']:.0f} s)\n" + table(rows), flush=True)
        print(f"\nrecorded in {path} (and bench/results/latest.json)", flush=True)
        if keep_tmp:
            say(f"kept {tmp} (Pulumi backends of failed figures) for inspection")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 1 if errors else 0


def size_figure(images: CachedImages, record: dict[str, Any], rows: list[Row], reps: int) -> None:
    say("size: customising a 10 GiB vs a 1 GiB base")
    fig = size.measure(images.guest_base, reps)
    record["size"] = fig
    rows.append(Row("3", "customize: 10 GiB vs 1 GiB base",
                    f"{fig['median_10GiB_s']:.1f} s / {fig['median_1GiB_s']:.1f} s",
                    fig["ratio"], TARGETS["size"]))


def scale_figure(images: CachedImages, tmp: Path, record: dict[str, Any], rows: list[Row]) -> None:
    say("scale: 4 guests in one stack vs 4 labs one after another")
    fig = scale.measure(tmp, images)
    record["scale"] = fig
    rows.append(Row("4", f"{fig['guests']} guests: one stack vs {fig['guests']} labs in turn",
                    f"{fig['multi_s']:.1f} s / {fig['sequential_s']:.1f} s", fig["ratio"],
                    TARGETS["scale"]))


def toolchain_figure(images: CachedImages, tmp: Path, record: dict[str, Any],
                     rows: list[Row]) -> None:
    say("toolchain: 4 guests under our plugin vs the official launch (stock mode)")
    fig = toolchains.measure(tmp, images)
    record["toolchain"] = fig
    totals, phases = fig["totals_s"], fig["phases"]
    for label, title in (("stock", "stock launch"), ("stock_sdk_4_threads", "SDK's 4 threads")):
        p = phases[label]
        rows.append(Row("6", f"{fig['guests']} guests up to ssh: {title} vs our plugin",
                        f"{totals[label]:.1f} s / {totals['ours']:.1f} s",
                        ratio(totals[label], totals["ours"]), None,
                        f"container ready {p['container_ready_s']} s, images "
                        f"{p['images_customized_s']} s: "
                        + ("queued behind the images" if p["queued"] else "not queued")))


def transport_figure(images: CachedImages, tmp: Path, record: dict[str, Any],
                     rows: list[Row]) -> None:
    say("transport: reaching a remote lab host over ssh (two simulated hosts)")
    fig = transport.measure(tmp, images)
    record["transport"] = fig
    rows += [
        Row("7", "ssh tunnel to a host's engine (open)", f"{fig['tunnel_open_s']:.2f} s", None,
            None),
        Row("7", "docker API round trip: remote vs local",
            f"{fig['remote_ping_s'] * 1e3:.1f} ms / {fig['local_ping_s'] * 1e3:.1f} ms",
            ratio(fig["remote_ping_s"], fig["local_ping_s"]), None),
        Row("7", "docker exec: remote vs local",
            f"{fig['remote_exec_s'] * 1e3:.0f} ms / {fig['local_exec_s'] * 1e3:.0f} ms",
            ratio(fig["remote_exec_s"], fig["local_exec_s"]), None),
        Row("7", "libvirt over the exec relay (open + call)",
            f"{fig['libvirt_open_call_s'] * 1e3:.0f} ms", None, None),
        Row("7", f"libvirt image upload ({fig['libvirt_image_mb']} MB), once per host",
            f"{fig['image_upload_s']:.1f} s (re-check {fig['image_recheck_s']:.2f} s)", None,
            None),
        Row("7", f"guest base upload ({fig['base_mb']} MB) + sha256", f"{fig['base_upload_s']:.1f} s",
            None, None),
    ]


def hosts_figure(images: CachedImages, tmp: Path, record: dict[str, Any],
                 rows: list[Row]) -> None:
    say("hosts: 2 remote hosts x 2 guests vs 4 guests on this machine")
    fig = hosts.measure(tmp, images)
    record["hosts"] = fig
    rows += [
        Row("8", "4 guests: 2 remote hosts x 2 vs one host",
            f"{fig['two_hosts_s']:.1f} s / {fig['one_host_s']:.1f} s", fig["ratio"], None,
            "simulated hosts share this machine's 2 cores: the wire's cost, not a speed-up"),
        Row("8", "  apart: libvirt image to 2 fresh hosts", f"{fig['image_upload_s']:.1f} s",
            None, None),
        Row("8", "  apart: ssh tunnel open (per operation)", f"{fig['tunnel_open_s']:.2f} s",
            None, None),
    ]


def boot_figure(image: Path, record: dict[str, Any], rows: list[Row], reps: int) -> None:
    say("boot: the default guest to sshd vs a bare boot of its kernel")
    fig = boot.measure(image, reps)
    record["boot"] = fig
    print("\nFigure 9: guest boot phases, host seconds from qemu's start\n" + boot.render(fig),
          flush=True)
    p = fig["phases"]
    rows.append(Row("9", "boot to sshd: default guest vs bare kernel",
                    f"{fig['guest_sshd_s']:.1f} s / {fig['bare_userspace_s']:.1f} s",
                    fig["ratio"], TARGETS["boot"],
                    f"{fig['boot']} boot; phases: firmware+bootloader "
                    f"{p.get('firmware_bootloader')}, kernel {p.get('kernel')}, initramfs "
                    f"{p.get('initramfs')}, systemd to sshd {p.get('systemd_to_sshd')} s"))
