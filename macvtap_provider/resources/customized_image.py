"""CustomizedImage: a guest disk made from a base image and customised offline.

One libguestfs launch applies every edit: root password (stored only as a
SHA-512 crypt hash inside the image), sshd settings, resolver, hostname, SSH
keys, an optional static eth0, fresh SSH host keys, cloud-init disabled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource

from macvtap_provider import paths
from macvtap_provider.adapters import qemu_img
from macvtap_provider.adapters.isolate import isolated
from macvtap_provider.builders import guest_config
from macvtap_provider.builders.secrets import (
    check_password,
    customization_digest,
    new_salt,
    sha512_crypt,
)
from macvtap_provider.builders.validation import (
    check_choice,
    check_ipv4_interface,
    check_nameservers,
)
from macvtap_provider.errors import GuestfsError, LabError, SpecError
from macvtap_provider.resources._base import (
    LabProvider,
    is_unknown,
    known,
    known_items,
    resource_props,
)

if TYPE_CHECKING:
    from macvtap_provider.adapters import guestfs_api

log = logging.getLogger(__name__)

MODES = ("overlay", "copy")
MARKER_SUFFIX = ".macvtap-lab.json"
# Inputs whose change means a new image (all of them but the provider plumbing).
PUBLIC_INPUTS = ("base_image", "base_sha256", "output_path", "mode", "sshd_settings",
                 "nameservers", "hostname", "authorized_keys", "network")
#: Creates arriving within this window of the first share its appliance launch (the
#: window overlaps the start-up of the isolated interpreter, so costs a single image little).
BATCH_WINDOW_S = 0.3


@dataclass(frozen=True)
class StaticNetwork:
    address: str
    prefix: int
    gateway: str


@dataclass(frozen=True)
class CustomizedImageSpec:
    base_image: Path
    output_path: Path
    root_password: str = field(repr=False)
    mode: str = "overlay"
    sshd_settings: dict[str, str] = field(default_factory=lambda: dict(
        guest_config.DEFAULT_SSHD_SETTINGS))
    nameservers: tuple[str, ...] = ()
    hostname: str = "lab-guest"
    authorized_keys: tuple[str, ...] = ()
    network: StaticNetwork | None = None
    base_sha256: str | None = None

    @staticmethod
    def from_props(props: dict[str, Any]) -> CustomizedImageSpec:
        net = props.get("network")
        return CustomizedImageSpec(
            base_image=Path(props["base_image"]), output_path=Path(props["output_path"]),
            root_password=props["root_password"], mode=props.get("mode") or "overlay",
            sshd_settings=dict(props.get("sshd_settings") or guest_config.DEFAULT_SSHD_SETTINGS),
            nameservers=tuple(props.get("nameservers") or ()),
            hostname=props.get("hostname") or "lab-guest",
            authorized_keys=tuple(props.get("authorized_keys") or ()),
            network=StaticNetwork(net["address"], int(net["prefix"]), net["gateway"]) if net else None,
            base_sha256=props.get("base_sha256") or None,
        )


def marker_path(output: Path) -> Path:
    return output.with_name(output.name + MARKER_SUFFIX)


def base_link_path(output: Path) -> Path:
    """Where an overlay's base is linked, beside it (so the relative backing path works in
    the container too, where only the work directory is mounted)."""
    return output.with_name(output.stem + ".base" + output.suffix)


def public_fields(props: dict[str, Any]) -> dict[str, Any]:
    return {k: props.get(k) for k in PUBLIC_INPUTS}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_output_path(value: object) -> Path:
    out = Path(str(value))
    if not out.is_absolute():
        raise SpecError("output_path", f"{value!r} is not an absolute path")
    if out.suffix != ".qcow2":
        raise SpecError("output_path", f"{value!r} must end in .qcow2")
    if out.exists() and out.is_dir():
        raise SpecError("output_path", f"{out} is a directory: name a file inside it")
    top = Path(out.parts[0], out.parts[1]) if len(out.parts) > 1 else out
    if not top.exists():
        raise SpecError("output_path", f"{out} is under {top}, which does not exist: "
                        "create the directory or pick another place")
    ancestor = out.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise SpecError("output_path", f"{ancestor} is not a writable directory: pick a "
                        "writable location for the image")
    return out


def _check_base(props: dict[str, Any]) -> None:
    base = Path(str(props["base_image"]))
    default = paths.default_guest_image()
    if base == default and not base.exists():
        return  # the embedded default: built locally at create time
    if not base.is_file():
        raise SpecError("base_image", f"{base} does not exist: build the default guest image "
                        "(macvtap-lab images build) or point base_image at a qcow2 file")
    try:
        fmt = qemu_img.info(base).get("format")
    except LabError as exc:
        raise SpecError("base_image", f"{base} is not a readable disk image: {exc}") from None
    if fmt != "qcow2":
        raise SpecError("base_image", f"{base} is a {fmt} image: convert it to qcow2 "
                        f"(qemu-img convert -O qcow2 {base} {base.with_suffix('.qcow2')})")
    want = props.get("base_sha256")
    if want and not is_unknown(want):
        got = sha256_file(base)
        if got != str(want).lower():
            raise SpecError("base_sha256", f"{base} has sha256 {got}, not {want}: the base "
                            "image changed or the checksum is wrong")


class CustomizedImageProvider(LabProvider):
    INPUTS = PUBLIC_INPUTS
    REPLACE_ON = frozenset(PUBLIC_INPUTS)
    KIND = "CustomizedImage"

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        if not props.get("base_image"):
            props["base_image"] = str(paths.default_guest_image())
        if props.get("mode") is None:
            props["mode"] = "overlay"
        known(props, "mode", lambda v: check_choice(v, "mode", MODES))
        known(props, "output_path", _check_output_path)
        if not is_unknown(props["base_image"]):
            _check_base(props)
        known(props, "root_password", check_password)
        if props.get("root_password") is None:
            raise SpecError("root_password", "is required: set it (as a secret)")
        settings = props.get("sshd_settings")
        if settings is None:
            props["sshd_settings"] = dict(guest_config.DEFAULT_SSHD_SETTINGS)
        elif not is_unknown(settings):
            if not isinstance(settings, dict):
                raise SpecError("sshd_settings", "must be a mapping of sshd_config keyword to value")
            props["sshd_settings"] = guest_config.check_sshd_settings(settings)
        ns = known(props, "nameservers", lambda v: known_items(v, check_nameservers))
        if ns is not None:
            props["nameservers"] = list(ns)
        props["hostname"] = props.get("hostname") or "lab-guest"
        known(props, "hostname", guest_config.check_hostname)
        keys = known(props, "authorized_keys",
                     lambda v: known_items(v, guest_config.check_ssh_keys))
        if keys is not None:
            props["authorized_keys"] = list(keys)
        net = props.get("network")
        if net and not is_unknown(net) and isinstance(net, dict):
            address, prefix, gateway = net.get("address"), net.get("prefix"), net.get("gateway")
            if not any(is_unknown(v) for v in (address, prefix, gateway)):
                iface = check_ipv4_interface(address, prefix, gateway, field="network.address")
                props["network"] = {"address": iface.address, "prefix": iface.prefix,
                                    "gateway": iface.gateway}
        return props

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        result = super().diff(id_, olds, news)
        # The password is not in the state: compare its salted digest instead.
        pw = news.get("root_password")
        salt = olds.get("salt")
        if pw is not None and not is_unknown(pw) and salt and not result.changes:
            if customization_digest(public_fields(news), pw, salt) != olds.get("digest"):
                result.changes = True
                result.replaces = [*(result.replaces or []), "root_password"]
        elif is_unknown(pw):
            result.changes = True
            result.replaces = [*(result.replaces or []), "root_password"]
        return result

    # -- create -----------------------------------------------------------------------------
    def create(self, props: dict[str, Any]) -> CreateResult:
        spec = CustomizedImageSpec.from_props(props)
        out = spec.output_path
        self._claim(out)
        started = time.monotonic()
        try:
            # libguestfs forks; it must not run inside the provider's gRPC process.
            _BATCHER.build(spec)
        except BaseException:
            self._remove_files(out)
            raise
        log.info("image %s customised in %.1fs", out, time.monotonic() - started)
        salt = new_salt()
        outs = {k: v for k, v in props.items() if k != "root_password"}
        outs.update(self._describe(out), salt=salt,
                    digest=customization_digest(public_fields(props), spec.root_password, salt))
        return CreateResult(str(out), outs)

    @staticmethod
    def _claim(out: Path) -> None:
        """Own the output path; a leftover of an interrupted run of ours is replaced."""
        out.parent.mkdir(parents=True, exist_ok=True)
        marker = marker_path(out)
        if out.exists():
            if not marker.exists():
                raise GuestfsError(f"{out} exists and was not made by macvtap-lab: move it away "
                                   "or choose another output_path")
            if qemu_img.in_use(out):
                raise GuestfsError(f"{out} is attached to a running domain: stop the domain "
                                   "before the image is rebuilt")
            log.info("replacing %s left by an interrupted run", out)
        marker.write_text(json.dumps({"created": time.time(), "pid": os.getpid()}))

    @staticmethod
    def make_disk(spec: CustomizedImageSpec) -> None:
        out = spec.output_path
        tmp_out = out.with_name(out.name + ".tmp")
        tmp_out.unlink(missing_ok=True)
        if spec.mode == "overlay":
            link = base_link_path(out)
            link.unlink(missing_ok=True)
            try:
                os.link(spec.base_image, link)  # same inode: the base is only ever read
            except OSError:
                log.info("%s is on another filesystem: copying the base beside the overlay",
                         spec.base_image)
                subprocess.run(["cp", "--reflink=auto", str(spec.base_image), str(link)],
                               check=True)
            qemu_img.create_overlay(link, tmp_out)
        else:
            log.info("copying %s (mode copy)", spec.base_image)
            qemu_img.copy(spec.base_image, tmp_out)
        tmp_out.replace(out)

    @staticmethod
    def customize(session: guestfs_api.GuestSession, spec: CustomizedImageSpec,
                  host_keys: Path | None = None) -> None:
        """Every edit, in one mounted session; `host_keys`: a directory of keys made for it."""
        day = int(time.time() // 86400)
        shadow = session.read("/etc/shadow")
        session.write("/etc/shadow", guest_config.shadow_with_root_hash(
            shadow, sha512_crypt(spec.root_password), day), mode=0o640)
        sshd = session.read("/etc/ssh/sshd_config") if session.exists("/etc/ssh/sshd_config") else ""
        session.write("/etc/ssh/sshd_config", guest_config.edit_sshd_config(sshd, spec.sshd_settings))
        session.write("/etc/resolv.conf", guest_config.resolv_conf(spec.nameservers))
        for path, text in guest_config.hostname_files(spec.hostname).items():
            session.write(path, text)
        if spec.authorized_keys:
            session.write("/root/.ssh/authorized_keys",
                          guest_config.authorized_keys(spec.authorized_keys), mode=0o600)
        if spec.network:
            session.write("/etc/network/interfaces.d/eth0", guest_config.interfaces_eth0(
                spec.network.address, spec.network.prefix, spec.network.gateway,
                spec.nameservers))
        else:
            session.remove("/etc/network/interfaces.d/eth0")
        if session.is_dir("/etc/cloud"):
            # cloud-init would stall boot looking for a metadata server.
            session.touch("/etc/cloud/cloud-init.disabled")
        _install_host_keys(session, host_keys)

    @staticmethod
    def _describe(out: Path) -> dict[str, Any]:
        info = qemu_img.info(out)
        return {"path": str(out), "format": info.get("format"),
                "virtual_size": int(info.get("virtual-size") or 0),
                "backing_file": info.get("backing-filename") or ""}

    # -- read / delete --------------------------------------------------------------------
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        out = Path(props.get("output_path") or id_)
        if not out.exists():
            return self.read_missing()
        return ReadResult(id_, {**props, **self._describe(out)})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        out = Path(props.get("output_path") or id_)
        if out.exists() and qemu_img.in_use(out):
            raise GuestfsError(f"{out} is still attached to a running domain: destroy the "
                               "domain first")
        log.info("removing image %s", out)
        self._remove_files(out)

    @staticmethod
    def _remove_files(out: Path) -> None:
        for path in (out, base_link_path(out), out.with_name(out.name + ".tmp"), marker_path(out)):
            path.unlink(missing_ok=True)
        paths.prune_empty_dirs(out.parent, levels=2)  # images/ and the work dir


def build_images(specs: Sequence[CustomizedImageSpec]) -> list[str | None]:
    """Make every disk, then customise them all in one appliance launch (runs isolated).

    Returns one entry per spec: None when its image is done, else why it failed (the
    other images are still made).
    """
    errors: list[str | None] = [None] * len(specs)

    def failed(i: int, exc: BaseException) -> None:
        errors[i] = str(exc) if isinstance(exc, LabError) else \
            f"image {specs[i].output_path}: {type(exc).__name__}: {exc}"

    # Imported here: `pulumi preview` and every no-op `up` load this module (in the program
    # and in the provider process) without ever customising an image.
    from macvtap_provider.adapters import guestfs_api

    todo = []
    for i, spec in enumerate(specs):
        try:
            if spec.base_image == paths.default_guest_image() and not spec.base_image.exists():
                from macvtap_provider.images.guest_image import ensure_guest_image

                log.info("building the default Debian guest image (first time: ~75 s)")
                ensure_guest_image(spec.base_image)
            CustomizedImageProvider.make_disk(spec)
            todo.append(i)
        except Exception as exc:  # noqa: BLE001 - reported per image, the others go on
            failed(i, exc)
    if not todo:
        return errors
    with _host_keys(len(todo)) as keys, guestfs_api.open_images(
            [str(specs[i].output_path) for i in todo]) as appliance:
        for slot, i in enumerate(todo):
            try:
                with appliance.session(slot) as session:
                    CustomizedImageProvider.customize(session, specs[i], keys(slot))
            except Exception as exc:  # noqa: BLE001 - reported per image, the others go on
                failed(i, exc)
    return errors


class _Batch:
    def __init__(self) -> None:
        self.specs: list[CustomizedImageSpec] = []
        self.errors: list[str | None] = []
        self.done = threading.Event()


class _Batcher:
    """CustomizedImage creates that arrive together in one provider process share
    isolated appliance launches, one per CPU at most: a stack with several guests
    customises all their images in one or two launches (~12 s each under TCG) instead of
    one launch per image.

    Process-local coordination only (a lock and an event; no handle to anything outside),
    kept out of the provider instance, which stays stateless and picklable.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: _Batch | None = None

    def build(self, spec: CustomizedImageSpec) -> None:
        with self._lock:
            batch, leader = self._open, self._open is None
            if batch is None:
                batch = self._open = _Batch()
            slot = len(batch.specs)
            batch.specs.append(spec)
        if leader:
            self._lead(batch)
        else:
            batch.done.wait()
        error = batch.errors[slot] if slot < len(batch.errors) else \
            f"image {spec.output_path}: the shared libguestfs launch failed"
        if error is not None:
            raise GuestfsError(error)

    def _lead(self, batch: _Batch) -> None:
        try:
            with isolated() as call:  # the fresh interpreter starts now...
                time.sleep(BATCH_WINDOW_S)  # ...while images created at the same time join
                with self._lock:
                    self._open = None
                specs = list(batch.specs)
                groups = split_batch(len(specs), launch_slots())
                if len(specs) > 1:
                    log.info("customising %d images in %d appliance launch(es)", len(specs),
                             len(groups))
                errors: list[str | None] = [None] * len(specs)

                def run(group: list[int], caller: Callable[..., Any]) -> None:
                    try:
                        done = caller(build_images, [specs[i] for i in group])
                    except Exception as exc:  # noqa: BLE001 - reported to every image of it
                        done = [f"image {specs[i].output_path}: the libguestfs launch failed: "
                                f"{exc}" for i in group]
                    for i, error in zip(group, done, strict=True):
                        errors[i] = error

                def run_alone(group: list[int]) -> None:
                    with isolated() as own:
                        run(group, own)

                others = [threading.Thread(target=run_alone, args=(g,), daemon=True)
                          for g in groups[1:]]
                for thread in others:
                    thread.start()
                run(groups[0], call)
                for thread in others:
                    thread.join()
                batch.errors = errors
        except BaseException as exc:
            batch.errors = [f"image {s.output_path}: the libguestfs launch failed: {exc}"
                            for s in batch.specs]
            raise
        finally:
            with self._lock:
                if self._open is batch:
                    self._open = None
            batch.done.set()


