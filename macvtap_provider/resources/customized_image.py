"""CustomizedImage: a guest disk made from a base image and customised offline.

One libguestfs launch applies every edit: root password (stored only as a
SHA-512 crypt hash inside the image), sshd settings, resolver, hostname, SSH
keys, an optional static eth0, fresh SSH host keys, cloud-init disabled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource

from macvtap_provider import paths
from macvtap_provider.adapters import qemu_img
from macvtap_provider.boot_record import boot_files_beside, read_boot_record, sidecar_path
from macvtap_provider.builders import guest_config
from macvtap_provider.builders.endpoint import parse_endpoint
from macvtap_provider.builders.secrets import check_password, customization_digest, new_salt
from macvtap_provider.builders.validation import (
    check_choice,
    check_ipv4_interface,
    check_nameservers,
)
from macvtap_provider.errors import GuestfsError, LabError, SpecError
from macvtap_provider.resources._base import (
    LabProvider,
    check_endpoint,
    fill_defaults,
    input_names,
    is_unknown,
    known,
    known_items,
    output_names,
    resource_props,
    spec_kwargs,
)

__all__ = ["CustomizedImage", "CustomizedImageArgs", "CustomizedImageProvider",
           "CustomizedImageSpec", "NetworkArgs", "StaticNetwork", "base_link_path",
           "marker_path", "sha256_file"]

log = logging.getLogger(__name__)

MODES = ("overlay", "copy")
MARKER_SUFFIX = ".macvtap-lab.json"


@dataclass(frozen=True)
class StaticNetwork:
    address: str
    prefix: int
    gateway: str


@dataclass(frozen=True)
class CustomizedImageSpec:
    """An image's inputs, validated, with their defaults (the only place they are set)."""

    #: "" is filled in by `check`: the locally built Debian guest (built when missing).
    base_image: Path
    output_path: Path
    root_password: str = field(repr=False)
    mode: str = "overlay"
    sshd_settings: dict[str, str] = field(
        default_factory=lambda: dict(guest_config.DEFAULT_SSHD_SETTINGS))
    nameservers: tuple[str, ...] = ()
    hostname: str = "lab-guest"
    authorized_keys: tuple[str, ...] = ()
    network: StaticNetwork | None = None
    base_sha256: str | None = None
    docker_host: str | None = None

    @staticmethod
    def from_props(props: dict[str, Any]) -> CustomizedImageSpec:
        kwargs = spec_kwargs(CustomizedImageSpec, props)
        net = kwargs.get("network")
        kwargs.update(
            base_image=Path(kwargs["base_image"]), output_path=Path(kwargs["output_path"]),
            sshd_settings=dict(kwargs.get("sshd_settings") or {}) or
            dict(guest_config.DEFAULT_SSHD_SETTINGS),
            nameservers=tuple(kwargs.get("nameservers") or ()),
            authorized_keys=tuple(kwargs.get("authorized_keys") or ()),
            network=StaticNetwork(net["address"], int(net["prefix"]), net["gateway"])
            if net else None,
            base_sha256=kwargs.get("base_sha256") or None)
        return CustomizedImageSpec(**kwargs)


@dataclass
class NetworkArgs:
    """A static IPv4 configuration written into the image (ifupdown eth0)."""

    address: pulumi.Input[str]
    prefix: pulumi.Input[int]
    gateway: pulumi.Input[str]


@dataclass
class CustomizedImageArgs:
    """Inputs of a CustomizedImage; None: the default of `CustomizedImageSpec`."""

    #: Where the qcow2 is written (an absolute path ending in .qcow2).
    output_path: pulumi.Input[str]
    #: root's password (secret; only its SHA-512 crypt hash enters the image).
    root_password: pulumi.Input[str]
    #: A qcow2 base image (default: the locally built Debian guest).
    base_image: pulumi.Input[str] | None = None
    #: The base's expected sha256 (checked in `check`).
    base_sha256: pulumi.Input[str] | None = None
    #: overlay (a qcow2 overlay on the base) or copy (a full copy).
    mode: pulumi.Input[str] | None = None
    #: sshd_config keyword -> value, winning over drop-ins (default: root login by password).
    sshd_settings: pulumi.Input[dict[str, str]] | None = None
    #: /etc/resolv.conf's resolvers (lab addresses only; default: none).
    nameservers: pulumi.Input[list[str]] | None = None
    #: The guest's hostname.
    hostname: pulumi.Input[str] | None = None
    #: root's authorized SSH public keys.
    authorized_keys: pulumi.Input[list[str]] | None = None
    #: A static eth0 (default: none; the guest is configured at boot or on its console).
    network: pulumi.Input[NetworkArgs] | pulumi.Input[dict[str, Any]] | None = None
    #: The docker endpoint of the host the disk is for (default: this machine). Off this
    #: machine the disk is customised here and uploaded there, its base once per host.
    docker_host: pulumi.Input[str] | None = None


