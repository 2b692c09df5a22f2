"""The provider process's guarantees under any server: the engine watch and the widened
thread pool (macvtap_provider.provider_process)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from macvtap_provider import provider_process
from tests.conftest import ROOT

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("argv", "port"), [
    (["x", "127.0.0.1:40123"], 40123),
    (["x", "--logtostderr", "-v=9", "127.0.0.1:5"], 5),
    (["x", "[::1]:7"], 7),
    (["x"], None),
    (["x", "--logtostderr"], None),
    (["x", ":80"], None),
])
def test_engine_port_is_the_last_argument(argv: list[str], port: int | None) -> None:
    assert provider_process.engine_port(argv) == port


def test_listening_reads_both_tables(tmp_path: Path) -> None:
    header = "  sl  local_address rem_address   st tx_queue rx_queue\n"
    (tmp_path / "tcp").write_text(
        header + "   0: 0100007F:9CFB 00000000:0000 0A 00000000:00000000\n"
        + "   1: 0100007F:0050 0100007F:9CFB 01 00000000:00000000\n")
    (tmp_path / "tcp6").write_text(
        header + "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A\n")
    assert provider_process.listening(0x9CFB, tmp_path)
    assert provider_process.listening(0x1F90, tmp_path)
    assert not provider_process.listening(0x0050, tmp_path)  # established, not listening
    assert not provider_process.listening(1, tmp_path / "missing")


def test_listening_sees_a_real_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert provider_process.listening(port)
    assert not provider_process.listening(port)


WATCHER = """
import sys, time
from macvtap_provider import provider_process
assert provider_process.watch_engine(int(sys.argv[1]), poll_s=0.1) is not None
print("watching", flush=True)
time.sleep(60)
"""


def test_the_process_exits_once_the_engine_port_closes() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-c", WATCHER, str(port)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "watching\n"
        time.sleep(0.3)
        assert child.poll() is None  # the engine is alive: keep serving
        server.close()
        assert child.wait(timeout=5) == provider_process.ENGINE_GONE_EXIT
    finally:
        server.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.stderr is not None
    assert f"nothing listens on its port {port} any more" in child.stderr.read()


def test_nothing_to_watch_when_the_port_is_not_listening() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    assert provider_process.watch_engine(port) is None
    assert provider_process.watch_engine(None) is None


def test_a_pool_found_from_its_worker_is_widened() -> None:
    """Eight tasks meet at a barrier: only possible once the 4-thread pool may grow."""
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        found = pool.submit(provider_process.calling_pool).result(timeout=5)
        assert found is pool
        assert provider_process.widen(pool, 8) == 8
        assert provider_process.widen(pool, 2) == 8  # never shrinks
        barrier = threading.Barrier(8, timeout=5)
        assert all(f.result(timeout=10) >= 0 for f in [pool.submit(barrier.wait) for _ in range(8)])
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def test_without_widening_the_sdk_pool_serialises() -> None:
    """The guarantee's reason: with 4 threads a fifth concurrent call cannot start."""
    pool = ThreadPoolExecutor(max_workers=4)
    barrier = threading.Barrier(5, timeout=1)
    try:
        futures = [pool.submit(barrier.wait) for _ in range(5)]
        with pytest.raises(threading.BrokenBarrierError):
            futures[0].result(timeout=10)
    finally:
        barrier.abort()
        pool.shutdown(wait=True, cancel_futures=True)


def test_no_pool_outside_a_worker_thread() -> None:
    assert provider_process.calling_pool() is None


def test_adopt_does_nothing_outside_a_provider_process() -> None:
    provider_process.adopt()
    assert provider_process._watcher is None
    assert not provider_process._adopted


@pytest.mark.parametrize(("value", "expected"), [("", 32), ("8", 8), ("0", 32), ("x", 32)])
def test_workers_setting(monkeypatch: pytest.MonkeyPatch, value: str, expected: int) -> None:
    monkeypatch.setenv(provider_process.WORKERS_ENV, value)
    assert provider_process.workers() == expected
