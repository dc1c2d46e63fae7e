"""Running user code in a worker: reading a call's arguments, running plain-``def`` calls
(on the loop or on a thread, one by one or queued together), and answering each call.

Shared by the task runner (:mod:`actorflow.cluster.worker`) and the actor host
(:mod:`actorflow.cluster.user_actor`).
"""

from __future__ import annotations

import asyncio
import inspect
import pickle
import threading
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import Context, ContextVar, copy_context
from typing import TYPE_CHECKING, Any

import cloudpickle

from actorflow._errors import RemoteException, SerializationError, TaskCancelledError, TaskError
from actorflow.cluster.calls import CallState, current_call, run_guarded
from actorflow.cluster.protocol import (
    Args,
    Failed,
    Fetched,
    Inline,
    InShm,
    Payload,
    ResolvedArg,
    TaskReply,
    quick_reply,
)
from actorflow.cluster.threads import Outcome, SyncRunner, run_one
from actorflow.objects.serialization import loads_read_only
from actorflow.runtime import ErrorReply

if TYPE_CHECKING:
    from actorflow.cluster.core import Core

__all__ = [
    "PlainCall",
    "answer_outcome",
    "argument",
    "call_plain",
    "cancelled_returns",
    "capture_error",
    "capture_strategy",
    "encode_returns",
    "in_runs",
    "local_args",
    "resolve_args",
    "run_plain",
    "with_released",
]


#: The placement-group strategy of the work that the running task submits without a strategy of
#: its own (the task was placed with ``capture_child_tasks=True``); None: no such task runs here.
capture_strategy: ContextVar[Any] = ContextVar("actorflow_capture", default=None)


async def local_args(core: Core, blob: Args) -> bytes | Payload:
    """The arguments blob, fetched first when it lies in another node's shared memory."""
    if isinstance(blob, InShm) and not core.reads.is_local(blob):
        (fetched,) = await core.reads.localize((blob,))
        return fetched
    return blob


def argument(core: Core, payload: Payload) -> Any:
    """An argument's value (or the error its producer left), with every numpy array in it
    read-only: a view of shared memory or a copy, small or large, it behaves the same
    (API.md §3)."""
    if type(payload) is bytes:
        return loads_read_only(payload)
    if type(payload) is Inline or type(payload) is Fetched:
        return loads_read_only(payload.meta, payload.buffers)
    if type(payload) is InShm and core.reads.is_local(payload):
        meta, buffers = core.store.read(payload.name, payload.generation)
        return loads_read_only(meta, buffers)
    return core.materialize(payload)  # a Failed raises its error here


def resolve_args(core: Core, blob: bytes | Payload, resolved: tuple[Payload, ...]
                 ) -> tuple[Any, Any]:
    """Unpickle ``(args, kwargs)`` (from shared memory when large) and put the resolved
    ObjectRef values in place; numpy arrays among them are read-only (see ``argument``)."""
    args, kwargs = argument(core, blob)
    if resolved:
        values = [argument(core, p) for p in resolved]
        args = tuple(values[a.index] if type(a) is ResolvedArg else a for a in args)
        kwargs = {k: values[v.index] if type(v) is ResolvedArg else v for k, v in kwargs.items()}
    return args, kwargs


def with_released(core: Core, args: Args, reply: TaskReply | bytes) -> TaskReply | bytes:
    """Tell the caller, with the reply, when nothing here uses its arguments' segment any
    more (it may then reuse it: see ``actorflow/objects/store.py``). Called once the call's
    own frame is gone, so only what the user's code kept can hold a view of it."""
    if type(args) is not InShm:
        return reply
    released = core.store.released((args.name,))
    if not released:
        return reply
    if type(reply) is TaskReply:
        return TaskReply(reply.returns, reply.run_s, released, reply.nested)
    return TaskReply((reply,), 0.0, released)  # type: ignore[arg-type]  # the quick form


def capture_error(exc: BaseException, where: str) -> TaskError:
    """A TaskError for ``exc`` that is sure to cross back: it must pickle and unpickle (here,
    at least); a cause that does not is replaced by a RemoteException carrying its type name,
    text and traceback."""
    tb = "".join(traceback.format_exception(exc))
    error = TaskError(exc, tb, where)
    try:
        pickle.loads(cloudpickle.dumps(error))
    except Exception:
        error = TaskError(RemoteException(type(exc).__qualname__, str(exc)), tb, where)
    return error


