"""The helper that compares providers' outputs with their Resource annotations."""

from __future__ import annotations

import pytest

from macvtap_provider.resources.lab_network import LabNetwork, LabNetworkProvider
from tests.output_types import annotated_types, mismatches, resource_of

pytestmark = pytest.mark.unit


def test_annotations_are_read() -> None:
    types = annotated_types(LabNetwork)
    assert types["network_id"] == (str,)
    assert types["docker_host"] == (str, type(None))
    assert types["internal"] == (bool,)


def test_resource_of_provider() -> None:
    assert resource_of(LabNetworkProvider()) is LabNetwork


def test_mismatches_are_reported() -> None:
    good = {"name": "n", "subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "internal": True,
            "docker_host": None, "ip_range": "10.0.0.0/25", "network_id": "abc",
            "bridge": "br-abc"}
    assert mismatches(LabNetwork, good) == []
    assert mismatches(LabNetwork, {**good, "internal": 1}) == [
        "internal: int 1, annotated bool"]
    assert mismatches(LabNetwork, {k: v for k, v in good.items() if k != "bridge"}) == [
        "bridge: declared, not returned"]
