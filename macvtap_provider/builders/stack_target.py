"""Which Pulumi project, stack, engine, backend and passphrase a lab command uses (pure).

The rules follow `make up` inside a checkout of this repository (its engine in
`.tools/bin`, the local file backend `.state/pulumi`, the passphrase file
`.state/passphrase`) and the official CLI everywhere else (`pulumi` on PATH, the
user's own `pulumi login`). Whatever the user exported (PULUMI_BACKEND_URL,
PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE) wins over both.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from macvtap_provider.errors import StackError

PROJECT_FILES = ("Pulumi.yaml", "Pulumi.yml")
#: Inside a checkout: the engine wrapper, the state directory and the passphrase file.
CHECKOUT_ENGINE = Path(".tools/bin/pulumi")
CHECKOUT_BACKEND = Path(".state/pulumi")
CHECKOUT_PASSPHRASE = Path(".state/passphrase")
PASSPHRASE_VARS = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE")


@dataclass(frozen=True)
class StackTarget:
    """Everything needed to open a stack through the Automation API.

    `engine_root` is the directory whose `bin/pulumi` runs (None: `pulumi` on PATH);
    `env` holds only what is added to the caller's environment.
    """

    project_dir: Path
    stack: str | None = None
    engine_root: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def engine(self) -> str:
        return str(self.engine_root / "bin" / "pulumi") if self.engine_root else "pulumi"

    def command(self, *args: str, stack: str | None = None, cwd: Path | None = None) -> str:
        """The `pulumi ...` command line a user types for this target, from `cwd`."""
        engine = self.engine
        if self.engine_root is not None and cwd is not None:
            engine = _relative(Path(engine), cwd)
        argv = [engine]
        if cwd is None or self.project_dir.resolve() != cwd.resolve():
            argv += ["-C", _relative(self.project_dir, cwd) if cwd else str(self.project_dir)]
        argv += list(args)
        name = stack or self.stack
        if name:
            argv += ["--stack", name]
        return shlex.join(argv)


def _relative(path: Path, cwd: Path | None) -> str:
    if cwd is None:
        return str(path)
    try:
        rel = path.resolve().relative_to(cwd.resolve())
    except ValueError:
        return str(path)
    return str(rel) if str(rel) != "." else "."


def find_project_dir(start: Path, exists: Callable[[Path], bool]) -> Path:
    """The nearest directory from `start` upwards holding a Pulumi.yaml (as `pulumi` does).

    Raises:
        StackError: no Pulumi project in `start` or above it.
    """
    for candidate in (start, *start.parents):
        if any(exists(candidate / name) for name in PROJECT_FILES):
            return candidate
    raise StackError(f"no Pulumi project (Pulumi.yaml) in {start} or above it: run the "
                     "command in your lab's project directory or pass --project-dir DIR")


def find_checkout(project_dir: Path, exists: Callable[[Path], bool]) -> Path | None:
    """The macvtap-lab checkout holding `project_dir` (it has `.tools/bin/pulumi`), if any."""
    for candidate in (project_dir, *project_dir.parents):
        if exists(candidate / CHECKOUT_ENGINE):
            return candidate
    return None


def resolve_target(project_dir: Path, stack: str | None, environ: Mapping[str, str],
                   exists: Callable[[Path], bool]) -> StackTarget:
    """The engine, backend and passphrase for `project_dir`, as `make up` would pick them.

    Args:
        project_dir: the Pulumi project's directory.
        stack: the stack the user named (None: the workspace's current one).
        environ: the caller's environment; its PULUMI_* settings win.
        exists: tells whether a path exists (the only filesystem access).
    """
    checkout = find_checkout(project_dir, exists)
    if checkout is None:
        return StackTarget(project_dir, stack)
    env: dict[str, str] = {}
    if not environ.get("PULUMI_BACKEND_URL"):
        env["PULUMI_BACKEND_URL"] = f"file://{checkout / CHECKOUT_BACKEND}"
    passphrase = checkout / CHECKOUT_PASSPHRASE
    if not any(environ.get(var) for var in PASSPHRASE_VARS) and exists(passphrase):
        env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(passphrase)
    return StackTarget(project_dir, stack, engine_root=checkout / CHECKOUT_ENGINE.parent.parent,
                       env=env)


def choose_stack(named: str | None, current: str | None, available: list[str],
                 project_dir: Path) -> str:
    """The stack to open: the named one, else the workspace's current one, else the only one.

    Raises:
        StackError: the named stack does not exist, or none can be chosen.
    """
    listing = ", ".join(available) or "none"
    if named:
        if named not in available:
            raise StackError(f"stack {named!r} does not exist in the project at {project_dir} "
                             f"(stacks: {listing}); bring it up first (`make up STACK={named}` "
                             f"in a checkout, `pulumi up --stack {named}` elsewhere)")
        return named
    if current:
        return current
    if len(available) == 1:
        return available[0]
    if not available:
        raise StackError(f"the project at {project_dir} has no stack yet: bring the lab up "
                         "first (`make up` in a checkout, `pulumi up` elsewhere)")
    raise StackError(f"no stack is selected in the project at {project_dir} and there are "
                     f"several ({listing}): pass --stack NAME")
