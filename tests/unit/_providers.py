"""Shared helpers for the provider unit tests: calling `check` and reading its answer."""

from __future__ import annotations

from typing import Any

from pulumi.dynamic import CheckResult

from macvtap_provider.resources._base import LabProvider


def run_check(provider: LabProvider, props: dict[str, Any]) -> CheckResult:
    return provider.check({}, dict(props))


def accepted(provider: LabProvider, props: dict[str, Any]) -> dict[str, Any]:
    """The normalised inputs; fails the test with the failures when `check` refused."""
    result = run_check(provider, props)
    failures = [(f.property, f.reason) for f in result.failures or []]
    assert failures == [], f"check refused good inputs: {failures}"
    assert isinstance(result.inputs, dict)
    return result.inputs


def refused(provider: LabProvider, props: dict[str, Any]) -> tuple[str, str]:
    """(property, reason) of the single failure `check` reported."""
    result = run_check(provider, props)
    failures = [(f.property, f.reason) for f in result.failures or []]
    assert len(failures) == 1, f"expected one failure, got {failures}"
    prop, reason = failures[0]
    assert reason.startswith(f"{provider.KIND}: "), reason  # says which resource refused
    assert result.inputs == props  # the inputs come back as given
    return prop, reason
