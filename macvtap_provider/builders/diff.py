"""Pure diff planning shared by the providers."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from pulumi.output import Unknown

#: The placeholder Pulumi uses for values unknown during preview.
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


@dataclass(frozen=True)
class DiffPlan:
    changed: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    unknown: tuple[str, ...] = field(default=())

    @property
    def has_changes(self) -> bool:
        return bool(self.changed)


def plan_diff(olds: Mapping[str, object], news: Mapping[str, object], *,
              inputs: Collection[str], replace_on: Collection[str]) -> DiffPlan:
    """Compare old state with new inputs over `inputs`.

    A property whose new value is unknown (preview before a dependency exists)
    counts as changed; if it is a replacing property, the plan replaces.
    """
    changed, replaces, unknown = [], [], []
    for key in inputs:
        new = news.get(key)
        if _contains_unknown(new):
            unknown.append(key)
        elif _norm(olds.get(key)) == _norm(new):
            continue
        changed.append(key)
        if key in replace_on:
            replaces.append(key)
    return DiffPlan(tuple(changed), tuple(replaces), tuple(unknown))


def is_unknown(value: object) -> bool:
    """True for a value Pulumi does not know yet (preview): its placeholder string or
    the SDK's Unknown object."""
    return value == UNKNOWN or isinstance(value, Unknown)


def _contains_unknown(value: object) -> bool:
    if is_unknown(value):
        return True
    if isinstance(value, Mapping):
        return any(_contains_unknown(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains_unknown(v) for v in value)
    return False


def _norm(value: object) -> object:
    """Treat None and empty containers alike and ignore list/tuple and int/float noise."""
    if value in (None, "", [], (), {}):
        return None
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _norm(v)) for k, v in value.items()))
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
