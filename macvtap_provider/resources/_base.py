"""What every lab provider shares: check -> spec, exact diffs, logging to the engine."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, DiffResult, ReadResult, ResourceProvider

from macvtap_provider import provider_process
from macvtap_provider.builders.diff import is_unknown, plan_diff
from macvtap_provider.builders.validation import check_docker_host
from macvtap_provider.errors import SpecError, UnsupportedError

__all__ = ["LabProvider", "check_endpoint", "default", "fill_defaults", "input_names",
           "is_unknown", "known", "known_items", "output_names", "resource_props",
           "setup_provider_logging", "spec_defaults", "spec_kwargs"]

log = logging.getLogger(__name__)

T = TypeVar("T")
_LOGGING_READY = False


_in_provider_plugin = provider_process.in_provider_plugin


def setup_provider_logging() -> None:
    """Send this library's log records to stderr, which `pulumi up` shows as progress.

    MACVTAP_LAB_LOG_LEVEL (default INFO) picks the level; DEBUG shows every system call.
    """
    global _LOGGING_READY
    # Only inside the dynamic-provider plugin process: a program or a test that calls a
    # provider in-process keeps its own logging configuration.
    if _LOGGING_READY or not _in_provider_plugin():
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    root = logging.getLogger("macvtap_provider")
    root.addHandler(handler)
    root.setLevel(os.environ.get("MACVTAP_LAB_LOG_LEVEL", "INFO").upper())
    root.propagate = False
    _LOGGING_READY = True


def known(props: Mapping[str, Any], key: str, check: Callable[[Any], T]) -> T | None:
    """Validate props[key] with `check` unless it is unknown (preview) or absent."""
    value = props.get(key)
    if value is None or is_unknown(value):
        return None
    return check(value)


def known_items(values: Any, check: Callable[[Any], Any]) -> Any:
    """Validate a list with `check` unless one of its items is still unknown (preview);
    then the list is returned as given and validated again at apply time."""
    if isinstance(values, (list, tuple)) and any(is_unknown(v) for v in values):
        return values
    return check(values)


def check_endpoint(props: dict[str, Any], key: str = "docker_host") -> None:
    """Validate a docker endpoint input in place ("" becomes None: the local default)."""
    if not is_unknown(props.get(key)):
        props[key] = check_docker_host(props.get(key), key)


def default(props: dict[str, Any], key: str, value: Any) -> None:
    """Fill an absent input (None); an explicit value, even 0 or "", is kept and checked."""
    if props.get(key) is None:
        props[key] = value


# -- the schema, declared once per resource -----------------------------------------------
# A resource module declares its Spec (a frozen dataclass whose field defaults are THE
# defaults), its Args (pulumi Inputs; an optional input defaults to None = "the Spec's
# default"), and its Resource class, whose annotations name its outputs. Everything else
# (INPUTS, OUTPUTS, the defaults `check` fills in) is derived from those three here.


def spec_defaults(spec_cls: type) -> dict[str, Any]:
    """The default of every Spec field that has one (a fresh copy of mutable ones)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec_cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def fill_defaults(props: dict[str, Any], spec_cls: type,
                  only: Iterable[str] | None = None) -> None:
    """Fill every absent input (or those in `only`) with its Spec default. Absent: None,
    or "" for a string input whose default is a non-empty string (an empty config value
    means "unset")."""
    wanted = None if only is None else set(only)
    for key, value in spec_defaults(spec_cls).items():
        if wanted is not None and key not in wanted:
            continue
        current = props.get(key)
        if current is None or (current == "" and isinstance(value, str) and value):
            props[key] = value


def spec_kwargs(spec_cls: type, props: Mapping[str, Any]) -> dict[str, Any]:
    """The Spec fields present (not None) in normalised props, as constructor kwargs."""
    return {f.name: props[f.name] for f in dataclasses.fields(spec_cls)
            if props.get(f.name) is not None}


def input_names(args_cls: type, exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """A resource's inputs (its Args fields) compared by `diff`, minus `exclude`
    (secrets, which are compared through a digest or not at all)."""
    skip = set(exclude)
    return tuple(f.name for f in dataclasses.fields(args_cls) if f.name not in skip)


def output_names(resource_cls: type, args_cls: type) -> tuple[str, ...]:
    """The outputs a Resource class declares (annotations) that are not inputs."""
    inputs = {f.name for f in dataclasses.fields(args_cls)}
    names = [n for klass in reversed(resource_cls.__mro__)
             for n in inspect.get_annotations(klass)]
    return tuple(dict.fromkeys(n for n in names if n not in inputs and not n.startswith("_")))


def resource_props(args: object, outputs: Iterable[str], secrets: Iterable[str] = (),
                   opts: pulumi.ResourceOptions | None = None,
                   ) -> tuple[dict[str, Any], pulumi.ResourceOptions | None]:
    """A dynamic Resource's props and options from its Args dataclass.

    Secret inputs are wrapped as secrets and stay secret in the state; outputs are
    declared (as None) so that they become attributes of the Resource.
    """
    props: dict[str, Any] = dict(vars(args))
    secret_keys = [k for k in secrets if props.get(k) is not None]
    for key in secret_keys:
        props[key] = pulumi.Output.secret(props[key])
    props.update(dict.fromkeys(outputs))
    if secret_keys:
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=secret_keys))
    return props, opts


