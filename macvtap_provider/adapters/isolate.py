"""Run a function in a fresh interpreter (multiprocessing "spawn"), alone or in batches.

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
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

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



def launch_slots() -> int:
    """How many isolated workers may run at once: one per CPU this process may use."""
    return max(1, len(os.sched_getaffinity(0)))


class _Batch(Generic[T]):
    def __init__(self) -> None:
        self.items: list[T] = []
        self.errors: list[str | None] = []
        self.done = threading.Event()


class Batcher(Generic[T]):
    """Calls that arrive together in one process share isolated interpreters.

    `run(item)` adds `item` to the open batch; the first caller of a batch leads it: it
    waits `window_s` (while a fresh interpreter starts) for others to join, then deals the
    batch into at most `launch_slots()` groups and calls `work(group)` for each in its own
    interpreter. `work` returns one entry per item: None when that item is done, else why
    it failed (the others go on). Each caller gets its own item's outcome, raised as
    `error(message)`.

    Process-local coordination only (a lock and events; no handle to anything outside):
    kept out of provider instances, which stay stateless and picklable.
    """

    def __init__(self, work: Callable[[list[T]], list[str | None]], *, window_s: float,
                 error: type[Exception], describe: Callable[[T], str],
                 what: str = "isolated run") -> None:
        self._work = work
        self._what = what
        self._window_s = window_s
        self._error = error
        self._describe = describe
        self._lock = threading.Lock()
        self._open: _Batch[T] | None = None

    def run(self, item: T) -> None:
        with self._lock:
            batch, leader = self._open, self._open is None
            if batch is None:
                batch = self._open = _Batch()
            slot = len(batch.items)
            batch.items.append(item)
        if leader:
            self._lead(batch)
        else:
            batch.done.wait()
        error = batch.errors[slot] if slot < len(batch.errors) else \
            f"{self._describe(item)}: the shared {self._what} failed"
        if error is not None:
            raise self._error(error)

    def _lead(self, batch: _Batch[T]) -> None:
        from macvtap_provider.builders.batching import split_batch

        try:
            with isolated() as call:  # the fresh interpreter starts now...
                time.sleep(self._window_s)  # ...while items arriving at the same time join
                with self._lock:
                    self._open = None
                items = list(batch.items)
                groups = split_batch(len(items), launch_slots())
                if len(items) > 1:
                    log.info("%d items share %d %s(s)", len(items), len(groups), self._what)
                errors: list[str | None] = [None] * len(items)

                def run(group: list[int], caller: Callable[..., Any]) -> None:
                    try:
                        done = caller(self._work, [items[i] for i in group])
                    except Exception as exc:  # noqa: BLE001 - reported to every item of it
                        done = [f"{self._describe(items[i])}: the {self._what} failed: {exc}"
                                for i in group]
                    for i, error in zip(group, done, strict=True):
                        errors[i] = error

                def run_alone(group: list[int]) -> None:
                    with isolated() as own:
                        run(group, own)

                others = [threading.Thread(target=run_alone, args=(g,), daemon=True)
                          for g in groups[1:]]
                for thread in others:
                    thread.start()
                run(groups[0], call)
                for thread in others:
                    thread.join()
                batch.errors = errors
        except BaseException as exc:
            batch.errors = [f"{self._describe(i)}: the {self._what} failed: {exc}"
                            for i in batch.items]
            raise
        finally:
            with self._lock:
                if self._open is batch:
                    self._open = None
            batch.done.set()
