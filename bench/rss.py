"""Peak RSS of the dynamic-provider processes under a `pulumi` process, sampled from /proc.

The engine starts the provider plugin (the SDK's `pulumi.dynamic` server, run through the
project's `macvtap_provider.plugin` wrapper of it); libguestfs work runs in a spawned
child of it, which starts the appliance's qemu. All of those count: the sum over the
provider processes and their descendants is sampled, and each process's own peak kept.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROVIDER_MARKERS = ("pulumi.dynamic", "macvtap_provider.plugin")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class ProcPeak:
    pid: int
    name: str
    kib: int


def _stat(pid: int) -> tuple[int, str] | None:
    """(ppid, comm) of a process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    close = raw.rfind(")")
    comm = raw[raw.find("(") + 1:close]
    return int(raw[close + 2:].split()[1]), comm


def _rss_kib(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    except (OSError, IndexError, ValueError):
        return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _label(pid: int, comm: str) -> str:
    cmd = _cmdline(pid)
    if any(marker in cmd for marker in PROVIDER_MARKERS):
        return "provider plugin"
    if "multiprocessing" in cmd:
        return "provider child (" + ("spawn" if "spawn_main" in cmd else "tracker") + ")"
    return comm


class RssSampler(threading.Thread):
    """Samples every `interval_s` until stopped; `result()` gives the peaks."""

    def __init__(self, root_pid: int, interval_s: float = 0.25,
                 root_comm: str | None = None) -> None:
        """Samples the descendants of `root_pid`; with `root_comm`, of those of its
        children whose command name starts with it (this process's `pulumi` runs)."""
        super().__init__(name="rss-sampler", daemon=True)
        self.root_pid = root_pid
        self.root_comm = root_comm
        self.interval_s = interval_s
        self._stop_event = threading.Event()
        self.peak_sum_kib = 0
        self.peak_sum_at = 0.0
        self.peak_sum_procs: list[ProcPeak] = []
        self.peak_tree_kib = 0
        self.per_process: dict[int, ProcPeak] = {}
        self.samples = 0
        self._labels: dict[int, str] = {}
        self._t0 = time.monotonic()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval_s)

    def _descendants(self, root: int) -> dict[int, tuple[int, str]]:
        table: dict[int, tuple[int, str]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                info = _stat(int(entry))
                if info is not None:
                    table[int(entry)] = info
        children: dict[int, list[int]] = {}
        for pid, (ppid, _comm) in table.items():
            children.setdefault(ppid, []).append(pid)
        found: dict[int, tuple[int, str]] = {}
        todo = [root]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                found[child] = table[child]
                todo.append(child)
        return found

    def _tree(self) -> dict[int, tuple[int, str]]:
        tree = self._descendants(self.root_pid)
        if self.root_comm is None:
            return tree
        roots = {pid for pid, (ppid, comm) in tree.items()
                 if ppid == self.root_pid and comm.startswith(self.root_comm)}
        keep = set().union(*(self._descendants_in(tree, pid) for pid in roots))
        return {pid: info for pid, info in tree.items() if pid in keep}

    def sample(self) -> None:
        tree = self._tree()
        providers = [pid for pid in tree if any(m in _cmdline(pid) for m in PROVIDER_MARKERS)]
        counted: set[int] = set()
        for pid in providers:
            counted.add(pid)
            counted.update(self._descendants_in(tree, pid))
        total = 0
        procs = []
        for pid in counted:
            kib = _rss_kib(pid)
            if pid not in self._labels:
                self._labels[pid] = _label(pid, tree[pid][1])
            peak = ProcPeak(pid, self._labels[pid], kib)
            procs.append(peak)
            total += kib
            if kib > self.per_process.get(pid, ProcPeak(pid, "", 0)).kib:
                self.per_process[pid] = peak
        tree_total = sum(_rss_kib(pid) for pid in tree)
        self.peak_tree_kib = max(self.peak_tree_kib, tree_total)
        if total > self.peak_sum_kib:
            self.peak_sum_kib = total
            self.peak_sum_at = round(time.monotonic() - self._t0, 2)
            self.peak_sum_procs = sorted(procs, key=lambda p: -p.kib)
        self.samples += 1

    @staticmethod
    def _descendants_in(tree: dict[int, tuple[int, str]], root: int) -> set[int]:
        out: set[int] = set()
        frontier = {root}
        while frontier:
            frontier = {pid for pid, (ppid, _c) in tree.items() if ppid in frontier} - out
            out |= frontier
        return out

    def result(self) -> dict[str, object]:
        def mib(kib: int) -> float:
            return round(kib / 1024, 1)

        top = max(self.per_process.values(), key=lambda p: p.kib, default=None)
        by_kind: dict[str, int] = {}
        for peak in self.per_process.values():
            by_kind[peak.name] = max(by_kind.get(peak.name, 0), peak.kib)
        return {
            "peak_sum_mib": mib(self.peak_sum_kib),
            "peak_sum_at_s": self.peak_sum_at,
            "peak_sum_processes": [{"pid": p.pid, "name": p.name, "mib": mib(p.kib)}
                                   for p in self.peak_sum_procs],
            "largest_process": None if top is None else {"name": top.name, "mib": mib(top.kib)},
            "per_kind_peak_mib": {k: mib(v) for k, v in sorted(by_kind.items(),
                                                                key=lambda kv: -kv[1])},
            "pulumi_tree_peak_mib": mib(self.peak_tree_kib),
            "samples": self.samples,
            "interval_s": self.interval_s,
        }
