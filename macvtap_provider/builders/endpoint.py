"""Docker endpoints: parse and validate `docker_host` with its ssh/TLS settings, and build
the ssh command that reaches a remote engine (pure: no I/O).

The settings ride in the endpoint URL's query, as libvirt's URIs carry theirs, so that the
one `docker_host` input of every resource says everything about the host:

    ssh://root@10.0.0.5?keyfile=/home/me/.ssh/lab&known_hosts=/home/me/.ssh/lab_known
    tcp://10.0.0.5:2376?tls_ca=/etc/lab/ca.pem&tls_cert=/etc/lab/cert.pem&tls_key=/etc/lab/key.pem

They name files on the machine that runs Pulumi (never their content: the state keeps
the URL).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from macvtap_provider.errors import SpecError

SCHEMES = ("unix", "tcp", "ssh")
#: The engine's socket on a remote host reached over ssh (what `docker -H ssh://` dials).
REMOTE_DOCKER_SOCKET = "/var/run/docker.sock"
#: Settings in the URL's query (parameter -> DockerEndpoint field).
SETTING_INPUTS = {"keyfile": "ssh_key", "known_hosts": "known_hosts",
                  "tls_ca": "tls_ca_cert", "tls_cert": "tls_cert", "tls_key": "tls_key"}


@dataclass(frozen=True)
class DockerEndpoint:
    """Where a lab's docker engine is, and how to reach it safely.

    `url` None is the local default (DOCKER_HOST or the local socket). ssh:// endpoints are
    reached by an ssh tunnel to the remote engine's socket (host key checked against
    `known_hosts`, or the user's own known_hosts when unset); tcp:// endpoints off this
    machine need TLS client settings.
    """

    url: str | None = None
    ssh_key: str | None = None
    known_hosts: str | None = None
    tls_ca_cert: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme if self.url else "unix"

    @property
    def host(self) -> str | None:
        return urlsplit(self.url).hostname if self.url else None

    @property
    def port(self) -> int | None:
        return urlsplit(self.url).port if self.url else None

    @property
    def user(self) -> str | None:
        return urlsplit(self.url).username if self.url else None

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca_cert or self.tls_cert or self.tls_key)

    @property
    def is_local(self) -> bool:
        """True when the engine runs on this machine (its paths and PIDs are ours): the local
        socket, or tcp:// to a loopback address. An ssh:// endpoint is always treated as
        remote, even to localhost: everything then goes over the wire."""
        if self.scheme == "unix":
            return True
        if self.scheme == "tcp":
            return _is_loopback(self.host or "")
        return False

    @property
    def label(self) -> str:
        """How messages name the host: `root@10.0.0.5`, `tcp://h:2376`, `the local engine`."""
        if self.url is None:
            return "the local engine"
        if self.scheme == "ssh":
            return f"{self.user}@{self.host}" if self.user else str(self.host)
        return self.url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_endpoint(url: str | None) -> DockerEndpoint:
    """The endpoint a `docker_host` value names (None or "": the local default).

    Raises:
        SpecError: a query parameter is unknown, repeated or empty.
    """
    if not url:
        return DockerEndpoint()
    parts = urlsplit(url)
    settings: dict[str, str] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if name not in SETTING_INPUTS:
            raise SpecError("docker_host", f"unknown setting {name!r} in {url!r}: use "
                                           f"{', '.join(SETTING_INPUTS)}")
        if len(values) != 1 or not values[0].startswith("/"):
            raise SpecError("docker_host", f"{name} in {url!r} must be one absolute path")
        settings[SETTING_INPUTS[name]] = values[0]
    return DockerEndpoint(url=parts._replace(query="").geturl(), **settings)


def endpoint_from_props(props: Mapping[str, Any], key: str = "docker_host") -> DockerEndpoint:
    """The endpoint a resource's props name."""
    value = props.get(key)
    return parse_endpoint(str(value) if value else None)


