"""Messages between the cluster's actors (owners, nodes, workers, the head).

Hot records are slotted dataclasses; they travel pickled inside transport frames. Object
payloads say where a value is: inline bytes, a shared-memory segment on a node, or an error.
"""

from __future__ import annotations

import dataclasses
import operator
import pickle
from dataclasses import dataclass, field
from typing import Any, TypeVar

from actorflow.objects.serialization import plain_type
from actorflow.placement.messages import (
    CreateGroup,
    NodeLoad,
    PlaceTask,
    ReleaseBundles,
    RemoveGroup,
    ReserveBundles,
    WaitGroup,
)
from actorflow.placement.resources import Resources
from actorflow.runtime import ActorRef

__all__ = [  # the placement messages are re-exported: every message is reachable from here
    "CreateGroup",
    "NodeLoad",
    "PlaceTask",
    "ReleaseBundles",
    "RemoveGroup",
    "ReserveBundles",
    "WaitGroup",
]

T = TypeVar("T")


def _fast_pickle(cls: type[T]) -> type[T]:
    """Pickle a slotted dataclass as ``(cls, (field, ...))``: about twice as fast both ways as
    the default (copyreg and a getstate per object), and these records cross on every call."""
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    get = operator.attrgetter(*names)
    if len(names) == 1:
        def reduce(self: Any) -> tuple[Any, ...]:
            return (cls, (get(self),))
    else:
        def reduce(self: Any) -> tuple[Any, ...]:
            return (cls, get(self))
    cls.__reduce__ = reduce  # type: ignore[method-assign]
    return cls


# -- object payloads --------------------------------------------------------------------------


@_fast_pickle
@dataclass(frozen=True, slots=True)
class Inline:
    """A small value: the pickle stream with its out-of-band buffers appended."""

    meta: bytes
    buffers: tuple[bytes, ...] = ()


@_fast_pickle
@dataclass(frozen=True, slots=True)
class InShm:
    """A large value in shared-memory segment ``name`` on node ``node_id``; ``generation``
    tells it from an earlier value of a reused segment."""

    name: str
    node_id: str
    nbytes: int
    generation: int = 0


@_fast_pickle
@dataclass(frozen=True, slots=True)
class Fetched:
    """A large value copied here from another node: its pickle stream and buffers."""

    meta: Any
    buffers: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class FreeSegment:
    """Tell a node: the owner freed this object; unlink its segment."""

    name: str


@dataclass(frozen=True, slots=True)
class ReadSegment:
    """Ask a node for one of its shared-memory segments: answers ``Fetched``, or, when
    ``bulk`` and the buffers are large, ``Offered`` (the asker pulls them itself)."""

    name: str
    bulk: bool = False


@dataclass(frozen=True, slots=True)
class Offered:
    """A node's answer to ``ReadSegment(bulk=True)``: the segment's pickle stream, and its
    buffers' sizes, to be pulled (one time, soon) from the node's listener at ``address``
    under ``ticket`` (``actorflow.transport.bulk``), one after the other."""

    meta: bytes
    lengths: tuple[int, ...]
    address: str
    ticket: str


@_fast_pickle
@dataclass(frozen=True, slots=True)
class Local:
    """An argument made by an earlier task pushed to the same worker (its producer), sent
    before the producer finished: the worker takes the value from its recent results, or
    fetches it from the owner, ``owner`` being the owner's ObjectOwner as a pickled ActorRef's
    ``(uid, address, slot id, path)``."""

    object_id: str
    owner: tuple[str, str | None, str, str]


@_fast_pickle
@dataclass(frozen=True, slots=True)
class Failed:
    """The task that was to produce the value failed with ``error`` (an af error)."""

    error: BaseException


#: Where a value is. ``bytes`` is the commonest: a small value's pickle stream, with no
#: out-of-band buffers (``Inline`` is a small value with buffers).
Payload = bytes | Inline | InShm | Fetched | Failed

_PLAIN_PAYLOADS = frozenset({bytes, Inline, InShm, Local})


def _plain_payloads(payloads: tuple[Any, ...]) -> bool:
    return all(type(payload) in _PLAIN_PAYLOADS for payload in payloads)


#: A call's (args, kwargs): pickled bytes, or, when large, a shared-memory segment (one copy,
#: read zero-copy by the worker)
Args = bytes | InShm


# -- tasks ---------------------------------------------------------------------------------------


