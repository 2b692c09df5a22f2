"""The Debian bookworm minbase rootfs and the local docker base image imported from it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from macvtap_provider.errors import ImageBuildError
from macvtap_provider.paths import cache_dir

if TYPE_CHECKING:
    import docker

# docker is imported where it is used: recipes and cache paths (the default guest image's
# name, asked for by every preview) need no docker client.

log = logging.getLogger(__name__)

SUITE = "bookworm"
VARIANT = "minbase"
ARCH = "amd64"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
#: Set to use this Debian mirror instead of the one the host's apt sources name.
MIRROR_ENV = "MACVTAP_LAB_DEBIAN_MIRROR"
BASE_IMAGE_REPO = "macvtap-lab/debian-base"
RECIPE_LABEL = "org.macvtap-lab.recipe"
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
#: Bump when the build steps change in a way the recipe dict does not show.
ROOTFS_RECIPE_VERSION = 1

# Shared by every image built on this rootfs: no docs, no man pages, no translations.
DPKG_NODOC = """\
# macvtap-lab: keep lab images small.
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
"""
APT_MINIMAL = """\
// macvtap-lab: install only what is asked for.
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
"""
_ROOTFS_FILES = {
    "etc/dpkg/dpkg.cfg.d/01-macvtap-lab-nodoc": DPKG_NODOC,
    "etc/apt/apt.conf.d/01-macvtap-lab-minimal": APT_MINIMAL,
}
# What debootstrap already installed before DPKG_NODOC existed (copyright files stay).
_PRUNE_GLOBS = ("usr/share/man/*", "usr/share/info/*", "usr/share/lintian/*",
                "var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb")

_IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
)


# ---- pure helpers -------------------------------------------------------------------------


def recipe_hash(recipe: Mapping[str, Any]) -> str:
    """Hex sha256 of a recipe (a JSON-serialisable mapping), independent of key order."""
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _is_main_archive(uri: str, suite: str) -> bool:
    if not uri.startswith(("http://", "https://")):
        return False
    # bookworm-security lives in another archive; -updates/-backports have no full base system.
    return "-" not in suite and "security" not in uri


def parse_mirror(sources: Mapping[str, str], suite: str = SUITE) -> str | None:
    """The first enabled Debian main-archive URI in apt sources, or None.

    Args:
        sources: file name -> text, in the order apt reads them; names ending in ``.sources``
            are deb822 stanzas, the others one-line ``deb [opts] URI SUITE COMPONENTS``.
        suite: the release wanted; an entry for it wins over entries for other releases.

    Returns:
        The URI without a trailing slash, or None when no entry qualifies.
    """
    candidates: list[tuple[str, str]] = []  # (uri, suite)
    for name, text in sources.items():
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = _deb822_fields(stanza)
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" not in fields.get("types", "").split():
                    continue
                for uri in fields.get("uris", "").split():
                    for entry_suite in fields.get("suites", "").split():
                        candidates.append((uri, entry_suite))
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    candidates.append((words[1], words[2]))
    usable = [(uri.rstrip("/"), s) for uri, s in candidates if _is_main_archive(uri, s)]
    for uri, entry_suite in usable:
        if entry_suite == suite:
            return uri
    return usable[0][0] if usable else None


def _deb822_fields(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0] in " \t" and key is not None:  # continuation line
            fields[key] += " " + line.strip()
            continue
        key, _, value = line.partition(":")
        key = key.strip().lower()
        fields[key] = value.strip()
    return fields


def rootfs_recipe(mirror: str) -> dict[str, Any]:
    """Everything that decides the rootfs tarball's content."""
    return {
        "kind": "rootfs",
        "version": ROOTFS_RECIPE_VERSION,
        "suite": SUITE,
        "variant": VARIANT,
        "arch": ARCH,
        # debootstrap writes the mirror into the rootfs's sources.list.
        "mirror": mirror,
        "files": _ROOTFS_FILES,
        "prune": list(_PRUNE_GLOBS),
    }


def base_image_recipe(rootfs_digest: str) -> dict[str, Any]:
    """Everything that decides the docker base image."""
    return {"kind": "base-image", "rootfs": rootfs_digest, "changes": list(_IMPORT_CHANGES)}


# ---- shared plumbing for the image builders -----------------------------------------------


