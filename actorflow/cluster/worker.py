"""Worker-side actors: run tasks, host one user actor.

A worker process runs one :class:`Worker` actor (tasks, one at a time: a task holds its CPU
while it runs), a :class:`WorkerControl` actor (cancels, which must not wait behind the running
task), and, once it becomes a user actor's process, a :class:`UserActor` that handles that
actor's method calls (``max_concurrency`` at a time).

``async def`` code runs on the worker's loop; plain ``def`` code runs in a thread, so it never
blocks the loop (heartbeats, cancels and log forwarding go on while it runs), except code that
has proved short, which runs on the loop (see :mod:`actorflow.cluster.threads`).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import pickle
import time
import traceback
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import Context, copy_context
from typing import TYPE_CHECKING, Any, cast

import cloudpickle

from actorflow._errors import RemoteException, SerializationError, TaskCancelledError, TaskError
from actorflow.cluster.core import TaskContext, task_context
from actorflow.cluster.protocol import (
    ActorCall,
    Args,
    CancelTask,
    Failed,
    Fetched,
    HostActor,
    Inline,
    InShm,
    Local,
    MissingFunction,
    Payload,
    ResolvedArg,
    TaskReply,
    TaskSpec,
    call_from_quick,
    quick_reply,
    task_from_quick,
)
from actorflow.cluster.threads import Outcome, SyncRunner, run_one
from actorflow.objects.ref import ObjectRef
from actorflow.objects.serialization import loads, loads_read_only
from actorflow.runtime import Actor, ActorRef, ErrorReply, restore_ref

if TYPE_CHECKING:
    from actorflow.cluster.core import Core

__all__ = ["UserActor", "Worker", "WorkerControl", "capture_error", "resolve_args"]


async def local_args(core: Core, blob: Args) -> bytes | Payload:
    """The arguments blob, fetched first when it lies in another node's shared memory."""
    if isinstance(blob, InShm) and not core.is_local(blob):
        (fetched,) = await core.localize((blob,))
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
    if type(payload) is InShm and core.is_local(payload):
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


def _with_released(core: Core, args: Args, reply: TaskReply | bytes) -> TaskReply | bytes:
    """Tell the caller, with the reply, when nothing here uses its arguments' segment any
    more (it may then reuse it: see ``actorflow/objects/store.py``). Called once the call's
    own frame is gone, so only what the user's code kept can hold a view of it."""
    if type(args) is not InShm:
        return reply
    released = core.store.released((args.name,))
    if not released:
        return reply
    if type(reply) is TaskReply:
        return TaskReply(reply.returns, reply.run_s, released)
    return TaskReply((reply,), 0.0, released)  # type: ignore[arg-type]  # the quick form


#: Most task returns a worker keeps for the Local arguments of later tasks, and their bytes.
RECENT_RESULTS = 1024
RECENT_BYTES = 16 << 20


def _failed(resolved: tuple[Any, ...]) -> Failed | None:
    """The first Failed among resolved arguments (a producer that failed), if any."""
    for payload in resolved:
        if type(payload) is Failed:
            return payload
    return None


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


def _encode_returns(core: Core, result: Any, num_returns: int, name: str) -> tuple[Payload, ...]:
    try:
        if num_returns == 1:
            return (core.encode(result, f"the result of {name!r}", owned=False),)
        values = tuple(result)
        if len(values) != num_returns:
            raise ValueError(
                f"{name!r} has num_returns={num_returns} but returned {len(values)} values"
            )
        return tuple(core.encode(v, f"a result of {name!r}", owned=False) for v in values)
    except SerializationError as exc:
        return (Failed(exc),) * num_returns
    except Exception as exc:
        return (Failed(capture_error(exc, name)),) * num_returns