@_fast_pickle
@dataclass(slots=True)
class TaskSpec:
    """Everything a worker needs to run one task."""

    task_id: str
    name: str
    fn_id: str
    fn_blob: bytes | None  # the cloudpickled function, sent once per worker
    args: Args  # pickled (args, kwargs); top-level ObjectRefs replaced by ResolvedArg
    resolved: tuple[Payload | Local, ...]  # values of the top-level ObjectRef arguments
    num_returns: int
    job_id: str
    gpu_ids: tuple[int, ...] = ()
    #: the strategy of the work it submits without one (placement group capture), or None
    capture: Any = None
    #: submitted by its job's driver: its large results go when that job ends (a worker's
    #: results may outlive the job, in a detached actor's state)
    driver_owned: bool = False

    def __af_plain__(self) -> bool:  # see actorflow.transport.codec.dumps
        return _plain_payloads(self.resolved)


@plain_type  # (in a call's arguments it keeps them on the C pickler's fast path)
@_fast_pickle
@dataclass(frozen=True, slots=True)
class ResolvedArg:
    """Placeholder for the i-th resolved ObjectRef argument."""

    index: int


@_fast_pickle
@dataclass(frozen=True, slots=True)
class TaskReply:
    """One payload per return value (or one Failed for all); ``run_s`` is how long it ran."""

    returns: tuple[Payload, ...]
    run_s: float = 0.0
    released: tuple[str, ...] = ()  # argument segments the worker is done with (see store.py)
    #: ``(return index, owner, object id)`` of each ref pickled into a return: a lend that the
    #: caller keeps while that return lives (see objects/borrows.py)
    nested: tuple[tuple[int, Any, str], ...] = ()

    def __af_plain__(self) -> bool:  # a Failed may hold a user's exception: not plain
        return not self.nested and _plain_payloads(self.returns)


# -- quick forms -----------------------------------------------------------------------------------
# What crosses on every task and call, sent as bare ``bytes`` instead of a record when it can
# be: the link then carries it without a pickle record of its own (``bytes`` values sit in the
# frame's body), and the receiver unpickles one tuple with the C unpickler.
#
# - a task push whose worker already has the function, with no GPUs and no resolved ObjectRef
#   arguments: ``(task_id, fn_id, name, job_id, num_returns, args, driver_owned)`` (see
#   quick_task);
# - an actor call with no ObjectRef arguments: ``(method, args, num_returns, job)``, followed by the
#   call's id and that id's length in one byte (quick_call; pickle stops reading at the end of
#   its stream, so the id is a trailer: the caller's client adds it without pickling again);
# - a reply with one return that is a small value without out-of-band buffers, from a call
#   that ran under QUICK_RUN_S: that value's pickle stream itself (see quick_reply), which is
#   also its ``bytes`` payload.

#: A reply in the quick form stands for a run this short (a task's run time decides how deep
#: its owner pipelines; below this the exact figure does not matter).
QUICK_RUN_S = 0.0005


def quick_task(spec: TaskSpec) -> bytes | None:
    """The quick form of a task push, or None when it needs the full record."""
    if (spec.fn_blob is not None or spec.gpu_ids or spec.resolved or type(spec.args) is not bytes
            or spec.capture is not None):
        return None
    return pickle.dumps((spec.task_id, spec.fn_id, spec.name, spec.job_id, spec.num_returns,
                         spec.args, spec.driver_owned), 5)


def task_from_quick(data: bytes) -> TaskSpec:
    task_id, fn_id, name, job_id, num_returns, args, driver_owned = pickle.loads(data)
    return TaskSpec(task_id, name, fn_id, None, args, (), num_returns, job_id,
                    driver_owned=driver_owned)


def quick_call(method: str, args: bytes, num_returns: int, call_id: str = "",
               job: str = "") -> bytes:
    """The quick form of an actor call whose arguments are ``args`` (pickled, no refs)."""
    return pickle.dumps((method, args, num_returns, job), 5) + _id_trailer(call_id)


def _id_trailer(call_id: str) -> bytes:
    raw = call_id.encode()
    if len(raw) > 255:
        raise ValueError(f"a call id has at most 255 bytes: {call_id!r}")
    return raw + bytes((len(raw),))


def with_call_id(quick: bytes, call_id: str) -> bytes:
    """A quick call made without an id (``quick_call``'s default), given ``call_id``."""
    n = quick[-1]
    return quick[: len(quick) - 1 - n] + _id_trailer(call_id)