def host_mirror() -> str:
    """The Debian mirror to build from: $MACVTAP_LAB_DEBIAN_MIRROR, the host's apt sources,
    or deb.debian.org."""
    forced = os.environ.get(MIRROR_ENV)
    if forced:
        return forced.rstrip("/")
    sources: dict[str, str] = {}
    files = [APT_SOURCES]
    if APT_SOURCES_DIR.is_dir():
        files += sorted(p for p in APT_SOURCES_DIR.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        with contextlib.suppress(OSError):
            sources[path.name] = path.read_text()
    mirror = parse_mirror(sources)
    if mirror is None:
        log.debug("no Debian mirror in the host's apt sources; using %s", FALLBACK_MIRROR)
        return FALLBACK_MIRROR
    return mirror


@contextlib.contextmanager
def build_lock(name: str) -> Iterator[None]:
    """Serialise builds of one artifact across processes (Pulumi creates resources in
    parallel, and two of them may need the same rootfs)."""
    lock_dir = cache_dir() / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is building %s", name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def image_exists(client: docker.DockerClient, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def image_id(client: docker.DockerClient, tag: str) -> str | None:
    import docker.errors

    try:
        return str(client.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None


def drop_replaced_image(client: docker.DockerClient, old_id: str | None, tag: str) -> None:
    """After a forced rebuild, remove the image `tag` used to name, unless something still
    uses it (a container, or a child image): docker refuses then, and it stays."""
    import docker.errors

    new_id = image_id(client, tag)
    if old_id is None or old_id == new_id:
        return
    try:
        client.images.remove(old_id)
        log.debug("removed %s, the image %s named before the rebuild", old_id, tag)
    except docker.errors.APIError as exc:
        log.debug("keeping %s, the image %s named before the rebuild: %s", old_id, tag, exc)


def run_logged(cmd: Sequence[str], what: str, fix: str) -> None:
    """Run a command, its output lines at DEBUG; on failure raise ImageBuildError with the
    last lines of output, saying `what` failed and `fix`."""
    log.debug("run: %s", " ".join(cmd))
    tail: deque[str] = deque(maxlen=15)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace")
    except OSError as exc:
        raise ImageBuildError(f"{what}: cannot run {cmd[0]} ({exc.strerror}): {fix}") from exc
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            line = line.rstrip()
            log.debug("%s: %s", Path(cmd[0]).name, line)
            tail.append(line)
    if proc.returncode != 0:
        output = "\n  ".join(tail)
        raise ImageBuildError(
            f"{what}: {Path(cmd[0]).name} exited with {proc.returncode}: {fix}\n  {output}")


def remove_tree(path: Path) -> None:
    """rm -rf that first unmounts whatever an interrupted chroot build left mounted inside."""
    if not path.exists():
        return
    prefix = str(path.resolve()).rstrip("/") + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1].replace("\\040", " ") for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        log.debug("unmounting leftover %s", point)
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def export_build_container(base_tag: str, script: str, labels: Mapping[str, str],
                           owner: tuple[str, str], rootfs: Path, what: str) -> None:
    """Run `script` (sh) in a throw-away container FROM `base_tag`; export its files to
    `rootfs` (a tar), then remove the container.

    Args:
        base_tag: the docker image to start from.
        script: the shell script the container runs; it must exit 0.
        labels: labels for the container (e.g. the recipe hash).
        owner: (label, value) marking containers of this build; the caller holds the
            build's lock, so a container carrying it was left by a killed build and goes.
        rootfs: where the exported tar goes.
        what: the artifact, for messages ("guest image", "fixture rhel-like").

    Raises:
        ImageBuildError: dockerd failed or the script exited non-zero (with its last lines).
    """
    import docker.errors

    from macvtap_provider.adapters.docker_api import docker_client

    tail: deque[str] = deque(maxlen=15)
    key, value = owner
    with docker_client() as client:
        try:
            for stale in client.containers.list(all=True, filters={"label": [f"{key}={value}"]}):
                log.info("removing build container %s left by an interrupted build", stale.name)
                stale.remove(force=True)
            container = client.containers.create(
                base_tag, command=["/bin/sh", "-c", script], labels={**labels, key: value})
        except docker.errors.DockerException as exc:
            raise ImageBuildError(
                f"{what}: cannot create the build container from {base_tag} ({exc}): "
                "check dockerd") from exc
        try:
            container.start()
            for chunk in container.logs(stream=True, follow=True):
                for line in chunk.decode(errors="replace").splitlines():
                    log.debug("%s build: %s", what, line)
                    tail.append(line)
            status = container.wait().get("StatusCode", -1)
            if status != 0:
                output = "\n  ".join(tail)
                raise ImageBuildError(
                    f"{what}: the build container's script exited with {status}: check that "
                    f"the Debian mirror is reachable from containers; output:\n  {output}")
            with open(rootfs, "wb") as out:
                # types-docker says str; the SDK yields bytes chunks.
                for data in cast("Iterator[bytes]", container.export()):
                    out.write(data)
        except docker.errors.DockerException as exc:
            raise ImageBuildError(
                f"{what}: the build container failed ({exc}): check dockerd and free "
                f"space under {rootfs.parent}") from exc
        finally:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)


def _remove_stale_work_dirs(directory: Path) -> None:
    # Called under the build lock, so no other build owns these.
    for stale in directory.glob(".work-*"):
        log.info("removing %s left by an interrupted build", stale)
        remove_tree(stale)


# ---- the rootfs tarball -------------------------------------------------------------------


