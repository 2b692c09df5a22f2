"""Benchmark floors: the no-op figure's floor stack is as big as the lab's state (its kinds
counted right); figure 1's critical path boots to sshd, not to the login prompt."""

from __future__ import annotations

import pytest

from bench.noop import count_kinds
from bench.run import critical_path_floor
from bench.timeline import Timeline

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


# == figure 1's floor ==========================================================================
def _timeline() -> Timeline:
    t = Timeline("pulumi", start=0.0)
    for phase, at in (("container_ready", 2.4), ("image_customized", 17.3),
                      ("domain_started", 18.6), ("login_prompt", 25.1),
                      ("network_moved", 27.1), ("provider_probe_ok", 33.0),
                      ("handover_started", 27.0), ("handover_done", 27.1), ("ssh_ready", 33.7)):
        t.mark(phase, at)
    return t


def test_the_floor_takes_figure_9s_boot_to_sshd() -> None:
    floor = critical_path_floor(_timeline(), 12.7)
    assert floor["floor_s"] == pytest.approx(17.3 + 12.7 + 0.1)


def test_without_figure_9_the_login_prompt_is_no_sign_of_sshd() -> None:
    # The default guest's getty starts before its sshd: the floor runs to the network move.
    floor = critical_path_floor(_timeline())
    assert floor["boot_measured_to"] == "network moved"
    assert floor["boot_to_sshd_s"] == pytest.approx(27.1 - 18.6)