def call_from_quick(data: bytes) -> ActorCall:
    method, args, num_returns, job = pickle.loads(data)
    n = data[-1]
    return ActorCall(method, args, (), num_returns, data[-1 - n : -1].decode() if n else "",
                     job)


def quick_reply(returns: tuple[Payload, ...], run_s: float,
                nested: tuple[tuple[int, Any, str], ...] = ()) -> TaskReply | bytes:
    """The reply for ``returns``: the quick form when it applies, else a TaskReply."""
    if len(returns) == 1 and run_s < QUICK_RUN_S and not nested:
        payload = returns[0]
        if type(payload) is bytes:
            return payload
    return TaskReply(returns, run_s, (), nested)


def reply_returns(reply: TaskReply | bytes) -> tuple[tuple[Payload, ...], float]:
    """``(returns, run_s)`` of a reply in either form."""
    if type(reply) is bytes:
        return (reply,), 0.0
    assert type(reply) is TaskReply
    return reply.returns, reply.run_s


class MissingFunction(Exception):
    """The worker does not have the task's function (its first copy was lost): resend it."""


# -- leases --------------------------------------------------------------------------------------


@_fast_pickle
@dataclass(frozen=True, slots=True)
class RequestLease:
    demand: Resources
    owner: str  # for logs and `actorflow list`
    strategy: Any = None
    no_spill: bool = False  # the head chose this node already: queue here
    owner_ref: ActorRef | None = None  # watched: its leases come back when it is gone
    bundle: tuple[str, int] | None = None  # lease from this placement group bundle's pool
    env: Any = None  # the runtime environment (a ResolvedEnv) the worker must have


@_fast_pickle
@dataclass(frozen=True, slots=True)
class Spillback:
    """Answer to RequestLease: ask that node instead (in that placement group bundle)."""

    node_id: str
    node: ActorRef
    bundle: tuple[str, int] | None = None


@_fast_pickle
@dataclass(frozen=True, slots=True)
class Lease:
    lease_id: int
    worker: ActorRef
    node_id: str
    gpu_ids: tuple[int, ...] = ()
    control: ActorRef | None = None
    node: ActorRef | None = None  # the node that granted it (where it is returned)


@_fast_pickle
@dataclass(frozen=True, slots=True)
class ReturnLease:
    lease_id: int
    worker_ok: bool = True


@_fast_pickle
@dataclass(frozen=True, slots=True)
class WorkerBlocked:
    """The task running on this worker awaits objects: lend its CPU out meanwhile (Ray does
    too), so tasks waiting on their own child tasks cannot starve the node."""

    worker_id: str
    blocked: bool


# -- workers --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerReady:
    worker_id: str
    worker: ActorRef
    pid: int
    control: ActorRef | None = None


@dataclass(frozen=True, slots=True)
class HostActor:
    """Become the process of user actor ``actor_id``: build ``cls(*args, **kwargs)``."""

    actor_id: str
    name: str
    cls_blob: bytes
    args: bytes
    resolved: tuple[Payload, ...]
    max_concurrency: int
    gpu_ids: tuple[int, ...] = ()
    job_id: str = ""
    #: the strategy of what it creates and submits without one (its placement group captures
    #: its children: capture_child_tasks=True), or None
    capture: Any = None


@_fast_pickle
@dataclass(frozen=True, slots=True)
class ActorCall:
    method: str
    args: Args
    resolved: tuple[Payload, ...]
    num_returns: int = 1
    call_id: str = ""  # its first return's id without the index: what CancelCall names
    #: the caller's job when the caller is that job's driver: its large results go when
    #: that job ends ("": they stay until freed by their owner, or the node stops)
    job: str = ""

    def __af_plain__(self) -> bool:
        return _plain_payloads(self.resolved)


@dataclass(frozen=True, slots=True)
class CancelTask:
    task_id: str
    force: bool = False
    recursive: bool = True  # cancel the tasks and actor calls it submitted, too


