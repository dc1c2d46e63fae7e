"""What ``af.cancel`` sees of a task or actor call that a worker has taken: its state, the work
it submitted (for ``recursive``), and the interrupt of a plain-``def`` task's thread.

A worker makes a :class:`CallState` for each call it may have to cancel while it runs, and
sets it as :data:`current_call` in the call's context, so

- ``af.get_runtime_context().is_cancelled()`` reads its flag (a plain-``def`` actor method
  is never interrupted: it may look at the flag and stop);
- work submitted from the call (tasks and actor calls) is noted in it (:func:`note_child`),
  and cancelled with it when the cancel is recursive (:func:`cancel_children`);
- a plain-``def`` *task* running on a thread is interrupted: :func:`interrupt` raises
  :class:`Interrupted` (a TaskCancelledError) in that thread, the way Ray raises
  KeyboardInterrupt in a task. The exception must land in the task's code and never in the
  worker's own: the thread runs the call through :func:`run_guarded`, which marks under a lock
  when the call may be interrupted, and, once it is over, clears an exception set but not yet
  raised (and absorbs one that lands while it does so) before it returns. An exception raised
  in a thread waits for the thread to run Python code: a task blocked in a C call (a long
  ``time.sleep``, a lock) sees it when that call returns.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from actorflow._errors import TaskCancelledError

if TYPE_CHECKING:
    import asyncio

    from actorflow.cluster.core import Core

__all__ = [
    "CallState",
    "Interrupted",
    "cancel_children",
    "cancel_object",
    "current_call",
    "interrupt",
    "note_child",
    "run_guarded",
]


class Interrupted(TaskCancelledError):
    """Raised inside a plain-``def`` task's thread when the task is cancelled while it runs."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(args or ("the task was cancelled while it ran",)))


class CallState:
    """One task or actor call a worker has taken, as cancel sees it."""

    __slots__ = (
        "cancelled",
        "children",
        "interrupted",
        "interruptible",
        "lock",
        "pruned_at",
        "started",
        "task",
        "task_cancelled",
        "thread",
    )

    def __init__(self, *, interruptible: bool = False) -> None:
        self.cancelled = False
        self.interruptible = interruptible  # a task: its thread may be interrupted
        #: Object ids of the tasks and actor calls it submitted (pruned of finished ones).
        self.children: list[str] | None = None
        self.pruned_at = 1024
        #: Made when an interruptible call goes to a thread: guards ``thread`` and
        #: ``cancelled`` then.
        self.lock: threading.Lock | None = None
        self.started = False  # a thread began it
        self.thread: int | None = None  # the thread running it, while it may be interrupted
        self.interrupted = False  # an exception was set in that thread
        self.task: asyncio.Task[Any] | None = None  # the task awaiting it (async def)
        self.task_cancelled = False  # ``task.cancel()`` was called for it, not yet taken back


#: The call whose code runs in this context (None: none, or one that cannot be cancelled while
#: it runs, such as a plain-def call that runs on the loop).
current_call: ContextVar[CallState | None] = ContextVar("actorflow_call", default=None)


def note_child(core: Core, object_id: str) -> None:
    """A task or actor call returning ``object_id`` was submitted: if the current call is one
    a worker runs, it is that call's child."""
    state = current_call.get()
    if state is None:
        return
    children = state.children
    if children is None:
        children = state.children = []
    children.append(object_id)
    if len(children) >= state.pruned_at:  # forget the finished ones, now and then
        entries = core.objects.entries
        tasks = core.submitter.by_return
        children[:] = [o for o in children if o in tasks
                       or ((entry := entries.get(o)) is not None and entry.payload is None)]
        state.pruned_at = max(1024, 2 * len(children))


def cancel_object(core: Core, object_id: str, *, force: bool = False, recursive: bool = True
                  ) -> bool:
    """Cancel the task or actor call of this process that returns ``object_id``; False when
    there is none (it is done, or another process submitted it). ``force`` applies to tasks."""
    if core.submitter.cancel(object_id, force, recursive):
        return True
    return any(client.cancel(object_id, recursive) for client in list(core.actors.values()))


def cancel_children(core: Core, state: CallState, force: bool = False) -> None:
    """Cancel (recursively) what the call of ``state`` submitted and is not done yet."""
    children, state.children = state.children, None
    for object_id in children or ():
        cancel_object(core, object_id, force=force, recursive=True)


# -- the interrupt of a task's thread -------------------------------------------------------------

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


def _raise_in(thread: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in ``thread`` when it next runs Python code (None: take back one not
    raised yet)."""
    _set_async_exc(ctypes.c_ulong(thread), None if exc_type is None
                   else ctypes.py_object(exc_type))


def interrupt(state: CallState) -> None:
    """Cancel the call of ``state`` (on the loop's thread): its flag is set and, if it is an
    interruptible call that a thread is running, Interrupted is raised in that thread."""
    lock = state.lock
    if lock is None:  # not an interruptible call on a thread: its flag is all there is
        state.cancelled = True
        return
    with lock:
        state.cancelled = True
        if state.thread is not None and not state.interrupted:
            state.interrupted = True
            _raise_in(state.thread, Interrupted)


def run_guarded(state: CallState, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
    """(On the runner's thread.) ``fn(*args, **kwargs)``, unless the call was cancelled before
    it began; an interruptible call may be interrupted while it runs, and nowhere else.

    Where an async exception can land: anywhere inside the ``try`` (it is then the call's
    outcome) or inside the loop at the end (it is absorbed: the loop goes round again). Before
    the ``try`` none is set (``thread`` is None); after the loop none is pending (it was taken
    back under the lock, and ``thread`` is None again, so no other comes).

    A call that is not interruptible (an actor's) has no lock: it checks its flag once, and
    a cancel that comes just after only sets the flag it may read."""
    lock = state.lock
    if lock is None:
        if state.cancelled:
            raise TaskCancelledError("it was cancelled before it ran")
        state.started = True
        return fn(*args, **kwargs)
    error: BaseException | None = None
    value: Any = None
    try:
        with lock:
            if state.cancelled:
                raise TaskCancelledError("it was cancelled before it ran")
            state.started = True
            if state.interruptible:
                state.thread = threading.get_ident()
        value = fn(*args, **kwargs)
    except BaseException as exc:  # the call's outcome, interrupted or not
        error = exc
    while True:
        try:
            with lock:
                thread, state.thread = state.thread, None
                if thread is not None and state.interrupted:
                    _raise_in(thread, None)  # set, perhaps not raised yet: take it back
            break
        except Interrupted:  # it landed here, before it could be taken back
            continue
    if error is not None:
        raise error
    return value
