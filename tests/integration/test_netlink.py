"""The netlink adapter in a throw-away network namespace: it works there without forking
this process (a fork in the gRPC provider process prints gRPC's "skipping fork()
handlers" into the user's output)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from macvtap_provider.adapters import netlink
from macvtap_provider.errors import NotFoundError
from tests.conftest import absent

pytestmark = [pytest.mark.netns]

_FORKS: list[int] = []
os.register_at_fork(before=lambda: _FORKS.append(os.getpid()))


@pytest.fixture
def netns_pid() -> Iterator[int]:
    """A process alone in a new network namespace (with only `lo`), removed after."""
    try:
        proc = subprocess.Popen(["unshare", "--net", "sleep", "300"])
    except OSError as exc:
        absent(f"cannot start unshare: {exc}")
    try:
        path = f"/proc/{proc.pid}/ns/net"
        for _ in range(100):
            if os.path.exists(path) and os.readlink(path) != os.readlink("/proc/self/ns/net"):
                break
            if proc.poll() is not None:
                absent(f"unshare --net failed ({proc.returncode}); needs CAP_SYS_ADMIN")
            time.sleep(0.05)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_operations_in_a_netns_do_not_fork(netns_pid: int) -> None:
    before = len(_FORKS)
    with netlink.in_netns(netns_pid) as ns:
        assert [link.name for link in netlink.links(ns)] == ["lo"]
        ns.link("add", ifname="mvt-test-br", kind="bridge")
        assert netlink.link(ns, "mvt-test-br") is not None
        assert netlink.delete_link(ns, "mvt-test-br") is True
        assert netlink.delete_link(ns, "mvt-test-br") is False  # already gone
        with pytest.raises(NotFoundError, match="parent device nope"):
            netlink.create_macvtap(ns, "nope", "mvt-x", "52:54:00:00:00:01", "bridge", 65000)
    # The host's namespace was never touched, and nothing forked.
    assert "mvt-test-br" not in os.listdir("/sys/class/net")
    assert len(_FORKS) == before


def test_a_gone_namespace_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="network namespace is gone"), \
            netlink.in_netns(2**22 + 1):
        pass