def launch_slots() -> int:
    """How many appliances may run at once: one per CPU (each is one busy vCPU under TCG)."""
    return max(1, len(os.sched_getaffinity(0)))


def split_batch(count: int, slots: int) -> list[list[int]]:
    """Indexes 0..count-1 dealt round-robin into at most `slots` non-empty groups."""
    groups = max(1, min(count, slots))
    return [list(range(start, count, groups)) for start in range(groups)]


_BATCHER = _Batcher()


@contextlib.contextmanager
def _host_keys(count: int) -> Iterator[Callable[[int], Path]]:
    """`count` sets of SSH host keys, made on the host (faster than in a TCG guest) while
    the appliance launches; yields `keys(i)` -> the directory holding set i (after waiting
    for it)."""
    with tempfile.TemporaryDirectory(prefix="hostkeys-") as tmp:
        procs = []
        for i in range(count):
            (Path(tmp) / str(i) / "etc" / "ssh").mkdir(parents=True)
            procs.append(subprocess.Popen(["ssh-keygen", "-A", "-f", str(Path(tmp) / str(i))],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))

        def keys(i: int) -> Path:
            _out, err = procs[i].communicate()
            if procs[i].returncode != 0:
                raise GuestfsError(f"ssh-keygen -A failed: {err.decode(errors='replace')}")
            return Path(tmp) / str(i) / "etc" / "ssh"

        try:
            yield keys
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()


