"""The actor that handles a user actor's method calls in the actor's worker process.

Plain ``def`` methods of a serial actor run on its :class:`SyncRunner`: on the loop while they
prove short, else on the actor's own thread; calls queued together run back to back
(``batches``) and each is answered as soon as it finishes. An actor that allows concurrent
calls runs plain methods on a thread pool.

Cancel (``CancelCall``, through the process's WorkerControl): a call not taken yet is dropped
when it comes up; a running ``async def`` call gets CancelledError where it awaits; a running
plain ``def`` call is never interrupted (it may be halfway through changing the actor's
state): its ``af.get_runtime_context().is_cancelled()`` turns True. A call cancelled while it
ran is answered with TaskCancelledError whatever it returns.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from typing import TYPE_CHECKING, Any

from actorflow.cluster.calls import CallState, cancel_children, current_call, interrupt
from actorflow.cluster.events import ACTOR_CALL, EventRecorder, Key
from actorflow.cluster.execution import (
    PlainCall,
    answer_outcome,
    call_plain,
    cancelled_returns,
    capture_error,
    encode_returns,
    in_runs,
    local_args,
    resolve_args,
    run_plain,
    with_released,
)
from actorflow.cluster.protocol import ActorCall, Failed, TaskReply, call_from_quick, quick_reply
from actorflow.cluster.streaming import is_generator, pump_for
from actorflow.cluster.task_context import TaskContext, task_context
from actorflow.cluster.threads import Outcome, SyncRunner
from actorflow.runtime import Actor

if TYPE_CHECKING:
    from actorflow.cluster.core import Core

__all__ = ["DROPPED_KEPT", "UserActor"]

#: Most ids of calls cancelled before they were taken that an actor keeps (a cancel that
#: crossed the call's answer leaves one behind for good: the oldest go first).
DROPPED_KEPT = 4096


class UserActor(Actor):
    """Handles method calls of the user actor this process hosts (see the module docstring)."""

    mailbox_size = 1 << 16
    batches = True

    def __init__(self, core: Core, instance: Any, ctx: TaskContext, max_concurrency: int = 1,
                 events: EventRecorder | None = None) -> None:
        self.core = core
        self.events = events  # where its calls are recorded (the process's recorder)
        self.keys: dict[str, Key] = {}  # method -> what its calls are counted under
        self.concurrency = max_concurrency  # (what it is spawned with)
        self.instance = instance
        self.ctx = ctx
        self.pid = os.getpid()
        self.methods: dict[str, tuple[Callable[..., Any], bool]] = {}  # method, is it async
        # sync methods: the runner for a serial actor, a pool when it allows concurrent calls
        self.executor: SyncRunner | ThreadPoolExecutor | None = None
        self.calls: dict[str, CallState] = {}  # calls taken, until they are answered
        self.dropped: dict[str, None] = {}  # calls cancelled before they were taken

    async def on_start(self) -> None:
        threads = self.concurrency
        if threads <= 1:
            self.executor = SyncRunner("af-actor")
        else:
            self.executor = ThreadPoolExecutor(
                max_workers=min(threads, 32), thread_name_prefix="af-actor"
            )

    async def on_stop(self) -> None:
        if isinstance(self.executor, SyncRunner):
            self.executor.close()
        elif self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    def _method(self, name: str) -> tuple[Callable[..., Any], bool]:
        known = self.methods.get(name)
        if known is None:
            method = getattr(self.instance, name)
            if name.startswith("_") and name != "__call__":
                raise AttributeError(f"{name!r} is private")
            if is_generator(method):  # it streams: the pump sends what it yields
                known = self.methods[name] = (pump_for(method, f"{self.ctx.name}.{name}"), True)
            else:
                known = self.methods[name] = (method, inspect.iscoroutinefunction(method))
        return known

    def _where(self, call: ActorCall) -> str:
        return f"{self.ctx.name}.{call.method} (pid={self.pid})"

    def _started(self, call: ActorCall, events: EventRecorder, t: float) -> str:
        """Record that ``call`` was taken; the id it is recorded under."""
        key = self.keys.get(call.method)
        if key is None:
            ctx = self.ctx
            key = self.keys[call.method] = (f"{ctx.name}.{call.method}", ACTOR_CALL,
                                            ctx.job_id or None, ctx.actor_id)
        call_id = call.call_id or events.next_id(self.ctx.actor_id)
        events.started(call_id, key, t)
        return call_id

    # -- cancel -------------------------------------------------------------------------------

    def cancel(self, call_id: str, recursive: bool) -> None:
        """Cancel call ``call_id`` (from WorkerControl; see the module docstring)."""
        state = self.calls.get(call_id)
        if state is None:  # not taken yet: dropped when it comes (or answered already)
            dropped = self.dropped
            dropped[call_id] = None
            if len(dropped) > DROPPED_KEPT:
                del dropped[next(iter(dropped))]
            return
        if not state.cancelled:
            interrupt(state)  # (an actor's call is not interruptible: its flag only)
            task = state.task
            if task is not None and not state.task_cancelled:
                state.task_cancelled = True
                task.cancel()
        if recursive:
            cancel_children(self.core, state)

    def _was_dropped(self, call: ActorCall) -> bool:
        if self.dropped and call.call_id in self.dropped:
            del self.dropped[call.call_id]
            return True
        return False

    # -- batches of plain calls ---------------------------------------------------------------

    def _sync_method(self, message: Any) -> Callable[..., Any] | None:
        """The plain-def method a queued call can run in a batch, if it can."""
        if type(message) is not ActorCall or not isinstance(self.executor, SyncRunner):
            return None
        call: ActorCall = message
        if type(call.args) is not bytes or (call.resolved and not all(
                self.core.reads.is_local(p) for p in call.resolved)):
            return None
        if self.dropped and call.call_id in self.dropped:
            return None  # (receive answers it)
        known = self.methods.get(call.method)
        if known is None or known[1]:
            return None
        return known[0]

    async def receive_batch(self, items: list[tuple[Any, Any]]) -> None:
        items = [(call_from_quick(m), r) if type(m) is bytes else (m, r) for m, r in items]
        await in_runs(items, self._sync_method, self._run_batch, self.receive)

    async def _run_batch(self, run: list[tuple[ActorCall, Any, Callable[..., Any]]]) -> None:
        token = task_context.set(self.ctx)
        ctx = copy_context()
        task_context.reset(token)
        calls: list[PlainCall] = []
        ready: list[tuple[ActorCall, Any]] = []
        events = self.events
        ids: list[str] = []
        now = time.perf_counter()
        for call, reply, method in run:
            call_id = self._started(call, events, now) if events is not None else ""
            try:
                args, kwargs = resolve_args(self.core, call.args, call.resolved)
            except Exception as exc:
                failed = Failed(capture_error(exc, self._where(call)))
                if events is not None:
                    events.ended(call_id, time.perf_counter(), 0.0, (failed,))
                if reply is not None and not reply.done():
                    reply.set_result(TaskReply((failed,) * call.num_returns))
                continue
            ids.append(call_id)
            state = CallState()
            if call.call_id:
                self.calls[call.call_id] = state
            calls.append((call.method, ctx, method, args, kwargs, state))
            ready.append((call, reply))
        if not calls:
            return
        assert isinstance(self.executor, SyncRunner)

        async def answer(i: int, outcome: Outcome) -> None:
            call, reply = ready[i]
            where = self._where(call)
            try:
                returns = await answer_outcome(self.core, reply, outcome, call.num_returns,
                                               where, where, calls[i][5], where, call.job)
                if events is not None:
                    events.ended(ids[i], time.perf_counter(), outcome[2], returns)
            finally:
                self.calls.pop(call.call_id, None)

        try:
            await run_plain(self.executor, calls, answer)
        finally:
            for call, _ in ready:  # (those not answered: the actor is stopping)
                self.calls.pop(call.call_id, None)

    # -- one call ---------------------------------------------------------------------------------

    async def receive(self, message: Any) -> Any:
        if type(message) is bytes:
            message = call_from_quick(message)
        elif type(message) is not ActorCall:
            raise TypeError(f"actor got an unexpected {type(message).__name__}")
        events = self.events
        if events is None:
            reply = await self._call_one(message)
            if self.core.borrowing.unsettled:
                await self.core.borrowing.settled()
            return with_released(self.core, message.args, reply)
        start = time.perf_counter()
        call_id = self._started(message, events, start)
        reply = await self._call_one(message)
        end = time.perf_counter()
        events.ended(call_id, end, end - start,
                     reply.returns if type(reply) is TaskReply else None)
        if self.core.borrowing.unsettled:
            await self.core.borrowing.settled()
        return with_released(self.core, message.args, reply)

    async def _call_one(self, call: ActorCall) -> TaskReply | bytes:
        start = time.perf_counter()
        where = self._where(call)
        if self._was_dropped(call):
            return TaskReply(cancelled_returns(CallState(), where, call.num_returns))
        state = CallState()
        if call.call_id:
            self.calls[call.call_id] = state
        token = task_context.set(self.ctx)
        call_token = current_call.set(state)
        task: asyncio.Task[Any] | None = None
        try:
            method, is_async = self._method(call.method)
            resolved = call.resolved
            if not all(self.core.reads.is_local(p) for p in resolved):
                resolved = await self.core.reads.localize(resolved)
            blob = await local_args(self.core, call.args)
            args, kwargs = resolve_args(self.core, blob, resolved)
            if state.cancelled:
                pass  # while its arguments came: it does not run
            elif is_async:
                task = state.task = asyncio.current_task()
                state.started = True
                try:
                    result = await method(*args, **kwargs)
                finally:
                    state.task = None
            else:
                assert self.executor is not None
                result = await call_plain(method, args, kwargs, self.executor, call.method,
                                          state)
        except asyncio.CancelledError:
            if state.task_cancelled and task is not None:
                state.task_cancelled = False  # that cancel is taken back: it was ours
                if task.uncancel() == 0:
                    return TaskReply(cancelled_returns(state, where, call.num_returns),
                                     time.perf_counter() - start)
            raise  # the actor is stopping
        except Exception as exc:
            if not state.cancelled:
                failed = Failed(capture_error(exc, where))
                return TaskReply((failed,) * call.num_returns, time.perf_counter() - start)
        finally:
            if state.task_cancelled and task is not None:  # the method swallowed it
                state.task_cancelled = False
                task.uncancel()
            current_call.reset(call_token)
            task_context.reset(token)
            self.calls.pop(call.call_id, None)
        if state.cancelled:  # (what it returned once cancelled does not count)
            return TaskReply(cancelled_returns(state, where, call.num_returns),
                             time.perf_counter() - start)
        returns, nested = encode_returns(self.core, result, call.num_returns, where,
                                         call.job)
        return quick_reply(returns, time.perf_counter() - start, nested)
