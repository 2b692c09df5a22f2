"""Phase timelines: when each milestone of a lab bring-up was reached, from a common start."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: The milestones both paths report, in the order they are reached.
PHASES = ("container_ready", "image_customized", "domain_started", "login_prompt",
          "network_moved", "ssh_ready")
LABELS = {
    "container_ready": "container ready",
    "image_customized": "image customized",
    "domain_started": "domain started",
    "login_prompt": "login prompt",
    "network_moved": "network moved",
    "ssh_ready": "ssh ready",
}


@dataclass
class Timeline:
    """Seconds since `start` (time.monotonic) at which each phase was reached; first wins."""

    label: str
    start: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    #: resource name -> [started, done] seconds (Pulumi path: from the engine's events)
    steps: dict[str, list[float]] = field(default_factory=dict)

    def mark(self, phase: str, at: float | None = None, *, last: bool = False) -> None:
        """Record `phase` at monotonic time `at` (now); `last` keeps the latest instead."""
        value = round((time.monotonic() if at is None else at) - self.start, 2)
        if phase not in self.marks or (last and value > self.marks[phase]):
            self.marks[phase] = value

    def get(self, phase: str) -> float | None:
        return self.marks.get(phase)

    @property
    def total(self) -> float | None:
        return self.marks.get("ssh_ready")

    def as_dict(self) -> dict[str, object]:
        return {"label": self.label, "phases": {p: self.marks.get(p) for p in PHASES},
                "extra": {k: v for k, v in self.marks.items() if k not in PHASES},
                "notes": dict(self.notes), "steps": dict(self.steps)}


def render(timelines: list[Timeline]) -> str:
    """A side-by-side table of the phases (seconds from each path's start)."""
    width = 18
    head = f"  {'phase':<18}" + "".join(f"{t.label:>{width}}" for t in timelines)
    lines = [head]
    for phase in PHASES:
        cells = []
        for t in timelines:
            value = t.get(phase)
            cells.append(f"{'-' if value is None else f'{value:.1f} s':>{width}}")
        lines.append(f"  {LABELS[phase]:<18}" + "".join(cells))
    for t in timelines:
        for phase, note in t.notes.items():
            lines.append(f"  ({t.label}, {LABELS.get(phase, phase)}: {note})")
    return "\n".join(lines)