def encode_returns(core: Core, result: Any, num_returns: int, name: str, job: str = ""
                   ) -> tuple[tuple[Payload, ...], tuple[tuple[int, Any, str], ...]]:
    """The call's returns, and ``(index, owner, object id)`` of the refs pickled into them
    (lends that the caller keeps: see objects/borrows.py). ``job``: the caller's job, whose
    end frees the large ones (a task's; "" for an actor's, kept until the node stops)."""
    try:
        if num_returns == 1:
            payload, lent = core.encode_lending(result, f"the result of {name!r}", owned=False,
                                                job=job)
            return (payload,), (tuple((0, owner, oid) for owner, oid in lent) if lent else ())
        values = tuple(result)
        if len(values) != num_returns:
            raise ValueError(
                f"{name!r} has num_returns={num_returns} but returned {len(values)} values"
            )
        payloads = []
        nested: list[tuple[int, Any, str]] = []
        for i, v in enumerate(values):
            payload, lent = core.encode_lending(v, f"a result of {name!r}", owned=False,
                                                job=job)
            payloads.append(payload)
            nested.extend((i, owner, oid) for owner, oid in lent)
        return tuple(payloads), tuple(nested)
    except SerializationError as exc:
        return (Failed(exc),) * num_returns, ()
    except Exception as exc:
        return (Failed(capture_error(exc, name)),) * num_returns, ()


async def call_plain(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    runner: SyncRunner | ThreadPoolExecutor,
    key: Any,
    state: CallState,
) -> Any:
    """Run a plain-def ``fn``: on the loop when the runner's policy says ``key`` is short,
    else on the runner's thread (or pool), where ``state`` says whether it may still begin and
    whether its thread may be interrupted (see :func:`run_guarded`)."""
    if isinstance(runner, SyncRunner):
        if runner.inline(key):
            ok, result, run_s = run_one(None, fn, args, kwargs)
        else:
            if state.interruptible:
                state.lock = threading.Lock()
            ok, result, run_s = await runner.run(copy_context(), run_guarded,
                                                 (state, fn, args, kwargs), {})
        runner.record(key, run_s)
        if not ok:
            raise result
    else:
        if state.interruptible:
            state.lock = threading.Lock()
        ctx = copy_context()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            runner, lambda: ctx.run(run_guarded, state, fn, args, kwargs))
    if inspect.iscoroutine(result):  # a plain def that returned a coroutine (an ObjectRef,
        return await result          # awaitable too, is a result: its caller gets the ref)
    return result


#: A queued plain-def call: (its key for the inline policy, context, fn, args, kwargs, and
#: its state for cancel).
PlainCall = tuple[Any, Context, Callable[..., Any], tuple[Any, ...], dict[str, Any], CallState]


class _Posted:
    """Outcomes that a runner's thread posts one by one as it runs queued calls. The loop is
    woken once for all that arrive before it runs (one ``call_soon_threadsafe``, not one per
    call), so the calls that finish meanwhile are answered together, in one loop turn.

    Lock-free: the deque's operations and the flag's reads and writes are each atomic. A post
    that finds no wake pending schedules one; a wake clears the flag before it looks, so a
    post is always followed by a wake that runs after it."""

    __slots__ = ("_loop", "_ready", "_waiter", "_woken")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready: deque[tuple[int, Outcome]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False

    def post(self, item: tuple[int, Outcome]) -> None:
        """(On the thread.)"""
        self._ready.append(item)
        if not self._woken:
            self._woken = True
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _wake(self) -> None:
        self._woken = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self) -> list[tuple[int, Outcome]]:
        """What was posted since the last take (waits for one at least)."""
        ready = self._ready
        while not ready:
            self._waiter = self._loop.create_future()
            await self._waiter
        out = []
        while ready:
            out.append(ready.popleft())
        return out


