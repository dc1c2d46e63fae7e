"""``@af.remote``: remote functions (tasks), actor classes, actor handles and their methods.

Submission never awaits: ``f.remote(x)`` builds the task, hands it to the process's submitter
and returns ObjectRefs at once. Top-level ObjectRef arguments are resolved to their values
before the task runs; refs nested in containers stay refs. Functions and classes travel by value
(cloudpickle), serialized once per process and sent once per worker.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from typing import Any, Generic, TypeVar

import cloudpickle

from actorflow._errors import SerializationError
from actorflow._limits import UNLIMITED
from actorflow.api.options import ActorOptions, MethodOptions, TaskOptions, validate
from actorflow.cluster.actor_client import ActorClient, PendingCall
from actorflow.cluster.core import Core
from actorflow.cluster.driver_job import job_of, namespace_of
from actorflow.cluster.execution import capture_strategy
from actorflow.cluster.holds import HandleCounter, counter_for
from actorflow.cluster.protocol import ActorCall, ActorSpec, ResolvedArg, TaskSpec, quick_call
from actorflow.cluster.runtime_env import for_options
from actorflow.cluster.streaming import ObjectRefGenerator, is_generator, pump_for
from actorflow.cluster.submitter import PendingTask
from actorflow.cluster.task_context import task_context
from actorflow.objects.borrows import HANDLE, collecting
from actorflow.objects.ref import ObjectRef, current_core
from actorflow.objects.serialization import dumps
from actorflow.placement.resources import demand_from_options
from actorflow.placement.strategies import PlacementGroupStrategy

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "RemoteFunction", "remote"]

T = TypeVar("T")


def _on_loop(core: Core, fn: Callable[[], T]) -> T:
    """Run ``fn`` on the core's loop thread (``.remote()`` from a plain-def task's thread)."""
    if threading.get_ident() == core.loop_thread:
        return fn()
    result: ThreadFuture[T] = ThreadFuture()

    def run() -> None:
        try:
            result.set_result(fn())
        except BaseException as exc:
            result.set_exception(exc)

    core.loop.call_soon_threadsafe(run)
    return result.result(timeout=60)


def _split_refs(args: tuple[Any, ...], kwargs: dict[str, Any]
                ) -> tuple[tuple[Any, ...], dict[str, Any], list[ObjectRef]]:
    """Replace top-level ObjectRef arguments by ResolvedArg placeholders."""
    deps: list[ObjectRef] = []
    if any(type(a) is ObjectRef for a in args):
        new_args = []
        for a in args:
            if type(a) is ObjectRef:
                new_args.append(ResolvedArg(len(deps)))
                deps.append(a)
            else:
                new_args.append(a)
        args = tuple(new_args)
    if kwargs and any(type(v) is ObjectRef for v in kwargs.values()):
        new_kwargs = {}
        for k, v in kwargs.items():
            if type(v) is ObjectRef:
                new_kwargs[k] = ResolvedArg(len(deps))
                deps.append(v)
            else:
                new_kwargs[k] = v
        kwargs = new_kwargs
    return args, kwargs, deps


class _Export:
    """A function or class serialized once per process."""

    __slots__ = ("blob", "fid")

    def __init__(self, obj: Any, what: str) -> None:
        try:
            self.blob = cloudpickle.dumps(obj, protocol=5)
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize {what}: {type(exc).__name__}: {exc}. It (or what it uses from "
                "its enclosing scope) must be picklable by cloudpickle."
            ) from exc
        self.fid = hashlib.blake2b(self.blob, digest_size=12).hexdigest()


class RemoteFunction(Generic[T]):
    """A function made remote: call ``.remote(...)``; ``.options(...)`` overrides options."""

    def __init__(self, fn: Callable[..., Any], options: TaskOptions,
                 export: list[_Export] | None = None) -> None:
        self._fn = fn
        self._options = options
        self._name: str = options.name or getattr(fn, "__qualname__", None) or repr(fn)
        self._export = export if export is not None else []  # shared with .options() copies
        self._shape = demand_from_options(
            options.num_cpus, options.num_gpus, options.memory, options.resources, default_cpus=1
        )
        retry = options.retry_exceptions
        self._retry_exceptions: bool | tuple[type[BaseException], ...] = (
            retry if isinstance(retry, bool) else tuple(retry)
        )
        self._streaming = is_generator(fn)
        if self._streaming and options.num_returns != 1:
            raise ValueError(f"remote function {self._name!r} is a generator: each value it "
                             "yields is a ref of its own (an af.ObjectRefGenerator), so it "
                             "cannot have num_returns")
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote function {self._name!r} cannot be called directly; "
            f"use {self._name}.remote(...) and await the returned ObjectRef"
        )

    def __repr__(self) -> str:
        return f"<RemoteFunction {self._name}>"

    def options(self, **options: Any) -> RemoteFunction[T]:
        opts = validate(TaskOptions, self._options, f"remote function {self._name!r}", **options)
        return RemoteFunction(self._fn, opts, self._export)

    def _exported(self) -> _Export:
        if not self._export:
            fn = pump_for(self._fn, self._name) if self._streaming else self._fn
            self._export.append(_Export(fn, f"remote function {self._name!r}"))
        return self._export[0]

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        core = current_core()
        if self._options.scheduling_strategy is None and capture_strategy.get() is not None:
            captured: RemoteFunction[T] = RemoteFunction(self._fn, _captured(self._options),
                                                         self._export)
            return captured.remote(*args, **kwargs)
        return _on_loop(core, lambda: self._submit(core, args, kwargs))

    def _submit(self, core: Core, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        export = self._exported()
        opts = self._options
        args, kwargs, deps = _split_refs(args, kwargs)
        task_id = core.new_id()
        if self._streaming:
            args = (core.owner_ref, task_id, opts.generator_backpressure, *args)
        blob, keep = core.pack_args(args, kwargs, f"an argument of {self._name!r}")
        n = opts.num_returns
        return_ids = (task_id,) if n == 1 else tuple(f"{task_id}.{i}" for i in range(n))
        refs = [core.new_pending(oid) for oid in return_ids]
        assert core.owner_ref is not None
        strategy = opts.scheduling_strategy
        spec = TaskSpec(task_id, self._name, export.fid, None, blob, (), n, job_of(core),
                        capture=strategy.for_children()
                        if type(strategy) is PlacementGroupStrategy else None,
                        driver_owned=core.worker_id is None)
        retries = opts.max_retries if opts.max_retries >= 0 else UNLIMITED
        gen = (ObjectRefGenerator(core, task_id, refs[0], opts.generator_backpressure)
               if self._streaming else None)
        core.submitter.submit(PendingTask(spec, return_ids, self._shape, retries,
                                          self._retry_exceptions, export.blob,
                                          strategy=opts.scheduling_strategy, deps=deps,
                                          env=for_options(opts.runtime_env),
                                          keep=keep,
                                          may_rerun=gen.rerun_check() if gen else None))
        if gen is not None:
            return gen
        return refs[0] if n == 1 else refs


# -- actors ---------------------------------------------------------------------------------------


def _public_methods(cls: type) -> dict[str, bool]:
    """Method name -> is it async, for every callable public attribute of the class."""
    out: dict[str, bool] = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name != "__call__":
            continue
        if callable(member):  # (an async generator runs on the actor's loop too)
            out[name] = inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member)
    return out


class ActorClass(Generic[T]):
    """A class made remote: ``.remote(*args)`` creates an actor and returns its handle."""

    def __init__(self, cls: type, options: ActorOptions, export: list[_Export] | None = None
                 ) -> None:
        self._cls = cls
        self._options = options
        self._export = export if export is not None else []
        self._methods = _public_methods(cls)
        self._streaming = tuple(name for name in self._methods
                                if is_generator(getattr(cls, name, None)))
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__
        self.__module__ = cls.__module__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor class {self._cls.__name__!r} cannot be instantiated directly; "
            f"use {self._cls.__name__}.remote(...)"
        )

    def __repr__(self) -> str:
        return f"<ActorClass {self._cls.__qualname__}>"

    def options(self, **options: Any) -> ActorClass[T]:
        opts = validate(ActorOptions, self._options, f"actor class {self._cls.__name__!r}",
                        **options)
        return ActorClass(self._cls, opts, self._export)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        core = current_core()
        if self._options.scheduling_strategy is None and capture_strategy.get() is not None:
            captured: ActorClass[T] = ActorClass(self._cls, _captured(self._options),
                                                 self._export)
            return captured.remote(*args, **kwargs)
        # an actor's code (a method, its constructor, their threads) creates a child of it,
        # which dies with it unless detached (docs/guide.md, fate-sharing)
        creator = task_context.get().actor_id or ""
        return _on_loop(core, lambda: self._create(core, args, kwargs, creator))

    def _create(self, core: Core, args: tuple[Any, ...], kwargs: dict[str, Any],
                creator: str = "") -> ActorHandle:
        args, kwargs, deps = _split_refs(args, kwargs)
        blob = dumps((args, kwargs), f"an argument of {self._cls.__name__}")
        spec = self._spec(core, blob, creator)
        handle = ActorHandle.from_spec(spec.actor_id, spec)
        client = _client(core, handle)
        client.creating(spec, deps, self._options.get_if_exists)
        counter_for(core).created(spec.actor_id)  # (told to the head after the creation)
        return handle

    def _spec(self, core: Core, blob: bytes, creator: str = "") -> ActorSpec:
        """The actor's spec with ``blob`` as its pickled (args, kwargs), created by actor
        ``creator`` ("" when a driver or a task creates it)."""
        if not self._export:
            self._export.append(_Export(self._cls, f"actor class {self._cls.__name__!r}"))
        export = self._export[0]
        opts = self._options
        has_async = any(self._methods.values())
        max_concurrency = opts.max_concurrency or (1000 if has_async else 1)
        # placement: 1 CPU free to be placed, none held afterwards (as Ray), unless given
        demand = demand_from_options(opts.num_cpus, opts.num_gpus, opts.memory, opts.resources,
                                     default_cpus=1)
        hold = demand_from_options(opts.num_cpus, opts.num_gpus, opts.memory, opts.resources,
                                   default_cpus=0)
        namespace = opts.namespace if opts.namespace is not None else namespace_of(core)
        return ActorSpec(
            actor_id=core.new_id(), class_name=self._cls.__name__, cls_blob=export.blob, args=blob,
            resolved=(), demand=demand, hold=hold,
            max_restarts=opts.max_restarts, max_task_retries=opts.max_task_retries,
            max_concurrency=max_concurrency, name=opts.name, namespace=namespace,
            lifetime=opts.lifetime, job_id=job_of(core), owner=core.worker_id or "driver",
            strategy=opts.scheduling_strategy, methods=tuple(self._methods), creator=creator,
            streaming=self._streaming, runtime_env=for_options(opts.runtime_env),
        )


_O = TypeVar("_O", TaskOptions, ActorOptions)


def _captured(options: _O) -> _O:
    """``options`` (which name no strategy) with the strategy of the placement group that the
    running task captures its children in (``PlacementGroupStrategy(...,
    capture_child_tasks=True)``): read here, in the submitting thread's context."""
    return dataclasses.replace(options, scheduling_strategy=capture_strategy.get())


