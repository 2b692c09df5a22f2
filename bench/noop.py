"""No-op cost: `preview` and `up` on the brought-up lab with nothing changed,
against the same engine on an empty stack (a Python program with no resources, same venv,
same kind of backend). Repetitions interleaved, medians compared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import ROOT, median, say
from bench.stacks import BenchStack

EMPTY_PROJECT = f"""\
name: bench-empty
description: An empty stack, the no-op baseline of the benchmark.
runtime:
  name: python
  options:
    virtualenv: {ROOT / ".venv"}
"""
EMPTY_PROGRAM = '"""No resources: the baseline cost of the engine and the Python runtime."""\n' \
                "import pulumi  # noqa: F401\n"

def empty_stack(tmp: Path) -> BenchStack:
    project = tmp / "empty-project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "Pulumi.yaml").write_text(EMPTY_PROJECT)
    (project / "__main__.py").write_text(EMPTY_PROGRAM)
    empty = BenchStack.new(tmp / "empty-backend", project, "bench-empty")
    empty.timed("up")  # the stack resource exists, as in the lab's stack
    return empty


def measure(lab: BenchStack, tmp: Path, reps: int) -> dict[str, Any]:
    """Medians of `preview` and `up` (expecting no changes) on each side, each timed from
    the call to the engine's last line of output."""
    empty = empty_stack(tmp)
    times: dict[str, list[float]] = {"lab_preview": [], "empty_preview": [], "lab_up": [],
                                     "empty_up": []}
    for rep in range(reps):
        # Alternate which side goes first, so drift in machine load hits both.
        pairs = [(lab, "lab"), (empty, "empty")]
        if rep % 2:
            pairs.reverse()
        for name in ("preview", "up"):
            for stack, side in pairs:
                times[f"{side}_{name}"].append(round(stack.timed(name, expect_no_changes=True),
                                                     3))
    result: dict[str, Any] = {"reps": reps, "seconds": times}
    for name in ("preview", "up"):
        lab_s, empty_s = median(times[f"lab_{name}"]), median(times[f"empty_{name}"])
        result[name] = {"lab_s": round(lab_s, 3), "empty_s": round(empty_s, 3),
                        "ratio": round(lab_s / empty_s, 2)}
        say(f"no-op {name}: lab {lab_s:.2f}s vs empty {empty_s:.2f}s")
    empty.remove()
    return result
