"""Thin adapter around `ssh-keygen -A`: SSH host keys made on the host (much faster than
in a TCG guest), for clones that must not share their base image's keys."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from macvtap_provider.errors import GuestfsError

log = logging.getLogger(__name__)


def _start(root: Path) -> subprocess.Popen[bytes]:
    (root / "etc" / "ssh").mkdir(parents=True)
    log.debug("ssh-keygen -A -f %s", root)
    return subprocess.Popen(["ssh-keygen", "-A", "-f", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextlib.contextmanager
def host_key_sets(count: int) -> Iterator[Callable[[int], Path]]:
    """`count` sets of SSH host keys, generated in parallel from now on; yields `keys(i)`
    -> the directory holding set i (waiting for it). Everything is removed afterwards.

    Raises:
        GuestfsError: ssh-keygen failed (raised by `keys(i)`).
    """
    with tempfile.TemporaryDirectory(prefix="hostkeys-") as tmp:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            for i in range(count):
                procs.append(_start(Path(tmp) / str(i)))

            def keys(i: int) -> Path:
                _out, err = procs[i].communicate()
                if procs[i].returncode != 0:
                    raise GuestfsError(f"ssh-keygen -A failed: {err.decode(errors='replace')}")
                return Path(tmp) / str(i) / "etc" / "ssh"

            yield keys
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
