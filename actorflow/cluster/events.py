"""Task events: what each worker records about the tasks and actor calls it runs.

A worker appends one tuple when a task, an actor call or an actor's creation is taken
(:meth:`EventRecorder.started`) and one when it is answered (:meth:`EventRecorder.ended`):
no lock, no message, no timer per event. Every :data:`FLUSH_S` seconds (or once
:data:`FLUSH_EVENTS` are waiting) a loop callback pickles what was recorded into one ``bytes``
message (the C pickler: plain tuples of strings and floats) and tells it to the head's
``events`` actor (:mod:`actorflow.state.store`), which keeps the cluster's task table.

Events are an observation, not part of the work: a batch that cannot be sent (the head is
unreachable) is dropped and counted (``dropped`` rides in the next batch), never retried.

Times are ``time.perf_counter()`` values, the same clock the worker times its calls with; each
batch carries this process's offset from it to the wall clock (taken once), so the store turns
them into wall times that are monotonic within a worker and comparable across the workers of a
machine.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import time
from typing import Any

from actorflow._errors import RemoteException
from actorflow.cluster.protocol import Failed
from actorflow.runtime import ActorRef

__all__ = [
    "ACTOR_CALL",
    "ACTOR_CREATION",
    "ENDED",
    "EVENTS_ID",
    "FLUSH_EVENTS",
    "FLUSH_S",
    "STARTED",
    "TASK",
    "EventRecorder",
    "error_of",
]

#: The well-known id of the head's event store.
EVENTS_ID = "events"
#: Seconds between a first event and the flush that sends it.
FLUSH_S = 0.25
#: Events that make a flush happen at once.
FLUSH_EVENTS = 2000
#: What a failure's message and traceback are cut to.
MESSAGE_CHARS = 1000
TRACEBACK_CHARS = 4000

# the kinds of work
TASK = "task"
ACTOR_CALL = "actor_call"
ACTOR_CREATION = "actor_creation"

# event tuples: (STARTED, id, name, kind, job_id, actor_id, t) and
# (ENDED, id, t_end, run_s, error_type, error_message, traceback); error_type None: it finished
STARTED = 0
ENDED = 1


def error_of(returns: Any) -> tuple[str | None, str | None, str | None]:
    """``(error type, message, traceback)`` of a call whose returns are ``returns`` (a reply's
    payloads, or a reply in the quick form); ``(None, None, None)`` when it did not fail."""
    if type(returns) is not tuple or not returns or type(returns[0]) is not Failed:
        return None, None, None
    error = returns[0].error
    cause = getattr(error, "cause", None)
    shown = cause if isinstance(cause, BaseException) else error
    if isinstance(shown, RemoteException):  # a cause that could not cross as itself
        kind, text = shown.type_name, shown.text
    else:
        kind, text = type(shown).__name__, str(shown)
    tb = getattr(error, "traceback_str", None)
    return kind, text[:MESSAGE_CHARS], tb[-TRACEBACK_CHARS:] if isinstance(tb, str) else None


class EventRecorder:
    """One per worker process (see the module docstring)."""

    __slots__ = ("_handle", "_loop", "_meta", "_target", "buf", "dropped", "head", "seq")

    def __init__(self, head: ActorRef, node_id: str, worker_id: str,
                 origin: tuple[str, str | None]) -> None:
        self.head = head
        self.buf: list[tuple[Any, ...]] = []
        self.dropped = 0
        self.seq = 0  # for actor calls that carry no id
        self._target: ActorRef | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        offset = time.time() - time.perf_counter()
        self._meta = (origin, node_id, worker_id, os.getpid(), offset)

    def started(self, task_id: str, name: str, kind: str, job_id: str | None,
                actor_id: str | None, t: float) -> None:
        buf = self.buf
        if not buf:
            self._arm()
        buf.append((STARTED, task_id, name, kind, job_id, actor_id, t))

    def ended(self, task_id: str, t: float, run_s: float, returns: Any) -> None:
        """``returns``: the call's payloads (or its quick reply), read for a failure."""
        buf = self.buf
        if not buf:
            self._arm()
        if type(returns) is tuple and returns and type(returns[0]) is Failed:
            buf.append((ENDED, task_id, t, run_s, *error_of(returns)))
        else:
            buf.append((ENDED, task_id, t, run_s, None, None, None))
        if len(buf) >= FLUSH_EVENTS:
            self.flush()

    def next_id(self, actor_id: str | None) -> str:
        """An id for an actor call that came without one."""
        self.seq += 1
        return f"{actor_id}#{self.seq}"

    def _arm(self) -> None:
        if self._handle is None:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            self._handle = loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Send what was recorded (now, on the loop's thread)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        buf = self.buf
        if not buf:
            return
        self.buf = []
        try:
            target = self._target
            if target is None:
                target = self._target = _beside(self.head, EVENTS_ID)
            target.tell_nowait(pickle.dumps((self._meta, self.dropped, buf), 5))
            self.dropped = 0
        except Exception:  # the head is gone or its link is full: these are lost, counted
            self.dropped += len(buf)

    def close(self) -> None:
        """Send what is left and stop the timer."""
        self.flush()


def _beside(head: ActorRef, slot_id: str) -> ActorRef:
    """The well-known actor ``slot_id`` in the head's process."""
    from actorflow.runtime import restore_ref

    uid, address, _, _ = head.__reduce__()[1]
    return restore_ref(uid, address, slot_id, slot_id)
