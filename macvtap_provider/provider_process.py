"""What the library guarantees in the process that serves its providers, whichever server
runs it: macvtap-lab's plugin (`macvtap_provider.plugin`) or the SDK's own `python -u -m
pulumi.dynamic`, which the official CLI's plugin script starts.

The stock server loads none of our code until the engine sends it a lab resource; then
the provider class is unpickled, its module imports `resources._base`, and that calls
`adopt()` from the server's worker thread. From then on:

* the process exits once the engine is gone (killed with SIGKILL, say). The official
  script runs Python as a child of a shell that outlives the engine, so the parent pid
  says nothing; the engine's gRPC port (the plugin's last argument) does: when nothing
  listens on it any more, the engine is gone. The children libguestfs runs in die with
  this process (`adapters.isolate` sets their parent-death signal).
* the server's thread pool grows to `workers()` threads. The SDK serves with 4, so four
  image customisations (or four guests booting) would hold every thread and a container
  create, a fifth guest's anything, would wait for one. The pool is found through the
  worker thread that runs us; when it cannot be found, a warning says so once.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

#: Concurrent provider calls (the engine's own default parallelism is far higher).
DEFAULT_WORKERS = 32
WORKERS_ENV = "MACVTAP_LAB_WORKERS"
ENGINE_POLL_S = 1.0
#: Exit status of a provider process whose engine is gone.
ENGINE_GONE_EXIT = 70
_TCP_LISTEN = "0A"

_lock = threading.Lock()
_adopted = False
_watcher: threading.Thread | None = None


def workers() -> int:
    """Provider calls served at once: MACVTAP_LAB_WORKERS, else 32."""
    value = os.environ.get(WORKERS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_WORKERS


def in_provider_plugin() -> bool:
    """True in the process `python -m pulumi.dynamic` serves the providers from (directly
    or through macvtap_provider.plugin)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", "") == "pulumi.dynamic.__main__"


def engine_port(argv: Sequence[str]) -> int | None:
    """The engine's gRPC port: the engine passes its address (host:port) as a plugin's
    last argument, after any logging flags."""
    if len(argv) < 2:
        return None
    host, sep, port = argv[-1].rpartition(":")
    return int(port) if sep and host and port.isdigit() else None


def listening(port: int, proc_net: Path = Path("/proc/net")) -> bool:
    """Whether a TCP socket of this network namespace listens on `port` (IPv4 or IPv6)."""
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc_net / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == _TCP_LISTEN \
                    and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def watch_engine(port: int | None, parent_pid: int | None = None,
                 poll_s: float = ENGINE_POLL_S) -> threading.Thread | None:
    """A daemon thread that ends this process once the engine is gone: nothing listens
    on its port any more, or (when given) the parent that started us changed.

    Watches only what is seen alive now, so a wrong guess never ends a healthy process.
    Returns the thread, or None when there is nothing to watch or a watch already runs.
    """
    global _watcher
    port_alive = port is not None and listening(port)
    if not port_alive and parent_pid is None:
        log.debug("no engine port to watch (argv %s)", sys.argv[1:])
        return None

    def gone() -> str | None:
        if parent_pid is not None and os.getppid() != parent_pid:
            return f"its parent (pid {parent_pid}) exited"
        if port_alive and port is not None and not listening(port):
            return f"nothing listens on its port {port} any more"
        return None

    def watch() -> None:
        while (reason := gone()) is None:
            time.sleep(poll_s)
        log.warning("the Pulumi engine is gone (%s): the provider process exits", reason)
        logging.shutdown()
        os._exit(ENGINE_GONE_EXIT)

    with _lock:
        if _watcher is not None:
            return None
        _watcher = threading.Thread(target=watch, name="engine-watch", daemon=True)
        _watcher.start()
        return _watcher


def calling_pool(thread: threading.Thread | None = None) -> ThreadPoolExecutor | None:
    """The ThreadPoolExecutor whose worker `thread` (default: this one) is, if any.

    A worker thread is started with a weak reference to its executor as its first
    argument (CPython's concurrent.futures.thread._worker).
    """
    args = getattr(thread or threading.current_thread(), "_args", None)
    ref = args[0] if isinstance(args, tuple) and args else None
    executor = ref() if isinstance(ref, weakref.ReferenceType) else None
    return executor if isinstance(executor, ThreadPoolExecutor) else None


def widen(pool: ThreadPoolExecutor, count: int) -> int:
    """Let `pool` start up to `count` threads (never fewer than it has); returns its size.

    An executor starts a new thread on submit while it has fewer than its maximum and
    none idle, so raising the maximum is enough.
    """
    with pool._shutdown_lock:
        pool._max_workers = max(pool._max_workers, count)
        return pool._max_workers


def adopt() -> None:
    """Make this process keep the guarantees above; a no-op outside a provider process
    and after the first call."""
    global _adopted
    with _lock:
        if _adopted or not in_provider_plugin():
            return
        _adopted = True
    watch_engine(engine_port(sys.argv))
    pool = calling_pool()
    if pool is None:
        log.warning("the provider server's thread pool was not found: it serves as many "
                    "calls at once as its server allows (the SDK's: 4), and further "
                    "operations wait for a free thread")
        return
    log.debug("provider server pool: %d threads", widen(pool, workers()))
