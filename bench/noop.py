"""No-op cost: `preview` and `up` on the brought-up lab with nothing changed,
against the same engine on an empty stack (a Python program with no resources, same venv,
same kind of backend) and on the dynamic-provider floor: a stack of as many trivial Python
dynamic resources (a provider that only creates) and components as the lab has, so the
second ratio is our own code's cost (imports, Check and Diff). Repetitions interleaved,
medians compared."""

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
#: The floor's program: `{dynamic}` trivial dynamic resources under `{components}` nested
#: components, each with a few string inputs (as the lab's have), a provider that
#: compares nothing itself (the engine's default diff) and does no I/O.
TRIVIAL_PROGRAM = '''"""The dynamic-provider floor: trivial resources, as many as the lab's."""
import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider


class Noop(ResourceProvider):
    def create(self, props):
        return CreateResult(props["name"], dict(props))


class Trivial(Resource):
    def __init__(self, name, opts):
        props = {{"name": name, "path": "/var/lib/bench/" + name, "mode": "bridge",
                  "size": 512}}
        super().__init__(Noop(), name, props, opts)


parent = None
for i in range({components}):
    opts = pulumi.ResourceOptions(parent=parent) if parent else None
    parent = pulumi.ComponentResource("bench:index:Component", f"c{{i}}", None, opts)
for i in range({dynamic}):
    Trivial(f"r{{i}}", pulumi.ResourceOptions(parent=parent) if parent else None)
'''
DYNAMIC_TYPE = "pulumi-python:dynamic:Resource"

def empty_stack(tmp: Path) -> BenchStack:
    project = tmp / "empty-project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "Pulumi.yaml").write_text(EMPTY_PROJECT)
    (project / "__main__.py").write_text(EMPTY_PROGRAM)
    empty = BenchStack.new(tmp / "empty-backend", project, "bench-empty")
    empty.timed("up")  # the stack resource exists, as in the lab's stack
    return empty


def trivial_stack(tmp: Path, dynamic: int, components: int) -> BenchStack:
    project = tmp / "trivial-project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "Pulumi.yaml").write_text(EMPTY_PROJECT.replace("bench-empty", "bench-trivial"))
    (project / "__main__.py").write_text(TRIVIAL_PROGRAM.format(dynamic=dynamic,
                                                                components=components))
    trivial = BenchStack.new(tmp / "trivial-backend", project, "bench-trivial")
    trivial.timed("up")
    return trivial


#: The type of a dynamic resource that names its module and kind (the lab's resources).
NAMED_DYNAMIC_PREFIX = "pulumi-python:dynamic/"


def _is_dynamic(type_: str) -> bool:
    return type_ == DYNAMIC_TYPE or type_.startswith(NAMED_DYNAMIC_PREFIX)


def count_kinds(types: list[str]) -> tuple[int, int]:
    """(dynamic resources, components) among a state's resource types: dynamic ones are
    pulumi-python:dynamic:Resource, or pulumi-python:dynamic/<module>:<name> (the lab's
    resources name their type); pulumi:* (stack, providers) count as neither."""
    dynamic = sum(_is_dynamic(t) for t in types)
    components = sum(not t.startswith("pulumi:") and not _is_dynamic(t) for t in types)
    return dynamic, components


def resource_counts(stack: BenchStack) -> tuple[int, int]:
    """(dynamic resources, components) in a stack's state."""
    state = stack.stack.export_stack().deployment or {}
    return count_kinds([r.get("type", "") for r in state.get("resources") or []])


def measure(lab: BenchStack, tmp: Path, reps: int) -> dict[str, Any]:
    """Medians of `preview` and `up` (expecting no changes) on each side, each timed from
    the call to the engine's last line of output."""
    dynamic, components = resource_counts(lab)
    empty, trivial = empty_stack(tmp), trivial_stack(tmp, dynamic, components)
    sides = (("lab", lab), ("empty", empty), ("trivial", trivial))
    times: dict[str, list[float]] = {f"{side}_{name}": [] for side, _ in sides
                                     for name in ("preview", "up")}
    for rep in range(reps):
        # Rotate which side goes first, so drift in machine load hits all of them.
        order = sides[rep % 3:] + sides[:rep % 3]
        for name in ("preview", "up"):
            for side, stack in order:
                times[f"{side}_{name}"].append(round(stack.timed(name, expect_no_changes=True),
                                                     3))
    result: dict[str, Any] = {"reps": reps, "seconds": times,
                              "floor_stack": {"dynamic": dynamic, "components": components}}
    for name in ("preview", "up"):
        lab_s, empty_s = median(times[f"lab_{name}"]), median(times[f"empty_{name}"])
        trivial_s = median(times[f"trivial_{name}"])
        result[name] = {"lab_s": round(lab_s, 3), "empty_s": round(empty_s, 3),
                        "trivial_s": round(trivial_s, 3), "ratio": round(lab_s / empty_s, 2),
                        "ratio_floor": round(lab_s / trivial_s, 2)}
        say(f"no-op {name}: lab {lab_s:.2f}s vs empty {empty_s:.2f}s vs {dynamic} trivial "
            f"dynamic resources {trivial_s:.2f}s")
    empty.remove()
    trivial.remove()
    return result
