"""macvtap-lab: Pulumi dynamic providers for a macvtap virtualisation lab.

    import macvtap_provider as mvt

    lab = mvt.Lab.from_config()          # or mvt.Lab("lab1", subnet="10.213.5.0/24", ...)
    vm = mvt.Guest("lab1-guest", lab)
    pulumi.export("guest_ip", vm.guest_ip)

Everything public is importable from here; each name is imported on first use (PEP 562),
so a program that touches only a few resources does not pay for the others' modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("Lab", "Guest", "LabConfigError", "StackConfig", "stack_config",
                     "lab_name", "GUESTS"), "macvtap_provider.lab"),
    **dict.fromkeys(("LabConfig",), "macvtap_provider.builders.lab_config"),
    **dict.fromkeys(("LabNetwork", "LabNetworkArgs"), "macvtap_provider.resources.lab_network"),
    **dict.fromkeys(("LibvirtContainer", "LibvirtContainerArgs"),
                    "macvtap_provider.resources.libvirt_container"),
    **dict.fromkeys(("CustomizedImage", "CustomizedImageArgs", "NetworkArgs"),
                    "macvtap_provider.resources.customized_image"),
    **dict.fromkeys(("MacvtapDomain", "MacvtapDomainArgs"),
                    "macvtap_provider.resources.macvtap_domain"),
    **dict.fromkeys(("GuestNetwork", "GuestNetworkArgs"),
                    "macvtap_provider.resources.guest_network"),
    **dict.fromkeys(("GuestCommand", "GuestCommandArgs"),
                    "macvtap_provider.resources.guest_command"),
    **dict.fromkeys(("GeneratedPassword",), "macvtap_provider.resources.generated_password"),
    **dict.fromkeys(("LabError", "SpecError", "ConfigError"), "macvtap_provider.errors"),
}

# The names of _EXPORTS (a unit test compares).
__all__ = [
    "GUESTS",
    "ConfigError",
    "CustomizedImage",
    "CustomizedImageArgs",
    "GeneratedPassword",
    "Guest",
    "GuestCommand",
    "GuestCommandArgs",
    "GuestNetwork",
    "GuestNetworkArgs",
    "Lab",
    "LabConfig",
    "LabConfigError",
    "LabError",
    "LabNetwork",
    "LabNetworkArgs",
    "LibvirtContainer",
    "LibvirtContainerArgs",
    "MacvtapDomain",
    "MacvtapDomainArgs",
    "NetworkArgs",
    "SpecError",
    "StackConfig",
    "lab_name",
    "stack_config",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each comes on first use
    from macvtap_provider.builders.lab_config import LabConfig
    from macvtap_provider.errors import ConfigError, LabError, SpecError
    from macvtap_provider.lab import (
        GUESTS,
        Guest,
        Lab,
        LabConfigError,
        StackConfig,
        lab_name,
        stack_config,
    )
    from macvtap_provider.resources.customized_image import (
        CustomizedImage,
        CustomizedImageArgs,
        NetworkArgs,
    )
    from macvtap_provider.resources.generated_password import GeneratedPassword
    from macvtap_provider.resources.guest_command import GuestCommand, GuestCommandArgs
    from macvtap_provider.resources.guest_network import GuestNetwork, GuestNetworkArgs
    from macvtap_provider.resources.lab_network import LabNetwork, LabNetworkArgs
    from macvtap_provider.resources.libvirt_container import (
        LibvirtContainer,
        LibvirtContainerArgs,
    )
    from macvtap_provider.resources.macvtap_domain import MacvtapDomain, MacvtapDomainArgs
