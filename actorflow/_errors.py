"""The actorflow exception tree.

Every error actorflow raises derives from :class:`ActorflowError`. Where a standard type fits,
the error subclasses it too, so ``except TimeoutError`` keeps working::

    ActorflowError
    ├── TaskError                 (+ the remote exception's own type, built on demand)
    ├── ActorDiedError
    ├── ActorUnavailableError
    ├── WorkerCrashedError
    ├── NodeDiedError
    ├── ObjectLostError
    │   └── OwnerDiedError
    ├── ObjectStoreFullError
    ├── OutOfMemoryError
    ├── RuntimeEnvTooLargeError   (+ ValueError)
    ├── GetTimeoutError           (+ TimeoutError)
    ├── TaskCancelledError        (+ asyncio.CancelledError is *not* a base: it would stop tasks)
    ├── InfeasibleError
    ├── SerializationError        (+ TypeError)
    ├── AuthenticationError       (+ PermissionError)
    ├── SupervisionError
    ├── MailboxFullError          (tell_nowait on a full mailbox)
    ├── PeerUnreachableError      (+ ConnectionError)
    └── ProtocolError             (+ ValueError)

Each constructor takes the facts and builds a message that says what happened and what to do.
Every error pickles (``__reduce__`` rebuilds it from the same facts), so errors cross processes.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "ActorDiedError",
    "ActorUnavailableError",
    "ActorflowError",
    "AuthenticationError",
    "GetTimeoutError",
    "InfeasibleError",
    "MailboxFullError",
    "NodeDiedError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "PeerUnreachableError",
    "ProtocolError",
    "RuntimeEnvTooLargeError",
    "SerializationError",
    "SupervisionError",
    "TaskCancelledError",
    "TaskError",
    "WorkerCrashedError",
]


class ActorflowError(Exception):
    """Base class of every error actorflow raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.args)


class ActorDiedError(ActorflowError):
    """The actor is dead for good: stopped, killed, or crashed past its restart budget.

    ``cause`` is the exception that ended it (``None`` for a normal stop or a kill).
    """

    def __init__(self, actor: str, reason: str = "", cause: BaseException | None = None) -> None:
        self.actor = actor
        self.reason = reason
        self.cause = cause
        text = f"actor {actor!r} is dead"
        if reason:
            text += f": {reason}"
        if cause is not None:
            text += f" (cause: {type(cause).__name__}: {cause})"
        text += ". Create a new actor, or give it max_restarts to have it restarted."
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.actor, self.reason, self.cause))


class ActorUnavailableError(ActorflowError):
    """The actor died during the call and is being restarted; retry the call later."""

    def __init__(self, actor: str, reason: str = "") -> None:
        self.actor = actor
        self.reason = reason
        text = f"actor {actor!r} is unavailable"
        if reason:
            text += f": {reason}"
        text += "; it is restarting, so retry the call (or set max_task_retries)."
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.actor, self.reason))


class WorkerCrashedError(ActorflowError):
    """The process running a task died and the task's retries were used up."""


class NodeDiedError(ActorflowError):
    """The node holding the work died."""


class ObjectLostError(ActorflowError):
    """Every copy of an object is gone and it could not be rebuilt."""


class OwnerDiedError(ObjectLostError):
    """The process that owned the object (kept its count and its value) died.

    ``object_id`` is the object, ``owner`` says which process owned it.
    """

    def __init__(self, object_id: str, owner: str) -> None:
        self.object_id = object_id
        self.owner = owner
        super().__init__(
            f"object {object_id} is lost: its owner ({owner}) died. An object lives in the "
            "process that made it; keep that process alive while others read the object.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.object_id, self.owner))


class ObjectStoreFullError(ActorflowError):
    """A value can never fit in the node's object store (nor on its spill disk).

    ``size`` is the value's size in bytes, ``limit`` the most that could take it (bytes), and
    ``where`` names the store (a node's shared memory, a configured limit, a spill directory).
    """

    def __init__(self, size: int, limit: int, where: str) -> None:
        self.size = size
        self.limit = limit
        self.where = where
        super().__init__(
            f"a value of {_mib(size)} cannot fit in {where}, which can take at most "
            f"{_mib(limit)}; make the value smaller, split it, or give the store more room")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.size, self.limit, self.where))


class RuntimeEnvTooLargeError(ActorflowError, ValueError):
    """A runtime environment's directory (``working_dir`` or a ``py_modules`` entry) holds
    more than the cluster takes; nothing was uploaded or run.

    ``path`` names the directory, ``size`` is the bytes of its files counted so far (the count
    stops once over), ``limit`` the cluster's limit in bytes (``runtime_env_max_bytes``).
    """

    def __init__(self, path: str, size: int, limit: int) -> None:
        self.path = path
        self.size = size
        self.limit = limit
        super().__init__(
            f"runtime_env directory {path!r} holds more than {_mib(size)} of files, over the "
            f"cluster's limit of {_mib(limit)}: leave large data out of it (read it from "
            "shared storage), or start the head with a larger --runtime-env-max-bytes")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.size, self.limit))


class OutOfMemoryError(ActorflowError):
    """The node's memory guard killed the task's worker and the task's retries are used up.

    ``task`` names it, ``node_id`` the node; ``used`` and ``total`` are the machine's memory in
    bytes when the guard acted, ``threshold`` the fraction it acts at.
    """

    def __init__(self, task: str, node_id: str, used: int, total: int, threshold: float
                 ) -> None:
        self.task = task
        self.node_id = node_id
        self.used = used
        self.total = total
        self.threshold = threshold
        super().__init__(
            f"task {task!r} was killed by the memory guard of node {node_id}: the machine's "
            f"memory use reached {_mib(used)} of {_mib(total)} (threshold "
            f"{threshold:.0%}) and the task's retries are used up; give it less data, ask "
            "for memory= so it is placed where there is room, or raise max_retries")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task, self.node_id, self.used, self.total, self.threshold))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class GetTimeoutError(ActorflowError, TimeoutError):
    """A wait with a timeout (``get``, ``ask``) ran out of time."""


