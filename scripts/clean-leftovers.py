"""Remove what interrupted lab runs left on this host: containers and networks carrying
macvtap-lab labels, and the lab work directories. Used by CI before the tests; on a
workstation it asks first unless --yes is given."""

from __future__ import annotations

import argparse
import shutil
import sys

import docker

from macvtap_provider.paths import work_root


def ours(labels: dict[str, str] | None) -> bool:
    return any(k.startswith(("org.macvtap-lab.", "macvtap-lab.")) for k in (labels or {}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--yes", action="store_true", help="do not ask")
    args = ap.parse_args()
    client = docker.from_env()
    containers = [c for c in client.containers.list(all=True) if ours(c.labels)]
    # Networks are labelled by LabNetwork; test helpers create theirs through it too.
    networks = [n for n in client.networks.list() if ours(n.attrs.get("Labels"))]
    dirs = sorted(p for p in work_root().glob("*") if p.is_dir()) if work_root().exists() else []
    if not (containers or networks or dirs):
        print("no leftovers")
        return 0
    print("leftovers:", [c.name for c in containers], [n.name for n in networks],
          [str(d) for d in dirs])
    if not args.yes and input("remove them? [y/N] ").strip().lower() != "y":
        return 1
    for c in containers:
        c.remove(force=True, v=True)
    for n in networks:
        n.remove()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    print(f"removed {len(containers)} containers, {len(networks)} networks, {len(dirs)} dirs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
