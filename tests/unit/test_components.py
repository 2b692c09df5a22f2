"""Lab and Guest wiring, on Pulumi's own mock monitor (no engine, no provider runs): they
parent their children, pass `opts` on, give guests their addresses, and refuse bad
arguments before registering anything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pulumi
import pytest

import macvtap_provider as mvt
from macvtap_provider.errors import ConfigError

pytestmark = pytest.mark.unit


class Recorder(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.registered: list[tuple[str, str]] = []
        self.inputs: dict[str, dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.registered.append((args.typ, args.name))
        self.inputs[args.name] = dict(args.inputs)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        return {}


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    mocks = Recorder()
    pulumi.runtime.set_mocks(mocks, project="proj", stack="dev", preview=False)
    yield mocks


def _urns(*resources: pulumi.Resource) -> pulumi.Output[list[str]]:
    return pulumi.Output.all(*[r.urn for r in resources])


@pulumi.runtime.test
def test_lab_and_guest_parent_their_children(recorder: Recorder) -> pulumi.Output[None]:
    lab = mvt.Lab("lab1", subnet="10.213.5.0/24", root_password="pw-123456",
                  opts=pulumi.ResourceOptions(protect=True))
    vm = mvt.Guest("lab1-vm", lab)

    assert lab.generated_password is None
    assert lab.guests == [vm] and vm.address == "10.213.5.10"
    # Options flow down: protect is inherited by every child.
    assert all(r._protect for r in (lab.network, lab.container, vm, vm.image, vm.domain,
                                    vm.network))

    def check(urns: list[str]) -> None:
        net, container, guest, image, domain, handover = urns
        dynamic = "pulumi-python:dynamic/macvtap"
        assert net.endswith(f"::macvtap:index:Lab${dynamic}:LabNetwork::lab1-net")
        assert container.endswith(f"::macvtap:index:Lab${dynamic}:LibvirtContainer::lab1-libvirt")
        assert guest.endswith("::macvtap:index:Lab$macvtap:index:Guest::lab1-vm")
        for child, kind, name in ((image, "CustomizedImage", "image"),
                                  (domain, "MacvtapDomain", "domain"),
                                  (handover, "GuestNetwork", "network")):
            assert child.endswith(f"macvtap:index:Guest${dynamic}:{kind}"
                                  f"::lab1-vm-{name}"), child

    return _urns(lab.network, lab.container, vm, vm.image, vm.domain, vm.network).apply(check)


@pulumi.runtime.test
def test_a_lab_without_password_generates_one(recorder: Recorder) -> pulumi.Output[None]:
    lab = mvt.Lab("lab2", subnet="10.213.6.0/24")
    assert lab.generated_password is not None
    return lab.generated_password.urn.apply(
        lambda urn: None if urn.endswith(
            "::macvtap:index:Lab$pulumi-python:dynamic/macvtap:GeneratedPassword::lab2-root-password")
        else pytest.fail(urn))


@pulumi.runtime.test
def test_guests_get_their_own_addresses(recorder: Recorder) -> None:
    lab = mvt.Lab("lab3", subnet="10.213.7.0/24", root_password="pw-123456")
    first, second = mvt.Guest("g0", lab), mvt.Guest("g1", lab)
    third = mvt.Guest("g2", lab, address="10.213.7.150", memory_mib=256)
    assert [g.address for g in (first, second, third)] == ["10.213.7.10", "10.213.7.201",
                                                            "10.213.7.150"]


@pulumi.runtime.test
def test_a_lab_on_an_uplink_is_a_macvlan_network_in_its_range(
        recorder: Recorder) -> pulumi.Output[None]:
    lab = mvt.Lab("lan1", subnet="10.213.9.0/24", uplink="eth0", ip_range="10.213.9.64/26",
                  root_password="pw-123456")
    guests = [mvt.Guest("lan1-g0", lab), mvt.Guest("lan1-g1", lab)]
    assert [g.address for g in guests] == ["10.213.9.64", "10.213.9.96"]
    with pytest.raises(mvt.LabConfigError, match=r"outside the lab's ip_range 10\.213\.9\.64/26"):
        mvt.Guest("lan1-g2", lab, address="10.213.9.200")

    def check(_: object) -> None:
        net = recorder.inputs["lan1-net"]
        assert (net["parent"], net["ip_range"], net["subnet"]) == (
            "eth0", "10.213.9.64/27", "10.213.9.0/24")
        assert recorder.inputs["lan1-libvirt"]["ipv4_address"] == "10.213.9.64"

    return pulumi.Output.all(lab.network.urn, lab.container.urn).apply(check)


@pytest.mark.parametrize(("kwargs", "field", "words"), [
    ({"subnet": "10.213.5.0/33"}, "subnet", "not an IPv4 subnet"),
    ({"uplink": "eth0"}, "subnet", "is required with `uplink`"),
    ({"subnet": "10.213.5.0/24", "uplink": "eth0"}, "ip_range", "is required with `uplink`"),
    ({"subnet": "10.213.5.0/24", "container_ip": "10.9.9.9"}, "container_ip", "outside"),
    ({"docker_host": "ftp://x"}, "docker_host", "not a docker endpoint"),
    ({"memory_mib": 10}, "memory_mib", "out of range"),
    ({"base_image": "/nonexistent/base.qcow2"}, "base_image", "not a file on this machine"),
])
def test_bad_lab_arguments_register_nothing(recorder: Recorder, kwargs: dict[str, Any],
                                            field: str, words: str) -> None:
    with pytest.raises(mvt.LabConfigError) as caught:
        mvt.Lab("lab4", **kwargs)
    assert isinstance(caught.value, pulumi.RunError)  # shown without a traceback
    assert isinstance(caught.value, ConfigError) and caught.value.field == field
    assert str(caught.value).startswith(f"Lab argument `{field}`: ") and words in str(caught.value)
    assert recorder.registered == []


@pytest.mark.parametrize(("kwargs", "field", "words"), [
    ({"address": "10.9.9.9"}, "address", "outside the lab's subnet"),
    ({"address": "10.213.8.1"}, "address", "gateway"),
    ({"address": "nope"}, "address", "not an IPv4 address"),
    ({"memory_mib": 64}, "memory_mib", "out of range"),
])
def test_bad_guest_arguments_register_no_guest(recorder: Recorder, kwargs: dict[str, Any],
                                               field: str, words: str) -> None:
    lab = mvt.Lab("lab5", subnet="10.213.8.0/24", root_password="pw-123456")
    before = list(recorder.registered)
    with pytest.raises(mvt.LabConfigError) as caught:
        mvt.Guest("g", lab, **kwargs)
    assert str(caught.value).startswith(f"Guest argument `{field}`: ") and words in str(caught.value)
    assert recorder.registered == before and lab.guests == []
