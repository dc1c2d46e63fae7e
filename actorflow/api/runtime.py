"""Starting, joining and stopping: ``init``, ``shutdown``, ``run`` and the cluster views.

``af.init()`` with no address starts the embedded default cluster inside this process's event
loop: the Head and one Node (actors of this process's ActorSystem, which listens on 127.0.0.1
for its workers), and worker processes started in the background, never blocking the loop. It
works inside an already running service (aiohttp, FastAPI).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from actorflow._errors import ActorDiedError, ActorflowError, AuthenticationError
from actorflow.api.remote import ActorHandle
from actorflow.cluster import bootstrap, state
from actorflow.cluster import runtime_env as renv
from actorflow.cluster.calls import CallState, current_call
from actorflow.cluster.core import Core
from actorflow.cluster.driver_job import end_job, namespace_of, register_job
from actorflow.cluster.head_link import ask_head
from actorflow.cluster.memory_guard import with_memory
from actorflow.cluster.protocol import (
    GetNamedActor,
    KillActor,
    ListState,
    UnwatchActor,
    WatchActor,
)
from actorflow.cluster.task_context import task_context
from actorflow.objects.ref import current_core, set_current_core
from actorflow.placement.resources import Resources
from actorflow.runtime import ActorSystem
from actorflow.runtime.loop import run_main

__all__ = [
    "Runtime",
    "RuntimeContext",
    "available_resources",
    "cluster_resources",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "nodes",
    "run",
    "shutdown",
    "watch",
]

T = TypeVar("T")

log = logging.getLogger("actorflow")


@dataclass(slots=True)
class Runtime:
    """What ``af.init()`` returns: this process's connection to its cluster."""

    address: str | None
    node_id: str
    job_id: str
    namespace: str
    session: str
    options: dict[str, Any] = field(repr=False)
    system: ActorSystem = field(repr=False)
    core: Core = field(repr=False)
    #: the dashboard's URL when this process serves it (``af.init(dashboard=True)``)
    dashboard_url: str | None = None
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)
    #: joined a cluster at an address (its job ends at shutdown; the cluster lives on)
    joined: bool = field(default=False, repr=False)

    async def shutdown(self) -> None:
        await shutdown()


_RUNTIME: Runtime | None = None
_LOCK: asyncio.Lock | None = None


def is_initialized() -> bool:
    """True between a successful ``init`` and ``shutdown`` in this process."""
    return _RUNTIME is not None


def _detect_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def _resources(opts: dict[str, Any]) -> Resources:
    num_cpus = opts.get("num_cpus")
    if num_cpus is None:
        num_cpus = os.cpu_count() or 1
    num_gpus = opts.get("num_gpus")
    if num_gpus is None:
        num_gpus = _detect_gpus()
    amounts: dict[str, float] = {"CPU": float(num_cpus)}
    if num_gpus:
        amounts["GPU"] = float(num_gpus)
    amounts.update(opts.get("resources") or {})
    return Resources.of(with_memory(amounts))


def _address_and_token(opts: dict[str, Any]) -> tuple[str | None, str | None]:
    address = opts.get("address") or os.environ.get("ACTORFLOW_ADDRESS") or None
    token = opts.get("token") or os.environ.get("ACTORFLOW_TOKEN") or None
    if address == "auto":
        info = state.read_cluster()
        if info is None:
            raise ConnectionError(
                "address='auto' found no cluster started on this machine; run "
                "`actorflow start --head` first, or pass the head's ws:// address"
            )
        address = info["address"]
        token = token or state.read_token()
    return address, token


