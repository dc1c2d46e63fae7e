"""Worker-side actors: run tasks, host one user actor.

A worker process runs one :class:`Worker` actor (tasks, one at a time: a task holds its CPU
while it runs), a :class:`WorkerControl` actor (cancels, which must not wait behind the running
task), and, once it becomes a user actor's process, a
:class:`~actorflow.cluster.user_actor.UserActor` that handles that actor's method calls
(``max_concurrency`` at a time).

``async def`` code runs on the worker's loop; plain ``def`` code runs in a thread, so it never
blocks the loop (heartbeats, cancels and log forwarding go on while it runs), except code that
has proved short, which runs on the loop (see :mod:`actorflow.cluster.threads` and
:mod:`actorflow.cluster.execution`).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Callable
from contextvars import copy_context
from typing import TYPE_CHECKING, Any, cast

from actorflow._errors import TaskCancelledError
from actorflow.cluster.calls import CallState, cancel_children, current_call, interrupt
from actorflow.cluster.driver_job import known_job, learn_jobs
from actorflow.cluster.events import ACTOR_CREATION, TASK, Key, recorder
from actorflow.cluster.execution import (
    PlainCall,
    answer_outcome,
    call_plain,
    cancelled_returns,
    capture_error,
    capture_strategy,
    encode_returns,
    in_runs,
    local_args,
    resolve_args,
    run_plain,
    with_released,
)
from actorflow.cluster.protocol import (
    CancelCall,
    CancelTask,
    Failed,
    HostActor,
    MissingFunction,
    Payload,
    TaskReply,
    TaskSpec,
    quick_reply,
    task_from_quick,
)
from actorflow.cluster.recent_results import RecentResults
from actorflow.cluster.task_context import TaskContext, task_context
from actorflow.cluster.threads import Outcome, SyncRunner
from actorflow.cluster.user_actor import UserActor
from actorflow.objects.serialization import loads
from actorflow.runtime import Actor, ActorRef, ErrorReply

if TYPE_CHECKING:
    from actorflow.cluster.core import Core

__all__ = ["Worker", "WorkerControl"]


def _failed(resolved: tuple[Any, ...]) -> Failed | None:
    """The first Failed among resolved arguments (a producer that failed), if any."""
    for payload in resolved:
        if type(payload) is Failed:
            return payload
    return None


class Worker(Actor):
    """Runs the tasks pushed to this worker, one at a time, in arrival order.

    Plain-def tasks queued together run back to back (``batches``): on the loop while they
    are short, the rest in one hop to the task thread; each still has its own task context and
    its own reply. A task's returns are kept a while for the tasks that follow it (``Local``).
    """

    mailbox_size = 1 << 16
    batches = True

    def __init__(self, core: Core) -> None:
        self.core = core
        self.functions: dict[str, tuple[Callable[..., Any], bool]] = {}  # fn, is it async
        self.executor: SyncRunner | None = None  # made in on_start, on the worker's loop
        self.calls: dict[str, CallState] = {}  # the tasks taken, until they are answered
        self.cancelled: set[str] = set()  # tasks cancelled before they were taken
        self.user_actor: ActorRef | None = None
        self.hosted: UserActor | None = None
        self.pid = os.getpid()
        self.recent = RecentResults(core)  # for the Local arguments of tasks pushed behind
        system = core.system
        # what this process runs, for the head's task table (see cluster/events.py)
        self.events = recorder(core.head, core.node_id or "", core.worker_id or "",
                               (system.uid, system.address))
        self.keys: dict[str, Key] = {}  # task name -> what its calls are counted under

    async def on_start(self) -> None:
        self.executor = SyncRunner("af-task")

    async def on_stop(self) -> None:
        self.events.close()
        if self.executor is not None:
            self.executor.close()

    async def receive(self, message: Any) -> Any:
        if type(message) is bytes:
            message = task_from_quick(message)
        if type(message) is TaskSpec:
            if not known_job(message.job_id):  # (its namespace: once per job, see driver_job)
                await learn_jobs(self.core, (message.job_id,))
            return await self._run_task(message)
        if type(message) is HostActor:
            if not known_job(message.job_id):
                await learn_jobs(self.core, (message.job_id,))
            return await self._host_actor(message)
        raise TypeError(f"worker got an unexpected {type(message).__name__}")

    def _batchable(self, message: Any) -> Callable[..., Any] | None:
        if type(message) is not TaskSpec:
            return None
        spec: TaskSpec = message
        known = self.functions.get(spec.fn_id)
        if (known is None or known[1] or spec.gpu_ids or spec.capture is not None
                or spec.task_id in self.cancelled or type(spec.args) is not bytes):
            return None
        if spec.resolved:
            resolved = self.recent.take(spec.resolved)
            if resolved is None or not all(self.core.reads.is_local(p) for p in resolved):
                return None
            spec.resolved = resolved
        return known[0]

    async def receive_batch(self, items: list[tuple[Any, Any]]) -> None:
        items = [(task_from_quick(m), r) if type(m) is bytes else (m, r) for m, r in items]
        unknown = [m.job_id for m, _ in items if type(m) is TaskSpec and not known_job(m.job_id)]
        if unknown:
            await learn_jobs(self.core, unknown)
        await in_runs(items, self._batchable, self._run_batch, self.receive)

    async def _run_batch(self, run: list[tuple[TaskSpec, Any, Callable[..., Any]]]) -> None:
        _see_gpus(())  # batched tasks hold no GPU (see _batchable)
        calls: list[PlainCall] = []
        ready: list[tuple[TaskSpec, Any]] = []
        events = self.events
        now = time.perf_counter()
        for spec, reply, fn in run:
            events.started(spec.task_id, self._key(spec), now)
            failed_arg = _failed(spec.resolved)
            if failed_arg is not None:  # a Local argument's producer failed: so does this
                self._answer_failed(spec, reply, failed_arg)
                continue
            token = task_context.set(TaskContext(task_id=spec.task_id, name=spec.name,
                                                 job_id=spec.job_id))
            try:
                # _batchable took its Local arguments from the recent results
                resolved = cast(tuple[Payload, ...], spec.resolved)
                args, kwargs = resolve_args(self.core, spec.args, resolved)
                ctx = copy_context()
            except Exception as exc:
                failed = Failed(capture_error(exc, f"task {spec.name} (pid={self.pid})"))
                self._answer_failed(spec, reply, failed)
                continue
            finally:
                task_context.reset(token)
            state = self.calls[spec.task_id] = CallState(interruptible=True)
            calls.append((spec.fn_id, ctx, fn, args, kwargs, state))
            ready.append((spec, reply))
        if not calls:
            return
        assert self.executor is not None

        async def answer(i: int, outcome: Outcome) -> None:
            spec, reply = ready[i]
            state = calls[i][5]
            try:
                returns = await answer_outcome(
                    self.core, reply, outcome, spec.num_returns, spec.name,
                    f"task {spec.name} (pid={self.pid})", state, f"task {spec.name!r}",
                    spec.job_id if spec.driver_owned else "")
                events.ended(spec.task_id, time.perf_counter(), outcome[2], returns)
                self.recent.remember(spec, returns)
            finally:
                self.calls.pop(spec.task_id, None)

        try:
            await run_plain(self.executor, calls, answer)
        finally:
            for spec, _ in ready:  # (those not answered: the worker is stopping)
                self.calls.pop(spec.task_id, None)

    def _key(self, spec: TaskSpec) -> Key:
        """What ``spec``'s call is counted under: one object per name and job (the recorder
        skips its lookup when calls in a row share it)."""
        key = self.keys.get(spec.name)
        job_id = spec.job_id or None
        if key is None or key[2] != job_id:
            if len(self.keys) >= 4096:  # (names made per call must not grow it for ever)
                self.keys.clear()
            key = self.keys[spec.name] = (spec.name, TASK, job_id, None)
        return key

    def _answer_failed(self, spec: TaskSpec, reply: Any, failed: Failed) -> None:
        returns = (failed,) * spec.num_returns
        self.recent.remember(spec, returns)
        self.events.ended(spec.task_id, time.perf_counter(), 0.0, returns)
        if reply is not None and not reply.done():
            reply.set_result(TaskReply(returns))

    async def _run_task(self, spec: TaskSpec) -> TaskReply | bytes:
        events = self.events
        start = time.perf_counter()
        events.started(spec.task_id, self._key(spec), start)
        reply = await self._run_one(spec)
        end = time.perf_counter()
        if type(reply) is TaskReply:
            self.recent.remember(spec, reply.returns)
            events.ended(spec.task_id, end, end - start, reply.returns)
        else:
            self.recent.remember(spec, (reply,))  # type: ignore[arg-type]  # the quick form
            events.ended(spec.task_id, end, end - start, None)
        if self.core.borrowing.unsettled:
            await self.core.borrowing.settled()
        return with_released(self.core, spec.args, reply)

    async def _run_one(self, spec: TaskSpec) -> TaskReply | bytes:
        start = time.perf_counter()
        if spec.task_id in self.cancelled:
            self.cancelled.discard(spec.task_id)
            error = TaskCancelledError(f"task {spec.name!r} was cancelled before it ran")
            return TaskReply((Failed(error),) * spec.num_returns)
        where = f"task {spec.name} (pid={self.pid})"
        known = self.functions.get(spec.fn_id)
        if known is None:
            if spec.fn_blob is None:
                return TaskReply((Failed(MissingFunction(spec.fn_id)),) * spec.num_returns)
            try:
                fn = loads(spec.fn_blob)
            except Exception as exc:  # e.g. it needs a module this worker cannot import
                failed = Failed(capture_error(exc, f"loading the function of {where}"))
                return TaskReply((failed,) * spec.num_returns)
            known = self.functions[spec.fn_id] = (fn, inspect.iscoroutinefunction(fn))
        fn, is_async = known
        _see_gpus(spec.gpu_ids)
        token = task_context.set(TaskContext(task_id=spec.task_id, name=spec.name,
                                             gpu_ids=spec.gpu_ids, job_id=spec.job_id))
        capture_token = capture_strategy.set(spec.capture)
        state = self.calls[spec.task_id] = CallState(interruptible=True)
        call_token = current_call.set(state)
        try:
            resolved = await self.recent.with_values(spec.resolved) if spec.resolved else ()
            failed_arg = _failed(resolved)
            if failed_arg is not None:  # a Local argument's producer failed: so does this
                return TaskReply((failed_arg,) * spec.num_returns)
            if not all(self.core.reads.is_local(p) for p in resolved):
                resolved = await self.core.reads.localize(resolved)
            blob = await local_args(self.core, spec.args)
            args, kwargs = resolve_args(self.core, blob, resolved)
            if state.cancelled:
                pass  # while its arguments came: it does not run
            elif is_async:
                # a task of its own, so that a cancel reaches the user's code only
                state.task = asyncio.get_running_loop().create_task(fn(*args, **kwargs))
                state.started = True
                try:
                    result = await state.task
                finally:
                    state.task = None
            else:
                assert self.executor is not None
                result = await call_plain(fn, args, kwargs, self.executor, spec.fn_id, state)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if state.cancelled and (current is None or not current.cancelling()):
                return TaskReply(cancelled_returns(state, f"task {spec.name!r}",
                                                   spec.num_returns), time.perf_counter() - start)
            raise  # this worker is stopping
        except Exception as exc:
            if not state.cancelled:
                failed = Failed(capture_error(exc, where))
                return TaskReply((failed,) * spec.num_returns, time.perf_counter() - start)
        finally:
            current_call.reset(call_token)
            capture_strategy.reset(capture_token)
            task_context.reset(token)
            self.calls.pop(spec.task_id, None)
            self.cancelled.discard(spec.task_id)
        if state.cancelled:  # (what it returned or raised once cancelled does not count)
            return TaskReply(cancelled_returns(state, f"task {spec.name!r}", spec.num_returns),
                             time.perf_counter() - start)
        returns, nested = encode_returns(self.core, result, spec.num_returns, spec.name,
                                         spec.job_id if spec.driver_owned else "")
        return quick_reply(returns, time.perf_counter() - start, nested)

    def cancel(self, task_id: str, force: bool, recursive: bool) -> None:
        """Cancel task ``task_id``: a queued one does not run; a running ``async def`` one
        gets CancelledError, a plain one (on the task thread) Interrupted, or with ``force``
        this process ends; ``recursive``: what it submitted is cancelled too."""
        state = self.calls.get(task_id)
        if state is None:  # not taken yet (or answered already)
            self.cancelled.add(task_id)
            return
        if force and state.task is None and state.started:
            os._exit(1)  # the caller's owner sees the process end: TaskCancelledError there
        if not state.cancelled:
            interrupt(state)
            if state.task is not None:
                state.task.cancel()
        if recursive:
            cancel_children(self.core, state, force)

    async def _host_actor(self, msg: HostActor) -> ActorRef | ErrorReply:
        _see_gpus(msg.gpu_ids)
        ctx = TaskContext(actor_id=msg.actor_id, name=msg.name, gpu_ids=msg.gpu_ids,
                          job_id=msg.job_id or None)
        token = task_context.set(ctx)
        # a group that captures its children: what the actor creates and submits, in its
        # constructor and every call (they run in contexts copied from its cell's), stays in it
        capture_token = capture_strategy.set(msg.capture)
        events = self.events
        start = time.perf_counter()
        events.started(msg.actor_id, (f"{msg.name}.__init__", ACTOR_CREATION,
                                      msg.job_id or None, msg.actor_id), start)
        try:
            cls = loads(msg.cls_blob)
            resolved = await self.core.reads.localize(msg.resolved)
            args, kwargs = resolve_args(self.core, msg.args, resolved)
            instance = await _construct(cls, args, kwargs)
        except Exception as exc:  # answered as an error; this worker carries on
            error = capture_error(exc, f"{msg.name}.__init__ (pid={self.pid})")
            end = time.perf_counter()
            events.ended(msg.actor_id, end, end - start, (Failed(error),))
            capture_strategy.reset(capture_token)
            return ErrorReply(error)
        finally:
            task_context.reset(token)
        end = time.perf_counter()
        events.ended(msg.actor_id, end, end - start, None)
        hosted = UserActor(self.core, instance, ctx, msg.max_concurrency, events)
        try:
            ref = await self.system.spawn(
                lambda: hosted, max_concurrency=msg.max_concurrency,
                name=f"actor-{msg.actor_id}",
            )
        finally:
            capture_strategy.reset(capture_token)
        self.user_actor, self.hosted = ref, hosted
        return ref


async def _construct(cls: type, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``cls(*args, **kwargs)``; an ``async def __init__`` is awaited here, on the worker's
    loop (where the actor's async methods will run), as ``type.__call__`` would call it."""
    init = getattr(cls, "__init__", None)
    if not inspect.iscoroutinefunction(init):
        return cls(*args, **kwargs)
    new: Any = cls.__new__
    instance = new(cls) if new is object.__new__ else new(cls, *args, **kwargs)
    if isinstance(instance, cls):
        result = await init(instance, *args, **kwargs)
        if result is not None:
            raise TypeError(f"__init__() should return None, not {type(result).__name__!r}")
    return instance


