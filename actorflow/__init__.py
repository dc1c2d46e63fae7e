"""actorflow: distributed computing for async Python.

Everything public is imported from here (``import actorflow as af``); the rest is private.

The errors are imported with the package; every other public name is imported on its first
use (PEP 562), with the other names of its module. So a worker process, which imports
``actorflow.cluster.worker_main`` and therefore this package, pays nothing for the driver's
API; ``import actorflow`` in a task stays cheap; and a driver that decorates functions at
import time has not yet imported the transport or the cluster's actors when it calls
``af.init()``, which starts its node's zygote before importing them (see
``actorflow.cluster.bootstrap``), so both imports run at once.
"""

import typing as _typing

from actorflow._errors import (
    ActorDiedError,
    ActorflowError,
    ActorUnavailableError,
    AuthenticationError,
    GetTimeoutError,
    InfeasibleError,
    MailboxFullError,
    NodeDiedError,
    ObjectLostError,
    ObjectStoreFullError,
    OutOfMemoryError,
    OwnerDiedError,
    PeerUnreachableError,
    ProtocolError,
    RuntimeEnvTooLargeError,
    SerializationError,
    SupervisionError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)

if _typing.TYPE_CHECKING:
    from actorflow import metrics as metrics
    from actorflow import state as state
    from actorflow import util as util
    from actorflow.api.memory import memory_summary
    from actorflow.api.objects import as_completed, cancel, get, put, put_async, wait
    from actorflow.api.placement import (
        PlacementGroup,
        get_placement_group,
        placement_group,
        placement_group_table,
        remove_placement_group,
    )
    from actorflow.api.remote import ActorClass, ActorHandle, ActorMethod, RemoteFunction, remote
    from actorflow.api.runtime import (
        Runtime,
        RuntimeContext,
        available_resources,
        cluster_resources,
        get_actor,
        get_gpu_ids,
        get_runtime_context,
        init,
        is_initialized,
        kill,
        nodes,
        run,
        shutdown,
        watch,
    )
    from actorflow.api.supervise import Child, SupervisionTree, child, supervise
    from actorflow.cluster.streaming import ObjectRefGenerator
    from actorflow.jobs import JobClient
    from actorflow.objects.ref import ObjectRef
    from actorflow.placement.strategies import NodeAffinity, PlacementGroupStrategy
    from actorflow.state import timeline

__version__ = "0.1.0"

__all__ = [
    "ActorClass",
    "ActorDiedError",
    "ActorHandle",
    "ActorMethod",
    "ActorUnavailableError",
    "ActorflowError",
    "AuthenticationError",
    "Child",
    "GetTimeoutError",
    "InfeasibleError",
    "JobClient",
    "MailboxFullError",
    "NodeAffinity",
    "NodeDiedError",
    "ObjectLostError",
    "ObjectRef",
    "ObjectRefGenerator",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "PeerUnreachableError",
    "PlacementGroup",
    "PlacementGroupStrategy",
    "ProtocolError",
    "RemoteFunction",
    "Runtime",
    "RuntimeContext",
    "RuntimeEnvTooLargeError",
    "SerializationError",
    "SupervisionError",
    "SupervisionTree",
    "TaskCancelledError",
    "TaskError",
    "WorkerCrashedError",
    "__version__",
    "as_completed",
    "available_resources",
    "cancel",
    "child",
    "cluster_resources",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_placement_group",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "memory_summary",
    "nodes",
    "placement_group",
    "placement_group_table",
    "put",
    "put_async",
    "remote",
    "remove_placement_group",
    "run",
    "shutdown",
    "supervise",
    "timeline",
    "wait",
    "watch",
]


#: public name -> the module that defines it (imported on first use; see the docstring)
_LAZY: dict[str, str] = {
    **dict.fromkeys(("as_completed", "cancel", "get", "put", "put_async", "wait"),
                    "actorflow.api.objects"),
    **dict.fromkeys(("PlacementGroup", "get_placement_group", "placement_group",
                     "placement_group_table", "remove_placement_group"),
                    "actorflow.api.placement"),
    **dict.fromkeys(("ActorClass", "ActorHandle", "ActorMethod", "RemoteFunction", "remote"),
                    "actorflow.api.remote"),
    **dict.fromkeys(("Runtime", "RuntimeContext", "available_resources", "cluster_resources",
                     "get_actor", "get_gpu_ids", "get_runtime_context", "init",
                     "is_initialized", "kill", "nodes", "run", "shutdown", "watch"),
                    "actorflow.api.runtime"),
    **dict.fromkeys(("Child", "SupervisionTree", "child", "supervise"), "actorflow.api.supervise"),
    "JobClient": "actorflow.jobs",
    "ObjectRef": "actorflow.objects.ref",
    "memory_summary": "actorflow.api.memory",
    "timeline": "actorflow.state",
    "ObjectRefGenerator": "actorflow.cluster.streaming",
    **dict.fromkeys(("NodeAffinity", "PlacementGroupStrategy"), "actorflow.placement.strategies"),
}


#: public subpackages, reached as ``af.util`` and imported on first use (not in ``__all__``)
_SUBPACKAGES = ("metrics", "state", "util")


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None and name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"actorflow.{name}")
    if module is None:
        raise AttributeError(f"module 'actorflow' has no attribute {name!r}")
    import importlib

    found = importlib.import_module(module)
    namespace = globals()
    for other, where in _LAZY.items():  # the module's other names too: one import each
        if where == module:
            namespace[other] = getattr(found, other)
    return namespace[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_SUBPACKAGES})
