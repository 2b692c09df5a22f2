"""LabNetworkProvider against the real dockerd: create, read, out-of-band removal, delete."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from macvtap_provider.errors import DockerError
from macvtap_provider.resources.lab_network import LABEL, LabNetworkProvider
from tests.integration.conftest import Lab, lab_for

pytestmark = [pytest.mark.docker]

SUBNET = "10.213.101.0/24"


@pytest.fixture
def lab() -> Iterator[Lab]:
    with lab_for("net", SUBNET, "docker") as lab:
        yield lab


def test_create_makes_an_internal_network_and_read_reports_it(lab: Lab) -> None:
    net = lab.network()

    attrs = lab.client.networks.get(net.id).attrs
    assert attrs["Name"] == lab.net_name
    assert attrs["Internal"] is True, "a lab network must have no way out"
    assert attrs["Driver"] == "bridge"
    assert attrs["Labels"][LABEL] == lab.net_name
    pools = attrs["IPAM"]["Config"]
    assert [(p["Subnet"], p["Gateway"]) for p in pools] == [(SUBNET, "10.213.101.1")]
    assert net.outs["gateway"] == "10.213.101.1"  # the first host, filled in by check
    assert net.outs["network_id"] == net.id
    assert net.outs["bridge"] == f"br-{net.id[:12]}"

    read = LabNetworkProvider().read(net.id, dict(net.outs))
    assert read.id == net.id
    assert read.outs == net.outs


def test_out_of_band_removal_is_seen_by_read_and_delete_is_idempotent(lab: Lab) -> None:
    net = lab.network()
    provider = LabNetworkProvider()

    lab.client.networks.get(net.id).remove()  # docker network rm, behind the provider's back

    assert provider.read(net.id, dict(net.outs)).id == ""
    provider.delete(net.id, dict(net.outs))  # already gone: success
    provider.delete(net.id, dict(net.outs))
    with pytest.raises(docker.errors.NotFound):
        lab.client.networks.get(net.id)


def test_delete_removes_it_and_delete_again_is_fine(lab: Lab) -> None:
    net = lab.network()
    provider = LabNetworkProvider()

    provider.delete(net.id, dict(net.outs))

    with pytest.raises(docker.errors.NotFound):
        lab.client.networks.get(net.id)
    assert provider.read(net.id, dict(net.outs)).id == ""
    provider.delete(net.id, dict(net.outs))


def test_a_leftover_of_an_interrupted_run_is_taken_over(lab: Lab) -> None:
    net = lab.network()  # made, but (as after a killed `up`) never recorded in any state

    again = LabNetworkProvider().create(dict(net.inputs))

    assert again.id == net.id
    assert again.outs["network_id"] == net.id


def test_a_name_taken_by_another_network_is_refused_and_left_alone(lab: Lab) -> None:
    foreign = lab.client.networks.create(lab.net_name, driver="bridge", internal=True)
    try:
        with pytest.raises(DockerError, match="already exists and is not this stack's"):
            LabNetworkProvider().create(
                LabNetworkProvider().check({}, {"name": lab.net_name, "subnet": SUBNET}).inputs)
        assert lab.client.networks.get(foreign.id).name == lab.net_name
    finally:
        foreign.remove()


def test_check_refuses_a_gateway_outside_the_subnet_and_public_ranges() -> None:
    provider = LabNetworkProvider()
    bad_gw = provider.check({}, {"name": "n", "subnet": SUBNET, "gateway": "10.213.102.1"})
    public = provider.check({}, {"name": "n", "subnet": "8.8.8.0/24"})

    assert [f.property for f in bad_gw.failures] == ["gateway"]
    assert [f.property for f in public.failures] == ["subnet"]
