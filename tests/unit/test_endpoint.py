"""Docker endpoints: parsing, every validation rule, the ssh tunnel command."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from macvtap_provider.adapters.netexec import parse_links
from macvtap_provider.builders.endpoint import (
    DockerEndpoint,
    endpoint_from_props,
    ssh_fix,
    ssh_tunnel_argv,
    upload_lock_name,
    validate_endpoint,
)
from macvtap_provider.builders.validation import check_docker_host
from macvtap_provider.errors import SpecError

pytestmark = pytest.mark.unit
TLS = "tls_ca=/c/ca.pem&tls_cert=/c/cert.pem&tls_key=/c/key.pem"


@pytest.mark.parametrize(("url", "local", "label"), [
    (None, True, "the local engine"),
    ("unix:///var/run/docker.sock", True, "unix:///var/run/docker.sock"),
    ("tcp://127.0.0.1:2375", True, "tcp://127.0.0.1:2375"),
    ("tcp://localhost:2375", True, "tcp://localhost:2375"),
    ("tcp://10.0.0.5:2376", False, "tcp://10.0.0.5:2376"),
    ("ssh://root@10.0.0.5", False, "root@10.0.0.5"),
    ("ssh://localhost", False, "localhost"),
])
def test_locality_and_label(url: str | None, local: bool, label: str) -> None:
    endpoint = DockerEndpoint(url=url)
    assert (endpoint.is_local, endpoint.label) == (local, label)


@pytest.mark.parametrize(("url", "words"), [
    ("http://h", "not a docker endpoint"),
    ("unix://relative.sock", "socket path"),
    ("ssh://", "does not name a host"),
    ("tcp://h:notaport", "invalid port"),
    ("ssh://root:secret@h", "use keyfile="),
    ("ssh://root@h/var/run/docker.sock", "does not name a host"),
    ("ssh://root@h?tls_cert=/c", "tcp:// endpoints only"),
    (f"tcp://h:2376?{TLS}&keyfile=/k", "ssh:// endpoints only"),
    ("tcp://10.0.0.5:2375", "without TLS"),
    ("tcp://10.0.0.5:2376?tls_cert=/c", "add tls_ca, tls_key"),
    ("ssh://root@h?identity=/k", "unknown setting 'identity'"),
    ("ssh://root@h?keyfile=relative", "one absolute path"),
    ("ssh://root@h?keyfile=/a&keyfile=/b", "one absolute path"),
])
def test_each_bad_endpoint_is_refused(url: str, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        check_docker_host(url)
    assert caught.value.field == "docker_host"
    assert words in caught.value.reason


@pytest.mark.parametrize("url", [
    None, "unix:///run/docker.sock", "tcp://127.0.0.1:2375",
    "ssh://root@h:2222?keyfile=/k&known_hosts=/kh", f"tcp://h:2376?{TLS}",
])
def test_good_endpoints_pass(url: str | None) -> None:
    assert check_docker_host(url) == url


def test_settings_come_from_the_query() -> None:
    endpoint = endpoint_from_props({"docker_host": "ssh://lab@h:2222?keyfile=/k&known_hosts=/kh"})
    assert (endpoint.url, endpoint.ssh_key, endpoint.known_hosts) == ("ssh://lab@h:2222", "/k", "/kh")
    assert validate_endpoint(endpoint) == []


def test_the_tunnel_command_checks_the_host_key_and_never_prompts() -> None:
    endpoint = DockerEndpoint(url="ssh://lab@h.example:2222", ssh_key="/k/id",
                              known_hosts="/k/known")
    argv = ssh_tunnel_argv(endpoint, "/tmp/x/sock")
    joined = " ".join(argv)
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/k/known",
                   "ExitOnForwardFailure=yes", "ControlPath=none", "-i /k/id", "-p 2222",
                   "-l lab", "-L /tmp/x/sock:/var/run/docker.sock"):
        assert option in joined
    assert argv[-2:] == ["--", "h.example"]
    assert "ssh-keyscan h.example >> /k/known" in ssh_fix(endpoint)
    with pytest.raises(ValueError, match="not an ssh endpoint"):
        ssh_tunnel_argv(DockerEndpoint(url="tcp://h:2376"), "/s")


def test_ip_json_becomes_link_info() -> None:
    text = ('[{"ifindex":2,"ifname":"eth0","address":"02:42:0A:00:00:02",'
            '"linkinfo":{"info_kind":"veth"},"addr_info":[{"family":"inet","local":"10.0.0.2",'
            '"prefixlen":24},{"family":"inet6","local":"fe80::1","prefixlen":64}]},'
            '{"ifindex":20001,"ifname":"mvt20001","address":"52:54:00:00:00:01",'
            '"linkinfo":{"info_kind":"macvtap"},"addr_info":[]}]')
    eth0, tap = parse_links(text)
    assert (eth0.name, eth0.index, eth0.mac, eth0.kind, eth0.addresses) == (
        "eth0", 2, "02:42:0a:00:00:02", "veth", (("10.0.0.2", 24),))
    assert (tap.kind, tap.addresses) == ("macvtap", ())
    assert parse_links("") == []


def test_an_unset_docker_host_leaves_an_image_digest_as_it_was() -> None:
    from macvtap_provider.builders.secrets import customization_digest
    from macvtap_provider.resources.customized_image import public_fields

    old = {"output_path": "/w/x.qcow2", "mode": "overlay"}
    new = {**old, "docker_host": None}
    assert customization_digest(public_fields(old), "pw", "s") == \
        customization_digest(public_fields(new), "pw", "s")
    remote = {**old, "docker_host": "ssh://root@h"}
    assert customization_digest(public_fields(remote), "pw", "s") != \
        customization_digest(public_fields(old), "pw", "s")


def test_the_upload_lock_name_is_the_same_in_every_process() -> None:
    # Python salts str hashes per process: a lock named from hash() is a lock per process.
    code = ("from macvtap_provider.builders.endpoint import DockerEndpoint, upload_lock_name; "
            "print(upload_lock_name(DockerEndpoint(url='ssh://root@kvm1:2222'), 'image x:1'))")
    names = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
             for seed in ("1", "2", "random")}
    assert names == {upload_lock_name(DockerEndpoint(url="ssh://root@kvm1:2222"), "image x:1")}


def test_the_upload_lock_name_tells_hosts_and_uploads_apart() -> None:
    def name(url: str, what: str = "image x:1") -> str:
        return upload_lock_name(DockerEndpoint(url=url), what)

    names = {name("ssh://root@kvm1"), name("ssh://root@kvm2"), name("ssh://root@kvm1:2222"),
             name("ssh://root@kvm1", "image x:2"), name("ssh://root@kvm1", "base abc")}
    assert len(names) == 5
    # The same host whoever logs in and whatever key: one engine, one lock.
    assert name("ssh://root@KVM1") == name("ssh://admin@kvm1?keyfile=/k") == name("ssh://root@kvm1")
    assert all(re.fullmatch(r"upload-[0-9a-f]{24}", n) for n in names)