async def _call(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    runner: SyncRunner | ThreadPoolExecutor,
    key: Any,
) -> Any:
    """Run a plain-def ``fn``: on the loop when the runner's policy says ``key`` is short,
    else on the runner's thread (or pool)."""
    if isinstance(runner, SyncRunner):
        if runner.inline(key):
            ok, result, run_s = run_one(None, fn, args, kwargs)
        else:
            ok, result, run_s = await runner.run(copy_context(), fn, args, kwargs)
        runner.record(key, run_s)
        if not ok:
            raise result
    else:
        ctx = copy_context()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(runner, lambda: ctx.run(fn, *args, **kwargs))
    if inspect.iscoroutine(result):  # a plain def that returned a coroutine (an ObjectRef,
        return await result          # awaitable too, is a result: its caller gets the ref)
    return result


#: A queued plain-def call: (its key for the inline policy, context, fn, args, kwargs).
PlainCall = tuple[Any, Context, Callable[..., Any], tuple[Any, ...], dict[str, Any]]


async def _run_plain(runner: SyncRunner, calls: list[PlainCall],
                     answer: Callable[[int, Outcome], Awaitable[None]]) -> None:
    """Run queued plain-def calls in order, each in its context: on the loop while they are
    short (see :class:`SyncRunner`), the rest queued to the runner's thread at once, so it runs
    them back to back. Each call is answered (``answer(index, outcome)``) as soon as it is
    done, not when the whole run is: after a crash only the calls that had not finished run
    again. Calls that finish in the same loop turn are answered in that turn, together."""
    for i, (key, ctx, fn, args, kwargs) in enumerate(calls):
        if not runner.inline(key):
            pending = [runner.run(c[1], c[2], c[3], c[4]) for c in calls[i:]]
            for j, fut in enumerate(pending, i):
                outcome = await fut  # (no suspension when it is done already)
                runner.record(calls[j][0], outcome[2])
                await answer(j, outcome)
            return
        outcome = ctx.run(run_one, None, fn, args, kwargs)
        runner.record(key, outcome[2])
        await answer(i, outcome)


async def _answer(core: Core, reply: Any, ok: bool, value: Any, num_returns: int, name: str,
                  where: str, run_s: float) -> tuple[Payload, ...]:
    """Answer one call of a batch with its outcome; returns the payloads it answered."""
    if ok and inspect.iscoroutine(value):  # a plain def that returned a coroutine (not a ref)
        try:
            value = await value
        except Exception as exc:
            ok, value = False, exc
    if ok:
        returns = _encode_returns(core, value, num_returns, name)
    else:
        returns = (Failed(capture_error(value, where)),) * num_returns
    if reply is not None and not reply.done():
        reply.set_result(quick_reply(returns, run_s))
    return returns


