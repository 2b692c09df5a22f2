"""What the e2e tests and the benchmark read from the Automation API's event stream, and
the deadline that keeps an engine command from hanging them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from bench.stacks import from_engine_event
from macvtap_provider.adapters import pulumi_stack
from tests.e2e.conftest import ops_of

pytestmark = pytest.mark.unit

DYN = "pulumi-python:dynamic/macvtap:"


def step(kind: str, op: str, rtype: str, name: str, seq: int = 1,
         outputs: dict[str, Any] | None = None) -> auto.EngineEvent:
    urn = f"urn:pulumi:s::p::{rtype}::{name}"
    meta: dict[str, Any] = {"op": op, "urn": urn, "type": rtype, "provider": ""}
    if outputs is not None:
        meta["new"] = {"type": rtype, "urn": urn, "id": "x", "parent": "", "provider": "",
                       "inputs": {}, "outputs": outputs}
    return auto.EngineEvent.from_json({"sequence": seq, "timestamp": 1, kind: {"metadata": meta}})


def pre(op: str, rtype: str, name: str) -> auto.EngineEvent:
    return step("resourcePreEvent", op, rtype, name)


def test_ops_as_preview_json_lists_them() -> None:
    events = [
        pre("same", "pulumi:pulumi:Stack", "p-s"),
        pre("update", "pulumi:providers:pulumi-python", "default"),  # config changed
        pre("same", f"{DYN}LabNetwork", "lab-net"),
        pre("delete-replaced", f"{DYN}CustomizedImage", "lab-guest-image"),
        pre("replace", f"{DYN}CustomizedImage", "lab-guest-image"),
        pre("create-replacement", f"{DYN}CustomizedImage", "lab-guest-image"),
        pre("update", f"{DYN}MacvtapDomain", "lab-guest-domain"),
        pre("create", "macvtap:index:Lab", "lab"),
        step("resOutputsEvent", "create", "macvtap:index:Guest", "g", outputs={}),  # not a plan
    ]
    assert ops_of(events) == {"lab-guest-image": "replace", "lab-guest-domain": "update",
                              "lab": "create"}
    assert ops_of(events, by_type=True) == {f"{DYN}CustomizedImage": "replace",
                                            f"{DYN}MacvtapDomain": "update",
                                            "macvtap:index:Lab": "create"}


def test_bench_reads_phases_outputs_diagnostics_and_the_end() -> None:
    out = from_engine_event(step("resOutputsEvent", "create", f"{DYN}GuestNetwork",
                                 "lab-guest-network", outputs={"guest_ip": "10.0.0.10",
                                                               "network": "lab-net"}), 5.0)
    assert out is not None
    assert (out.kind, out.type, out.name, out.message, out.at) == \
        ("outputs", "GuestNetwork", "lab-guest-network", "create", 5.0)
    assert out.outputs == {"guest_ip": "10.0.0.10", "network": "lab-net"}
    diag = auto.EngineEvent.from_json({"sequence": 2, "timestamp": 1, "diagnosticEvent": {
        "message": "guest 10.0.0.10 answers ping and TCP 22\n", "color": "never",
        "severity": "info", "urn": "urn:x"}})
    assert from_engine_event(diag, 1.0) == \
        type(out)(1.0, "diag", "", "urn:x", "guest 10.0.0.10 answers ping and TCP 22")
    debug = auto.EngineEvent.from_json({"sequence": 3, "timestamp": 1, "diagnosticEvent": {
        "message": "noise", "color": "never", "severity": "debug"}})
    assert from_engine_event(debug, 1.0) is None
    summary = auto.EngineEvent.from_json({"sequence": 4, "timestamp": 1, "summaryEvent": {
        "maybeCorrupt": False, "durationSeconds": 1, "resourceChanges": {}, "policyPacks": {}}})
    done = from_engine_event(summary, 9.0)
    assert done is not None and done.kind == "summary"


def test_a_pulumi_still_running_at_the_deadline_is_interrupted(tmp_path: Path) -> None:
    # A stand-in for the engine: a child of this process whose command name is pulumi's.
    fake = tmp_path / "pulumi"
    fake.write_text(f"#!{sys.executable}\nimport signal, sys, time\n"
                    "signal.signal(signal.SIGINT, lambda *_: sys.exit(42))\ntime.sleep(60)\n")
    fake.chmod(0o755)
    other = subprocess.Popen(["sleep", "60"])  # not an engine: left alone
    engine = subprocess.Popen([str(fake)])
    try:
        started = time.monotonic()
        with pulumi_stack.interrupt_after(0.5) as fired:
            assert engine.wait(timeout=20) == 42
        assert fired.is_set() and time.monotonic() - started < 10
        assert other.poll() is None
    finally:
        for proc in (engine, other):
            proc.kill()
            proc.wait()


def test_no_interrupt_before_the_deadline() -> None:
    with pulumi_stack.interrupt_after(30) as fired:
        pass
    assert not fired.is_set()
