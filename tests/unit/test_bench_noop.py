"""The no-op figure's floor stack is as big as the lab's state: its kinds counted right."""

from __future__ import annotations

import pytest

from bench.noop import count_kinds

pytestmark = pytest.mark.unit

# A lab's state as the engine exports it (stacks/lab with a given password).
LAB_TYPES = ["pulumi:pulumi:Stack", "macvtap:index:Lab", "macvtap:index:Guest",
             "pulumi:providers:pulumi-python", "pulumi-python:dynamic/macvtap:LabNetwork",
             "pulumi-python:dynamic/macvtap:CustomizedImage",
             "pulumi-python:dynamic/macvtap:LibvirtContainer",
             "pulumi-python:dynamic/macvtap:MacvtapDomain",
             "pulumi-python:dynamic/macvtap:GuestNetwork"]


def test_the_labs_named_dynamic_types_count_as_dynamic_resources() -> None:
    assert count_kinds(LAB_TYPES) == (5, 2)


def test_the_sdks_plain_dynamic_type_counts_too() -> None:
    assert count_kinds(["pulumi-python:dynamic:Resource", "bench:index:Group"]) == (1, 1)
