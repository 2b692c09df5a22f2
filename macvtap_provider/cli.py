"""The `macvtap-lab` command: `console`, `ssh`, `status`, `doctor`, `images build|status`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from macvtap_provider.errors import LabError

log = logging.getLogger("macvtap_provider.cli")

#: Repository prefix of every docker image the project builds.
IMAGE_REPO_PREFIX = "macvtap-lab/"


def _build_parser() -> argparse.ArgumentParser:
    from macvtap_provider.doctor import CHECKS

    parser = argparse.ArgumentParser(
        prog="macvtap-lab", description="Build and check a macvtap virtualisation lab host.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    doctor = sub.add_parser("doctor", help="check that this host can run a lab")
    doctor.add_argument("--json", action="store_true", help="print the results as JSON")
    doctor.add_argument("--skip", action="append", default=[], metavar="CHECK[,CHECK...]",
                        help=f"checks not to run: {', '.join(CHECKS)}")

    images = sub.add_parser("images", help="build or inspect the lab's local images")
    images_sub = images.add_subparsers(dest="images_command", required=True, metavar="ACTION")
    build = images_sub.add_parser("build", help="build what is missing (nothing is pulled)")
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    build.add_argument("--only", choices=("libvirt", "guest"),
                       help="build only the libvirt container image or only the guest image")
    images_sub.add_parser("status", help="show what is built and where")
    _add_lab_commands(sub)
    return parser


def _stack_options(parser: argparse.ArgumentParser, guest: bool = True) -> None:
    parser.add_argument("-s", "--stack", help="the stack (default: the selected one, as "
                        "`make up` / `pulumi stack select` left it)")
    parser.add_argument("-C", "--project-dir", type=Path, metavar="DIR",
                        help="the Pulumi project (default: the nearest Pulumi.yaml from here)")
    if guest:
        parser.add_argument("-g", "--guest", metavar="NAME",
                            help="the guest's domain name (needed when the stack has several)")


def _add_lab_commands(sub: Any) -> None:
    console = sub.add_parser(
        "console", help="attach to a guest's serial console (leave with Ctrl-])",
        description="Attach this terminal to the guest's serial console through the lab's "
                    "libvirt, as `virsh console` does; works with the guest's network down. "
                    "Leave with Ctrl-].")
    _stack_options(console)
    console.add_argument("--login", action="store_true",
                         help="log in as root with the stack's password first")
    console.add_argument("--force", action="store_true",
                         help="take the console over from another session")
    ssh = sub.add_parser(
        "ssh", help="log in to a guest over ssh from a probe container on the lab network",
        description="Log in as root from a throw-away container on the lab's docker network, "
                    "with the stack's root password (typed on a terminal, never in argv or "
                    "an environment) or a key the image authorises. Exits with the remote "
                    "command's status.")
    _stack_options(ssh)
    ssh.add_argument("-i", "--identity", type=Path, metavar="FILE",
                     help="a private key (default: the one matching the image's "
                          "authorized_keys in ~/.ssh, else the password)")
    ssh.add_argument("remote", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                     help="a command to run instead of a login shell")
    status = sub.add_parser(
        "status", help="each guest's live state against the stack's outputs",
        description="One table per guest, read live: domain state, guest IP, mac_matches, "
                    "whether the container still holds the address, TCP 22. Drift against "
                    "the stack's outputs is flagged with the command that heals it; exits 1 "
                    "when something drifted.")
    _stack_options(status)


class _CliHandler(logging.StreamHandler[TextIO]):
    """Marks the handler main() installs, so a second main() replaces only its own."""


def _setup_logging(verbose: bool) -> None:
    handler = _CliHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           "%H:%M:%S"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _CliHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        # docker-py and urllib3 talk a lot at INFO/DEBUG about every API call.
        for noisy in ("urllib3", "docker"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from macvtap_provider import doctor

    def progress(result: doctor.CheckResult) -> None:
        log.info("%s: %s", result.name, result.status.value)

    results = doctor.run_checks(args.skip, on_result=progress)
    out = doctor.format_json(results) if args.json else doctor.format_report(results)
    sys.stdout.write(out)
    return doctor.exit_code(results)


def _cmd_images_build(args: argparse.Namespace) -> int:
    from macvtap_provider import images

    built: dict[str, Any]
    if args.only == "libvirt":
        from macvtap_provider.images import libvirt_image

        built = {"libvirt_image": libvirt_image.ensure_libvirt_image(force=args.force)}
    elif args.only == "guest":
        from macvtap_provider.images import guest_image

        built = {"guest_image": guest_image.ensure_guest_image(force=args.force)}
    else:
        built = dict(images.ensure_all(force=args.force))
    for name, where in built.items():
        sys.stdout.write(f"{name}: {where}\n")
    return 0


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.0f} MiB"


def _cmd_images_status(args: argparse.Namespace) -> int:
    from macvtap_provider.adapters import docker_api
    from macvtap_provider.paths import cache_dir, default_guest_image

    lines = [f"cache: {cache_dir()}"]
    rootfs_dir = cache_dir() / "rootfs"
    tarballs = sorted(rootfs_dir.glob("*.tar")) if rootfs_dir.is_dir() else []
    for tar in tarballs:
        lines.append(f"rootfs: {tar} ({_size(tar)})")
    if not tarballs:
        lines.append(f"rootfs: none in {rootfs_dir}")
    try:
        with docker_api.docker_client() as client:
            tags = docker_api.image_tags(client, IMAGE_REPO_PREFIX)
    except LabError as exc:
        lines.append(f"docker images: dockerd not reachable ({exc}); run `macvtap-lab doctor`")
    else:
        for tag, size, short_id in tags:
            lines.append(f"docker image: {tag} ({short_id}, {size / 2**20:.0f} MiB)")
        if not tags:
            lines.append(f"docker images: none named {IMAGE_REPO_PREFIX}*")
    guest = default_guest_image()
    lines.append(f"guest image: {guest} ({_size(guest)})" if guest.exists()
                 else f"guest image: not built ({guest})")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def remote_command(words: list[str]) -> list[str]:
    """The command after `macvtap-lab ssh [options] --`."""
    return words[1:] if words[:1] == ["--"] else words


def _cmd_lab(args: argparse.Namespace) -> int:
    from macvtap_provider import operate

    sel = operate.Selection(args.project_dir, args.stack, args.guest)
    if args.command == "console":
        return operate.console(sel, login=args.login, force=args.force)
    if args.command == "ssh":
        return operate.ssh(sel, remote_command(args.remote), identity=args.identity)
    return operate.lab_status(sel)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `macvtap-lab` command line; returns the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.command == "doctor":
            return _cmd_doctor(args)
        if args.command in ("console", "ssh", "status"):
            return _cmd_lab(args)
        if args.images_command == "build":
            return _cmd_images_build(args)
        return _cmd_images_status(args)
    except LabError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