# -- actors at the head ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActorSpec:
    actor_id: str
    class_name: str
    cls_blob: bytes
    args: bytes
    resolved: tuple[Payload, ...]
    demand: Resources  # what it needs free to be placed
    hold: Resources  # what it holds while alive
    max_restarts: int
    max_task_retries: int
    max_concurrency: int
    name: str | None = None
    namespace: str = ""
    lifetime: str | None = None
    job_id: str = ""
    owner: str = ""
    strategy: Any = None
    methods: tuple[str, ...] = ()
    streaming: tuple[str, ...] = ()  # the methods that are generators (see cluster/streaming)
    supervised: bool = False  # restarted by an af.supervise tree, not by its node
    #: the actor whose process created this one ("" if a driver or a task did): a
    #: non-detached actor is stopped when its creator's process ends (docs/guide.md)
    creator: str = ""
    #: its runtime environment (a ResolvedEnv): its worker is one of that environment
    runtime_env: Any = None


@dataclass(frozen=True, slots=True)
class CreateActor:
    spec: ActorSpec
    get_if_exists: bool = False


@dataclass(frozen=True, slots=True)
class ActorLocation:
    actor_id: str
    worker: ActorRef
    incarnation: int
    node_id: str


@dataclass(frozen=True, slots=True)
class ResolveActor:
    """Answer the actor's location once it is alive (waits while it starts or restarts)."""

    actor_id: str
    after_incarnation: int = -1  # wait for an incarnation newer than this one
    fail_if_down: bool = False  # raise if this start attempt ended (af.supervise proxies)


@dataclass(frozen=True, slots=True)
class ActorStatus:
    """Ask: answers ``(state, death)`` for the actor."""

    actor_id: str


@dataclass(frozen=True, slots=True)
class WaitActorDown:
    """Ask: answers the error (or None) once generation ``generation`` of the actor ends."""

    actor_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class RestartActor:
    """Ask (from an af.supervise tree): start a new generation of a supervised actor."""

    actor_id: str


@dataclass(frozen=True, slots=True)
class RetireActor:
    """Tell (from an af.supervise tree): the supervised actor is dead for good."""

    actor_id: str
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class GetNamedActor:
    name: str
    namespace: str


@dataclass(frozen=True, slots=True)
class KillActor:
    actor_id: str
    no_restart: bool = True


@dataclass(frozen=True, slots=True)
class ActorUp:
    """Node -> head: an incarnation of the actor is running."""

    actor_id: str
    worker: ActorRef
    incarnation: int
    node_id: str
    pid: int


@dataclass(frozen=True, slots=True)
class ActorDown:
    """Node -> head: the actor's process ended; ``final`` when no restart follows."""

    actor_id: str
    incarnation: int
    final: bool
    error: BaseException | None = None
    node_id: str = ""  # the node it ran on ("": the head's own verdict)


@dataclass(frozen=True, slots=True)
class ListState:
    """Ask the head for a view: ``what`` is nodes | actors | resources | available."""

    what: str
    extra: dict[str, Any] = field(default_factory=dict)


# -- membership and placement -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterNode:
    node_id: str
    node: ActorRef
    address: str | None
    resources: Resources
    #: again, after the head restarted (head_link.py): the actors the node runs, as
    #: ``(actor_id, worker ref or None while it restarts, pid)``
    rejoin: bool = False
    actors: tuple[tuple[str, Any, int], ...] = ()


@dataclass(frozen=True, slots=True)
class GetClusterInfo:
    """Ask: answers a ClusterInfo."""


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    session: str
    nodes: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class StartActor:
    spec: ActorSpec
    bundle: tuple[str, int] | None = None  # place it in this placement group bundle


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Ask: answers the node's view (a dict)."""


# -- cancelling actor calls -----------------------------------------------------------------------

#: The slot id of a worker's WorkerControl (well-known: a caller that knows the address of an
#: actor's process reaches it there without asking anyone).
CONTROL_ID = "control"


@dataclass(frozen=True, slots=True)
class CancelCall:
    """Ask a worker's WorkerControl: cancel the hosted actor's call ``call_id`` (queued: it is
    dropped; running: an async one gets CancelledError, a plain one a flag). Answers None once
    done, after any reply of that call already sent (so a caller that gets the answer first
    knows the call had not finished)."""

    call_id: str
    recursive: bool = True


# -- watching an actor's death ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchActor:
    """Ask (``af.watch``): answers the actor's ActorDiedError once it is dead for good (never
    on a restart). ``watch_id`` names this wait (see UnwatchActor); ``watcher`` is the asking
    process's object owner: the head drops the wait when that process ends."""

    actor_id: str
    watch_id: str
    watcher: Any = None


@dataclass(frozen=True, slots=True)
class UnwatchActor:
    """Tell: the watcher gave up (its ``af.watch`` was cancelled): drop wait ``watch_id``."""

    watch_id: str
