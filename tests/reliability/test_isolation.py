"""Two stacks side by side stay apart; repeated up/destroy cycles leak nothing.

`make cycles` runs the cycle test 20 times (MACVTAP_LAB_CYCLES=20); CI runs 2.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

import docker
import pytest

from macvtap_provider import paths
from tests.conftest import ROOT
from tests.e2e import lab_probe
from tests.e2e.conftest import E2EStack, make_stack

pytestmark = [pytest.mark.reliability, pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker,
              pytest.mark.libvirt, pytest.mark.guestfs]


def host_objects() -> dict[str, set[str]]:
    """Everything a lab can leave on the host, by kind."""
    client = docker.from_env()
    try:
        containers = {c.name or "" for c in client.containers.list(all=True)}
        networks = {n.name or "" for n in client.networks.list()}
    finally:
        client.close()
    root = paths.work_root()
    files = {str(p) for p in root.rglob("*")} if root.exists() else set()
    return {"containers": containers, "networks": networks, "files": files,
            "taps": lab_probe.dev_taps()}


def new_lab(tmp: Path, label: str, third_octet: int) -> E2EStack:
    st = make_stack(tmp / label, ROOT, f"{label}{secrets.token_hex(2)}")
    st.set_secret("rootPassword", secrets.token_urlsafe(12))
    st.config("subnet", f"10.213.{third_octet}.0/24")
    return st


def test_two_stacks_in_parallel_stay_apart(tmp_path: Path) -> None:
    before = host_objects()
    octet = 30 + secrets.randbelow(20)
    labs = [new_lab(tmp_path, "pa", octet), new_lab(tmp_path, "pb", octet + 1)]
    errors: list[BaseException] = []

    def up(st: E2EStack) -> None:
        try:
            st.up()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    try:
        threads = [threading.Thread(target=up, args=(c,)) for c in labs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        a, b = (c.outputs() for c in labs)
        for key in ("container_name", "network_name", "guest_mac", "macvtap_device",
                    "image_path", "guest_ip", "libvirt_uri"):
            assert a[key] != b[key], key
        assert a["mac_matches"] is True and b["mac_matches"] is True
    finally:
        for st in labs:
            st.destroy()
            st.remove()
    assert host_objects() == before


def test_up_destroy_cycles_leak_nothing(tmp_path: Path) -> None:
    cycles = int(os.environ.get("MACVTAP_LAB_CYCLES", "2"))
    st = new_lab(tmp_path, "cy", 50 + secrets.randbelow(20))
    before = host_objects()
    try:
        for _ in range(cycles):
            st.up()
            assert st.outputs()["mac_matches"] is True
            st.destroy()
            assert host_objects() == before
    finally:
        st.destroy()
        st.remove()
    print(f"{cycles} up/destroy cycles, objects leaked: 0")
