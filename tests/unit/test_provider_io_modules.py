"""The providers' create/read/update/delete import docker and its users once, in one
thread, before they run: parallel first imports of docker's modules can deadlock in
CPython's import machinery (seen as `_DeadlockError` on a concurrent destroy)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from macvtap_provider.resources import _base
from macvtap_provider.resources.customized_image import CustomizedImageProvider
from macvtap_provider.resources.generated_password import GeneratedPasswordProvider
from macvtap_provider.resources.guest_command import GuestCommandProvider
from macvtap_provider.resources.guest_network import GuestNetworkProvider
from macvtap_provider.resources.lab_network import LabNetworkProvider
from macvtap_provider.resources.libvirt_container import LibvirtContainerProvider
from macvtap_provider.resources.macvtap_domain import MacvtapDomainProvider

pytestmark = pytest.mark.unit

PROVIDERS = (CustomizedImageProvider, GeneratedPasswordProvider, GuestCommandProvider,
             GuestNetworkProvider, LabNetworkProvider, LibvirtContainerProvider,
             MacvtapDomainProvider)


@pytest.mark.parametrize("provider", PROVIDERS, ids=lambda p: p.__name__)
def test_every_io_method_loads_the_modules_first(provider: type) -> None:
    for name in ("create", "read", "update", "delete"):
        method = getattr(provider, name)
        if method is getattr(_base.ResourceProvider, name, None):
            continue  # not implemented: the SDK's default
        assert getattr(method, "loads_io_modules", False), f"{provider.__name__}.{name}"


def test_check_and_diff_stay_light() -> None:
    for provider in PROVIDERS:
        for name in ("check", "diff"):
            assert not getattr(getattr(provider, name), "loads_io_modules", False)


def test_the_modules_load_in_a_fresh_process_without_guestfs_or_libvirt() -> None:
    code = ("import sys; from macvtap_provider.resources import _base; "
            "_base.load_io_modules(); "
            "print(sorted(m for m in ('guestfs', 'libvirt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
