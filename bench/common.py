"""Shared plumbing: paths, names, lab subnets, the cached images, small process helpers."""

from __future__ import annotations

import ipaddress
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from macvtap_provider import paths

ROOT = Path(__file__).resolve().parent.parent
PULUMI = ROOT / ".tools" / "bin" / "pulumi"
RESULTS = ROOT / "bench" / "results"
#: Every object the benchmark makes carries this label (CI's leftover cleaner knows the prefix).
LABEL = "org.macvtap-lab.bench"
#: The benchmark's labs use 10.213.200.0/24 .. 10.213.230.0/24 only.
SUBNET_THIRD_OCTETS = range(200, 231)

_STARTED = time.monotonic()


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and shows the tool's output."""


def say(message: str) -> None:
    """Progress on stderr, with the time since the benchmark started."""
    print(f"[bench {time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def token() -> str:
    return secrets.token_hex(3)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 600,
        env: dict[str, str] | None = None, stdin: str | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; a failure raises BenchError with the output."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                          env=env, input=stdin, cwd=cwd, check=False)
    if check and proc.returncode != 0:
        raise BenchError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def used_subnets() -> set[ipaddress.IPv4Network]:
    """The IPv4 subnets of every docker network on this host."""
    ids = run(["docker", "network", "ls", "-q"]).stdout.split()
    if not ids:
        return set()
    data = json.loads(run(["docker", "network", "inspect", *ids]).stdout)
    nets = set()
    for net in data:
        for cfg in (net.get("IPAM") or {}).get("Config") or []:
            subnet = cfg.get("Subnet", "")
            if "." in subnet:
                nets.add(ipaddress.IPv4Network(subnet, strict=False))
    return nets


def free_subnet(avoid: Iterable[str] = ()) -> str:
    """A /24 from the benchmark's range that no docker network on this host uses."""
    taken = used_subnets() | {ipaddress.IPv4Network(s) for s in avoid}
    free = [f"10.213.{o}.0/24" for o in SUBNET_THIRD_OCTETS
            if not any(ipaddress.IPv4Network(f"10.213.{o}.0/24").overlaps(t) for t in taken)]
    if not free:
        raise BenchError("no free /24 left in 10.213.200.0-10.213.230.0: remove old bench labs "
                         "(docker network ls)")
    return random.choice(free)


def host_address(subnet: str, host: int) -> str:
    return str(ipaddress.IPv4Network(subnet).network_address + host)


@dataclass(frozen=True)
class CachedImages:
    """What `macvtap-lab images status` reports: the libvirt container image, the guest base."""

    libvirt: str
    guest_base: Path


def cached_images() -> CachedImages:
    """The cached images both paths start from (built now if missing, outside any timing)."""
    from macvtap_provider.images.guest_image import ensure_guest_image
    from macvtap_provider.images.libvirt_image import ensure_libvirt_image

    base = paths.default_guest_image()
    if not base.exists():
        say("building the guest base image (not timed)")
        ensure_guest_image(base)
    return CachedImages(libvirt=ensure_libvirt_image(), guest_base=base)


def work_dir(name: str) -> Path:
    """A lab's work directory, laid out as the providers lay theirs out."""
    return paths.work_root() / name


def git_commit() -> str:
    proc = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], check=False)
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                check=False).stdout.strip()
    return proc.stdout.strip() + ("+dirty" if dirty else "")


def host_facts() -> dict[str, object]:
    from macvtap_provider.adapters.kvm import kvm_usable

    return {"cpus": os.cpu_count(), "kernel": os.uname().release, "kvm": kvm_usable(),
            "loadavg_at_start": os.getloadavg()}
