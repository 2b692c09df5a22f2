"""The real Pulumi CLI on a throw-away local file backend, with a live engine event log.

`up_traced` runs `pulumi up --event-log <file>` and tails that file while the engine
writes it (unbuffered, one JSON event per line), stamping each event with the moment it
arrived: the events' own timestamps have a resolution of one second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import PULUMI, BenchError, run
from bench.rss import RssSampler


@dataclass(frozen=True)
class EngineEvent:
    """One engine event: `kind` is pre, outputs, failed or diag."""

    at: float  # time.monotonic() when the line appeared
    kind: str
    type: str  # short resource type (LibvirtContainer), "" for diagnostics
    name: str
    message: str = ""


def parse_event(line: str, at: float) -> EngineEvent | None:
    """An engine event log line -> EngineEvent (None for events of no interest)."""
    data = json.loads(line)
    for key, kind in (("resourcePreEvent", "pre"), ("resOutputsEvent", "outputs"),
                      ("resOpFailedEvent", "failed")):
        if key in data:
            meta = data[key]["metadata"]
            urn = meta["urn"]
            return EngineEvent(at, kind, meta["type"].rsplit(":", 1)[-1], urn.rsplit("::", 1)[-1],
                               meta.get("op", ""))
    diag = data.get("diagnosticEvent")
    if diag and diag.get("severity") != "debug":
        return EngineEvent(at, "diag", "", diag.get("urn", ""), diag.get("message", "").strip())
    return None


class EventTail(threading.Thread):
    """Follows an event log file, calling `on_event` for each event as it arrives."""

    def __init__(self, path: Path, on_event: Callable[[EngineEvent], None],
                 poll_s: float = 0.05) -> None:
        super().__init__(name="event-tail", daemon=True)
        self.path, self.on_event, self.poll_s = path, on_event, poll_s
        self.events: list[EngineEvent] = []
        self.errors: list[str] = []
        self._done = threading.Event()

    def finish(self) -> None:
        self._done.set()
        self.join(timeout=10)

    def run(self) -> None:
        while not self.path.exists() and not self._done.is_set():
            time.sleep(self.poll_s)
        if not self.path.exists():
            return
        with self.path.open() as f:
            pending = ""
            while True:
                chunk = f.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith("\n"):
                        self._handle(pending, time.monotonic())
                        pending = ""
                    continue
                if self._done.is_set():
                    return
                time.sleep(self.poll_s)

    def _handle(self, line: str, at: float) -> None:
        try:
            event = parse_event(line, at)
        except (ValueError, KeyError) as exc:
            self.errors.append(f"unreadable event: {exc}")
            return
        if event is None:
            return
        self.events.append(event)
        try:
            self.on_event(event)
        except Exception as exc:  # noqa: BLE001 - an observer's failure must not stop the tail
            self.errors.append(f"observer failed on {event}: {exc!r}")


@dataclass
class Traced:
    started: float
    ended: float
    returncode: int
    stdout: str
    stderr: str
    events: list[EngineEvent]
    rss: dict[str, Any] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return self.ended - self.started


@dataclass
class Pulumi:
    """`pulumi` in one project directory with its own backend, home and passphrase."""

    cwd: Path
    env: dict[str, str]
    stack: str

    @classmethod
    def new(cls, tmp: Path, project_dir: Path, stack: str,
            overrides: Mapping[str, str | None] | None = None) -> Pulumi:
        """A stack on its own backend; `overrides` sets (or, with None, removes) variables."""
        backend = tmp / "backend"
        backend.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update({
            "PULUMI_BACKEND_URL": f"file://{backend}",
            "PULUMI_CONFIG_PASSPHRASE": "bench-passphrase-not-a-secret",
            "PULUMI_HOME": str(tmp / "pulumi-home"),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DEBUG_COMMANDS": "true",  # enables --event-log
        })
        env.pop("PULUMI_CONFIG_PASSPHRASE_FILE", None)
        for key, value in (overrides or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        cli = cls(project_dir, env, stack)
        cli.run("stack", "init")
        return cli

    def run(self, *args: str, check: bool = True, timeout: float = 900,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([str(PULUMI), *args, "--stack", self.stack, "--non-interactive"],
                   check=check, timeout=timeout, env=self.env, stdin=stdin, cwd=self.cwd)

    def timed(self, *args: str) -> float:
        """Seconds one command takes (it must succeed)."""
        started = time.monotonic()
        self.run(*args)
        return time.monotonic() - started

    def config(self, key: str, value: str, secret: bool = False) -> None:
        if secret:
            self.run("config", "set", "--secret", key, stdin=value)  # never in argv
        else:
            self.run("config", "set", key, value)

    def outputs(self, show_secrets: bool = False) -> dict[str, Any]:
        args = ["stack", "output", "--json"] + (["--show-secrets"] if show_secrets else [])
        result: dict[str, Any] = json.loads(self.run(*args).stdout)
        return result

    def up_traced(self, event_log: Path, on_event: Callable[[EngineEvent], None],
                  sample_rss: bool = True, timeout: float = 900) -> Traced:
        """`pulumi up --yes --skip-preview`, events delivered live, provider RSS sampled."""
        event_log.unlink(missing_ok=True)
        tail = EventTail(event_log, on_event)
        tail.start()
        started = time.monotonic()
        proc = subprocess.Popen(
            [str(PULUMI), "up", "--yes", "--skip-preview", "--stack", self.stack,
             "--non-interactive", f"--event-log={event_log}"],
            cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        sampler = RssSampler(proc.pid) if sample_rss else None
        try:
            if sampler:
                sampler.start()
            stdout, stderr = proc.communicate(timeout=timeout)
        except BaseException:
            # Never leave an engine running behind the benchmark's back: ask it to stop
            # (it then records its state), kill it if it does not.
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            tail.finish()
            raise
        ended = time.monotonic()
        if sampler:
            sampler.stop()
        tail.finish()
        traced = Traced(started, ended, proc.returncode, stdout, stderr, tail.events,
                        sampler.result() if sampler else {})
        if proc.returncode != 0:
            raise BenchError(f"pulumi up ({self.stack}) failed ({proc.returncode}):\n"
                             f"{stdout[-5000:]}\n{stderr[-2000:]}")
        if tail.errors:
            traced.rss["event_errors"] = tail.errors[:5]
        return traced

    def destroy(self) -> None:
        self.run("destroy", "--yes", "--skip-preview", timeout=600)

    def remove(self) -> None:
        self.run("stack", "rm", "--yes", "--force", check=False)
