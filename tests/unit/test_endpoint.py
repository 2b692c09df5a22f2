"""Docker endpoints: parsing, every validation rule, the ssh tunnel command."""

from __future__ import annotations

import pytest

from macvtap_provider.adapters.netexec import parse_links
from macvtap_provider.builders.endpoint import (
    DockerEndpoint,
    endpoint_from_props,
    ssh_fix,
    ssh_tunnel_argv,
    validate_endpoint,
)

pytestmark = pytest.mark.unit
TLS = {"tls_ca_cert": "/c/ca.pem", "tls_cert": "/c/cert.pem", "tls_key": "/c/key.pem"}


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


@pytest.mark.parametrize(("props", "field", "words"), [
    ({"docker_host": "http://h"}, "docker_host", "scheme"),
    ({"docker_host": "unix://relative.sock"}, "docker_host", "absolute path"),
    ({"docker_host": "ssh://"}, "docker_host", "names no host"),
    ({"docker_host": "tcp://h:notaport"}, "docker_host", "names no host"),
    ({"docker_host": "ssh://root:secret@h"}, "docker_host", "use ssh_key"),
    ({"docker_host": "ssh://root@h/var/run/docker.sock"}, "docker_host", "no path"),
    ({"docker_host": "ssh://root@h", "tls_cert": "/c"}, "tls_cert", "tcp:// endpoints only"),
    ({"docker_host": "tcp://h:2376", **TLS, "ssh_key": "/k"}, "ssh_key", "ssh:// endpoints only"),
    ({"docker_host": "tcp://10.0.0.5:2375"}, "docker_host", "without TLS"),
    ({"docker_host": "tcp://10.0.0.5:2376", "tls_cert": "/c"}, "docker_host", "tls_ca_cert, tls_key"),
    ({"known_hosts": "/k"}, "known_hosts", "docker_host is not"),
])
def test_each_bad_endpoint_is_refused_naming_the_input(props: dict[str, str], field: str,
                                                        words: str) -> None:
    errors = validate_endpoint(endpoint_from_props(props))
    assert [e.field for e in errors] == [field]
    assert words in errors[0].reason


@pytest.mark.parametrize("props", [
    {}, {"docker_host": "unix:///run/docker.sock"}, {"docker_host": "tcp://127.0.0.1:2375"},
    {"docker_host": "ssh://root@h:2222", "ssh_key": "/k", "known_hosts": "/kh"},
    {"docker_host": "tcp://h:2376", **TLS},
])
def test_good_endpoints_pass(props: dict[str, str]) -> None:
    assert validate_endpoint(endpoint_from_props(props)) == []


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
