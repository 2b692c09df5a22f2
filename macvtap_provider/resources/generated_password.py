"""GeneratedPassword: a random password made once and kept (as a secret) in the state."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, ReadResult, Resource

from macvtap_provider.builders.validation import check_int_range
from macvtap_provider.resources._base import LabProvider, fill_defaults, known

ALPHABET = string.ascii_letters + string.digits
LENGTH_RANGE = (12, 128)


@dataclass(frozen=True)
class GeneratedPasswordSpec:
    """A generated password's inputs, with their defaults."""

    length: int = 20


class GeneratedPasswordProvider(LabProvider):
    INPUTS = ("length",)
    REPLACE_ON = frozenset(INPUTS)
    KIND = "GeneratedPassword"

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        fill_defaults(props, GeneratedPasswordSpec)
        known(props, "length", lambda v: check_int_range(v, "length", *LENGTH_RANGE))
        return props

    def create(self, props: dict[str, Any]) -> CreateResult:
        value = "".join(secrets.choice(ALPHABET) for _ in range(int(props["length"])))
        return CreateResult(secrets.token_hex(8), {**props, "result": value})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        self.refuse_import(props)
        return ReadResult(id_, props)


class GeneratedPassword(Resource, module="macvtap", name="GeneratedPassword"):
    """A random alphanumeric password (12-128 characters, default 20), made once and kept
    in the state; `result` is a secret output."""

    length: pulumi.Output[int]
    #: The password (secret).
    result: pulumi.Output[str]

    def __init__(self, resource_name: str, length: pulumi.Input[int] | None = None,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["result"]))
        super().__init__(GeneratedPasswordProvider(), resource_name,
                         {"length": length, "result": None}, opts)