async def _start(opts: dict[str, Any]) -> Runtime:
    address, token = _address_and_token(opts)
    if address:
        if token is None:
            raise AuthenticationError(
                f"no token for the cluster at {address}: pass token=..., set ACTORFLOW_TOKEN, "
                "or use address='auto' on the head's machine"
            )
        given = [k for k in ("num_cpus", "num_gpus", "resources", "object_store_memory")
                 if opts.get(k) is not None]
        if given:
            raise ValueError(f"{' / '.join(given)} describe a new cluster; they cannot be given "
                             "when joining one at an address (set them with `actorflow start` "
                             "on its nodes)")
        proc = await bootstrap.connect(address, token)
        if proc.node is None or proc.node_id is None:
            await proc.aclose()
            raise ConnectionError(f"the cluster at {address} has no live node")
    else:
        token = token or secrets.token_hex(16)
        proc = await bootstrap.start_head(
            token=token, resources=_resources(opts),
            log_to_driver=bool(opts.get("log_to_driver", True)), options=opts,
        )
    assert proc.node is not None and proc.node_id is not None
    try:
        # a job submitted with `actorflow job submit` runs with its id given
        job_id = os.environ.get("ACTORFLOW_JOB_ID") or secrets.token_hex(4)
        core = Core(proc.system, node=proc.node, head=proc.head, node_id=proc.node_id,
                    job_id=job_id, session=proc.session,
                    namespace=opts.get("namespace") or "")
        await core.start()
        if opts.get("runtime_env"):  # packed and uploaded once: its tasks and actors run in it
            jobs = renv.head_service(proc.head, proc.system, "jobs")
            renv.set_process_default(await renv.resolve(opts["runtime_env"], jobs, proc.system))
        await register_job(core, log_to_driver=bool(opts.get("log_to_driver", True)),
                           joined=bool(address))
    except BaseException:
        await proc.aclose()
        raise
    runtime = Runtime(proc.address, proc.node_id, core.job_id, core.namespace, proc.session,
                      opts, proc.system, core, joined=bool(address))
    runtime._closers.append(proc.remoting.aclose)
    runtime.dashboard_url = proc.info.get("dashboard")
    if runtime.dashboard_url:
        log.info("actorflow dashboard at %s (log in with the cluster token)",
                 runtime.dashboard_url)
    return runtime


async def _init(opts: dict[str, Any]) -> Runtime:
    global _RUNTIME, _LOCK
    if _LOCK is None:
        _LOCK = asyncio.Lock()
    async with _LOCK:
        if _RUNTIME is not None:
            if _RUNTIME.options == opts:
                return _RUNTIME
            raise RuntimeError(
                "actorflow is already initialized in this process with other options "
                f"({_RUNTIME.options}); call `await af.shutdown()` first"
            )
        runtime = await _start(opts)
        _RUNTIME = runtime
        set_current_core(runtime.core)
        # What exists now (modules, the runtime, the caller's own start-up state) lives on:
        # keep it out of cyclic collections, as the workers do. With many calls in flight a
        # driver otherwise spends a quarter to a third of its CPU rescanning it (measured with
        # gc.callbacks, docs/performance.md). shutdown() gives it back to the collector.
        gc.freeze()
        return runtime


class _InitCall:
    """``await af.init(...)`` or ``async with af.init(...) as rt:`` (shutdown on exit)."""

    def __init__(self, opts: dict[str, Any]) -> None:
        self._opts = opts

    def __await__(self) -> Generator[Any, None, Runtime]:
        return _init(self._opts).__await__()

    async def __aenter__(self) -> Runtime:
        return await _init(self._opts)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await shutdown()


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: Mapping[str, float] | None = None,
    object_store_memory: int | None = None,
    token: str | None = None,
    namespace: str | None = None,
    log_to_driver: bool = True,
    dashboard: bool = False,
    runtime_env: Mapping[str, Any] | None = None,
) -> _InitCall:
    """Start (or join) a cluster; see API.md §1. Await it, or use it with ``async with``."""
    opts = {
        "address": address, "num_cpus": num_cpus, "num_gpus": num_gpus,
        "resources": dict(resources) if resources else None,
        "object_store_memory": object_store_memory, "token": token, "namespace": namespace,
        "log_to_driver": log_to_driver, "dashboard": dashboard,
        "runtime_env": renv.normalize(runtime_env),
    }
    return _InitCall(opts)


async def shutdown() -> None:
    """Stop what ``init`` started in this process (workers included) and forget it."""
    global _RUNTIME
    runtime = _RUNTIME
    if runtime is None:
        return
    _RUNTIME = None
    gc.unfreeze()
    try:
        if runtime.joined:  # the cluster lives on: release this job's actors, groups, objects
            await end_job(runtime.core)
        await runtime.core.close()
        await runtime.system.shutdown()
    finally:
        for close in runtime._closers:
            await close()
        set_current_core(None)
        renv.set_process_default(None, unset=True)


def run(main: Callable[..., Awaitable[T]], *args: Any, **init_kwargs: Any) -> T:
    """Synchronous entry point: a fresh event loop (uvloop when installed), ``init``,
    ``await main(*args)``, ``shutdown``; returns what ``main`` returned."""

    async def runner() -> T:
        async with init(**init_kwargs):
            return await main(*args)

    return run_main(runner())


