"""A docker endpoint given as tcp:// (here: a loopback TCP proxy to the local daemon's
socket) drives LabNetwork and LibvirtContainer exactly like the default socket."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Iterator

import docker
import pytest

from macvtap_provider.adapters import libvirt_api
from macvtap_provider.resources.lab_network import LabNetworkProvider
from macvtap_provider.resources.libvirt_container import LibvirtContainerProvider
from tests.conftest import require

pytestmark = [pytest.mark.docker, pytest.mark.libvirt]
DOCKER_SOCKET = "/var/run/docker.sock"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def _serve(ready: threading.Event, holder: dict[str, object]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(DOCKER_SOCKET)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    holder["port"] = server.sockets[0].getsockname()[1]
    holder["loop"] = asyncio.get_running_loop()
    holder["server"] = server
    ready.set()
    async with server:
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve_forever()


@pytest.fixture
def tcp_docker_host() -> Iterator[str]:
    """tcp://127.0.0.1:PORT forwarding to the local docker socket (loopback only)."""
    require("docker")
    ready, holder = threading.Event(), {}
    thread = threading.Thread(target=lambda: asyncio.run(_serve(ready, holder)), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"tcp://127.0.0.1:{holder['port']}"
    loop = holder["loop"]
    loop.call_soon_threadsafe(holder["server"].close)  # type: ignore[attr-defined]
    thread.join(10)


def test_lab_network_and_container_through_tcp_endpoint(tcp_docker_host: str) -> None:
    suffix = secrets.token_hex(3)
    netp, conp = LabNetworkProvider(), LibvirtContainerProvider()
    net_in = netp.check({}, {"name": f"mvtt-tcp-{suffix}", "subnet": "10.213.98.0/24",
                             "docker_host": tcp_docker_host}).inputs
    net = netp.create(net_in)
    con = None
    try:
        con_in = conp.check({}, {"name": f"mvtt-tcp-lv-{suffix}", "network": net_in["name"],
                                 "work_dir": f"/var/lib/macvtap-lab/mvtt-tcp-{suffix}",
                                 "docker_host": tcp_docker_host}).inputs
        con = conp.create(con_in)
        local = docker.from_env()
        assert local.containers.get(con.outs["name"]).id == con.id
        with libvirt_api.connection(con.outs["libvirt_uri"]) as conn:
            assert conn.getLibVersion() > 0
        assert conp.read(con.id, con.outs).id == con.id
    finally:
        if con is not None:
            conp.delete(con.id, con.outs)
            conp.delete(con.id, con.outs)  # idempotent
        netp.delete(net.id, net.outs)
    assert not docker.from_env().containers.list(all=True, filters={"name": f"mvtt-tcp-lv-{suffix}"})