class TaskCancelledError(ActorflowError):
    """The task was cancelled before or while it ran."""


class InfeasibleError(ActorflowError):
    """No node can ever satisfy the resource demand; ``demand`` is that demand (resource ->
    amount) where one was asked for (None for a placement group's own errors)."""

    def __init__(self, message: str, demand: dict[str, float] | None = None) -> None:
        self.demand = demand
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.demand))


class SerializationError(ActorflowError, TypeError):
    """An argument, message or result cannot be pickled or stored; names the object and the
    cause. ``size`` and ``limit`` (bytes) are set when it was too large for where it went."""

    def __init__(self, message: str, size: int | None = None, limit: int | None = None
                 ) -> None:
        self.size = size
        self.limit = limit
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.size, self.limit))


class AuthenticationError(ActorflowError, PermissionError):
    """Wrong or missing cluster token."""


class SupervisionError(ActorflowError):
    """A supervision tree gave up after exceeding its restart intensity."""


class MailboxFullError(ActorflowError):
    """``tell_nowait`` found the actor's mailbox full; use ``await tell(...)`` to wait."""


class PeerUnreachableError(ActorflowError, ConnectionError):
    """The process hosting an actor cannot be reached, or the link to it was lost.

    ``delivered`` is False when the message surely never left this process (the peer could
    not be reached at all), None when that is unknown (the link was lost with it in flight).
    """

    delivered: bool | None = None


class ProtocolError(ActorflowError, ValueError):
    """A peer sent bytes that are not a valid actorflow frame, or speaks another version."""


class TaskError(ActorflowError):
    """The remote code raised.

    A ``TaskError`` raised to the caller is also an instance of the original exception's type
    (see :meth:`as_instanceof_cause`); its message holds the remote traceback.
    """

    def __init__(self, cause: BaseException | None, traceback_str: str, where: str = "") -> None:
        self.cause = cause
        self.traceback_str = traceback_str
        self.where = where
        origin = f" in {where}" if where else ""
        name = type(cause).__name__ if cause is not None else "Exception"
        # Exception.__init__ directly: in the class that is also the cause's type, super()
        # would reach the cause's own __init__, whose arguments may differ
        Exception.__init__(self, f"{name} raised{origin}:\n\n{traceback_str.rstrip()}")

    def __reduce__(self) -> tuple[Any, ...]:
        cause = self.cause
        carried = _exception_state(cause) if cause is not None else None
        return (_rebuild_task_error, (carried, self.traceback_str, self.where))

    def as_instanceof_cause(self) -> TaskError:
        """Return a TaskError that is also an instance of the cause's type."""
        cause = self.cause
        if cause is None or isinstance(cause, TaskError):
            return self
        cls = _dual_class(type(cause))
        if cls is None:
            return self
        err = cls.__new__(cls)
        TaskError.__init__(err, cause, self.traceback_str, self.where)
        err.args = (str(self),)
        return err


_DUAL_CACHE: dict[type[BaseException], type[TaskError] | None] = {}


def _dual_class(cause_type: type[BaseException]) -> type[TaskError] | None:
    """A class deriving from both TaskError and the cause's type, or None if impossible."""
    if cause_type in _DUAL_CACHE:
        return _DUAL_CACHE[cause_type]
    cls: type[TaskError] | None
    try:
        cls = type(
            f"TaskError({cause_type.__name__})",
            (TaskError, cause_type),
            {"__module__": __name__, "__init__": TaskError.__init__, "__str__": TaskError.__str__},
        )
    except TypeError:  # layout conflict (e.g. a C-level exception with its own struct)
        cls = None
    _DUAL_CACHE[cause_type] = cls
    return cls


def _exception_state(exc: BaseException) -> tuple[type[BaseException], tuple[Any, ...],
                                                    dict[str, Any]]:
    """An exception as (class, args, attributes): rebuilt without calling its ``__init__``,
    so exceptions whose constructor takes other arguments than ``args`` still cross."""
    return (type(exc), exc.args, dict(getattr(exc, "__dict__", {})))


def _rebuild_exception(state: Any) -> BaseException | None:
    if state is None or isinstance(state, BaseException):
        return state
    cls, args, attrs = state
    exc: BaseException = cls.__new__(cls)
    exc.args = args
    try:
        exc.__dict__.update(attrs)
    except AttributeError:  # a C-level exception without a __dict__
        pass
    return exc


def _rebuild_task_error(cause: Any, tb: str, where: str) -> TaskError:
    return TaskError(_rebuild_exception(cause), tb, where).as_instanceof_cause()


class RemoteException(Exception):
    """Stands in for a remote exception whose type could not be unpickled here: it carries the
    type's name, the exception's text and, when known, the remote traceback."""

    def __init__(self, type_name: str, text: str, traceback_str: str = "") -> None:
        self.type_name = type_name
        self.text = text
        self.traceback_str = traceback_str
        message = f"{type_name}: {text}"
        if traceback_str:
            message += f"\n\nRemote traceback:\n{traceback_str.rstrip()}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.type_name, self.text, self.traceback_str))


def builtin_exception(type_name: str) -> type[BaseException] | None:
    """The builtin exception class of that name, if any (used when rebuilding remote errors)."""
    obj = getattr(builtins, type_name, None)
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return obj
    return None
