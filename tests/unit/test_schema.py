"""Each resource's schema is declared once (Spec defaults, Args, Resource annotations) and
everything else agrees with it: INPUTS, OUTPUTS, and the project files' config defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from macvtap_provider.builders.lab_config import LabConfig
from macvtap_provider.resources import (
    customized_image,
    generated_password,
    guest_command,
    guest_network,
    lab_network,
    libvirt_container,
    macvtap_domain,
)
from macvtap_provider.resources._base import output_names, spec_defaults
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

# (module, Args, Spec or None, Resource, Provider, secret inputs)
SCHEMAS: list[tuple[Any, type, type | None, type, type, tuple[str, ...]]] = [
    (lab_network, lab_network.LabNetworkArgs, lab_network.LabNetworkSpec,
     lab_network.LabNetwork, lab_network.LabNetworkProvider, ()),
    (libvirt_container, libvirt_container.LibvirtContainerArgs,
     libvirt_container.LibvirtContainerSpec, libvirt_container.LibvirtContainer,
     libvirt_container.LibvirtContainerProvider, ()),
    (customized_image, customized_image.CustomizedImageArgs,
     customized_image.CustomizedImageSpec, customized_image.CustomizedImage,
     customized_image.CustomizedImageProvider, ("root_password",)),
    (macvtap_domain, macvtap_domain.MacvtapDomainArgs, macvtap_domain.MacvtapDomainSpec,
     macvtap_domain.MacvtapDomain, macvtap_domain.MacvtapDomainProvider, ()),
    (guest_network, guest_network.GuestNetworkArgs, guest_network.GuestNetworkSpec,
     guest_network.GuestNetwork, guest_network.GuestNetworkProvider, ("root_password",)),
    (guest_command, guest_command.GuestCommandArgs, None, guest_command.GuestCommand,
     guest_command.GuestCommandProvider, ("root_password",)),
]
IDS = [s[3].__name__ for s in SCHEMAS]


@pytest.mark.parametrize("schema", SCHEMAS, ids=IDS)
def test_inputs_are_the_args_fields_but_secrets(schema: tuple[Any, ...]) -> None:
    _module, args, _spec, _resource, provider, secrets = schema
    names = [f.name for f in dataclasses.fields(args)]
    assert list(provider.INPUTS) == [n for n in names if n not in secrets]


@pytest.mark.parametrize("schema", SCHEMAS, ids=IDS)
def test_optional_args_default_to_none(schema: tuple[Any, ...]) -> None:
    """A default lives in the Spec only; None in Args means "the Spec's default"."""
    args = schema[1]
    for f in dataclasses.fields(args):
        if f.default is not dataclasses.MISSING:
            assert f.default is None, f"{args.__name__}.{f.name} restates a default"


@pytest.mark.parametrize("schema", [s for s in SCHEMAS if s[2] is not None],
                         ids=[i for s, i in zip(SCHEMAS, IDS, strict=True) if s[2] is not None])
def test_spec_fields_are_inputs(schema: tuple[Any, ...]) -> None:
    _module, args, spec, *_ = schema
    assert {f.name for f in dataclasses.fields(spec)} <= {f.name for f in dataclasses.fields(args)}


@pytest.mark.parametrize("schema", SCHEMAS, ids=IDS)
def test_annotations_cover_inputs_and_outputs(schema: tuple[Any, ...]) -> None:
    """The Resource class annotates every input but secrets, and its outputs."""
    module, args, _spec, resource, _provider, secrets = schema
    declared = set(resource.__annotations__)
    inputs = {f.name for f in dataclasses.fields(args)} - set(secrets)
    assert inputs <= declared, inputs - declared
    assert set(module.OUTPUTS) == declared - inputs
    assert output_names(resource, args) == module.OUTPUTS


def test_generated_password_default() -> None:
    assert spec_defaults(generated_password.GeneratedPasswordSpec) == {"length": 20}


# Stack config key -> where its default is declared.
CONFIG_DEFAULTS: dict[str, tuple[type, str]] = {
    "memoryMib": (macvtap_domain.MacvtapDomainSpec, "memory_mib"),
    "vcpus": (macvtap_domain.MacvtapDomainSpec, "vcpus"),
    "macvtapMode": (macvtap_domain.MacvtapDomainSpec, "mode"),
    "vhost": (macvtap_domain.MacvtapDomainSpec, "vhost"),
    "domainType": (macvtap_domain.MacvtapDomainSpec, "domain_type"),
    "interfaceType": (macvtap_domain.MacvtapDomainSpec, "interface_type"),
    "securityMode": (libvirt_container.LibvirtContainerSpec, "security_mode"),
    "networkMethod": (LabConfig, "network_method"),
}
#: Settings a project deliberately sets differently (documented in its Pulumi.yaml).
OVERRIDES = {("stacks/multi/Pulumi.yaml", "memoryMib")}


def _declared_default(cls: type, name: str) -> object:
    return {f.name: f.default for f in dataclasses.fields(cls)}[name]


@pytest.mark.parametrize("project", ["Pulumi.yaml", "stacks/multi/Pulumi.yaml"])
def test_project_defaults_agree_with_the_schema(project: str) -> None:
    config = yaml.safe_load((ROOT / project).read_text()).get("config") or {}
    for key, decl in config.items():
        if key in CONFIG_DEFAULTS and (project, key) not in OVERRIDES:
            assert decl["default"] == _declared_default(*CONFIG_DEFAULTS[key]), (project, key)
        elif decl.get("default") == "":
            pass  # "" = unset: derived by the stack (subnet, containerIp, workDir...)


def test_root_password_has_no_default_to_shadow_the_generated_one() -> None:
    config = yaml.safe_load(Path(ROOT / "Pulumi.yaml").read_text())["config"]
    assert "rootPassword" not in config
