"""The dynamic-provider plugin's additions, without a server: import detection, the read
guard, and pause points."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from pulumi.runtime.proto import provider_pb2

from macvtap_provider import faults, plugin


def read_request(properties: dict[str, Any] | None = None,
                 inputs: dict[str, Any] | None = None) -> provider_pb2.ReadRequest:
    req = provider_pb2.ReadRequest(id="abc", urn="urn:pulumi:s::p::t::n")
    if properties is not None:
        req.properties.CopyFrom(struct_pb2.Struct(fields={
            k: struct_pb2.Value(string_value=v) for k, v in properties.items()}))
    if inputs is not None:
        req.inputs.CopyFrom(struct_pb2.Struct(fields={
            k: struct_pb2.Value(string_value=v) for k, v in inputs.items()}))
    return req


def test_a_read_without_the_provider_is_an_import() -> None:
    assert plugin.is_import(read_request())
    assert plugin.is_import(read_request(properties={"name": "x"}))


def test_a_refresh_or_a_get_carries_the_provider() -> None:
    assert not plugin.is_import(read_request(properties={"__provider": "b64"}))
    assert not plugin.is_import(read_request(inputs={"__provider": "b64"}))


class _AbortedError(Exception):
    pass


class _Context:
    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _AbortedError(code, details)


class _Servicer:
    def __init__(self) -> None:
        self.reads: list[str] = []

    def Read(self, request: Any, _context: Any) -> str:  # noqa: N802 - gRPC's name
        self.reads.append(request.id)
        return "read"


def test_the_guard_refuses_imports_and_passes_reads_through() -> None:
    servicer = _Servicer()
    plugin.guard_reads(servicer)

    with pytest.raises(_AbortedError) as refused:
        servicer.Read(read_request(), _Context())
    passed = servicer.Read(read_request(properties={"__provider": "b64"}), _Context())

    code, details = refused.value.args
    assert code is grpc.StatusCode.UNIMPLEMENTED
    assert "`pulumi import` is not supported" in details and "pulumi up" in details
    assert passed == "read" and servicer.reads == ["abc"]


def test_a_pause_point_waits_only_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.ENV, "other-point:5")
    started = time.monotonic()
    faults.pause(faults.DOMAIN_DEFINED)
    assert time.monotonic() - started < 0.5

    monkeypatch.setenv(faults.ENV, f"{faults.DOMAIN_DEFINED}:0.2")
    started = time.monotonic()
    faults.pause(faults.DOMAIN_DEFINED)
    assert time.monotonic() - started >= 0.2
