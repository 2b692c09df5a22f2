"""A lab through `pulumi up` (stacks/lab or stacks/multi), timed phase by phase to ssh ready.

Phases come from the engine's event stream (the Automation API's `on_event`) as it is
written: container ready = the LibvirtContainer's outputs, image customized = the (last)
CustomizedImage's outputs, domain started = the MacvtapDomain's outputs, network moved =
the GuestNetwork's outputs. The login prompt is seen by a passive observer on the guest's
serial console (the stack's default network method, `offline`, never logs in there). ssh
ready = the first successful ssh from a probe container after the engine was done.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchError, CachedImages, say, token, work_dir
from bench.probe import ConsoleWatcher, wait_for_ssh
from bench.stacks import BenchStack, EngineEvent, Traced
from bench.timeline import Timeline
from macvtap_provider.adapters.lab_host import LocalHost
from macvtap_provider.compose import lab_name
from macvtap_provider.resources.libvirt_container import socket_path

#: Resource type -> the phase its outputs mark (with several guests: the last one).
OUTPUT_PHASES = {"LibvirtContainer": "container_ready", "CustomizedImage": "image_customized",
                 "MacvtapDomain": "domain_started", "GuestNetwork": "network_moved"}
PROJECTS = {"lab": (ROOT, "macvtap-lab"), "multi": (ROOT / "stacks" / "multi", "macvtap-lab-multi")}


@dataclass
class PulumiLab:
    """One bench stack of stacks/lab or stacks/multi on its own file backend."""

    stack: BenchStack
    name: str
    subnet: str
    password: str
    guests: int
    traced: Traced | None = None
    outputs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, tmp: Path, project: str, subnet: str, *, prefix: str = "bench",
               guests: int = 1, memory_mib: int | None = None,
               env: Mapping[str, str | None] | None = None) -> PulumiLab:
        project_dir, project_name = PROJECTS[project]
        stack = f"{prefix}{token()}"
        bench_stack = BenchStack.new(tmp / stack, project_dir, stack, env)
        password = token() + token() + "Bench"
        bench_stack.config("rootPassword", password, secret=True)
        bench_stack.config("subnet", subnet)
        if memory_mib:
            bench_stack.config("memoryMib", str(memory_mib))
        if project == "multi":
            bench_stack.config("guests", str(guests))
        return cls(bench_stack, lab_name(project_name, stack), subnet, password, guests)

    @property
    def uri(self) -> str:
        return LocalHost().libvirt_uri(socket_path(str(work_dir(self.name))))

    def guest_domain(self) -> str:
        return f"{self.name}-guest" if self.guests == 1 else f"{self.name}-g0"

    def up_to_ssh(self, images: CachedImages, label: str = "pulumi", *,
                  watch_console: bool = True, sample_rss: bool = True) -> Timeline:
        """`pulumi up`, then ssh to every guest; returns the phase timeline.

        ssh starts the moment the engine is done (its summary event): the Automation API's
        `up` then still reads the outputs and the summary, which is not the lab's time.
        """
        marks: list[tuple[str, float, bool]] = []  # (phase, monotonic time, keep latest)
        watcher: ConsoleWatcher | None = None
        guests: list[tuple[str, str]] = []  # (network, address) from GuestNetwork outputs
        pool = concurrent.futures.ThreadPoolExecutor(max(self.guests, 1))
        ssh_done: list[concurrent.futures.Future[float]] = []

        def start_ssh() -> None:
            ssh_done.extend(pool.submit(wait_for_ssh, network, images.libvirt, ip,
                                        self.password) for network, ip in guests)

        def on_event(ev: EngineEvent) -> None:
            nonlocal watcher
            if ev.kind == "summary" and not ssh_done:
                start_ssh()
            if ev.kind == "outputs" and ev.type == "GuestNetwork":
                guests.append((str(ev.outputs["network"]), str(ev.outputs["guest_ip"])))
            if ev.kind == "outputs" and ev.type in OUTPUT_PHASES:
                marks.append((OUTPUT_PHASES[ev.type], ev.at, True))
                if ev.type == "MacvtapDomain" and watch_console and watcher is None:
                    watcher = ConsoleWatcher(self.uri, self.guest_domain())
                    watcher.start()
            elif ev.kind == "pre" and ev.type == "GuestNetwork":
                marks.append(("handover_started", ev.at, False))
            elif ev.kind == "diag" and "the guest owns it now" in ev.message:
                marks.append(("handover_done", ev.at, False))
            elif ev.kind == "diag" and "answers ping and TCP 22" in ev.message:
                marks.append(("provider_probe_ok", ev.at, True))

        say(f"pulumi up {self.stack.name} ({self.guests} guest(s), {self.subnet})")
        try:
            self.traced = self.stack.up_traced(on_event, sample_rss=sample_rss)
            if not ssh_done:  # no summary event seen: start now
                start_ssh()
            done = [future.result() for future in ssh_done]
        except BaseException:
            if watcher is not None:
                watcher.stop()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        timeline = Timeline(label, start=self.traced.started)
        for phase, at, last in marks:
            timeline.mark(phase, at, last=last)
        timeline.mark("engine_done", self.traced.ended)
        for ev in self.traced.events:
            if ev.kind in ("pre", "outputs") and ev.type:
                step = timeline.steps.setdefault(f"{ev.type} {ev.name}", [])
                step.append(round(ev.at - self.traced.started, 2))
        self.outputs = self.traced.outputs
        ips = [str(ip) for ip in self.outputs.get("guest_ips") or [self.outputs["guest_ip"]]]
        if sorted(ips) != sorted(ip for _net, ip in guests):
            raise BenchError(f"the engine's events named guests {guests}, its outputs {ips}")
        timeline.mark("ssh_ready", max(done))
        if watcher is not None:
            watcher.join(timeout=5)
            watcher.stop()
            if watcher.seen_at is not None:
                timeline.mark("login_prompt", watcher.seen_at)
            else:
                timeline.notes["login_prompt"] = f"not seen ({watcher.error or 'no prompt'})"
        say(f"{self.stack.name}: ssh ready after {timeline.total:.1f}s")
        return timeline

    def destroy(self) -> None:
        say(f"pulumi destroy {self.stack.name}")
        try:
            self.stack.destroy()
        finally:
            self.stack.remove()
