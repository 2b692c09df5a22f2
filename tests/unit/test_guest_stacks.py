"""The guest's own network stack, SELinux and machine-id: pure rules, and the customisation
steps against an in-memory image (no libguestfs)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from macvtap_provider.builders import guest_config
from macvtap_provider.builders.guest_config import (
    IFUPDOWN_FILE,
    NETPLAN_FILE,
    NETWORKD_FILE,
    NM_CONF,
    NM_KEYFILE,
    detect_network_stack,
    interfaces_eth0,
    netplan_renderer,
    netplan_static,
    networkd_static,
    nm_keyfile,
    selinux_type,
)
from macvtap_provider.errors import GuestfsError, SpecError
from macvtap_provider.images import customize
from macvtap_provider.resources.customized_image import CustomizedImageSpec, StaticNetwork
from tests.images.recipes import FIXTURES

pytestmark = pytest.mark.unit

WANTS = "/etc/systemd/system/multi-user.target.wants"
NET = StaticNetwork("10.213.0.10", 24, "10.213.0.1")
NS = ("10.213.0.1",)

#: What each image has of `NETWORK_PROBES` (from its packages and its recipe's setup).
FACTS = {
    # The lab's own guest: ifupdown, no netplan, networkd not enabled.
    "default": {"/usr/sbin/ifup", "/sbin/ifup", "/etc/network/interfaces"},
    # netplan.io + systemd-networkd enabled (netplan renders for it).
    "cloud-gpt": {"/usr/sbin/netplan", "/etc/netplan/90-default.yaml",
                  f"{WANTS}/systemd-networkd.service"},
    "rhel-like": {"/usr/sbin/NetworkManager", f"{WANTS}/NetworkManager.service"},
    "btrfs": {f"{WANTS}/systemd-networkd.service"},
}


@pytest.mark.parametrize(("image", "stack"), [
    ("default", "ifupdown"), ("cloud-gpt", "netplan"), ("rhel-like", "networkmanager"),
    ("btrfs", "networkd")])
def test_each_fixture_gets_its_own_stack(image: str, stack: str) -> None:
    assert detect_network_stack(frozenset(FACTS[image])) == stack


def test_the_facts_follow_the_fixture_recipes() -> None:
    # Guards FACTS: the recipes install and enable what the cases above assume.
    assert "netplan.io" in FIXTURES["cloud-gpt"].packages
    assert "/etc/netplan/90-default.yaml" in FIXTURES["cloud-gpt"].files
    assert "systemctl enable NetworkManager.service" in FIXTURES["rhel-like"].setup
    assert "systemctl enable systemd-networkd.service" in FIXTURES["btrfs"].setup
    for fixture in FIXTURES.values():
        assert "ifupdown" not in fixture.packages


@pytest.mark.parametrize(("found", "stack"), [
    # Ubuntu desktop: netplan hands everything to NetworkManager.
    ({"/usr/bin/netplan", "/etc/netplan/01-network-manager-all.yaml",
      f"{WANTS}/NetworkManager.service"}, "netplan"),
    # netplan files but no netplan: they are leftovers.
    ({"/etc/netplan/50-cloud-init.yaml", f"{WANTS}/systemd-networkd.service"}, "networkd"),
    # NetworkManager installed, enabled by a preset at first boot (RHEL).
    ({"/usr/sbin/NetworkManager"}, "networkmanager"),
    # Both ifupdown and an enabled NetworkManager: NetworkManager manages the NIC.
    ({"/sbin/ifup", "/etc/network/interfaces", f"{WANTS}/NetworkManager.service"},
     "networkmanager"),
    # ifupdown installed but its config gone: networkd is what runs.
    ({"/sbin/ifup", f"{WANTS}/systemd-networkd.service"}, "networkd"),
])
def test_stack_precedence(found: set[str], stack: str) -> None:
    assert detect_network_stack(frozenset(found)) == stack


@pytest.mark.parametrize("found", [set(), {"/etc/network/interfaces"}, {"/etc/netplan/a.yaml"}])
def test_no_known_stack_is_refused_naming_what_was_found(found: set[str]) -> None:
    with pytest.raises(SpecError) as exc:
        detect_network_stack(frozenset(found))
    message = str(exc.value)
    assert "no network stack" in message and "networkMethod console" in message
    for path in found:
        assert path in message
    if not found:
        assert "/usr/sbin/NetworkManager" in message  # what was looked for


def test_netplan_golden(golden: Callable[[str, str], None]) -> None:
    golden("netplan_static.yaml", netplan_static("10.213.0.10", 24, "10.213.0.1", NS))


def test_networkd_golden(golden: Callable[[str, str], None]) -> None:
    golden("networkd_static.network", networkd_static("10.213.0.10", 24, "10.213.0.1", NS))


def test_nm_keyfile_golden(golden: Callable[[str, str], None]) -> None:
    golden("nm_keyfile.nmconnection", nm_keyfile("10.213.0.10", 24, "10.213.0.1", NS))


def test_every_format_matches_eth0_and_predictable_names() -> None:
    netplan = netplan_static("10.213.0.10", 24, "10.213.0.1")
    assert 'name: "en*"' in netplan and 'name: "eth*"' in netplan
    assert "Name=en* eth*" in networkd_static("10.213.0.10", 24, "10.213.0.1")
    assert "interface-name=en*;eth*;" in nm_keyfile("10.213.0.10", 24, "10.213.0.1")


def test_nm_keyfile_uuid_is_stable_per_address() -> None:
    one = nm_keyfile("10.213.0.10", 24, "10.213.0.1")
    assert one == nm_keyfile("10.213.0.10", 24, "10.213.0.1")
    assert one != nm_keyfile("10.213.0.11", 24, "10.213.0.1")


def test_without_nameservers_no_dns_lines() -> None:
    assert "nameservers" not in netplan_static("10.213.0.10", 24, "10.213.0.1")
    assert "DNS=" not in networkd_static("10.213.0.10", 24, "10.213.0.1")
    assert "dns=" not in nm_keyfile("10.213.0.10", 24, "10.213.0.1")


@pytest.mark.parametrize(("texts", "renderer"), [
    ([], "networkd"),
    (["network:\n  version: 2\n  renderer: networkd\n"], "networkd"),
    (["network:\n  version: 2\n  renderer: NetworkManager\n"], "NetworkManager"),
    (["network:\n  renderer: 'NetworkManager'  # desktop\n"], "NetworkManager"),
    (["# renderer: NetworkManager\nnetwork: {}\n"], "networkd"),
])
def test_netplan_keeps_the_images_renderer(texts: list[str], renderer: str) -> None:
    assert netplan_renderer(texts) == renderer


@pytest.mark.parametrize(("config", "policy"), [
    ("SELINUX=enforcing\nSELINUXTYPE=default\n", "default"),
    ("# c\nSELINUX=permissive\nSELINUXTYPE=targeted # rhel\n", "targeted"),
    ("SELINUX=disabled\nSELINUXTYPE=targeted\n", None),
    ("SELINUXTYPE=targeted\n", None),
    ("SELINUX=enforcing\nSELINUXTYPE=../../x\n", None),
])
def test_selinux_type(config: str, policy: str | None) -> None:
    assert selinux_type(config) == policy


# -- the steps, on an in-memory image --------------------------------------------------------


class FakeSession:
    """A GuestSession over a dict: path -> (content, mode); symlinks apart."""

    def __init__(self, files: dict[str, str], symlinks: Sequence[str] = ()) -> None:
        self.files = {p: (t, 0o644) for p, t in files.items()}
        self.symlinks = set(symlinks)
        self.relabelled: list[tuple[str, tuple[str, ...]]] = []
        self.image = "fake.qcow2"

    def exists(self, path: str) -> bool:
        return path in self.files or any(p.startswith(path + "/") for p in self.files)

    def is_dir(self, path: str) -> bool:
        return any(p.startswith(path + "/") for p in self.files)

    def is_symlink(self, path: str) -> bool:
        return path in self.symlinks

    def read(self, path: str) -> str:
        return self.files[path][0]

    def write(self, path: str, content: str | bytes, mode: int = 0o644) -> None:
        self.files[path] = (content if isinstance(content, str) else content.decode(), mode)

    def remove(self, path: str) -> None:
        self.files.pop(path, None)
        self.symlinks.discard(path)

    def rename(self, path: str, new: str) -> None:
        self.files[new] = self.files.pop(path)

    def truncate(self, path: str) -> None:
        self.files[path] = ("", self.files[path][1])

    def touch(self, path: str) -> None:
        self.files.setdefault(path, ("", 0o644))

    def glob(self, pattern: str) -> list[str]:
        return sorted(p for p in self.files if fnmatch.fnmatch(p, pattern))

    def relabel(self, file_contexts: str, paths: Sequence[str]) -> str:
        self.relabelled.append((file_contexts, tuple(paths)))
        return "fake"


def _spec(network: StaticNetwork | None = NET) -> CustomizedImageSpec:
    return CustomizedImageSpec(base_image=Path("/b.qcow2"), output_path=Path("/o.qcow2"),
                               root_password="pw", nameservers=NS, network=network)


def _image(facts: set[str], **files: str) -> FakeSession:
    return FakeSession({**{p: "" for p in facts}, **files})


CTX = customize.StepContext(day=20000, host_keys=Path("/nonexistent"))


def _run(step: customize.Step, session: FakeSession, spec: CustomizedImageSpec) -> None:
    step(session, spec, CTX)  # type: ignore[arg-type]


def test_default_guest_gets_the_same_ifupdown_file_as_before() -> None:
    image = _image(FACTS["default"])
    _run(customize.write_static_network, image, _spec())
    written = {p: v for p, v in image.files.items() if p not in FACTS["default"]}
    assert written == {IFUPDOWN_FILE: (interfaces_eth0("10.213.0.10", 24, "10.213.0.1", NS),
                                       0o644)}


def test_netplan_image_gets_netplan_and_its_own_files_set_aside() -> None:
    image = _image(FACTS["cloud-gpt"], **{
        "/etc/netplan/90-default.yaml": "network:\n  renderer: networkd\n"})
    _run(customize.write_static_network, image, _spec())
    assert image.files[NETPLAN_FILE] == (
        netplan_static("10.213.0.10", 24, "10.213.0.1", NS), 0o600)
    assert "/etc/netplan/90-default.yaml" not in image.files
    assert "/etc/netplan/90-default.yaml.off-by-macvtap-lab" in image.files
    assert image.glob(guest_config.NETPLAN_GLOB) == [NETPLAN_FILE]


def test_networkmanager_image_gets_a_private_keyfile_and_no_auto_default() -> None:
    image = _image(FACTS["rhel-like"])
    _run(customize.write_static_network, image, _spec())
    assert image.files[NM_KEYFILE] == (nm_keyfile("10.213.0.10", 24, "10.213.0.1", NS), 0o600)
    assert "no-auto-default=*" in image.files[NM_CONF][0]
    assert IFUPDOWN_FILE not in image.files


def test_networkd_image_gets_a_network_file_sorting_first() -> None:
    image = _image(FACTS["btrfs"], **{"/etc/systemd/network/80-dhcp.network": "DHCP=yes\n"})
    _run(customize.write_static_network, image, _spec())
    assert image.files[NETWORKD_FILE][0] == networkd_static("10.213.0.10", 24, "10.213.0.1", NS)
    assert sorted(image.glob("/etc/systemd/network/*.network"))[0] == NETWORKD_FILE


def test_unknown_stack_fails_the_image_naming_it() -> None:
    with pytest.raises(GuestfsError, match=r"/o.qcow2: network: the image has no network stack"):
        _run(customize.write_static_network, _image(set()), _spec())


def test_no_static_network_removes_the_labs_files_and_needs_no_stack() -> None:
    image = _image(set(), **{IFUPDOWN_FILE: "x", NM_KEYFILE: "x", "/etc/keep": "x"})
    _run(customize.write_static_network, image, _spec(None))
    assert set(image.files) == {"/etc/keep"}


def test_resolver_replaces_a_resolved_stub_symlink() -> None:
    image = FakeSession({}, symlinks=["/etc/resolv.conf"])
    _run(customize.set_resolver, image, _spec())
    assert not image.is_symlink("/etc/resolv.conf")
    assert image.read("/etc/resolv.conf") == guest_config.resolv_conf(NS)


@pytest.mark.parametrize(("before", "after"), [("0123abcd" * 4 + "\n", ""), ("", ""),
                                               (None, None)])
def test_machine_id_is_emptied_not_removed(before: str | None, after: str | None) -> None:
    image = FakeSession({} if before is None else {"/etc/machine-id": before})
    _run(customize.empty_machine_id, image, _spec())
    assert (image.read("/etc/machine-id") if image.exists("/etc/machine-id") else None) == after


def test_selinux_guest_is_relabelled_with_its_own_policy() -> None:
    contexts = "/etc/selinux/default/contexts/files/file_contexts"
    image = FakeSession({"/etc/selinux/config": "SELINUX=enforcing\nSELINUXTYPE=default\n",
                         contexts: ""})
    _run(customize.relabel_selinux, image, _spec())
    assert image.relabelled == [(contexts, ("/etc", "/root"))]


@pytest.mark.parametrize("files", [{}, {"/etc/selinux/config": "SELINUX=disabled\n"}])
def test_no_relabel_without_an_active_policy(files: dict[str, str]) -> None:
    image = FakeSession(files)
    _run(customize.relabel_selinux, image, _spec())
    assert image.relabelled == []


def test_selinux_policy_without_file_contexts_is_refused() -> None:
    image = FakeSession({"/etc/selinux/config": "SELINUX=enforcing\nSELINUXTYPE=targeted\n"})
    with pytest.raises(GuestfsError, match=r"targeted.*file_contexts is missing"):
        _run(customize.relabel_selinux, image, _spec())


def test_relabel_is_the_last_step() -> None:
    assert customize.STEPS[-1] is customize.relabel_selinux