def _client(core: Core, handle: ActorHandle) -> ActorClient:
    client = core.actors.get(handle._actor_id)
    if client is None:
        client = ActorClient(core, handle._actor_id, handle._class_name,
                             handle._max_task_retries)
        core.actors[handle._actor_id] = client
    return client


def _counter() -> HandleCounter | None:
    try:
        core = current_core()
    except RuntimeError:  # no cluster in this process: the handle is not counted
        return None
    return counter_for(core)


class ActorHandle:
    """A handle to an actor: ``handle.method.remote(...)``. Picklable; valid across restarts.

    Handles are counted per process (see ``docs/architecture.md``, actor lifetimes): an
    anonymous, non-detached actor is stopped once no handle to it is left anywhere, a pickled
    one on its way included, and no call made through one is still in progress.
    """

    __slots__ = ("_actor_id", "_class_name", "_counter", "_max_task_retries", "_methods",
                 "_streaming")

    def __init__(self, actor_id: str, class_name: str, methods: tuple[str, ...],
                 max_task_retries: int = 0, streaming: tuple[str, ...] = ()) -> None:
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods
        self._max_task_retries = max_task_retries
        self._streaming = streaming
        counter = self._counter = _counter()
        if counter is not None:
            counter.add(actor_id)

    @classmethod
    def from_spec(cls, actor_id: str, spec: ActorSpec) -> ActorHandle:
        """A handle to actor ``actor_id`` made from ``spec``."""
        return cls(actor_id, spec.class_name, spec.methods, spec.max_task_retries,
                   spec.streaming)

    def __del__(self) -> None:
        # only queues a note (any thread, never blocks): the loop tells the head, batched
        counter = getattr(self, "_counter", None)
        if counter is not None:
            counter.drop(self._actor_id)

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_"):  # private names and slots not set yet are not methods
            raise AttributeError(name)
        if name not in self._methods:
            raise AttributeError(
                f"actor {self._class_name!r} has no method {name!r}; its methods are "
                f"{sorted(self._methods)}"
            )
        # (made per access, not cached on the handle: a cache would be a reference cycle,
        # and the handle would outlive its last user until a garbage collection)
        return ActorMethod(self, name, _DEFAULT_METHOD_OPTIONS)

    def __repr__(self) -> str:
        return f"ActorHandle({self._class_name}, {self._actor_id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __reduce__(self) -> tuple[Any, ...]:
        # the pickled handle carries a token the head counts until it is unpickled somewhere,
        # or, pickled into a value someone keeps, until that value is let go
        counter = self._counter or _counter()
        refs = collecting()
        token = None
        if counter is not None:
            token = counter.lend(self._actor_id, kept=refs is not None)
            if refs is not None:
                refs.append((HANDLE, f"{self._actor_id} {token}"))
        return (_restore_handle, (self._actor_id, self._class_name, self._methods,
                                  self._max_task_retries, token, self._streaming))