def rootfs_digest(mirror: str | None = None) -> str:
    """The recipe hash of the rootfs for `mirror` (default: host_mirror())."""
    return recipe_hash(rootfs_recipe(mirror or host_mirror()))


def rootfs_path(mirror: str | None = None) -> Path:
    """Where the rootfs tarball of this recipe lives (it may not exist yet)."""
    digest = rootfs_digest(mirror)
    return cache_dir() / "rootfs" / f"debian-{SUITE}-{VARIANT}-{digest[:12]}.tar"


def ensure_rootfs(force: bool = False) -> Path:
    """A `debootstrap --variant=minbase bookworm` rootfs tarball, built once and cached.

    The tarball is built in a work directory and renamed into place, so an interrupted build
    never leaves a partial file; it is keyed by the recipe hash (suite, variant, mirror, the
    small apt/dpkg configuration added to it).

    Args:
        force: rebuild even when the tarball exists.

    Returns:
        The path of the tarball (uncompressed, numeric owners, xattrs).

    Raises:
        ImageBuildError: debootstrap or tar failed.
    """
    mirror = host_mirror()
    target = rootfs_path(mirror)
    if target.exists() and not force:
        log.debug("rootfs %s exists", target)
        return target
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("rootfs: debootstrap is not installed: apt-get install debootstrap")
    target.parent.mkdir(parents=True, exist_ok=True)
    with build_lock("rootfs"):
        if target.exists() and not force:  # built by another process while we waited
            return target
        _remove_stale_work_dirs(target.parent)
        work = Path(tempfile.mkdtemp(prefix=".work-", dir=target.parent))
        try:
            _build_rootfs(mirror, work, target)
        finally:
            remove_tree(work)
    return target


def _build_rootfs(mirror: str, work: Path, target: Path) -> None:
    root = work / "root"
    started = time.monotonic()
    log.info("building the Debian %s rootfs with debootstrap from %s (under a minute)",
             SUITE, mirror)
    run_logged(["debootstrap", f"--variant={VARIANT}", f"--arch={ARCH}", SUITE, str(root), mirror],
               f"rootfs: debootstrap {SUITE} from {mirror}",
               f"check that {mirror} is reachable (or set {MIRROR_ENV} to a reachable mirror)")
    for rel, text in _ROOTFS_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _prune(root)
    partial = work / "rootfs.tar"
    run_logged(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", str(root),
                "-cf", str(partial), "."],
               f"rootfs: packing {root}", f"check free space under {target.parent}")
    os.replace(partial, target)
    log.info("rootfs %s ready (%.0f MB, %.0f s)", target.name, target.stat().st_size / 1e6,
             time.monotonic() - started)


def _prune(root: Path) -> None:
    """Remove what debootstrap installed before DPKG_NODOC existed, and apt's caches."""
    doomed = [path for pattern in _PRUNE_GLOBS for path in root.glob(pattern)]
    doomed += [p for p in (root / "usr/share/doc").glob("*/*") if p.name != "copyright"]
    doomed += [p for p in (root / "usr/share/locale").glob("*") if p.name != "locale.alias"]
    for path in doomed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


# ---- the docker base image ----------------------------------------------------------------


def base_image_digest() -> str:
    """The recipe hash of the base image (its tag is `macvtap-lab/debian-base:<hash12>`)."""
    return recipe_hash(base_image_recipe(rootfs_digest()))


def ensure_base_image(force: bool = False) -> str:
    """The rootfs imported as the local docker image `macvtap-lab/debian-base:<hash12>`.

    Nothing is pulled from a registry: the image comes from ensure_rootfs().

    Args:
        force: re-import even when the tag exists (the rootfs itself is reused).

    Returns:
        The image tag.

    Raises:
        ImageBuildError: dockerd is unreachable or refused the import.
    """
    import docker.errors

    from macvtap_provider.adapters.docker_api import docker_client

    digest = base_image_digest()
    tag = f"{BASE_IMAGE_REPO}:{digest[:12]}"
    with docker_client() as client:
        if not force and image_exists(client, tag):
            log.debug("base image %s exists", tag)
            return tag
    rootfs = ensure_rootfs()
    with build_lock("base-image"), docker_client() as client:
        if not force and image_exists(client, tag):
            return tag
        log.info("importing %s as docker image %s", rootfs.name, tag)
        changes = [*_IMPORT_CHANGES, f"LABEL {RECIPE_LABEL}={digest}"]
        try:
            old_id = image_id(client, tag)
            with open(rootfs, "rb") as src:
                result = client.api.import_image(src=src, repository=BASE_IMAGE_REPO,
                                                 tag=digest[:12], changes=changes)
            log.debug("docker import: %s", str(result).strip())
            client.images.get(tag)
            drop_replaced_image(client, old_id, tag)
        except docker.errors.DockerException as exc:
            raise ImageBuildError(
                f"base image {tag}: docker import of {rootfs} failed ({exc}): check dockerd's "
                f"log and free space; delete {rootfs} to rebuild it if it is damaged") from exc
    return tag
