"""Do a provider's outputs match its Resource class's annotations (names and types)?"""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "float": (float, int),
    "list": (list, tuple), "dict": (dict,), "None": (type(None),), "Any": (object,),
}


def annotated_types(resource_cls: type) -> dict[str, tuple[type, ...]]:
    """Output name -> the Python types its annotation allows."""
    out: dict[str, tuple[type, ...]] = {}
    for name, hint in inspect.get_annotations(resource_cls).items():
        match = re.fullmatch(r"pulumi\.Output\[(.*)\]", str(hint))
        if match is None:
            continue
        allowed: tuple[type, ...] = ()
        for part in match.group(1).split("|"):
            allowed += _TYPES[part.strip().split("[")[0]]
        out[name] = allowed
    return out


def resource_of(provider: object) -> type:
    """The Resource class declared beside a provider (its module's OUTPUTS owner)."""
    from pulumi.dynamic import Resource

    module = sys.modules[type(provider).__module__]
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, Resource) and v is not Resource
             and v.__module__ == module.__name__]
    assert len(found) == 1, found
    return found[0]


def mismatches(resource_cls: type, outs: dict[str, Any]) -> list[str]:
    """What differs between a provider's outputs and the annotations (empty: all agree)."""
    problems = []
    module = sys.modules[resource_cls.__module__]
    for name in getattr(module, "OUTPUTS", ()):
        if name not in outs:
            problems.append(f"{name}: declared, not returned")
    for name, allowed in annotated_types(resource_cls).items():
        if name not in outs:
            continue
        value = outs[name]
        ok = isinstance(value, allowed) and not (
            isinstance(value, bool) and bool not in allowed)
        if not ok:
            problems.append(f"{name}: {type(value).__name__} {value!r}, annotated "
                            f"{'/'.join(t.__name__ for t in allowed)}")
    return problems
