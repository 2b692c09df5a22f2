"""GeneratedPassword: a random password made once and kept (as a secret) in the state."""

from __future__ import annotations

import secrets
import string
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource

from macvtap_provider.builders.validation import check_int_range
from macvtap_provider.resources._base import LabProvider, default, known

ALPHABET = string.ascii_letters + string.digits


class GeneratedPasswordProvider(LabProvider):
    INPUTS = ("length",)
    REPLACE_ON = frozenset(INPUTS)
    KIND = "GeneratedPassword"

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        default(props, "length", 20)
        known(props, "length", lambda v: check_int_range(v, "length", 12, 128))
        return props

    def create(self, props: dict[str, Any]) -> CreateResult:
        value = "".join(secrets.choice(ALPHABET) for _ in range(int(props["length"])))
        return CreateResult(secrets.token_hex(8), {**props, "result": value})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        return ReadResult(id_, props)


class GeneratedPassword(Resource, module="macvtap", name="GeneratedPassword"):
    """A random alphanumeric password; `result` is a secret output."""

    result: pulumi.Output[str]

    def __init__(self, resource_name: str, length: int = 20,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["result"]))
        super().__init__(GeneratedPasswordProvider(), resource_name,
                         {"length": length, "result": None}, opts)