def _install_host_keys(session: guestfs_api.GuestSession, keys_dir: Path | None = None) -> None:
    """Give this clone its own SSH host keys (made on the host, faster than in a TCG guest)."""
    for old in session.glob("/etc/ssh/ssh_host_*"):
        session.remove(old)
    with contextlib.ExitStack() as stack:
        if keys_dir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hostkeys-"))
            (Path(tmp) / "etc" / "ssh").mkdir(parents=True)
            subprocess.run(["ssh-keygen", "-A", "-f", tmp], check=True, capture_output=True)
            keys_dir = Path(tmp) / "etc" / "ssh"
        for key in sorted(keys_dir.iterdir()):
            private = not key.name.endswith(".pub")
            session.write(f"/etc/ssh/{key.name}", key.read_bytes(), mode=0o600 if private else 0o644)


@dataclass
class NetworkArgs:
    address: pulumi.Input[str]
    prefix: pulumi.Input[int]
    gateway: pulumi.Input[str]


@dataclass
class CustomizedImageArgs:
    output_path: pulumi.Input[str]
    root_password: pulumi.Input[str]
    base_image: pulumi.Input[str] | None = None
    base_sha256: pulumi.Input[str] | None = None
    mode: pulumi.Input[str] = "overlay"
    sshd_settings: pulumi.Input[dict[str, str]] | None = None
    nameservers: pulumi.Input[list[str]] | None = None
    hostname: pulumi.Input[str] | None = None
    authorized_keys: pulumi.Input[list[str]] | None = None
    network: pulumi.Input[dict[str, Any]] | None = None


class CustomizedImage(Resource, module="macvtap", name="CustomizedImage"):
    """A qcow2 guest disk (overlay on a base by default) customised offline."""

    path: pulumi.Output[str]
    format: pulumi.Output[str]
    virtual_size: pulumi.Output[int]
    digest: pulumi.Output[str]

    def __init__(self, resource_name: str, args: CustomizedImageArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props, opts = resource_props(
            args, ("path", "format", "virtual_size", "backing_file", "digest", "salt"),
            secrets=("root_password",), opts=opts)
        if isinstance(props.get("network"), NetworkArgs):
            props["network"] = vars(props["network"])
        super().__init__(CustomizedImageProvider(), resource_name, props, opts)
