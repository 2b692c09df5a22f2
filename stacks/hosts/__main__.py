"""Labs on several docker hosts: one `Lab` per host (its own network and libvirt
container there), the guests spread over the hosts in turn, per-host outputs.

Each host's lab is the same lab as stacks/lab, on that host's own engine, names suffixed
by the host's position. By default each is an internal bridge of its own (the hosts may use
the same subnet; guests on different hosts do not reach each other). With `uplink` (the
hosts' NIC on one LAN) every lab is a macvlan network on that NIC, in the LAN's `subnet`,
and `ipRange` is split among the hosts (each host's lab a disjoint part, checked before
anything is made): then guests on different hosts share that L2 and reach each other (see
the README, "Labs on other hosts").
"""

import dataclasses
import json
from urllib.parse import urlsplit

import pulumi

import macvtap_provider as mvt
from macvtap_provider.builders.lab_config import Setting, split_ip_range
from macvtap_provider.builders.validation import check_docker_host
from macvtap_provider.errors import SpecError


def check_hosts(value: object, field: str) -> list[str]:
    text = str(value).strip()
    try:
        items = json.loads(text) if text.startswith("[") else text.split(",")
    except ValueError as exc:
        raise SpecError(field, f"is not a JSON list of docker endpoints ({exc})") from None
    hosts = [check_docker_host(str(item).strip(), field) for item in items if str(item).strip()]
    if not hosts or None in hosts:
        raise SpecError(field, "names no docker host: give ssh://USER@HOST?keyfile=... endpoints")
    return [str(h) for h in hosts]


HOSTS = Setting("hosts", "hosts", "string", "The docker hosts (a JSON list of endpoints).",
                '["ssh://root@kvm1", "ssh://root@kvm2"]', check_hosts)
config = mvt.stack_config(extra=[HOSTS, mvt.GUESTS])
hosts: list[str] = config.extra["hosts"] or []
if not hosts:
    raise mvt.LabConfigError(mvt.ConfigError("hosts", "is not set: `pulumi config set hosts "
                                             "'[\"ssh://root@kvm1?keyfile=...\"]'`"))
count: int = config.extra["guests"]
base = mvt.lab_name(pulumi.get_project(), pulumi.get_stack())[:32]
try:  # each host's part of ipRange (on one LAN, their addresses must not collide)
    per_host = split_ip_range(config.lab, [len(range(i, count, len(hosts)))
                                           for i in range(len(hosts))], "config")
except mvt.ConfigError as exc:
    raise mvt.LabConfigError(exc) from None
labs = [mvt.Lab(f"{base}-h{i}", root_password=config.root_password,
                config=dataclasses.replace(lab_config, docker_host=host))
        for i, (host, lab_config) in enumerate(zip(hosts, per_host, strict=True))]
guests: list[list[mvt.Guest]] = [[] for _ in labs]
for n in range(count):
    lab = labs[n % len(labs)]
    guests[n % len(labs)].append(mvt.Guest(f"{lab.lab_name}-g{len(guests[n % len(labs)])}", lab))


def ssh_via(host: str, lab: mvt.Lab, ip: pulumi.Output[str]) -> pulumi.Output[str]:
    """The guest's ssh from a probe container on its host (the docker CLI reaches the host
    with the user's own ssh settings)."""
    parts = urlsplit(host)
    plain = parts._replace(query="").geturl()
    return pulumi.Output.all(lab.network_name, lab.probe_image, ip).apply(
        lambda v: f"docker -H {plain} run --rm -it --network {v[0]} --entrypoint ssh {v[1]} "
                  f"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@{v[2]}")


pulumi.export("hosts", [
    {"docker_host": urlsplit(host)._replace(query="").geturl(),
     "container_name": lab.container_name, "network_name": lab.network_name,
     "ip_range": lab.config.ip_range, "uplink": lab.config.uplink,
     "guest_ips": [g.guest_ip for g in mine], "macvtap_macs": [g.macvtap_mac for g in mine],
     "mac_matches": [g.mac_matches for g in mine],
     "ssh_commands": [ssh_via(host, lab, g.guest_ip) for g in mine]}
    for host, lab, mine in zip(hosts, labs, guests, strict=True)])
if config.root_password is None:  # generated, one per lab
    pulumi.export("root_passwords", [lab.root_password for lab in labs])