def base_link_path(output: Path) -> Path:
    """Where an overlay's base is linked, beside it (so the relative backing path works in
    the container too, where only the work directory is mounted)."""
    return output.with_name(output.stem + ".base" + output.suffix)


def marker_path(output: Path) -> Path:
    return output.with_name(output.name + MARKER_SUFFIX)


# Inputs whose change means a new image (all of them but the secret, compared by digest).
PUBLIC_INPUTS = input_names(CustomizedImageArgs, exclude=("root_password",))


def public_fields(props: dict[str, Any]) -> dict[str, Any]:
    # docker_host came later: unset, it stays out, so that older states' digests still match.
    return {k: props.get(k) for k in PUBLIC_INPUTS
            if k != "docker_host" or props.get(k) is not None}


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


def _check_remote_output_path(value: object) -> str:
    out = str(value)
    if not out.startswith("/") or not out.endswith(".qcow2"):
        raise SpecError("output_path", f"{value!r} must be an absolute path ending in .qcow2")
    return out


def _remote(props: dict[str, Any]) -> bool:
    """True when the disk is for a docker host off this machine."""
    value = props.get("docker_host")
    return bool(value) and not is_unknown(value) and not parse_endpoint(str(value)).is_local


def _check_base(props: dict[str, Any]) -> None:
    base = Path(str(props["base_image"]))
    default = paths.default_guest_image()
    if base == default and not base.exists():
        return  # the embedded default: built locally at create time
    if not base.is_file():
        raise SpecError("base_image", f"{base} does not exist: build the default guest image "
                        "(macvtap-lab images build) or point base_image at a qcow2 file")
    if paths.is_default_guest_image(base) and sidecar_path(base).is_file():
        fmt: str | None = "qcow2"  # built here, complete per its sidecar: no qemu-img
    else:
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
        # Only these: the others' absent values take part, as given, in the digest.
        fill_defaults(props, CustomizedImageSpec, only=("mode", "sshd_settings", "hostname"))
        known(props, "mode", lambda v: check_choice(v, "mode", MODES))
        check_endpoint(props)
        if _remote(props):  # the path is on that host: only its form is checked here
            known(props, "output_path", _check_remote_output_path)
        else:
            known(props, "output_path", _check_output_path)
        if not is_unknown(props["base_image"]):
            _check_base(props)
        known(props, "root_password", check_password)
        if props.get("root_password") is None:
            raise SpecError("root_password", "is required: set it (as a secret)")
        settings = props["sshd_settings"]
        if not is_unknown(settings):
            if not isinstance(settings, dict):
                raise SpecError("sshd_settings", "must be a mapping of sshd_config keyword to value")
            props["sshd_settings"] = guest_config.check_sshd_settings(settings)
        ns = known(props, "nameservers", lambda v: known_items(v, check_nameservers))
        if ns is not None:
            props["nameservers"] = list(ns)
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
        old_base, new_base = olds.get("base_image"), news.get("base_image")
        if (old_base != new_base and isinstance(old_base, str) and isinstance(new_base, str)
                and paths.is_default_guest_image(old_base)
                and paths.is_default_guest_image(new_base)):
            # A new default image (a library upgrade changed its recipe) is for new
            # guests: an existing one keeps its base, linked beside its overlay.
            news = {**news, "base_image": old_base}
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
        if _remote(props):
            return self._create_remote(spec, props)
        return CreateResult(str(spec.output_path), self._create_local(spec, props))

    def _create_remote(self, spec: CustomizedImageSpec, props: dict[str, Any]) -> CreateResult:
        """Customise in a private staging directory here, then upload (adapters/remote_disk)."""
        import dataclasses
        import shutil
        import tempfile

        from macvtap_provider.adapters import remote_disk
        from macvtap_provider.adapters.remote_host import RemoteHost

        host = RemoteHost(str(spec.docker_host))
        out = str(spec.output_path)
        staging_root = paths.cache_dir() / "remote-stage"
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="disk-", dir=staging_root))
        try:
            local_out = staging / spec.output_path.name
            outs = self._create_local(dataclasses.replace(spec, output_path=local_out), props)
            overlay = spec.mode == "overlay"
            base = base_link_path(local_out) if overlay else None
            # A direct-boot kernel and initrd travel with the disk (qemu runs there).
            boot = [(local, str(target)) for local, target in zip(
                boot_files_beside(local_out), boot_files_beside(spec.output_path), strict=True)
                if local.exists()]
            remote_disk.place(host, local_out, out, base,
                              sha256_file(base) if base is not None else None,
                              str(base_link_path(spec.output_path)) if overlay else None,
                              beside=boot)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        outs["path"] = out
        remote_kernel, remote_initrd = (str(p) for p in boot_files_beside(spec.output_path))
        placed = {target for _, target in boot}
        outs["kernel_path"] = remote_kernel if remote_kernel in placed else ""
        outs["initrd_path"] = remote_initrd if remote_initrd in placed else ""
        return CreateResult(out, outs)

    def _create_local(self, spec: CustomizedImageSpec, props: dict[str, Any]) -> dict[str, Any]:
        out = spec.output_path
        self._claim(out)
        started = time.monotonic()
        try:
            # Imported here: programs and previews never customise an image.
            from macvtap_provider.images import customize

            customize.BATCHER.run(spec)  # isolated, sharing launches with concurrent creates
        except BaseException:
            self._remove_files(out)
            raise
        log.info("image %s customised in %.1fs", out, time.monotonic() - started)
        salt = new_salt()
        outs = {k: v for k, v in props.items() if k != "root_password"}
        record = read_boot_record(spec.base_image)
        outs.update(self._describe(out), salt=salt,
                    kernel_cmdline=record.cmdline if record is not None else "",
                    digest=customization_digest(public_fields(props), spec.root_password, salt))
        return outs

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
    def _describe(out: Path) -> dict[str, Any]:
        info = qemu_img.info(out)
        kernel, initrd = boot_files_beside(out)
        return {"path": str(out), "format": info.get("format"),
                "virtual_size": int(info.get("virtual-size") or 0),
                "backing_file": info.get("backing-filename") or "",
                "kernel_path": str(kernel) if kernel.exists() else "",
                "initrd_path": str(initrd) if initrd.exists() else ""}

    # -- read / delete --------------------------------------------------------------------
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        if _remote(props):
            from macvtap_provider.adapters.remote_host import RemoteHost

            host = RemoteHost(str(props["docker_host"]))
            if not host.files.exists(str(props.get("output_path") or id_)):
                return self.read_missing()
            return ReadResult(id_, dict(props))
        out = Path(props.get("output_path") or id_)
        if not out.exists():
            return self.read_missing()
        return ReadResult(id_, {**props, **self._describe(out)})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        if _remote(props):
            from macvtap_provider.adapters import remote_disk
            from macvtap_provider.adapters.remote_host import RemoteHost

            host = RemoteHost(str(props["docker_host"]))
            target = str(props.get("output_path") or id_)
            if host.files.image_in_use(target):
                raise GuestfsError(f"{target} on {host.label} is still attached to a running "
                                   "domain: destroy the domain first")
            log.info("removing image %s on %s", target, host.label)
            remote_disk.remove(host, target, str(base_link_path(Path(target))),
                               beside=[str(p) for p in boot_files_beside(Path(target))])
            return
        out = Path(props.get("output_path") or id_)
        if out.exists() and qemu_img.in_use(out):
            raise GuestfsError(f"{out} is still attached to a running domain: destroy the "
                               "domain first")
        log.info("removing image %s", out)
        self._remove_files(out)

    @staticmethod
    def _remove_files(out: Path) -> None:
        for path in (out, base_link_path(out), out.with_name(out.name + ".tmp"), marker_path(out),
                     *boot_files_beside(out)):
            path.unlink(missing_ok=True)
        paths.prune_empty_dirs(out.parent, levels=2)  # images/ and the work dir