def _with_added_inputs(props: dict[str, Any], added: Mapping[str, Any]) -> dict[str, Any]:
    """`props` where an absent added input has the value states made without it had."""
    missing = {key: value for key, value in added.items() if props.get(key) in (None, "")}
    return {**props, **missing} if missing else props


#: What create/read/update/delete import lazily (docker and what uses it, pyroute2): loaded
#: once, by one thread, before the first of them runs. The provider server runs them in
#: parallel threads, and two threads importing docker's modules at once can stop in
#: CPython's import machinery (`_DeadlockError` on `docker.models.containers`, seen on a
#: concurrent destroy). Check and diff import none of it, so previews stay light.
IO_MODULES = ("docker", "docker.errors", "docker.types", "docker.utils.socket",
              "pyroute2", "pyroute2.netlink.exceptions",
              "macvtap_provider.adapters.remote_host", "macvtap_provider.adapters.remote_disk",
              "macvtap_provider.images.base", "macvtap_provider.images.guest_image",
              "macvtap_provider.images.libvirt_image", "macvtap_provider.images.customize")
_IO_LOCK = threading.Lock()
_io_loaded = False


def load_io_modules() -> None:
    """Import IO_MODULES once per process, in one thread at a time."""
    global _io_loaded
    if _io_loaded:
        return
    with _IO_LOCK:
        if not _io_loaded:
            for name in IO_MODULES:
                importlib.import_module(name)
            _io_loaded = True


def _after_io_modules(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> T:
        load_io_modules()
        return method(self, *args, **kwargs)

    run.loads_io_modules = True  # type: ignore[attr-defined]
    return run


class LabProvider(ResourceProvider):
    """Base for the lab's providers. Stateless, so Pulumi can pickle it into the state.

    Subclasses set INPUTS (compared by diff), REPLACE_ON (those forcing a
    replacement) and implement `normalize` (validate + fill defaults; pure) and
    the CRUD methods.
    """

    INPUTS: ClassVar[tuple[str, ...]] = ()
    REPLACE_ON: ClassVar[frozenset[str]] = frozenset()
    KIND: ClassVar[str] = "resource"
    #: Inputs added after states were made, with the value those states implicitly had:
    #: diff reads an old state without them as having that value (no spurious replace).
    ADDED_INPUTS: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("create", "read", "update", "delete"):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "loads_io_modules", False):
                setattr(cls, name, _after_io_modules(method))

    def normalize(self, props: dict[str, Any]) -> dict[str, Any]:
        """Validate inputs (skipping unknown ones) and fill defaults. Raises SpecError."""
        return props

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        setup_provider_logging()
        try:
            return CheckResult(self.normalize(dict(news)), [])
        except SpecError as exc:
            return CheckResult(news, [CheckFailure(exc.field, f"{self.KIND}: {exc.reason}")])

    def drift_replaces(self, _olds: dict[str, Any]) -> list[str]:
        """Properties whose refreshed state says the object must be made again."""
        return []

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        olds, news = _with_added_inputs(olds, self.ADDED_INPUTS), \
            _with_added_inputs(news, self.ADDED_INPUTS)
        plan = plan_diff(olds, news, inputs=self.INPUTS, replace_on=self.REPLACE_ON)
        replaces = list(plan.replaces) + [p for p in self.drift_replaces(olds)
                                          if p not in plan.replaces]
        changed = plan.has_changes or bool(replaces)
        if changed:
            log.debug("%s diff: changed=%s replaces=%s", self.KIND, plan.changed, replaces)
        # Names are stable, so the old object must go before its replacement comes.
        return DiffResult(changes=changed, replaces=replaces, stables=[],
                          delete_before_replace=True)

    def read_missing(self) -> ReadResult:
        """The answer of `read` for an object that no longer exists."""
        return ReadResult("", {})


    def refuse_import(self, props: Mapping[str, Any]) -> None:
        if not any(k in props for k in self.INPUTS):
            raise UnsupportedError(
                f"`pulumi import` of a {self.KIND} is not supported: declare it in a stack "
                "and run `pulumi up` (the provider recreates it from its inputs)")


# Providers are unpickled in the plugin process for every operation (destroy calls no
# `check`), so their logging is set up as soon as this module loads there.
setup_provider_logging()
provider_process.adopt()  # the engine watch and enough threads, under any server
