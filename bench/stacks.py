"""Bench stacks on throw-away local file backends, driven through Pulumi's Automation API.

`up_traced` runs `up` with the engine's event stream (`on_event`), stamping each event
with the moment it arrived (the events' own timestamps have a resolution of one second;
the API reads the engine's event log every 0.1 s). A command's duration ends at the
engine's last line of output: the API's `up` reads the outputs and the update's summary
afterwards (three more `pulumi` runs), which are not the engine's work.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi import automation as auto

from bench.common import PULUMI, BenchError
from bench.rss import RssSampler
from macvtap_provider.adapters import pulumi_stack
from macvtap_provider.builders.stack_target import StackTarget

#: No engine command of the benchmark runs longer than this.
ENGINE_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class EngineEvent:
    """One engine event: `kind` is pre, outputs, failed, diag or summary (the engine is
    done)."""

    at: float  # time.monotonic() when the API delivered it
    kind: str
    type: str  # short resource type (LibvirtContainer), "" for diagnostics
    name: str
    message: str = ""
    outputs: Mapping[str, Any] = field(default_factory=dict)  # of an "outputs" event


def from_engine_event(event: auto.EngineEvent, at: float) -> EngineEvent | None:
    """The Automation API's event -> EngineEvent (None for events of no interest)."""
    for step, kind in ((event.resource_pre_event, "pre"), (event.res_outputs_event, "outputs"),
                       (event.res_op_failed_event, "failed")):
        if step is not None:
            meta = step.metadata
            op = str(getattr(meta.op, "value", meta.op))
            outs = meta.new.outputs if kind == "outputs" and meta.new is not None else {}
            return EngineEvent(at, kind, meta.type.rsplit(":", 1)[-1],
                               meta.urn.rsplit("::", 1)[-1], op, dict(outs or {}))
    diag = event.diagnostic_event
    if diag is not None and diag.severity != "debug":
        return EngineEvent(at, "diag", "", diag.urn or "", (diag.message or "").strip())
    if event.summary_event is not None:
        return EngineEvent(at, "summary", "", "")
    return None


@dataclass
class Traced:
    started: float
    ended: float  # the engine's last line of output
    stdout: str
    events: list[EngineEvent]
    outputs: dict[str, Any] = field(default_factory=dict)
    rss: dict[str, Any] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return self.ended - self.started


class _Clock:
    """Notes when the engine printed its last line (the end of its work)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last_line = self.started
        self.lines: list[str] = []

    def on_output(self, line: str) -> None:
        self.last_line = time.monotonic()
        self.lines.append(line)


@contextlib.contextmanager
def _deadline(seconds: float, what: str) -> Iterator[None]:
    """Never leave an engine running behind the benchmark's back: after `seconds` it is
    asked to stop; a failed command raises BenchError with the engine's output."""
    with pulumi_stack.interrupt_after(seconds) as fired:
        try:
            yield
        except auto.CommandError as exc:
            note = f" (stopped after {seconds:.0f}s)" if fired.is_set() else ""
            raise BenchError(f"{what} failed{note}:\n{str(exc)[-6000:]}") from exc


@dataclass
class BenchStack:
    """A stack of `project_dir` with its own backend, home and passphrase."""

    stack: auto.Stack

    @property
    def name(self) -> str:
        return self.stack.name

    @classmethod
    def new(cls, tmp: Path, project_dir: Path, name: str,
            overrides: Mapping[str, str | None] | None = None) -> BenchStack:
        """A new stack; `overrides` sets (or, with None, unsets) variables for its engine."""
        backend = tmp / "backend"
        backend.mkdir(parents=True, exist_ok=True)
        env = {
            "PULUMI_BACKEND_URL": f"file://{backend}",
            "PULUMI_CONFIG_PASSPHRASE": "bench-passphrase-not-a-secret",
            "PULUMI_CONFIG_PASSPHRASE_FILE": "",  # unset: the API only adds variables
            "PULUMI_HOME": str(tmp / "pulumi-home"),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
        }
        env.update({k: "" if v is None else v for k, v in (overrides or {}).items()})
        target = StackTarget(project_dir, name, engine_root=PULUMI.parent.parent, env=env)
        with _deadline(120, f"creating stack {name}"):
            return cls(auto.Stack.create(name, pulumi_stack.workspace(target)))

    def config(self, key: str, value: str, secret: bool = False) -> None:
        if secret:
            # Through stdin: the API's set_config would put the value in argv.
            pulumi_stack.set_secret(self.stack.workspace, self.name, key, value)
        else:
            self.stack.set_config(key, auto.ConfigValue(value))

    def outputs(self) -> dict[str, Any]:
        with _deadline(120, f"reading the outputs of {self.name}"):
            return {k: v.value for k, v in self.stack.outputs().items()}

    def timed(self, operation: str, **kwargs: Any) -> float:
        """Seconds the engine takes for `preview` or `up` (it must succeed)."""
        clock = _Clock()
        with _deadline(ENGINE_TIMEOUT_S, f"pulumi {operation} ({self.name})"):
            getattr(self.stack, operation)(on_output=clock.on_output, **kwargs)
        return clock.last_line - clock.started

    def up_traced(self, on_event: Callable[[EngineEvent], None],
                  sample_rss: bool = True) -> Traced:
        """`up`, events delivered live, the provider processes' RSS sampled."""
        events: list[EngineEvent] = []
        errors: list[str] = []

        def deliver(raw: auto.EngineEvent) -> None:
            event = from_engine_event(raw, time.monotonic())
            if event is None:
                return
            events.append(event)
            try:
                on_event(event)
            except Exception as exc:  # noqa: BLE001 - an observer's failure must not stop the run
                errors.append(f"observer failed on {event}: {exc!r}")

        clock = _Clock()
        sampler = RssSampler(os.getpid(), root_comm="pulumi") if sample_rss else None
        if sampler:
            sampler.start()
        try:
            with _deadline(ENGINE_TIMEOUT_S, f"pulumi up ({self.name})"):
                result = self.stack.up(on_output=clock.on_output, on_event=deliver)
        finally:
            if sampler:
                sampler.stop()
        traced = Traced(clock.started, clock.last_line, "\n".join(clock.lines), events,
                        {k: v.value for k, v in result.outputs.items()},
                        sampler.result() if sampler else {})
        if errors:
            traced.rss["event_errors"] = errors[:5]
        return traced

    def destroy(self) -> None:
        with _deadline(600, f"pulumi destroy ({self.name})"):
            self.stack.destroy()

    def remove(self) -> None:
        with contextlib.suppress(auto.CommandError):
            self.stack.workspace.remove_stack(self.name, force=True)
