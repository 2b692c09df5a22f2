"""Customising a guest image offline: the disk (overlay or copy of a base), then the
edits, applied in one mounted libguestfs session per image.

The edits are `STEPS`, applied in order; each step reads what it needs from the image and
writes through the session, so a new edit (another network-config flavour, an SELinux
relabel...) is one more function in that tuple. Several images share one appliance
launch (`build_images`), batched across concurrent creates by `BATCHER`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from macvtap_provider import paths
from macvtap_provider.adapters import qemu_img, ssh_keygen
from macvtap_provider.adapters.isolate import Batcher
from macvtap_provider.adapters.lab_host import LocalFiles
from macvtap_provider.boot_record import boot_files_beside, read_boot_record
from macvtap_provider.builders import guest_config
from macvtap_provider.builders.secrets import sha512_crypt
from macvtap_provider.errors import GuestfsError, LabError, SharedApplianceError, SpecError
from macvtap_provider.resources.customized_image import base_link_path

if TYPE_CHECKING:
    from macvtap_provider.adapters.guestfs_api import GuestSession
    from macvtap_provider.resources.customized_image import CustomizedImageSpec

log = logging.getLogger(__name__)

#: Creates arriving within this window of the first share its appliance launch (the
#: window overlaps the start-up of the isolated interpreter, so costs a single image little).
BATCH_WINDOW_S = 0.3


def make_disk(spec: CustomizedImageSpec) -> None:
    """The output disk: a qcow2 overlay on (a link to) the base, or a full copy; and when
    the base has a boot record, its kernel and initrd linked beside the disk (where the
    libvirt container, which mounts only the lab's work directory, can open them)."""
    out = spec.output_path
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.unlink(missing_ok=True)
    files = LocalFiles()
    if spec.mode == "overlay":
        link = base_link_path(out)
        files.link_or_copy(str(spec.base_image), str(link))
        qemu_img.create_overlay(link, tmp_out)
    else:
        log.info("copying %s (mode copy)", spec.base_image)
        qemu_img.copy(spec.base_image, tmp_out)
    record = read_boot_record(spec.base_image)
    if record is not None:
        kernel, initrd = boot_files_beside(out)
        files.link_or_copy(str(record.kernel), str(kernel))
        if record.initrd is not None:
            files.link_or_copy(str(record.initrd), str(initrd))
    tmp_out.replace(out)


# -- the edits ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepContext:
    """What the steps share beyond the spec."""

    #: Today's day number (/etc/shadow's "last changed"; 0 would force a change at login).
    day: int
    #: A directory of SSH host keys made for this image.
    host_keys: Path


Step = Callable[["GuestSession", "CustomizedImageSpec", StepContext], None]


def set_root_password(session: GuestSession, spec: CustomizedImageSpec,
                      ctx: StepContext) -> None:
    """root's SHA-512 crypt hash in /etc/shadow (the password itself never lands)."""
    shadow = session.read("/etc/shadow")
    session.write("/etc/shadow", guest_config.shadow_with_root_hash(
        shadow, sha512_crypt(spec.root_password), ctx.day), mode=0o640)


def edit_sshd(session: GuestSession, spec: CustomizedImageSpec, _ctx: StepContext) -> None:
    sshd = session.read("/etc/ssh/sshd_config") if session.exists("/etc/ssh/sshd_config") else ""
    session.write("/etc/ssh/sshd_config", guest_config.edit_sshd_config(sshd, spec.sshd_settings))


def set_resolver(session: GuestSession, spec: CustomizedImageSpec, _ctx: StepContext) -> None:
    if session.is_symlink("/etc/resolv.conf"):
        # systemd-resolved's stub (../run/...): it points outside the image's files.
        session.remove("/etc/resolv.conf")
    session.write("/etc/resolv.conf", guest_config.resolv_conf(spec.nameservers))


def set_hostname(session: GuestSession, spec: CustomizedImageSpec, _ctx: StepContext) -> None:
    for path, text in guest_config.hostname_files(spec.hostname).items():
        session.write(path, text)


def add_authorized_keys(session: GuestSession, spec: CustomizedImageSpec,
                        _ctx: StepContext) -> None:
    if spec.authorized_keys:
        session.write("/root/.ssh/authorized_keys",
                      guest_config.authorized_keys(spec.authorized_keys), mode=0o600)


def network_facts(session: GuestSession) -> frozenset[str]:
    """The paths of `guest_config.NETWORK_PROBES` and netplan files the image has."""
    found = {p for p in guest_config.NETWORK_PROBES
             if session.exists(p) or session.is_symlink(p)}
    return frozenset(found | set(session.glob(guest_config.NETPLAN_GLOB)))


def write_static_network(session: GuestSession, spec: CustomizedImageSpec,
                         _ctx: StepContext) -> None:
    """A static NIC in the format of the stack the guest really uses, or none: then the
    guest is configured at boot or on its console (the lab's files are removed)."""
    net = spec.network
    if not net:
        for path in (guest_config.IFUPDOWN_FILE, guest_config.NETPLAN_FILE,
                     guest_config.NETWORKD_FILE, guest_config.NM_KEYFILE, guest_config.NM_CONF):
            session.remove(path)
        return
    found = network_facts(session)
    try:
        stack = guest_config.detect_network_stack(found)
    except SpecError as exc:
        raise GuestfsError(f"image {spec.output_path}: {exc}") from None
    log.info("image %s: static network for %s", spec.output_path, stack)
    args = (net.address, net.prefix, net.gateway, spec.nameservers)
    if stack == "ifupdown":
        session.write(guest_config.IFUPDOWN_FILE, guest_config.interfaces_eth0(*args))
    elif stack == "netplan":
        own = sorted(p for p in found if p.startswith("/etc/netplan/")
                     and p != guest_config.NETPLAN_FILE)
        renderer = guest_config.netplan_renderer([session.read(p) for p in own])
        for path in own:  # else they may claim the NIC first (DHCP that never answers)
            session.rename(path, path + guest_config.NETPLAN_OFF_SUFFIX)
        session.write(guest_config.NETPLAN_FILE,
                      guest_config.netplan_static(*args, renderer=renderer), mode=0o600)
    elif stack == "networkd":
        session.write(guest_config.NETWORKD_FILE, guest_config.networkd_static(*args))
    else:
        # NetworkManager ignores keyfiles that others can read.
        session.write(guest_config.NM_KEYFILE, guest_config.nm_keyfile(*args), mode=0o600)
        session.write(guest_config.NM_CONF, guest_config.NM_NO_AUTO_DEFAULT)


def disable_cloud_init(session: GuestSession, _spec: CustomizedImageSpec,
                       _ctx: StepContext) -> None:
    if session.is_dir("/etc/cloud"):
        # cloud-init would stall boot looking for a metadata server.
        session.touch("/etc/cloud/cloud-init.disabled")


def replace_host_keys(session: GuestSession, _spec: CustomizedImageSpec,
                      ctx: StepContext) -> None:
    """This clone's own SSH host keys instead of the base image's."""
    for old in session.glob("/etc/ssh/ssh_host_*"):
        session.remove(old)
    for key in sorted(ctx.host_keys.iterdir()):
        private = not key.name.endswith(".pub")
        session.write(f"/etc/ssh/{key.name}", key.read_bytes(), mode=0o600 if private else 0o644)


def empty_machine_id(session: GuestSession, _spec: CustomizedImageSpec,
                     _ctx: StepContext) -> None:
    """An empty (not absent) /etc/machine-id: systemd makes each clone its own at boot."""
    if session.exists("/etc/machine-id") and session.read("/etc/machine-id").strip():
        session.truncate("/etc/machine-id")


#: Where the steps write: relabelled as a whole (setfiles stays on one filesystem).
RELABELLED = ("/etc", "/root")


def relabel_selinux(session: GuestSession, spec: CustomizedImageSpec,
                    _ctx: StepContext) -> None:
    """On an SELinux guest, the labels its own policy gives the files written (the last
    step): an unlabelled host key or authorized_keys makes an enforcing sshd refuse it."""
    if not session.exists("/etc/selinux/config"):
        return
    policy = guest_config.selinux_type(session.read("/etc/selinux/config"))
    if policy is None:
        return
    contexts = guest_config.file_contexts_path(policy)
    if not session.exists(contexts):
        raise GuestfsError(f"image {spec.output_path}: /etc/selinux/config loads policy "
                           f"{policy!r} but {contexts} is missing: install the policy in the "
                           "image or set SELINUX=disabled there")
    started = time.monotonic()
    how = session.relabel(contexts, RELABELLED)
    log.info("image %s: SELinux labels of %s set (%s, policy %s) in %.1fs", spec.output_path,
             " ".join(RELABELLED), how, policy, time.monotonic() - started)


STEPS: tuple[Step, ...] = (
    set_root_password, edit_sshd, set_resolver, set_hostname, add_authorized_keys,
    write_static_network, disable_cloud_init, replace_host_keys, empty_machine_id,
    relabel_selinux,
)


def customize(session: GuestSession, spec: CustomizedImageSpec, ctx: StepContext) -> None:
    """Every edit, in one mounted session."""
    for step in STEPS:
        log.debug("image %s: %s", spec.output_path, step.__name__)
        step(session, spec, ctx)


# -- many images, one launch -------------------------------------------------------------


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
            make_disk(spec)
            todo.append(i)
        except Exception as exc:  # noqa: BLE001 - reported per image, the others go on
            failed(i, exc)
    if not todo:
        return errors
    day = int(time.time() // 86400)
    alone: list[int] = []  # LVM or btrfs images: each in an appliance of its own
    while todo:
        with ssh_keygen.host_key_sets(len(todo)) as keys, guestfs_api.open_images(
                [str(specs[i].output_path) for i in todo]) as appliance:
            for slot, i in enumerate(todo):
                try:
                    with appliance.session(slot) as session:
                        customize(session, specs[i], StepContext(day, keys(slot)))
                except SharedApplianceError as exc:
                    log.info("%s", exc)
                    alone.append(i)
                except Exception as exc:  # noqa: BLE001 - reported per image, the others go on
                    failed(i, exc)
        todo, alone = alone[:1], alone[1:]
    return errors


#: CustomizedImage creates that arrive together in one provider process share isolated
#: appliance launches, one per CPU at most: a stack with several guests customises all
#: its images in one or two launches (~12 s each under TCG) instead of one per image.
#: libguestfs forks, so it never runs inside the provider's gRPC process.
BATCHER: Batcher[CustomizedImageSpec] = Batcher(
    build_images, window_s=BATCH_WINDOW_S, error=GuestfsError,
    describe=lambda spec: f"image {spec.output_path}", what="libguestfs launch")