def _as_current(state: CallState, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
    """(On the thread, in the call's context.) Run a queued call as the current call: cancel
    may reach it (see :func:`run_guarded`)."""
    token = current_call.set(state)
    try:
        if state.lock is None:  # not interruptible: run_guarded's first lines, inline
            if state.cancelled:
                raise TaskCancelledError("it was cancelled before it ran")
            state.started = True
            return fn(*args, **kwargs)
        return run_guarded(state, fn, args, kwargs)
    finally:
        current_call.reset(token)


def _run_all(posted: _Posted, calls: list[Any]) -> None:
    """(On the thread.) Run queued calls back to back, posting each one's outcome."""
    for i, (ctx, state, fn, args, kwargs) in enumerate(calls):
        posted.post((i, run_one(ctx, _as_current, (state, fn, args, kwargs), {})))


async def run_plain(runner: SyncRunner, calls: list[PlainCall],
                    answer: Callable[[int, Outcome], Awaitable[None]]) -> None:
    """Run queued plain-def calls in order, each in its context: on the loop while they are
    short (see :class:`SyncRunner`), the rest queued to the runner's thread at once, so it runs
    them back to back. Each call is answered (``answer(index, outcome)``) as soon as it is
    done, not when the whole run is: after a crash only the calls that had not finished run
    again. Calls that finish before the loop next runs are answered in that turn, together. A
    call cancelled before it began is answered without running."""
    for i, (key, ctx, fn, args, kwargs, state) in enumerate(calls):
        if state.cancelled:  # (while an earlier answer awaited a coroutine's result)
            await answer(i, (False, TaskCancelledError("it was cancelled before it ran"), 0.0))
            continue
        if not runner.inline(key):
            rest = calls[i:]
            for call in rest:
                if call[5].interruptible:
                    call[5].lock = threading.Lock()
            posted = _Posted(asyncio.get_running_loop())
            batch = runner.run(Context(), _run_all,
                               (posted, [(c[1], c[5], c[2], c[3], c[4]) for c in rest]), {})
            left = len(rest)
            while left:
                for j, outcome in await posted.take():
                    runner.record(rest[j][0], outcome[2])
                    left -= 1
                    await answer(i + j, outcome)
            await batch  # (done: its last outcome came)
            return
        outcome = ctx.run(run_one, None, fn, args, kwargs)
        runner.record(key, outcome[2])
        await answer(i, outcome)


def cancelled_returns(state: CallState, what: str, num_returns: int) -> tuple[Payload, ...]:
    """The returns of a call that was cancelled (``what`` names it)."""
    when = "while it ran" if state.started else "before it ran"
    return (Failed(TaskCancelledError(f"{what} was cancelled {when}")),) * num_returns


async def answer_outcome(core: Core, reply: Any, outcome: Outcome, num_returns: int, name: str,
                  where: str, state: CallState, what: str, job: str = ""
                  ) -> tuple[Payload, ...]:
    """Answer one call of a batch with its outcome (``name`` and ``where`` name it in a
    serialization error and a user's error, ``what`` in a cancel); returns the payloads it
    answered."""
    ok, value, run_s = outcome
    if ok and inspect.iscoroutine(value):  # a plain def that returned a coroutine (not a ref)
        try:
            value = await value
        except Exception as exc:
            ok, value = False, exc
    nested: tuple[tuple[int, Any, str], ...] = ()
    if state.cancelled:
        returns = cancelled_returns(state, what, num_returns)
    elif ok:
        returns, nested = encode_returns(core, value, num_returns, name, job)
    else:
        returns = (Failed(capture_error(value, where)),) * num_returns
    if core.borrowing.unsettled:  # (the owners hear of what it borrowed before its caller)
        await core.borrowing.settled()
    if reply is not None and not reply.done():
        reply.set_result(quick_reply(returns, run_s, nested))
    return returns


async def in_runs(
    items: list[tuple[Any, Any]],
    pick: Callable[[Any], Callable[..., Any] | None],
    run_batch: Callable[[list[Any]], Awaitable[None]],
    receive: Callable[[Any], Awaitable[Any]],
) -> None:
    """Handle queued ``(message, reply)`` items in order: runs of two or more that ``pick``
    accepts (plain-def calls ready to run) go to ``run_batch`` in one thread hop; any other
    item goes to ``receive`` on its own."""
    i = 0
    while i < len(items):
        run: list[tuple[Any, Any, Callable[..., Any]]] = []
        while i < len(items) and (fn := pick(items[i][0])) is not None:
            run.append((items[i][0], items[i][1], fn))
            i += 1
        if len(run) > 1:
            await run_batch(run)
            continue
        if run:
            i -= 1
        message, reply = items[i]
        i += 1
        result = await receive(message)
        if reply is not None and not reply.done():
            if type(result) is ErrorReply:
                reply.set_exception(result.error)
            else:
                reply.set_result(result)