# -- actors by name, kill ------------------------------------------------------------------------


async def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the named actor (in ``namespace``, default: this job's)."""
    core = current_core()
    ns = namespace if namespace is not None else namespace_of(core)
    actor_id, spec = await ask_head(core.head, GetNamedActor(name, ns))  # (waits for a
    # head that is restarting, for a while)
    return ActorHandle.from_spec(actor_id, spec)


async def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill the actor's process now. With ``no_restart=False`` it restarts if its
    ``max_restarts`` allows; otherwise later calls raise ActorDiedError."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() takes an ActorHandle, got {type(actor).__name__}")
    core = current_core()
    client = core.actors.get(actor._actor_id)
    if client is not None and not no_restart:
        client.invalidate()  # before the kill: no call of ours may go to the dying process
    await core.head.ask(KillActor(actor._actor_id, no_restart))
    if client is not None and no_restart:
        client.die(ActorDiedError(actor._class_name, "it was killed with af.kill()"))


async def watch(actor: ActorHandle) -> ActorDiedError:
    """Wait until the actor is dead for good and return why: an ActorDiedError whose
    ``reason`` and ``cause`` tell (the cause of a crash, NodeDiedError when its node died,
    the creator's end for a child that died with it). A restart is not a death: the wait
    goes on while ``max_restarts`` allows one. Works in a driver, a task or an actor;
    cancelling the awaiting coroutine ends the wait at the head too."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"watch() takes an ActorHandle, got {type(actor).__name__}")
    core = current_core()
    while True:
        watch_id = core.new_id()
        try:
            death: ActorDiedError | None = await ask_head(
                core.head, WatchActor(actor._actor_id, watch_id, core.owner_ref))
        except asyncio.CancelledError:
            try:
                core.head.tell_nowait(UnwatchActor(watch_id))
            except ActorflowError:
                pass  # the head is gone: its waits went with it
            raise
        if death is not None:
            return death
        # None: the head dropped this wait, taking this process for ended: wait again


# -- cluster views ---------------------------------------------------------------------------------


async def nodes() -> list[dict[str, Any]]:
    """One dict per node: node_id, address, alive, resources (totals), available."""
    views: list[dict[str, Any]] = await current_core().head.ask(ListState("nodes"))
    return [{k: v for k, v in view.items() if k != "ref"} for view in views]


def _sum(views: list[dict[str, Any]], key: str) -> dict[str, float]:
    total: dict[str, float] = {}
    for view in views:
        if view.get("alive"):
            for name, amount in view.get(key, {}).items():
                total[name] = total.get(name, 0.0) + amount
    return total


async def cluster_resources() -> dict[str, float]:
    """Totals of the live cluster, e.g. ``{"CPU": 2.0, "GPU": 1.0}``."""
    return _sum(await nodes(), "resources")


async def available_resources() -> dict[str, float]:
    """What is free now in the live cluster."""
    return _sum(await nodes(), "available")


# -- context -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuntimeContext:
    """Where the calling code runs (``af.get_runtime_context()``)."""

    node_id: str
    job_id: str
    task_id: str | None
    actor_id: str | None
    worker_pid: int
    namespace: str
    name: str
    _call: CallState | None = field(default=None, repr=False, compare=False)

    def is_cancelled(self) -> bool:
        """True once ``af.cancel`` reached the task or actor call this context was taken in
        (a plain-``def`` actor method is not interrupted: it may look here and stop). False
        outside a call, and in a call that runs on the worker's loop between two awaits of
        nothing (a plain call that proved short: a cancel cannot reach it while it runs)."""
        return self._call is not None and self._call.cancelled


def get_runtime_context() -> RuntimeContext:
    """Where the calling code runs: node_id, job_id, task_id, actor_id (None outside an
    actor), worker_pid, namespace and the task or actor name."""
    core = current_core()
    ctx = task_context.get()
    return RuntimeContext(core.node_id, ctx.job_id or core.job_id, ctx.task_id, ctx.actor_id,
                          os.getpid(), namespace_of(core), ctx.name, current_call.get())


def get_gpu_ids() -> list[int]:
    """The GPU ids assigned to the calling task or actor (what CUDA_VISIBLE_DEVICES holds)."""
    return list(task_context.get().gpu_ids)