def _restore_handle(actor_id: str, class_name: str, methods: tuple[str, ...],
                    max_task_retries: int, token: str | None,
                    streaming: tuple[str, ...] = ()) -> ActorHandle:
    handle = ActorHandle(actor_id, class_name, methods, max_task_retries, streaming)
    counter = handle._counter
    if token is not None and counter is not None:
        counter.take(actor_id, token)
    return handle


_DEFAULT_METHOD_OPTIONS = MethodOptions()


class ActorMethod:
    """``handle.method``: call ``.remote(...)``; ``.options(num_returns=...)``."""

    __slots__ = ("_handle", "_name", "_options")

    def __init__(self, handle: ActorHandle, name: str, options: MethodOptions) -> None:
        self._handle = handle
        self._name = name
        self._options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor method {self._handle._class_name}.{self._name} cannot be called directly; "
            f"use .{self._name}.remote(...)"
        )

    def options(self, **options: Any) -> ActorMethod:
        opts = validate(MethodOptions, self._options, f"{self._name}", **options)
        return ActorMethod(self._handle, self._name, opts)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        core = current_core()
        return _on_loop(core, lambda: self._call(core, args, kwargs))

    def _call(self, core: Core, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        handle = self._handle
        args, kwargs, deps = _split_refs(args, kwargs)
        call_id = core.new_id()
        streams = self._name in handle._streaming
        if streams:
            args = (core.owner_ref, call_id, self._options.generator_backpressure, *args)
        blob, keep = core.pack_args(args, kwargs,
                                    f"an argument of {handle._class_name}.{self._name}")
        n = self._options.num_returns
        return_ids = (call_id,) if n == 1 else tuple(f"{call_id}.{i}" for i in range(n))
        refs = [core.new_pending(oid) for oid in return_ids]
        retries = handle._max_task_retries
        job = core.job_id if core.worker_id is None else ""  # (see ActorCall.job)
        call = (quick_call(self._name, blob, n, "", job) if not deps and type(blob) is bytes
                else ActorCall(self._name, blob, (), n, "", job))
        _client(core, handle).call(PendingCall(  # (the call holds the handle until done)
            call, return_ids, retries if retries >= 0 else UNLIMITED, deps,
            keep=handle if keep is None else (keep, handle),
        ))
        if streams:
            return ObjectRefGenerator(core, call_id, refs[0],
                                      self._options.generator_backpressure)
        return refs[0] if n == 1 else refs


def remote(*args: Any, **options: Any) -> Any:
    """Make a function a remote function, or a class an actor class.

    ``@af.remote`` or ``@af.remote(num_cpus=..., ...)``; see API.md §2 and §4 for the options.
    """
    if len(args) == 1 and not options and (inspect.isclass(args[0]) or callable(args[0])):
        return _make(args[0], {})
    if args:
        raise TypeError("use @af.remote or @af.remote(option=value, ...)")

    def decorate(obj: Any) -> Any:
        return _make(obj, options)

    return decorate


def _make(obj: Any, options: dict[str, Any]) -> Any:
    if inspect.isclass(obj):
        return ActorClass(obj, validate(ActorOptions, None, f"actor class {obj.__name__!r}",
                                        **options))
    if callable(obj):
        name = getattr(obj, "__qualname__", repr(obj))
        return RemoteFunction(obj, validate(TaskOptions, None, f"remote function {name!r}",
                                            **options))
    raise TypeError(f"@af.remote takes a function or a class, not {type(obj).__name__}")