class WorkerControl(Actor):
    """Control messages that must not wait behind the running task."""

    max_concurrency = 16

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def receive(self, message: Any) -> Any:
        if type(message) is CancelTask:
            self.worker.cancel(message.task_id, message.force, message.recursive)
            return None
        if type(message) is CancelCall:
            hosted = self.worker.hosted
            if hosted is not None:
                hosted.cancel(message.call_id, message.recursive)
            return None
        raise TypeError(f"worker control got an unexpected {type(message).__name__}")


#: CUDA_VISIBLE_DEVICES as this worker process started (None: unset).
_START_GPUS = os.environ.get("CUDA_VISIBLE_DEVICES")
#: what _see_gpus last set (unknown until the first task: it then sets the variable)
_SHOWN_GPUS: object = object()


def _see_gpus(gpu_ids: tuple[int, ...] | list[int]) -> None:
    """Show the running task or actor exactly the GPUs it was given: its ids, or, for one
    given none, what the worker started with (a GPU task before it on this worker must not
    leave its GPUs visible to later CPU tasks)."""
    global _SHOWN_GPUS
    wanted = ",".join(map(str, gpu_ids)) if gpu_ids else _START_GPUS
    if wanted == _SHOWN_GPUS:  # (the common case: no GPUs, as before; no environ lookup)
        return
    if wanted is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = wanted
    _SHOWN_GPUS = wanted
