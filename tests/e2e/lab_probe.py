"""Observe a running lab from outside, as a user would (docker CLI semantics via the SDK)."""

from __future__ import annotations

import os
from pathlib import Path

import docker

from macvtap_provider.adapters import netlink


def ssh(network: str, image: str, address: str, password: str, command: str) -> tuple[int, str]:
    """Log in to the guest from a throw-away container on the lab network."""
    client = docker.from_env()
    try:
        container = client.containers.run(
            image, ["-e", "ssh", "-o", "StrictHostKeyChecking=no", "-o",
                    "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=15",
                    "-o", "NumberOfPasswordPrompts=1", f"root@{address}", command],
            entrypoint=["sshpass"], environment={"SSHPASS": password}, network=network,
            detach=True)
        try:
            result = container.wait(timeout=120)
            logs = container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)
        return int(result["StatusCode"]), logs
    finally:
        client.close()


def container_ipv4(name: str) -> str:
    client = docker.from_env()
    try:
        _exit_code, out = client.containers.get(name).exec_run(["ip", "-4", "-o", "addr", "show",
                                                               "dev", "eth0"])
        return out.decode()
    finally:
        client.close()


def leftovers(lab: str, work_dir: Path) -> dict[str, object]:
    """Every trace a lab could leave: containers, networks, files, tap devices."""
    client = docker.from_env()
    try:
        containers = [c.name for c in client.containers.list(all=True) if lab in (c.name or "")]
        networks = [n.name for n in client.networks.list() if lab in (n.name or "")]
    finally:
        client.close()
    files = sorted(str(p) for p in work_dir.rglob("*")) if work_dir.exists() else []
    return {"containers": containers, "networks": networks, "work_dir_exists": work_dir.exists(),
            "files": files}


def dev_taps() -> set[str]:
    return {n for n in os.listdir("/dev") if n.startswith("tap")}


def macvtap_links(pid: int) -> list[str]:
    """The macvtap links in the netns of process `pid` (a libvirt container's)."""
    with netlink.in_netns(pid) as ns:
        return sorted(link.name for link in netlink.links(ns) if link.kind == "macvtap")