async def _in_runs(
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
        self.running: tuple[str, asyncio.Task[Any]] | None = None
        self.cancelled: set[str] = set()
        self.user_actor: ActorRef | None = None
        self.pid = os.getpid()
        # the latest tasks' returns by object id, for Local arguments of the tasks pushed
        # behind them (bounded; a miss fetches from the owner)
        self.recent: OrderedDict[str, Payload] = OrderedDict()
        self._recent_bytes = 0

    async def on_start(self) -> None:
        self.executor = SyncRunner("af-task")

    async def on_stop(self) -> None:
        if self.executor is not None:
            self.executor.close()

    async def receive(self, message: Any) -> Any:
        if type(message) is bytes:
            return await self._run_task(task_from_quick(message))
        if type(message) is TaskSpec:
            return await self._run_task(message)
        if type(message) is HostActor:
            return await self._host_actor(message)
        raise TypeError(f"worker got an unexpected {type(message).__name__}")

    def _batchable(self, message: Any) -> Callable[..., Any] | None:
        if type(message) is not TaskSpec:
            return None
        spec: TaskSpec = message
        known = self.functions.get(spec.fn_id)
        if (known is None or known[1] or spec.gpu_ids
                or spec.task_id in self.cancelled or type(spec.args) is not bytes):
            return None
        if spec.resolved:
            resolved = self._take_locals(spec.resolved)
            if resolved is None or not all(self.core.is_local(p) for p in resolved):
                return None
            spec.resolved = resolved
        return known[0]

    def _take_locals(self, resolved: tuple[Payload | Local, ...]) -> tuple[Payload, ...] | None:
        """``resolved`` with its Local arguments taken from the recent results; None when one
        of them is not there (it is fetched then)."""
        if not any(type(p) is Local for p in resolved):
            return resolved  # type: ignore[return-value]  # no Local left
        out: list[Payload] = []
        for p in resolved:
            if type(p) is Local:
                got = self.recent.get(p.object_id)
                if got is None:
                    return None
                out.append(got)
            else:
                out.append(p)  # type: ignore[arg-type]  # not a Local
        return tuple(out)

    async def _locals(self, resolved: tuple[Payload | Local, ...]) -> tuple[Payload, ...]:
        """``resolved`` with every Local argument's value: recent, or from its owner."""
        taken = self._take_locals(resolved)
        if taken is not None:
            return taken
        out: list[Payload] = []
        for p in resolved:
            if type(p) is Local:
                got = self.recent.get(p.object_id)
                if got is None:
                    ref = ObjectRef(p.object_id, restore_ref(*p.owner))
                    (got,) = await self.core.payloads((ref,))
                out.append(got)
            else:
                out.append(p)  # type: ignore[arg-type]  # not a Local
        return tuple(out)

    def _remember(self, spec: TaskSpec, returns: tuple[Payload, ...]) -> None:
        """Keep a task's returns for the Local arguments of tasks pushed behind it."""
        recent = self.recent
        if spec.num_returns == 1:
            ids: tuple[str, ...] = (spec.task_id,)
        else:
            ids = tuple(f"{spec.task_id}.{i}" for i in range(spec.num_returns))
        for oid, payload in zip(ids, returns, strict=False):
            if type(payload) is Failed and isinstance(payload.error, MissingFunction):
                continue  # its owner sends it again: followers wait for that run's value
            recent[oid] = payload
            self._recent_bytes += len(payload) if type(payload) is bytes else 64
        while len(recent) > RECENT_RESULTS or self._recent_bytes > RECENT_BYTES:
            _, old = recent.popitem(last=False)
            self._recent_bytes -= len(old) if type(old) is bytes else 64

    async def receive_batch(self, items: list[tuple[Any, Any]]) -> None:
        items = [(task_from_quick(m), r) if type(m) is bytes else (m, r) for m, r in items]
        await _in_runs(items, self._batchable, self._run_batch, self.receive)

    async def _run_batch(self, run: list[tuple[TaskSpec, Any, Callable[..., Any]]]) -> None:
        calls: list[PlainCall] = []
        ready: list[tuple[TaskSpec, Any]] = []
        for spec, reply, fn in run:
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
            calls.append((spec.fn_id, ctx, fn, args, kwargs))
            ready.append((spec, reply))
        if not calls:
            return
        assert self.executor is not None

        async def answer(i: int, outcome: Outcome) -> None:
            spec, reply = ready[i]
            ok, value, run_s = outcome
            self._remember(spec, await _answer(
                self.core, reply, ok, value, spec.num_returns, spec.name,
                f"task {spec.name} (pid={self.pid})", run_s))

        await _run_plain(self.executor, calls, answer)

    def _answer_failed(self, spec: TaskSpec, reply: Any, failed: Failed) -> None:
        returns = (failed,) * spec.num_returns
        self._remember(spec, returns)
        if reply is not None and not reply.done():
            reply.set_result(TaskReply(returns))

    async def _run_task(self, spec: TaskSpec) -> TaskReply | bytes:
        reply = await self._run_one(spec)
        if type(reply) is TaskReply:
            self._remember(spec, reply.returns)
        else:
            self._remember(spec, (reply,))  # type: ignore[arg-type]  # the quick form
        return _with_released(self.core, spec.args, reply)

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
        if spec.gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.gpu_ids))
        token = task_context.set(TaskContext(task_id=spec.task_id, name=spec.name,
                                             gpu_ids=spec.gpu_ids, job_id=spec.job_id))
        try:
            resolved = await self._locals(spec.resolved) if spec.resolved else ()
            failed_arg = _failed(resolved)
            if failed_arg is not None:  # a Local argument's producer failed: so does this
                return TaskReply((failed_arg,) * spec.num_returns)
            if not all(self.core.is_local(p) for p in resolved):
                resolved = await self.core.localize(resolved)
            blob = await local_args(self.core, spec.args)
            args, kwargs = resolve_args(self.core, blob, resolved)
            if is_async:
                task = asyncio.get_running_loop().create_task(fn(*args, **kwargs))
                self.running = (spec.task_id, task)
                try:
                    result = await task
                finally:
                    self.running = None
            else:
                assert self.executor is not None
                result = await _call(fn, args, kwargs, self.executor, spec.fn_id)
        except asyncio.CancelledError:
            if self.running is None and spec.task_id in self.cancelled:
                self.cancelled.discard(spec.task_id)
                error = TaskCancelledError(f"task {spec.name!r} was cancelled while it ran")
                return TaskReply((Failed(error),) * spec.num_returns, time.perf_counter() - start)
            raise
        except Exception as exc:
            failed = Failed(capture_error(exc, where))
            return TaskReply((failed,) * spec.num_returns, time.perf_counter() - start)
        finally:
            task_context.reset(token)
            self.cancelled.discard(spec.task_id)
        returns = _encode_returns(self.core, result, spec.num_returns, spec.name)
        return quick_reply(returns, time.perf_counter() - start)

    def cancel(self, task_id: str, force: bool) -> None:
        running = self.running
        if running is not None and running[0] == task_id:
            self.cancelled.add(task_id)
            running[1].cancel()
        elif force and running is None:
            os._exit(1)  # a sync task cannot be interrupted: end the process (Ray does too)
        else:
            self.cancelled.add(task_id)

    async def _host_actor(self, msg: HostActor) -> ActorRef | ErrorReply:
        if msg.gpu_ids:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, msg.gpu_ids))
        ctx = TaskContext(actor_id=msg.actor_id, name=msg.name, gpu_ids=msg.gpu_ids,
                          job_id=msg.job_id or None)
        token = task_context.set(ctx)
        try:
            cls = loads(msg.cls_blob)
            resolved = await self.core.localize(msg.resolved)
            args, kwargs = resolve_args(self.core, msg.args, resolved)
            instance = await _construct(cls, args, kwargs)
        except Exception as exc:  # answered as an error; this worker carries on
            return ErrorReply(capture_error(exc, f"{msg.name}.__init__ (pid={self.pid})"))
        finally:
            task_context.reset(token)
        ref = await self.system.spawn(
            UserActor, self.core, instance, ctx, max_concurrency=msg.max_concurrency,
            name=f"actor-{msg.actor_id}",
        )
        self.user_actor = ref
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


