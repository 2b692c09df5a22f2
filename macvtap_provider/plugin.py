"""The engine's dynamic-provider plugin process (`python -m macvtap_provider.plugin`).

It is the Python SDK's own server (`python -m pulumi.dynamic`) with three additions (the
last two also hold under the SDK's server as is, once a lab provider is loaded there:
see `provider_process`):

* `pulumi import` is refused with a message that says why and what to do. The SDK
  finds a dynamic resource's code in its state (`__provider`); an import brings no
  state, and the SDK would fail with `KeyError: '__provider'`.
* The process ends when the engine that started it is gone (killed with SIGKILL, say),
  instead of serving nobody forever. The children it spawned for libguestfs die with it
  (`adapters.isolate` sets their parent-death signal), so an interrupted run leaves no
  process behind that could still write into the lab.
* More worker threads from the start: the SDK serves with 4, so with four images being
  customised a container's create (or a fifth guest's anything) would wait for a free
  thread.
"""

from __future__ import annotations

import os
import runpy
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from macvtap_provider import provider_process

PROVIDER_KEY = "__provider"
IMPORT_REFUSED = (
    "`pulumi import` is not supported for dynamic resources (macvtap-lab's LabNetwork, "
    "LibvirtContainer, CustomizedImage, MacvtapDomain, GuestNetwork, ...): their provider "
    "code lives in the state that `pulumi up` writes, and an import has none. Declare the "
    "resource in a stack and run `pulumi up`; it is created from its inputs (objects left by "
    "an interrupted run are replaced)."
)


def is_import(request: Any) -> bool:
    """A Read without the serialized provider in its properties or inputs: an import."""
    for struct in (request.properties, request.inputs):
        if struct is not None and PROVIDER_KEY in struct.fields:
            return False
    return True


def guard_reads(servicer: Any) -> None:
    """Wrap the servicer's Read so an import gets a clear refusal."""
    read = servicer.Read

    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        if is_import(request):
            context.abort(grpc.StatusCode.UNIMPLEMENTED, IMPORT_REFUSED)
        return read(request, context)

    servicer.Read = guarded


def main() -> None:
    from pulumi.runtime.proto import provider_pb2_grpc

    register = provider_pb2_grpc.add_ResourceProviderServicer_to_server
    make_server = grpc.server

    def register_guarded(servicer: Any, server: Any) -> None:
        guard_reads(servicer)
        register(servicer, server)

    def server_with_more_workers(executor: Any, *args: Any, **kwargs: Any) -> Any:
        executor.shutdown(wait=False)  # the SDK's 4-thread pool, never used
        return make_server(ThreadPoolExecutor(max_workers=provider_process.workers()),
                           *args, **kwargs)

    provider_pb2_grpc.add_ResourceProviderServicer_to_server = register_guarded
    grpc.server = server_with_more_workers
    # The plugin script exec'd us: our parent is the engine.
    provider_process.watch_engine(provider_process.engine_port(sys.argv), os.getppid())
    runpy.run_module("pulumi.dynamic", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
