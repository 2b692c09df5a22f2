"""The seed's lab by hand: what a plain script does, one step after the other.

Same cached images as the Pulumi path (the libvirt container image and the guest base
that `macvtap-lab images status` reports) and the same work-directory layout:

1. `docker network create --internal` with an explicit subnet;
2. `docker run` of the libvirt image with the providers' security settings for a host
   that refuses `--privileged` (every capability the host can grant, seccomp and
   AppArmor unconfined, all devices allowed, /dev bind-mounted, docker's init), the work
   directory mounted at the same path and libvirt's socket directory on the host; then
   wait until `virsh version` answers;
3. the disk: a full **copy** of the base (`cp`, as the seed does; the providers make a
   qcow2 overlay instead), then `virt-customize` (root password from a file, sshd_config
   edits, resolv.conf, hostname; one appliance launch, TCG forced);
4. the NIC: on this host several libvirt containers share one /dev, so the seed's
   `<interface type='direct'>` can make a guest open another lab's /dev/tapN (README,
   "Several libvirt containers on one host"); like the providers' default, the script
   makes the macvtap itself (`ip link add ... index N type macvtap mode bridge` in the
   container) and defines the domain with `<interface type='ethernet'>` (XML from the
   project's pure builder), then `virsh define` and `virsh start`;
5. log in as root on the serial console (pexpect over `virsh console`), remove the address
   from the container's eth0, give it and the default route to the guest's eth0 with `ip`;
6. ssh from a probe container until it succeeds.

Everything it made is removed afterwards, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pexpect

from bench.common import LABEL, BenchError, CachedImages, host_address, run, say, token, work_dir
from bench.probe import LOGIN_RE, wait_for_ssh
from bench.timeline import Timeline
from macvtap_provider.adapters.kvm import kvm_usable
from macvtap_provider.adapters.lab_host import read_capability_bounding
from macvtap_provider.builders import domain_xml, tap
from macvtap_provider.builders.security import missing_capabilities
from macvtap_provider.builders.validation import derive_mac

LIBGUESTFS_ENV = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
PROMPT = "BENCH# "
SHELL_RE = re.compile(rb"[#$] ?$", re.M)


@dataclass(frozen=True)
class ManualLab:
    name: str
    subnet: str
    password: str
    images: CachedImages
    memory_mib: int = 512

    @property
    def network(self) -> str:
        return f"{self.name}-net"

    @property
    def container(self) -> str:
        return f"{self.name}-libvirt"

    @property
    def domain(self) -> str:
        return f"{self.name}-guest"

    @property
    def work(self) -> Path:
        return work_dir(self.name)

    @property
    def disk(self) -> Path:
        return self.work / "images" / f"{self.domain}.qcow2"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.work}/run/libvirt/libvirt-sock"

    @property
    def gateway(self) -> str:
        return host_address(self.subnet, 1)

    @property
    def address(self) -> str:
        return host_address(self.subnet, 10)

    @property
    def prefix(self) -> int:
        return int(self.subnet.rsplit("/", 1)[1])


def virsh(lab: ManualLab, *args: str, check: bool = True) -> str:
    return run(["virsh", "-c", lab.uri, *args], check=check, timeout=120).stdout


def run_manual(images: CachedImages, subnet: str, memory_mib: int = 512) -> Timeline:
    """The whole manual path, timed; everything is cleaned up afterwards."""
    lab = ManualLab(f"bench-manual-{token()}", subnet, token() + token() + "Bench", images,
                    memory_mib)
    timeline = Timeline("manual")
    say(f"manual lab {lab.name} ({subnet})")
    try:
        start_container(lab)
        timeline.mark("container_ready")
        customize_image(lab)
        timeline.mark("image_customized")
        start_domain(lab)
        timeline.mark("domain_started")
        console_network(lab, timeline)
        timeline.mark("network_moved")
        timeline.mark("ssh_ready", wait_for_ssh(lab.network, images.libvirt, lab.address,
                                                lab.password))
        say(f"manual: ssh ready after {timeline.total:.1f}s")
        return timeline
    finally:
        cleanup(lab)


def start_container(lab: ManualLab) -> None:
    (lab.work / "run" / "libvirt").mkdir(parents=True, exist_ok=True)
    (lab.work / "images").mkdir(parents=True, exist_ok=True)
    run(["docker", "network", "create", "--internal", "--subnet", lab.subnet,
         "--gateway", lab.gateway, "--label", f"{LABEL}=manual", lab.network])
    caps = ["--cap-add", "ALL"]
    for cap in missing_capabilities(read_capability_bounding()):
        caps += ["--cap-drop", cap]
    run(["docker", "run", "-d", "--name", lab.container, "--hostname", lab.container,
         "--label", f"{LABEL}=manual", "--network", lab.network, "--ip", lab.address,
         "--init", *caps, "--security-opt", "apparmor=unconfined",
         "--security-opt", "seccomp=unconfined", "--device-cgroup-rule", "a *:* rwm",
         "-v", "/dev:/dev", "-v", f"{lab.work}:{lab.work}",
         "-v", f"{lab.work}/run/libvirt:/run/libvirt", lab.images.libvirt])
    deadline = time.monotonic() + 90
    while run(["virsh", "-c", lab.uri, "version"], check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise BenchError(f"libvirtd in {lab.container} did not answer within 90s")
        time.sleep(0.5)


def customize_image(lab: ManualLab) -> None:
    run(["cp", str(lab.images.guest_base), str(lab.disk)])
    secret = lab.work / "root-password"
    secret.touch(mode=0o600)
    secret.write_text(lab.password + "\n")
    sshd = "/etc/ssh/sshd_config"
    try:
        run(["virt-customize", "--format", "qcow2", "-a", str(lab.disk), "--no-network",
             "--root-password", f"file:{secret}",
             "--edit", rf"{sshd}:s/^#?\s*PermitRootLogin\s.*/PermitRootLogin yes/",
             "--edit", rf"{sshd}:s/^#?\s*PasswordAuthentication\s.*/PasswordAuthentication yes/",
             "--write", f"/etc/resolv.conf:nameserver {lab.gateway}\n",
             "--hostname", lab.domain],
            env=dict(os.environ, **LIBGUESTFS_ENV), timeout=600)
    finally:
        secret.unlink(missing_ok=True)


def start_domain(lab: ManualLab) -> None:
    mac = derive_mac(lab.domain)
    index = tap.pick_tap_index(f"{lab.container}/{lab.domain}", tap.taps_in_dev(os.listdir("/dev")))
    link = tap.macvtap_name(index)
    run(["docker", "exec", lab.container, "sh", "-c",
         f"ip link add link eth0 name {link} index {index} address {mac} type macvtap "
         f"mode bridge && ip link set {link} up"])
    xml = domain_xml.build_domain_xml(domain_xml.DomainXmlSpec(
        name=lab.domain, memory_mib=lab.memory_mib, vcpus=1, disk_path=str(lab.disk), mac=mac,
        nic=domain_xml.EthernetNic(link), domain_type="kvm" if kvm_usable() else "qemu",
        owner=f"bench/{lab.domain}"))
    xml_file = lab.work / f"{lab.domain}.xml"
    xml_file.write_text(xml)
    virsh(lab, "define", str(xml_file))
    virsh(lab, "start", lab.domain)


def console_network(lab: ManualLab, timeline: Timeline) -> None:
    """Log in on the serial console and move the container's address to the guest."""
    child = pexpect.spawn("virsh", ["-c", lab.uri, "console", lab.domain, "--force"],
                          echo=False, timeout=60)
    try:
        child.expect_exact("Escape character", timeout=30)
        started = time.monotonic()
        while child.expect([LOGIN_RE, pexpect.TIMEOUT], timeout=0.5) != 0:
            if time.monotonic() - started > 240:
                raise BenchError(f"{lab.domain}: no login prompt within 240s")
            if time.monotonic() - started > 90:
                child.sendline("")  # as a person would, should the prompt have been missed
        timeline.mark("login_prompt")
        child.sendline("root")
        child.expect("assword:")
        child.sendline(lab.password)
        if child.expect([SHELL_RE, "Login incorrect"]) != 0:
            raise BenchError(f"{lab.domain}: root login on the console refused")
        child.sendline(f"export PS1='{PROMPT}' TERM=dumb; stty -echo")
        child.expect_exact(PROMPT)
        run(["docker", "exec", lab.container, "ip", "addr", "del",
             f"{lab.address}/{lab.prefix}", "dev", "eth0"])
        child.sendline(f"ip addr flush dev eth0 && ip addr add {lab.address}/{lab.prefix} dev eth0"
                       f" && ip link set eth0 up && ip route replace default via {lab.gateway}"
                       " dev eth0; echo RC=$?")
        child.expect(r"RC=(\d+)")
        if child.match.group(1) != b"0":
            raise BenchError(f"{lab.domain}: the ip commands failed on the console")
        child.expect_exact(PROMPT)
        child.sendline("exit")
    except (pexpect.EOF, pexpect.TIMEOUT) as exc:
        raise BenchError(f"{lab.domain}: serial console: {type(exc).__name__}: "
                         f"{(child.before or b'').decode(errors='replace')[-300:]}") from exc
    finally:
        with contextlib.suppress(Exception):
            child.sendcontrol("]")
        child.close(force=True)


def cleanup(lab: ManualLab) -> None:
    """Remove whatever the manual path made (each step tolerates 'already gone')."""
    virsh(lab, "destroy", lab.domain, check=False)
    virsh(lab, "undefine", lab.domain, check=False)
    run(["docker", "rm", "-f", "-v", lab.container], check=False)
    run(["docker", "network", "rm", lab.network], check=False)
    shutil.rmtree(lab.work, ignore_errors=True)
    left = run(["docker", "ps", "-aq", "--filter", f"name={lab.container}"], check=False).stdout
    if left.strip() or lab.work.exists():
        say(f"manual cleanup left something behind: {left.strip()} {lab.work}")