class CustomizedImage(Resource, module="macvtap", name="CustomizedImage"):
    """A qcow2 guest disk (overlay on a base by default) customised offline."""

    output_path: pulumi.Output[str]
    base_image: pulumi.Output[str]
    base_sha256: pulumi.Output[str | None]
    mode: pulumi.Output[str]
    sshd_settings: pulumi.Output[dict[str, str]]
    nameservers: pulumi.Output[list[str] | None]
    hostname: pulumi.Output[str]
    authorized_keys: pulumi.Output[list[str] | None]
    network: pulumi.Output[dict[str, Any] | None]
    docker_host: pulumi.Output[str | None]
    #: The image's path (= output_path; also its Pulumi id).
    path: pulumi.Output[str]
    #: qcow2.
    format: pulumi.Output[str]
    #: The disk's virtual size in bytes.
    virtual_size: pulumi.Output[int]
    #: The overlay's backing file, relative to it ("" for a copy).
    backing_file: pulumi.Output[str]
    #: A salted digest of everything applied to it (no password hash): a changed
    #: customisation (a new password too) changes it, so domains using it are replaced.
    digest: pulumi.Output[str]
    #: The digest's salt.
    salt: pulumi.Output[str]
    #: For direct kernel boot (MacvtapDomain `kernel`): the base's kernel, linked beside
    #: the disk; "" when the base has no boot record (a cloud image boots its own way).
    kernel_path: pulumi.Output[str]
    #: The matching initramfs beside the disk ("" when none).
    initrd_path: pulumi.Output[str]
    #: The kernel command line of the base's boot record ("" when none).
    kernel_cmdline: pulumi.Output[str]

    def __init__(self, resource_name: str, args: CustomizedImageArgs,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        props, opts = resource_props(args, OUTPUTS, secrets=("root_password",), opts=opts)
        if isinstance(props.get("network"), NetworkArgs):
            props["network"] = vars(props["network"])
        super().__init__(CustomizedImageProvider(), resource_name, props, opts)


OUTPUTS = output_names(CustomizedImage, CustomizedImageArgs)
