"""Guest disks on a remote lab host: a disk customised on this machine is uploaded there.

Chosen over customising on the remote host (libguestfs in the lab's container) because an
overlay is a few MB while libguestfs and its appliance would add ~300 MB to the image every
host receives, plus an appliance build on each host; the customisation itself costs the
same CPU either way. The base reaches each host once: it is kept there under
`<work root>/.bases/<sha256>.qcow2` (verified by sha256 on arrival) and hard-linked beside
each overlay, as the local layout does; the last overlay to go removes it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from macvtap_provider import paths
from macvtap_provider.adapters import remote
from macvtap_provider.adapters.remote_host import RemoteHost, helper_image
from macvtap_provider.builders.endpoint import upload_lock_name
from macvtap_provider.errors import DockerError
from macvtap_provider.images.base import build_lock

log = logging.getLogger(__name__)


def base_store(sha256: str) -> str:
    return str(PurePosixPath(str(paths.work_root())) / ".bases" / f"{sha256}.qcow2")


def place(host: RemoteHost, local_out: Path, out: str, base_link: Path | None,
          base_sha256: str | None, remote_base_link: str | None,
          beside: Sequence[tuple[Path, str]] = ()) -> None:
    """Upload a customised disk to `out` on the host; for an overlay (`base_link` set),
    its base once per host, hard-linked to `remote_base_link` beside it; `beside`: more
    (local file, remote path) pairs to upload with it (a direct-boot kernel and initrd)."""
    image = helper_image()
    with host.docker() as client:
        host.ensure_image(image, client)
        if base_link is not None and base_sha256 and remote_base_link:
            store = base_store(base_sha256)
            # Guests made in parallel share a base: one uploads, the others wait and find it
            # there. An uploader on another machine cannot replace it (replace=False).
            with build_lock(upload_lock_name(host.endpoint, f"base {base_sha256}")):
                if not host.files.exists(store):
                    remote.upload_file(client, image, base_link, store, host.label,
                                       replace=False)
                else:
                    log.info("base %s is already on %s", base_sha256[:12], host.label)
        remote.upload_file(client, image, local_out, out, host.label)
        for local, target in beside:
            remote.upload_file(client, image, local, target, host.label)
    if base_link is not None and base_sha256 and remote_base_link:
        code, text = host.files.run([out, base_store(base_sha256)],
                                    'ln -f "$1" "$2" || cp "$1" "$2"',
                                    base_store(base_sha256), remote_base_link)
        if code != 0:
            raise DockerError(f"linking the base beside {out} on {host.label}: {text.strip()}")


def remove(host: RemoteHost, out: str, base_link: str, beside: Sequence[str] = ()) -> None:
    """Remove a disk, its base link, the files `beside` it and, when no other disk links
    it, the stored base."""
    script = ('b=$2; s=""; [ -e "$b" ] && s=$(ls "$3"/*.qcow2 2>/dev/null | while read f; do '
              '[ "$f" -ef "$b" ] && echo "$f"; done); rm -f "$1" "$b" "$1.tmp"; '
              'if [ -n "$s" ] && [ "$(stat -c %h "$s")" -le 1 ]; then rm -f "$s"; fi; '
              'rmdir "$3" 2>/dev/null; shift 3; rm -f "$@"; true')
    store_dir = str(PurePosixPath(base_store("x")).parent)
    code, text = host.files.run([out, store_dir], script, out, base_link, store_dir, *beside)
    if code != 0:
        raise DockerError(f"removing {out} on {host.label}: {text.strip()}")
    host.files.prune_empty_dirs(str(PurePosixPath(out).parent), levels=2)
