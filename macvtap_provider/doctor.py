"""`macvtap-lab doctor`: check that this host can run a lab, and say how to fix what cannot."""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from macvtap_provider.adapters import docker_api
from macvtap_provider.adapters.docker_api import privileged_allowed, probe_container
from macvtap_provider.adapters.kvm import KvmStatus, cached_probe, kvm_usable
from macvtap_provider.adapters.lab_host import read_capability_bounding
from macvtap_provider.builders.security import (
    SecurityMode,
    container_security_kwargs,
    missing_capabilities,
)
from macvtap_provider.errors import LabError, SpecError
from macvtap_provider.paths import checkout_tools

log = logging.getLogger(__name__)


class Status(enum.Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: `fix` says exactly what to do when it is not PASS."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


#: Every check, in the order it runs.
CHECKS: tuple[str, ...] = (
    "docker", "privileged", "dev", "kvm", "tun", "vhost-net", "guestfs", "pulumi",
)
_NEEDS_DOCKER = frozenset({"docker", "privileged", "dev"})

DOCKER_FIX = (
    "start dockerd: `make setup` (installs docker.io and starts it), or by hand "
    "`dockerd >/var/log/dockerd.log 2>&1 &`; check DOCKER_HOST if you use a remote daemon"
)
IMAGE_FIX = "build the images: `macvtap-lab images build` (the doctor tried and failed)"
DEV_FIX = (
    "bind-mount the host's /dev into the container read-write (volumes "
    "{'/dev': {'bind': '/dev', 'mode': 'rw'}}) and allow all devices (device_cgroup_rules "
    "['a *:* rwm']); without them qemu in the lab container fails with "
    "\"TUNGETIFF ioctl() failed: Inappropriate ioctl for device\""
)
TUN_FIX = (
    "the kernel needs TUN/TAP (CONFIG_TUN): `modprobe tun`; if the driver is built in but the "
    "node is missing: `mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && "
    "chmod 0666 /dev/net/tun`"
)
VHOST_FIX = (
    "optional: `modprobe vhost_net` if your kernel has it; without it virtio-net runs in "
    "qemu's userspace (slower). It only matters for KVM domains."
)
GUESTFS_FIX = (
    "install libguestfs-tools and python3-guestfs (`make setup`); the virtualenv must be "
    "made from /usr/bin/python3 with --system-site-packages; run `libguestfs-test-tool` "
    "(with LIBGUESTFS_BACKEND=direct, and LIBGUESTFS_BACKEND_SETTINGS=force_tcg when KVM "
    "hangs) to see why the appliance does not start"
)
PULUMI_FIX = (
    "install the Pulumi CLI (https://www.pulumi.com/docs/install/, with its Python language "
    "host and plugin script beside it); in a macvtap-lab checkout `make setup` builds one "
    "into .tools/bin"
)
PULUMI_COMPANIONS = (
    "pulumi-language-python", "pulumi-language-python-exec", "pulumi-resource-pulumi-python",
)
#: Every container the doctor starts is named this plus a random suffix.
PROBE_PREFIX = "macvtap-lab-doctor-"
DOCKER_TIMEOUT_S = 60
PULUMI_TIMEOUT_S = 60
SCRATCH_DISK_BYTES = 16 * 1024 * 1024

Progress = Callable[[CheckResult], None]


def parse_skip(values: Iterable[str]) -> frozenset[str]:
    """Turn `--skip kvm,guestfs --skip pulumi` style values into check names.

    Raises:
        SpecError: A name is not a known check.
    """
    names = {part.strip() for value in values for part in value.split(",") if part.strip()}
    unknown = sorted(names - set(CHECKS))
    if unknown:
        raise SpecError("skip", f"unknown check(s) {', '.join(unknown)}; "
                        f"known: {', '.join(CHECKS)}")
    return frozenset(names)


def exit_code(results: Sequence[CheckResult]) -> int:
    """1 when any check failed, else 0 (WARN and SKIP do not fail)."""
    return 1 if any(r.status is Status.FAIL for r in results) else 0


def format_report(results: Sequence[CheckResult]) -> str:
    """A plain-text report: one line per check, its fix indented below, then a summary."""
    width = max((len(r.name) for r in results), default=0)
    lines = []
    for r in results:
        lines.append(f"{r.status.value:4}  {r.name:<{width}}  {r.detail}")
        if r.fix and r.status in (Status.WARN, Status.FAIL):
            lines.append(f"{'':4}  {'':<{width}}  fix: {r.fix}")
    counts = {s: sum(1 for r in results if r.status is s) for s in Status}
    summary = ", ".join(f"{n} {s.value}" for s, n in counts.items() if n)
    verdict = "not ready" if exit_code(results) else "ready"
    lines.append(f"{len(results)} checks: {summary or 'none run'} -> {verdict}")
    return "\n".join(lines) + "\n"


def format_json(results: Sequence[CheckResult]) -> str:
    return json.dumps({"ok": exit_code(results) == 0,
                       "checks": [r.to_dict() for r in results]}, indent=2) + "\n"


# -- the checks --------------------------------------------------------------------------


@dataclass
class _DockerState:
    stack: contextlib.ExitStack
    client: Any = None  # an open docker client (adapters.docker_api) once connected
    image: str | None = None
    image_error: str = ""
    security: dict[str, Any] | None = None


def _connect_docker(state: _DockerState) -> CheckResult:
    try:
        client = state.stack.enter_context(docker_api.docker_client(timeout_s=DOCKER_TIMEOUT_S))
        version = docker_api.engine_version(client)
    except LabError as exc:
        return CheckResult("docker", Status.FAIL, f"dockerd is not reachable: {exc}", DOCKER_FIX)
    state.client = client
    return CheckResult("docker", Status.PASS, f"dockerd {version} answers")


def _probe_image(state: _DockerState, image: str | None) -> str | None:
    if state.image or state.image_error:
        return state.image
    if image is not None:
        state.image = image
        return image
    try:
        from macvtap_provider.images import base

        log.info("ensuring the docker base image for probe containers (built once, ~40 s)")
        state.image = base.ensure_base_image()
    except (ImportError, LabError) as exc:
        state.image_error = str(exc)
    return state.image


def _check_privileged(state: _DockerState, image: str | None) -> CheckResult:
    if state.client is None:
        return CheckResult("privileged", Status.SKIP, "needs dockerd (see the docker check)")
    name = _probe_image(state, image)
    if name is None:
        return CheckResult("privileged", Status.FAIL,
                           f"no image for a probe container: {state.image_error}", IMAGE_FIX)
    try:
        ok, why = privileged_allowed(state.client, name, PROBE_PREFIX)
    except LabError as exc:
        return CheckResult("privileged", Status.FAIL, f"the probe failed: {exc}", IMAGE_FIX)
    if ok:
        state.security = container_security_kwargs(SecurityMode.PRIVILEGED, [])
        return CheckResult("privileged", Status.PASS,
                           "docker allows --privileged: privileged mode is used")
    # runc's message is a chain "create failed: ...: unable to apply caps: ...: unknown".
    why = why.rsplit("unable to start container process: ", 1)[-1].removesuffix(": unknown")
    missing = missing_capabilities(read_capability_bounding())
    caps = container_security_kwargs(SecurityMode.CAPABILITIES, missing)
    try:
        with probe_container(state.client, name, owner="doctor", name_prefix=PROBE_PREFIX,
                             **caps):
            pass
    except LabError as exc:
        return CheckResult(
            "privileged", Status.FAIL,
            f"neither mode starts a container: --privileged: {why}; capability mode: {exc}",
            "run dockerd as root on a host that lets it grant capabilities (not inside a "
            "restricted container); see `docker info` and the dockerd log",
        )
    state.security = caps
    lacking = ", ".join(missing) or "nothing (yet --privileged fails)"
    return CheckResult(
        "privileged", Status.WARN,
        f"docker refuses --privileged ({why}); the host's capability bounding set lacks "
        f"{lacking}, so capability mode is used: all capabilities but those, seccomp and "
        "apparmor unconfined, all devices allowed, /dev bind-mounted",
        "nothing to do: labs run in capability mode (equally powerful, see the README on its "
        "risk); for --privileged, give dockerd the full capability bounding set",
    )


def _check_dev(state: _DockerState, image: str | None) -> CheckResult:
    if state.client is None:
        return CheckResult("dev", Status.SKIP, "needs dockerd (see the docker check)")
    name = _probe_image(state, image)
    if name is None:
        return CheckResult("dev", Status.FAIL,
                           f"no image for a probe container: {state.image_error}", IMAGE_FIX)
    security = state.security
    if security is None:  # the privileged check was skipped: ask the daemon, as `auto` does
        try:
            allowed = privileged_allowed(state.client, name, PROBE_PREFIX)[0]
        except LabError as exc:
            return CheckResult("dev", Status.FAIL, f"the probe container did not start: {exc}",
                               DEV_FIX)
        missing = [] if allowed else missing_capabilities(read_capability_bounding())
        security = container_security_kwargs(
            SecurityMode.PRIVILEGED if allowed else SecurityMode.CAPABILITIES, missing)
    # /dev/net/tun is in docker's default device allow-list; /dev/kvm is not, so opening it
    # also proves the device cgroup rule that the dynamic-major /dev/tapN nodes need.
    script = "exec 3<>/dev/net/tun || exit 10; [ ! -e /dev/kvm ] || exec 4<>/dev/kvm || exit 11"
    try:
        with probe_container(state.client, name, owner="doctor", name_prefix=PROBE_PREFIX,
                             **security) as container:
            code, output = docker_api.exec_in(state.client, container.name,
                                              ["sh", "-c", script])
    except LabError as exc:
        return CheckResult("dev", Status.FAIL, f"the probe container did not start: {exc}",
                           DEV_FIX)
    text = output.strip()
    if code == 10:
        return CheckResult("dev", Status.FAIL,
                           f"/dev/net/tun does not open in a container: {text}", DEV_FIX)
    if code == 11:
        return CheckResult("dev", Status.FAIL,
                           f"/dev/kvm does not open in a container (device cgroup): {text}",
                           DEV_FIX)
    if code != 0:
        return CheckResult("dev", Status.FAIL, f"the /dev probe exited {code}: {text}",
                           DEV_FIX)
    extra = " and /dev/kvm" if Path("/dev/kvm").exists() else ""
    return CheckResult("dev", Status.PASS,
                       f"host /dev is mounted in containers: /dev/net/tun{extra} open read-write")


def _check_kvm() -> CheckResult:
    log.info("checking KVM with a real boot (up to 20 s unless cached)")
    probe = cached_probe()
    forced = os.environ.get("MACVTAP_LAB_KVM")
    note = f" (MACVTAP_LAB_KVM={forced} overrides it)" if forced in ("0", "1") else ""
    if probe.status is KvmStatus.USABLE:
        return CheckResult("kvm", Status.PASS, f"KVM usable: {probe.detail}{note}")
    if probe.status is KvmStatus.NO_QEMU:
        return CheckResult("kvm", Status.FAIL, probe.detail, probe.fix)
    label = {
        KvmStatus.HANGS: "KVM unusable → TCG",
        KvmStatus.DISABLED_IN_BIOS: "KVM disabled in the BIOS → TCG",
        KvmStatus.PERMISSION_DENIED: "KVM permission denied → TCG",
        KvmStatus.NO_DEVICE: "no /dev/kvm → TCG",
        KvmStatus.FAILS: "KVM fails → TCG",
    }[probe.status]
    return CheckResult("kvm", Status.WARN,
                       f"{label}: {probe.detail}; labs still run, slower{note}", probe.fix)


def _char_device(path: Path) -> bool:
    try:
        return stat.S_ISCHR(path.stat().st_mode)
    except OSError:
        return False


def _check_tun() -> CheckResult:
    path = Path("/dev/net/tun")
    if not _char_device(path):
        return CheckResult("tun", Status.FAIL, f"{path} is missing", TUN_FIX)
    return CheckResult("tun", Status.PASS, f"{path} present")


def _check_vhost() -> CheckResult:
    path = Path("/dev/vhost-net")
    if not _char_device(path):
        return CheckResult("vhost-net", Status.WARN,
                           f"{path} is missing: vhost off, guests' networking is slower",
                           VHOST_FIX)
    return CheckResult("vhost-net", Status.PASS, f"{path} present")


def _check_guestfs() -> CheckResult:
    try:
        from macvtap_provider.adapters import guestfs_api  # imports Debian's guestfs
    except ImportError as exc:
        return CheckResult("guestfs", Status.FAIL,
                           f"the guestfs Python bindings do not import: {exc}", GUESTFS_FIX)

    tcg = not kvm_usable()
    start = time.monotonic()
    try:
        with guestfs_api.launch(scratch_bytes=SCRATCH_DISK_BYTES, what="a scratch disk"):
            pass
    except LabError as exc:
        return CheckResult("guestfs", Status.FAIL, f"the appliance did not launch: {exc}",
                           GUESTFS_FIX)
    mode = "TCG" if tcg else "KVM"
    return CheckResult("guestfs", Status.PASS,
                       f"appliance launched under {mode} in {time.monotonic() - start:.1f} s")


def _find_tool(name: str, tools_dir: Path | None) -> str | None:
    candidate = tools_dir / name if tools_dir else None
    if candidate and candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def _check_pulumi() -> CheckResult:
    tools_dir = checkout_tools()
    cli = _find_tool("pulumi", tools_dir)
    if cli is None:
        where = f"in {tools_dir} nor " if tools_dir else ""
        return CheckResult("pulumi", Status.FAIL, f"no pulumi CLI {where}on PATH", PULUMI_FIX)
    env = {**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "1"}
    try:
        log.debug("run: %s version", cli)
        proc = subprocess.run([cli, "version"], capture_output=True, text=True, env=env,
                              timeout=PULUMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CheckResult("pulumi", Status.FAIL, f"`{cli} version` failed: {exc}", PULUMI_FIX)
    if proc.returncode != 0:
        return CheckResult("pulumi", Status.FAIL,
                           f"`{cli} version` exited {proc.returncode}: {proc.stderr.strip()}",
                           PULUMI_FIX)
    # The engine looks for its plugins beside itself first, then on PATH. Our
    # .tools/bin/pulumi is a wrapper; the engine binary is what pulumi-engine points to.
    engine = tools_dir / "pulumi-engine" if tools_dir else None
    side = engine.resolve().parent if engine and engine.exists() else Path(cli).resolve().parent
    found = {n: _find_tool(n, side) or _find_tool(n, tools_dir) for n in PULUMI_COMPANIONS}
    missing = [n for n, path in found.items() if path is None]
    version = proc.stdout.strip()
    if missing:
        return CheckResult("pulumi", Status.FAIL,
                           f"pulumi {version} at {cli}, but {', '.join(missing)} not found "
                           f"beside it nor on PATH", PULUMI_FIX)
    return CheckResult("pulumi", Status.PASS,
                       f"pulumi {version} at {cli}; language host and scripts found")


def run_checks(
    skip: Iterable[str] = (),
    *,
    image: str | None = None,
    on_result: Progress | None = None,
) -> list[CheckResult]:
    """Run every check not skipped, in `CHECKS` order.

    Args:
        skip: Check names (or comma-separated lists of them) not to run.
        image: Local docker image for the probe containers; default: the project's base
            image (`images.base.ensure_base_image()`, built on first use).
        on_result: Called with each result as soon as it is known (progress display).

    Returns:
        One result per check; skipped ones have status SKIP.

    Raises:
        SpecError: `skip` names an unknown check.
    """
    skipped = parse_skip(skip)
    results: list[CheckResult] = []
    state = _DockerState(contextlib.ExitStack())

    def record(result: CheckResult) -> None:
        log.debug("check %s: %s %s", result.name, result.status.value, result.detail)
        results.append(result)
        if on_result is not None:
            on_result(result)

    runners: dict[str, Callable[[], CheckResult]] = {
        "privileged": lambda: _check_privileged(state, image),
        "dev": lambda: _check_dev(state, image),
        "kvm": _check_kvm,
        "tun": _check_tun,
        "vhost-net": _check_vhost,
        "guestfs": _check_guestfs,
        "pulumi": _check_pulumi,
    }
    try:
        docker_result = None
        if _NEEDS_DOCKER - skipped:
            docker_result = _connect_docker(state)
        for name in CHECKS:
            if name in skipped:
                record(CheckResult(name, Status.SKIP, "skipped (--skip)"))
            elif name == "docker":
                assert docker_result is not None
                record(docker_result)
            else:
                record(runners[name]())
    finally:
        state.stack.close()
    return results
