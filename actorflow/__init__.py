"""actorflow: distributed computing for async Python.

Everything public is imported from here (``import actorflow as af``); the rest is private.
"""

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
    PeerUnreachableError,
    ProtocolError,
    SerializationError,
    SupervisionError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)
from actorflow.api.objects import as_completed, cancel, get, put, wait
from actorflow.api.placement import PlacementGroup, placement_group, remove_placement_group
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
)
from actorflow.api.supervise import Child, SupervisionTree, child, supervise
from actorflow.objects.ref import ObjectRef
from actorflow.placement.strategies import NodeAffinity, PlacementGroupStrategy

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
    "MailboxFullError",
    "NodeAffinity",
    "NodeDiedError",
    "ObjectLostError",
    "ObjectRef",
    "PeerUnreachableError",
    "PlacementGroup",
    "PlacementGroupStrategy",
    "ProtocolError",
    "RemoteFunction",
    "Runtime",
    "RuntimeContext",
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
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "nodes",
    "placement_group",
    "put",
    "remote",
    "remove_placement_group",
    "run",
    "shutdown",
    "supervise",
    "wait",
]
