"""Run a function in a fresh interpreter (multiprocessing "spawn").

The dynamic-provider process is a gRPC server; gRPC's fork handlers break C
libraries that fork() behind Python's back (libguestfs forks supermin and qemu:
"Kick failed: eventfd_write: Bad file descriptor", then SIGABRT). A spawned
interpreter has no gRPC in it. Arguments travel over a pipe, never in argv.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies, so a killed provider
    leaves no child behind that goes on writing an image (libguestfs's own recovery
    process then stops the appliance)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(70)


def _child(func: Callable[..., T], level: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    die_with_parent()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    root = logging.getLogger("macvtap_provider")
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return func(*args, **kwargs)


@contextlib.contextmanager
def isolated() -> Iterator[Callable[..., Any]]:
    """A fresh interpreter, spawned now; yields `call(func, *args, **kwargs)` to run in it.

    The interpreter starts while the caller goes on (e.g. gathers what to send), so its
    start-up is off the caller's critical path. MACVTAP_LAB_NO_ISOLATION=1 runs calls
    in-process (tests, debugging).
    """
    if os.environ.get("MACVTAP_LAB_NO_ISOLATION") == "1":
        yield lambda func, *args, **kwargs: func(*args, **kwargs)
        return
    level = logging.getLogger("macvtap_provider").getEffectiveLevel()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:

        def call(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
            log.debug("running %s.%s in a fresh process", func.__module__, func.__qualname__)
            result: T = pool.apply(_child, (func, level, args, kwargs))
            return result

        yield call

