"""Thin adapter around the libguestfs Python bindings: one launched session per use."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import guestfs

from macvtap_provider.adapters.kvm import kvm_usable
from macvtap_provider.errors import GuestfsError

log = logging.getLogger(__name__)


class GuestSession:
    """A mounted guest filesystem. Paths are guest paths."""

    def __init__(self, g: guestfs.GuestFS, image: str) -> None:
        self._g = g
        self.image = image

    @contextlib.contextmanager
    def _op(self, what: str) -> Iterator[None]:
        try:
            yield
        except RuntimeError as exc:
            raise GuestfsError(f"image {self.image}: {what}: {exc}") from exc

    def exists(self, path: str) -> bool:
        with self._op(f"checking {path}"):
            return bool(self._g.exists(path))

    def is_dir(self, path: str) -> bool:
        with self._op(f"checking {path}"):
            return bool(self._g.is_dir(path))

    def read(self, path: str) -> str:
        with self._op(f"reading {path}"):
            data = self._g.read_file(path)
        return data.decode(errors="replace") if isinstance(data, bytes) else str(data)

    def write(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        """Write a file (parents created), with `mode`; content is never logged."""
        log.debug("guestfs write %s (%d bytes, mode %o)", path, len(content), mode)
        parent = path.rsplit("/", 1)[0] or "/"
        with self._op(f"writing {path}"):
            self._g.mkdir_p(parent)
            self._g.write(path, content.encode() if isinstance(content, str) else content)
            self._g.chmod(mode, path)

    def remove(self, path: str) -> None:
        log.debug("guestfs rm -f %s", path)
        with self._op(f"removing {path}"):
            self._g.rm_f(path)

    def glob(self, pattern: str) -> list[str]:
        with self._op(f"listing {pattern}"):
            return list(self._g.glob_expand(pattern))

    def touch(self, path: str) -> None:
        with self._op(f"creating {path}"):
            self._g.touch(path)


@contextlib.contextmanager
def open_image(image: str, fmt: str = "qcow2", readonly: bool = False) -> Iterator[GuestSession]:
    """Launch one appliance for `image`, mount its root filesystem, yield a session.

    Under TCG (no usable KVM) the launch takes ~12-14 s; callers batch all edits
    into one session.
    """
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        try:
            g.set_backend("direct")
            if not kvm_usable():
                # /dev/kvm may exist yet hang: never let libguestfs probe it.
                g.set_backend_settings(["force_tcg"])
            g.add_drive_opts(image, format=fmt, readonly=readonly)
            log.info("launching the libguestfs appliance for %s (%s)", image,
                     "KVM" if kvm_usable() else "TCG, ~15 s")
            started = time.monotonic()
            g.launch()
            log.debug("appliance up in %.1fs", time.monotonic() - started)
            roots = g.inspect_os()
            if not roots:
                raise GuestfsError(f"image {image}: no operating system found in it; "
                                   "is it a bootable Linux guest image?")
            root = roots[0]
            mounts = g.inspect_get_mountpoints(root)
            for mountpoint in sorted(mounts, key=len):
                g.mount(mounts[mountpoint], mountpoint) if not readonly else \
                    g.mount_ro(mounts[mountpoint], mountpoint)
        except RuntimeError as exc:
            raise GuestfsError(
                f"image {image}: libguestfs failed ({exc}); run `macvtap-lab doctor` to check "
                "the appliance, and that no running domain holds the image") from exc
        session = GuestSession(g, image)
        yield session
        try:
            g.shutdown()
        except RuntimeError as exc:
            raise GuestfsError(f"image {image}: writing changes back failed: {exc}") from exc
    finally:
        g.close()
