"""Pulumi pickles each provider (dill) into the state: it must round-trip and carry nothing."""

from __future__ import annotations

import base64
import pickle
import pickletools

import dill
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from macvtap_provider.resources._base import LabProvider
from macvtap_provider.resources.customized_image import CustomizedImageProvider
from macvtap_provider.resources.generated_password import GeneratedPasswordProvider
from macvtap_provider.resources.guest_network import GuestNetworkProvider
from macvtap_provider.resources.lab_network import LabNetworkProvider
from macvtap_provider.resources.libvirt_container import LibvirtContainerProvider
from macvtap_provider.resources.macvtap_domain import MacvtapDomainProvider

pytestmark = pytest.mark.unit

PROVIDERS = [LabNetworkProvider, LibvirtContainerProvider, CustomizedImageProvider,
             MacvtapDomainProvider, GuestNetworkProvider, GeneratedPasswordProvider]
# Handles that must never travel in the state (they would not unpickle elsewhere anyway).
FORBIDDEN = [b"virConnect", b"DockerClient", b"APIClient", b"IPRoute", b"NetNS", b"GuestFS",
             b"spawn", b"socket", b"Session"]


def _strings(data: bytes) -> set[str]:
    return {str(arg) for op, arg, _pos in pickletools.genops(data)
            if isinstance(arg, str) and "UNICODE" in op.name}


@pytest.mark.parametrize("cls", PROVIDERS, ids=lambda c: c.__name__)
def test_provider_has_no_state(cls: type[LabProvider]) -> None:
    assert vars(cls()) == {}


@pytest.mark.parametrize("cls", PROVIDERS, ids=lambda c: c.__name__)
def test_dill_round_trip(cls: type[LabProvider]) -> None:
    data = dill.dumps(cls(), protocol=pickle.DEFAULT_PROTOCOL, recurse=True)
    restored = dill.loads(data)
    assert type(restored) is cls
    assert vars(restored) == {}
    # Pickled by reference: only the module and the class name travel.
    assert _strings(data) == {cls.__module__, cls.__qualname__}
    assert not [f for f in FORBIDDEN if f in data]


@pytest.mark.parametrize("cls", PROVIDERS, ids=lambda c: c.__name__)
def test_pulumi_serialization_round_trip(cls: type[LabProvider],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact path Pulumi takes: serialize_provider -> base64 -> dill.loads."""
    # serialize_provider patches the pure-Python pickler for good; undo that after the test.
    for attr in ("_batch_setitems", "save_dict"):
        monkeypatch.setattr(pickle._Pickler, attr, getattr(pickle._Pickler, attr))
    encoded = serialize_provider(cls())
    restored = dill.loads(base64.b64decode(encoded))
    assert type(restored) is cls
    assert len(encoded) < 400  # a reference, not a copy of the code or of any client


@pytest.mark.parametrize("cls", PROVIDERS, ids=lambda c: c.__name__)
def test_restored_provider_still_works(cls: type[LabProvider]) -> None:
    restored = dill.loads(dill.dumps(cls(), recurse=True))
    result = restored.diff("id", {}, {})
    assert result.changes is False
