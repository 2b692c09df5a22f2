"""Scale across hosts: `stacks/hosts` with 2 simulated remote hosts x 2 guests vs
`stacks/multi` with the same 4 guests on this machine, each timed as one `pulumi up` (which
returns once every guest answers ping and TCP 22 from a probe on its own host).

The remote transport is timed apart, before the stack's run: the libvirt image's upload to
each fresh host (in parallel) and the ssh tunnel's opening. The base reaches each host
during the stack's `up` (the first disk's upload) and is part of its time. The simulated
hosts share this machine's 2 cores, so this shows the cost of going over the wire, not
the speed-up separate machines would give.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import ROOT, CachedImages, free_subnet, say, token
from bench.stacks import BenchStack
from macvtap_provider.adapters.remote_host import RemoteHost
from tests.simhost import SimHosts

GUESTS = 4
MEMORY_MIB = 384



def _up(tmp: Path, project_dir: Path, config: dict[str, str]) -> float:
    stack = f"bench-x{token()}"
    cli = BenchStack.new(tmp / stack, project_dir, stack)
    try:
        cli.config("rootPassword", token() + token() + "Bench", secret=True)
        for key, value in config.items():
            cli.config(key, value)
        say(f"pulumi up {stack} ({project_dir.name}, {GUESTS} guests)")
        took = cli.timed("up")
        say(f"{stack}: up in {took:.1f}s")
        return round(took, 2)
    finally:
        try:
            cli.destroy()
        finally:
            cli.remove()


def measure(tmp: Path, images: CachedImages) -> dict[str, Any]:
    common = {"memoryMib": str(MEMORY_MIB), "guests": str(GUESTS)}
    local_s = _up(tmp, ROOT / "stacks" / "multi", {**common, "subnet": free_subnet()})
    with SimHosts(2, tmp / "hosts") as hosts:
        remotes = [RemoteHost(h.endpoint) for h in hosts.hosts]
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda r: r.ensure_image(images.libvirt), remotes))
        upload_s = round(time.monotonic() - started, 2)

        def tunnel() -> None:
            with remotes[0].docker() as client:
                client.ping()

        started = time.monotonic()
        for _ in range(5):
            tunnel()
        tunnel_s = round((time.monotonic() - started) / 5, 3)
        hosts_s = _up(tmp, ROOT / "stacks" / "hosts",
                      {**common, "subnet": "10.213.109.0/24",
                       "hosts": json.dumps([h.endpoint for h in hosts.hosts])})
    result = {"guests": GUESTS, "memory_mib": MEMORY_MIB, "hosts": 2,
              "two_hosts_s": hosts_s, "one_host_s": local_s,
              "ratio": round(hosts_s / local_s, 3), "image_upload_s": upload_s,
              "tunnel_open_s": tunnel_s}
    say(f"hosts: 2 hosts x 2 guests {hosts_s:.1f}s vs 4 guests here {local_s:.1f}s; "
        f"image upload {upload_s:.1f}s, tunnel {tunnel_s:.2f}s")
    return result