def validate_endpoint(endpoint: DockerEndpoint) -> list[SpecError]:
    """Every problem with an endpoint's settings, as SpecErrors (empty: fine).

    The URL's own shape is check_docker_host's (builders/validation). Files (key,
    known-hosts, TLS) are not opened here: `check` may run where they are not yet, and
    the provider reads them when it connects.
    """
    parts = urlsplit(endpoint.url or "")
    errors: list[SpecError] = []
    if parts.scheme == "ssh":
        if parts.password is not None:
            errors.append(SpecError("docker_host", "a password in an ssh:// URL would be stored "
                                                   "in the state: use keyfile= instead"))
        errors += [SpecError("docker_host", f"{n} applies to tcp:// endpoints only")
                   for n, f in SETTING_INPUTS.items() if n.startswith("tls") and getattr(endpoint, f)]
    elif endpoint.ssh_key or endpoint.known_hosts:
        errors += [SpecError("docker_host", f"{n} applies to ssh:// endpoints only")
                   for n in ("keyfile", "known_hosts") if getattr(endpoint, SETTING_INPUTS[n])]
    if parts.scheme == "tcp" and not errors and not endpoint.is_local:
        missing = [n for n, f in SETTING_INPUTS.items()
                   if n.startswith("tls") and not getattr(endpoint, f)]
        if missing:
            errors.append(SpecError(
                "docker_host", f"{endpoint.url!r}: a docker engine on TCP without TLS is root for "
                f"anyone who reaches the port: add {', '.join(missing)} (the engine's CA, a client "
                "certificate and its key) to the URL's query, or use ssh://"))
    return errors


def ssh_tunnel_argv(endpoint: DockerEndpoint, local_socket: str,
                    remote_socket: str = REMOTE_DOCKER_SOCKET,
                    connect_timeout_s: int = 10) -> list[str]:
    """The `ssh` command that forwards `local_socket` to `remote_socket` on the endpoint.

    Batch mode (never a prompt), host key checked strictly, keep-alives so a host that
    vanishes is noticed within seconds, no connection sharing with the user's own ssh
    sessions, and the forward must succeed or ssh exits.
    """
    if endpoint.scheme != "ssh" or not endpoint.host:
        raise ValueError(f"not an ssh endpoint: {endpoint.url!r}")
    argv = ["ssh", "-N", "-T",
            "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout_s}",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
            "-o", "StrictHostKeyChecking=yes", "-o", "ExitOnForwardFailure=yes",
            "-o", "StreamLocalBindUnlink=yes", "-o", "StreamLocalBindMask=0177",
            "-o", "ControlMaster=no", "-o", "ControlPath=none"]
    if endpoint.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={endpoint.known_hosts}"]
    if endpoint.ssh_key:
        argv += ["-i", endpoint.ssh_key, "-o", "IdentitiesOnly=yes"]
    if endpoint.port:
        argv += ["-p", str(endpoint.port)]
    if endpoint.user:
        argv += ["-l", endpoint.user]
    return [*argv, "-L", f"{local_socket}:{remote_socket}", "--", endpoint.host]


def upload_lock_name(endpoint: DockerEndpoint, what: str) -> str:
    """The name of the machine-wide lock (images.base.build_lock) that serialises uploads
    of `what` to the endpoint's host.

    Stable across processes: Python's `hash()` of a str is salted per process, so a name
    made from it would give each provider process its own lock, and two of them could
    upload the same thing to one host at once.
    """
    where = f"{endpoint.scheme}://{(endpoint.host or '').lower()}:{endpoint.port or ''}"
    return "upload-" + hashlib.sha256(f"{where}|{what}".encode()).hexdigest()[:24]


def ssh_fix(endpoint: DockerEndpoint) -> str:
    """What to check when ssh to the endpoint fails."""
    key = f"the key {endpoint.ssh_key}" if endpoint.ssh_key else "your ssh key"
    known = endpoint.known_hosts or "~/.ssh/known_hosts"
    return (f"check that {endpoint.host} is up and its sshd answers, that {key} is authorised "
            f"for {endpoint.user or 'your user'} there, and that {known} holds its host key "
            f"(ssh-keyscan {endpoint.host} >> {known}, after checking the fingerprint)")