class UserActor(Actor):
    """Handles method calls of the user actor this process hosts.

    Plain ``def`` methods of a serial actor run on its :class:`SyncRunner`: on the loop while
    they prove short, else on the actor's own thread; calls queued together run back to back
    (``batches``), in one hop when they go to the thread. An actor that allows concurrent
    calls runs plain methods on a thread pool.
    """

    mailbox_size = 1 << 16
    batches = True

    def __init__(self, core: Core, instance: Any, ctx: TaskContext) -> None:
        self.core = core
        self.instance = instance
        self.ctx = ctx
        self.pid = os.getpid()
        self.methods: dict[str, tuple[Callable[..., Any], bool]] = {}  # method, is it async
        # sync methods: the runner for a serial actor, a pool when it allows concurrent calls
        self.executor: SyncRunner | ThreadPoolExecutor | None = None

    async def on_start(self) -> None:
        threads = type(self).max_concurrency
        cell = self.ref._slot.cell
        if cell is not None:
            threads = cell.max_concurrency
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
            known = self.methods[name] = (method, inspect.iscoroutinefunction(method))
        return known

    def _sync_method(self, message: Any) -> Callable[..., Any] | None:
        """The plain-def method a queued call can run in a batch, if it can."""
        if type(message) is not ActorCall or not isinstance(self.executor, SyncRunner):
            return None
        call: ActorCall = message
        if type(call.args) is not bytes or (call.resolved and not all(
                self.core.is_local(p) for p in call.resolved)):
            return None
        known = self.methods.get(call.method)
        if known is None or known[1]:
            return None
        return known[0]

    async def receive_batch(self, items: list[tuple[Any, Any]]) -> None:
        items = [(call_from_quick(m), r) if type(m) is bytes else (m, r) for m, r in items]
        await _in_runs(items, self._sync_method, self._run_batch, self.receive)

    async def _run_batch(self, run: list[tuple[ActorCall, Any, Callable[..., Any]]]) -> None:
        token = task_context.set(self.ctx)
        ctx = copy_context()
        task_context.reset(token)
        calls: list[PlainCall] = []
        ready: list[tuple[ActorCall, Any]] = []
        for call, reply, method in run:
            try:
                args, kwargs = resolve_args(self.core, call.args, call.resolved)
            except Exception as exc:
                where = f"{self.ctx.name}.{call.method} (pid={self.pid})"
                failed = Failed(capture_error(exc, where))
                if reply is not None and not reply.done():
                    reply.set_result(TaskReply((failed,) * call.num_returns))
                continue
            calls.append((call.method, ctx, method, args, kwargs))
            ready.append((call, reply))
        if not calls:
            return
        assert isinstance(self.executor, SyncRunner)

        async def answer(i: int, outcome: Outcome) -> None:
            call, reply = ready[i]
            ok, value, run_s = outcome
            where = f"{self.ctx.name}.{call.method} (pid={self.pid})"
            await _answer(self.core, reply, ok, value, call.num_returns, where, where, run_s)

        await _run_plain(self.executor, calls, answer)

    async def receive(self, message: Any) -> Any:
        if type(message) is bytes:
            message = call_from_quick(message)
        elif type(message) is not ActorCall:
            raise TypeError(f"actor got an unexpected {type(message).__name__}")
        reply = await self._call_one(message)
        return _with_released(self.core, message.args, reply)

    async def _call_one(self, call: ActorCall) -> TaskReply | bytes:
        start = time.perf_counter()
        where = f"{self.ctx.name}.{call.method} (pid={self.pid})"
        token = task_context.set(self.ctx)
        try:
            method, is_async = self._method(call.method)
            resolved = call.resolved
            if not all(self.core.is_local(p) for p in resolved):
                resolved = await self.core.localize(resolved)
            blob = await local_args(self.core, call.args)
            args, kwargs = resolve_args(self.core, blob, resolved)
            if is_async:
                result = await method(*args, **kwargs)
            else:
                assert self.executor is not None
                result = await _call(method, args, kwargs, self.executor, call.method)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed = Failed(capture_error(exc, where))
            return TaskReply((failed,) * call.num_returns, time.perf_counter() - start)
        finally:
            task_context.reset(token)
        returns = _encode_returns(self.core, result, call.num_returns, where)
        return quick_reply(returns, time.perf_counter() - start)


class WorkerControl(Actor):
    """Control messages that must not wait behind the running task."""

    max_concurrency = 16

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def receive(self, message: Any) -> Any:
        if type(message) is CancelTask:
            self.worker.cancel(message.task_id, message.force)
            return None
        raise TypeError(f"worker control got an unexpected {type(message).__name__}")
