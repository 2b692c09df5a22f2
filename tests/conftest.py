"""Shared test plumbing: component gates and naming.

A test that needs a component (dockerd, libvirt image, libguestfs, Pulumi engine)
asks `require(...)`. Where the component is truly absent it is skipped with the
reason shown; under CI (CI=true) a missing component fails the run instead, so CI
can never pass by skipping.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.simhost import SimHosts

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def absent(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"required component missing in CI: {reason}")
    pytest.skip(reason)


@functools.cache
def _docker_ok() -> str | None:
    try:
        import docker

        client = docker.from_env()
        client.ping()
        client.close()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "absent"
        return f"dockerd not reachable ({exc}); run `make setup`"


def _pulumi_ok() -> str | None:
    if not (ROOT / ".tools" / "bin" / "pulumi").exists():
        return "Pulumi engine not built (.tools/bin/pulumi); run `make setup`"
    return None


def _guestfs_ok() -> str | None:
    try:
        import guestfs  # noqa: F401
    except ImportError:
        return "python3-guestfs not importable; run `make setup`"
    return None


_CHECKS = {"docker": _docker_ok, "pulumi": _pulumi_ok, "guestfs": _guestfs_ok,
           "qemu": lambda: None if shutil.which("qemu-system-x86_64") else "qemu missing"}


def require(*components: str) -> None:
    """Skip (locally) or fail (CI) unless every named component is present."""
    for name in components:
        reason = _CHECKS[name]()
        if reason:
            absent(reason)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for names of throw-away objects."""
    return secrets.token_hex(3)


@pytest.fixture(scope="session")
def sim_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHosts]:
    """Two simulated remote docker hosts, reached only over ssh (tests/simhost); removed
    with everything on them at the end of the session."""
    require("docker")
    from tests.simhost import SimHosts

    with SimHosts(2, tmp_path_factory.mktemp("simhosts")) as hosts:
        yield hosts


# ---- time spent booting guests ----------------------------------------------------------------
# The providers (in this process, isolated children, and the Pulumi engine's provider
# plugins, which inherit the environment) log each domain start and each guest seen
# reachable; the summary says how much of the run was guests booting. Set
# MACVTAP_LAB_BOOT_LOG yourself to keep the log (and sum several runs into it).

def pytest_configure(config: pytest.Config) -> None:
    from macvtap_provider import boot_log

    if not os.environ.get(boot_log.ENV):
        log_dir = Path(str(config.rootpath)) / ".pytest_cache"
        log_dir.mkdir(exist_ok=True)
        path = log_dir / f"boot-log-{os.getpid()}.jsonl"
        path.unlink(missing_ok=True)
        os.environ[boot_log.ENV] = str(path)
        config.stash[_BOOT_LOG_OWNED] = path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    from macvtap_provider import boot_log

    if os.environ.get(boot_log.ENV):
        terminalreporter.write_line(boot_log.read(Path(os.environ[boot_log.ENV])).describe())
    owned = config.stash.get(_BOOT_LOG_OWNED, None)
    if owned is not None:
        owned.unlink(missing_ok=True)


_BOOT_LOG_OWNED = pytest.StashKey[Path]()
