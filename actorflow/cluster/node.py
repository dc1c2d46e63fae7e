"""The Node actor: one per machine (per ``actorflow start``): local resources, worker leases,
worker processes, and the user actors placed here.

Leases: an owner asks for a worker for a resource shape; the node grants an idle worker once
the shape fits the free resources (never more CPU-holding work than ``num_cpus``), starting a
worker process if none is idle. A demand larger than the whole node fails at once with
InfeasibleError. GPU ids are assigned per lease: whole GPUs exclusively, fractions share an id.

User actors: each lives under its own one-child supervisor (restart kind ``transient``,
intensity ``max_restarts`` with no window, as Ray counts restarts), whose child, an
:class:`ActorHost`, takes a worker process for the actor, builds the instance there, and
reports the actor's location to the head. The actor's process dying crashes the host, and the
supervisor restarts it while ``max_restarts`` allows.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import pickle
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actorflow._errors import (
    ActorDiedError,
    InfeasibleError,
    ObjectLostError,
    WorkerCrashedError,
)
from actorflow._limits import UNLIMITED
from actorflow.cluster import hoststats, memory_guard, runtime_env
from actorflow.cluster.actor_host import ActorHost, creation_error
from actorflow.cluster.jobs_table import FreeSegments
from actorflow.cluster.node_logs import NodeLogs, ReadLogs
from actorflow.cluster.pool import WorkerHandle, WorkerPool, WorkerState
from actorflow.cluster.protocol import (
    ActorDown,
    ActorSpec,
    Fetched,
    FreeSegment,
    KillActor,
    Lease,
    NodeInfo,
    NodeLoad,
    Offered,
    PlaceTask,
    ReadSegment,
    ReleaseBundles,
    RequestLease,
    ReserveBundles,
    ReturnLease,
    Spillback,
    StartActor,
    WorkerBlocked,
    WorkerReady,
)
from actorflow.cluster.zygote import Zygote
from actorflow.objects import shm, spill
from actorflow.placement.gpus import GpuAllocator
from actorflow.placement.resources import UNIT, Resources
from actorflow.runtime import ActorRef, OwnedTasks, ServiceActor, Terminated
from actorflow.supervision import ChildSpec, Supervisor, add_restart

__all__ = ["Node"]

log = logging.getLogger("actorflow.node")

_STORE_MESSAGES = frozenset({spill.Stored, spill.Freed, spill.Restore, spill.MemoryQuery})

#: A segment whose buffers hold this much or more goes to a reader on another node by a bulk
#: pull (straight into the reader's memory) rather than in the answer's frames.
BULK_MIN_BYTES = 1024 * 1024


@dataclass(slots=True)
class _Waiting:
    demand: Resources
    fut: asyncio.Future[_LeaseRecord]
    dedicated: bool
    pool: tuple[str, int] | None = None
    env: Any = None  # a ResolvedEnv: the worker must be one of it


@dataclass(slots=True)
class _LeaseRecord:
    lease_id: int
    demand: Resources
    worker: WorkerHandle
    gpu_ids: tuple[int, ...]
    gpu_units: int
    blocked: bool = False
    owner: ActorRef | None = None
    pool: tuple[str, int] | None = None


class Node(ServiceActor):
    """See the module docstring."""

    max_concurrency = 100_000  # lease requests wait for resources; waits must not queue
    mailbox_size = 1 << 16

    def __init__(
        self,
        *,
        node_id: str,
        resources: Resources,
        session: str,
        head: ActorRef,
        placement: ActorRef,
        token: str,
        log_to_driver: bool,
        prestart: int,
        max_workers: int | None = None,
        zygote: Zygote | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.node_id = node_id
        #: the primary copies of this machine's objects: limit, spilling (objects/spill.py)
        self.store = spill.store_of(node_id)
        self.total = resources
        self.available = resources
        self.session = session
        self.head = head
        self.placement = placement
        self.token = token
        self.log_to_driver = log_to_driver
        self.prestart = prestart
        self.max_workers = max_workers or max(4, 4 * prestart)
        self.gpus = GpuAllocator(resources["GPU"] // UNIT)
        self.leases: dict[int, _LeaseRecord] = {}
        self.waiting: deque[_Waiting] = deque()
        self.actors: dict[str, ActorRef] = {}  # actor_id -> its supervisor
        self.owner_leases: dict[ActorRef, set[int]] = {}
        self.gone_owners: dict[ActorRef, None] = {}  # (ordered: the oldest forgotten first)
        # placement group bundles set aside here: (group_id, index) -> what is free in it
        self.pools: dict[tuple[str, int], Resources] = {}
        self.reserving: deque[tuple[ReserveBundles, asyncio.Future[None]]] = deque()
        self.reserved_seq = 0
        self.hosts: dict[str, ActorHost] = {}  # actor_id -> running host
        self._lease_ids = itertools.count(1)
        self._bg = OwnedTasks(f"node {node_id}", log)
        self._replacements: tuple[float, ...] = ()
        self.pool: WorkerPool | None = None
        self._zygote = zygote  # started early by bootstrap; the pool owns it once made
        self.started_at = time.time()
        self._load_handle: asyncio.Handle | None = None
        self.stopping = False
        self.blocked_leases = 0  # leases whose task waits for others (its CPU lent back)
        # its workers' output: to their drivers, and to files under log_dir (node_logs.py)
        self.logs = NodeLogs(node_id, head, log_dir, log_to_driver)

    # -- lifecycle -----------------------------------------------------------------------------

    async def on_start(self) -> None:
        assert self.system.address is not None, "the node's system must listen first"
        boot = {
            "node_id": self.node_id,
            "session": self.session,
            "node": _ref_args(self.ref),
            "head": _ref_args(self.head),
            # its workers listen where the node does (other machines dial them there)
            "host": urllib.parse.urlsplit(self.system.address).hostname or "127.0.0.1",
        }
        zygote, self._zygote = self._zygote, None
        self.env_folders: dict[str, dict[str, Any]] = {}  # runtime env key -> its folders
        self.env_starting: dict[str, int] = {}  # runtime env key -> a worker is starting
        self.pool = WorkerPool(
            boot=boot, token=self.token, log_to_driver=self.log_to_driver,
            on_exit=self._worker_exited, zygote=zygote, on_output=self.logs.line,
        )
        for _ in range(self.prestart):
            self._spawn_worker()
        threshold, interval = memory_guard.settings()
        if interval:
            self._background(memory_guard.guard(self, threshold, interval))

    def on_stop_requested(self) -> None:
        self.stopping = True
        # lease requests waiting for resources would hold the stop up: fail them now
        for waiting in self.waiting:
            if not waiting.fut.done():
                waiting.fut.set_exception(
                    WorkerCrashedError(f"node {self.node_id} is shutting down"))
        self.waiting.clear()
        for _, fut in self.reserving:
            if not fut.done():
                fut.set_exception(WorkerCrashedError(f"node {self.node_id} is shutting down"))
        self.reserving.clear()

    async def on_stop(self) -> None:
        if self._load_handle is not None:
            self._load_handle.cancel()
        for sup in list(self.actors.values()):
            await self.system.stop(sup, timeout=5.0)
        # stop starting workers first (a start cancelled mid-way is cleaned up by asyncio, or
        # its process is registered and the pool's close ends it), then end every worker
        await self._bg.close()
        if self.pool is not None:
            await self.pool.close()
        if self.store is not None:
            await self.store.close()
        await self.logs.close()
        shm.cleanup_session(f"af-{self.node_id}-")

    def _background(self, coro: Any) -> None:
        self._bg.spawn(coro)

    # -- messages ------------------------------------------------------------------------------


    async def handle(self, message: Any) -> Any:
        kind = type(message)
        if kind is RequestLease:
            bundle = message.bundle
            if not self._serve_here(message):
                node_id, node, bundle = await self.placement.ask(
                    PlaceTask(message.demand, message.strategy, self.node_id)
                )
                if node_id != self.node_id or bundle is not None:
                    return Spillback(node_id, node, bundle)
            if message.owner_ref is not None:  # (its end, while it waits, is seen at once)
                self._watch_owner(message.owner_ref)
            while True:
                record = await self.acquire(message.demand, what="a task", pool=bundle,
                                            env=message.env)
                if record.lease_id in self.leases and record.worker.ref is not None:
                    break
                # its worker died between the grant and now (the lease went with it): the
                # owner never saw it, so take another worker instead of failing the request
            if message.owner_ref is not None:
                self._track_owner(message.owner_ref, record.lease_id)
                if record.lease_id not in self.leases:  # its owner ended while it waited
                    raise WorkerCrashedError("the owner of this lease request is gone")
            return Lease(record.lease_id, record.worker.ref, self.node_id, record.gpu_ids,
                         record.worker.control, self.ref)
        if kind is ReturnLease:
            self.release(message.lease_id, worker_ok=message.worker_ok)
            return None
        if kind is WorkerReady:
            assert self.pool is not None
            if self.pool.mark_ready(message.worker_id, message.worker, message.control):
                self._dispatch()
            return None
        if kind is WorkerBlocked:
            self._blocked(message.worker_id, message.blocked)
            return None
        if kind is StartActor:
            await self._start_actor(message.spec, message.bundle)
            return None
        if kind is KillActor:
            await self._kill_actor(message.actor_id, message.no_restart)
            return None
        if kind is ReserveBundles:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.reserving.append((message, fut))
            self._dispatch()
            await fut
            return None
        if kind is ReleaseBundles:
            self._release_bundles(message.group_id)
            return None
        if kind is NodeInfo:
            return self.info()
        if kind in _STORE_MESSAGES:
            return await self.store.handle(message) if self.store is not None else None
        if kind is ReadSegment:
            if self.store is not None and message.name.startswith(f"af-{self.node_id}-"):
                await self.store.ensure(message.name)  # restored first when spilled
            return self._read_segment(message.name, message.bulk)
        if kind is FreeSegment:
            if self.store is not None:
                self.store.freed(message.name)
            if message.name.startswith(f"af-{self.node_id}-"):
                # the kernel frees the segment's pages in unlink: tens of ms for 100 MiB, so
                # not on this loop (a node serves every lease and actor of its machine)
                self._background(asyncio.to_thread(shm.unlink_segment, message.name))
            return None
        if kind is ReadLogs:
            return await self.logs.read(message)
        if kind is FreeSegments:  # a job ended: its driver's segments here go
            if self.store is not None:
                self.store.freed_prefix(message.prefix)
            if message.prefix.startswith(f"af-{self.node_id}-"):
                self._background(asyncio.to_thread(shm.cleanup_session, message.prefix))
            return None
        if kind is Terminated:
            return None
        raise TypeError(f"node got an unexpected {kind.__name__}")

    def _watch_owner(self, owner: ActorRef) -> None:
        """Listen for the end of a lease owner's process (once per owner)."""
        if owner not in self.owner_leases and owner not in self.gone_owners:
            self.owner_leases[owner] = set()
            self.system.on_terminated(owner, lambda notice: self._owner_gone(owner))

    def _track_owner(self, owner: ActorRef, lease_id: int) -> None:
        """Leases of an owner that is gone (its process died, or its link) come back: at
        once for a lease granted after its owner ended (a request that waited; its job
        ended), the worker unused."""
        self._watch_owner(owner)
        leases = self.owner_leases.get(owner)
        if leases is None:  # it has ended
            self.release(lease_id)
            return
        leases.add(lease_id)
        self.leases[lease_id].owner = owner

    def _owner_gone(self, owner: ActorRef) -> None:
        self.gone_owners[owner] = None
        while len(self.gone_owners) > 10_000:
            self.gone_owners.pop(next(iter(self.gone_owners)))
        for lease_id in self.owner_leases.pop(owner, set()):
            record = self.leases.get(lease_id)
            if record is not None:
                # its worker may still run that owner's task: don't hand it out again
                self.release(lease_id, worker_ok=False)

    def _read_segment(self, name: str, bulk: bool = False) -> Fetched | Offered:
        """One of this node's segments, for a reader on another node: the mapped pages go out
        as out-of-band buffers, not copied here; or, when the reader can pull (``bulk``) and
        they are large, they are offered for a bulk pull and the reader fetches them itself,
        straight into its own memory (``actorflow.transport.bulk``)."""
        if not name.startswith(f"af-{self.node_id}-"):
            raise ValueError(f"segment {name!r} does not belong to node {self.node_id}")
        try:
            meta, buffers = shm.read_segment(name)
        except FileNotFoundError:
            raise ObjectLostError(f"object segment {name} is gone from node {self.node_id} "
                                  "(its owner freed it or exited)") from None
        if bulk and sum(b.nbytes for b in buffers) >= BULK_MIN_BYTES:
            remoting = self.system.remoting
            ticket = remoting.offer(buffers) if remoting is not None else None
            if ticket is not None:
                assert self.system.address is not None
                return Offered(bytes(meta), tuple(b.nbytes for b in buffers),
                               self.system.address, ticket)
        return Fetched(bytes(meta), tuple(pickle.PickleBuffer(b) for b in buffers))

    def _release_bundles(self, group_id: str) -> None:
        """The group is removed: what is free in its bundles comes back now; what its running
        leases hold comes back as they end."""
        for key in [k for k in self.pools if k[0] == group_id]:
            self.available = self.available + self.pools.pop(key)
        for record in self.leases.values():
            if record.pool is not None and record.pool[0] == group_id:
                record.pool = None
        self._load_changed()
        self._dispatch()

    def _serve_here(self, req: RequestLease) -> bool:
        """May this node take the lease without asking the head? (DEFAULT, fits here.)"""
        if req.no_spill:
            return True
        if req.bundle is not None:
            return False
        strategy = req.strategy
        if strategy not in (None, "DEFAULT"):
            return False
        if not (req.demand.fits_in(self.total) and self._gpu_feasible(req.demand["GPU"])):
            return False
        # free here now: take it; busy here: let the placement send it where there is room
        # (it keeps it here when no node has room, so it queues where it was asked)
        return req.demand.fits_in(self.available)

    def _load_changed(self) -> None:
        if self._load_handle is None:
            self._load_handle = asyncio.get_running_loop().call_soon(self._report_load)

    def _report_load(self) -> None:
        self._load_handle = None
        try:
            self.placement.tell_nowait(NodeLoad(self.node_id, self.available, len(self.waiting),
                                                 self.reserved_seq))
        except Exception:
            pass  # the head is gone: the node will be told to stop

    def info(self) -> dict[str, Any]:
        pool = self.pool
        return {
            "node_id": self.node_id,
            "address": self.system.address,
            "alive": True,
            "resources": self.total.to_amounts(),
            "available": self.available.to_amounts(),
            "workers": len(pool.workers) if pool else 0,
            "leases": len(self.leases),
            "pending_leases": len(self.waiting),
            "pending_demands": [w.demand.to_amounts() for w in self.waiting],
            "bundles": {f"{g}[{i}]": r.to_amounts() for (g, i), r in self.pools.items()},
            "actors": len(self.actors),
            # (what it tells a restarted head: head_link.py) None: restarting
            "actor_list": [(a, getattr(self.hosts.get(a), "actor_ref", None),
                            getattr(getattr(self.hosts.get(a), "worker", None), "pid", 0))
                           for a in self.actors],
            "lease_list": [
                {"lease_id": r.lease_id, "demand": r.demand.to_amounts(),
                 "worker_pid": r.worker.pid, "state": r.worker.state.value,
                 "gpu_ids": list(r.gpu_ids)}
                for r in self.leases.values()
            ],
            "object_list": shm.list_segments(f"af-{self.node_id}-"),
            "host": hoststats.sample(self.node_id),  # the machine's CPU and memory use
            **(self.store.figures() if self.store is not None else {}),
        }

    # -- leases --------------------------------------------------------------------------------

    async def acquire(self, demand: Resources, *, what: str, dedicated: bool = False,
                      pool: tuple[str, int] | None = None, env: Any = None) -> _LeaseRecord:
        """Wait until ``demand`` fits (in placement group bundle ``pool`` when given) and a
        worker is idle (one of runtime environment ``env``: its packages are made ready on
        this machine first); grant both."""
        if env is not None and env.key not in self.env_folders:
            jobs = runtime_env.head_service(self.head, self.system, "jobs")
            self.env_folders[env.key] = await runtime_env.ensure_local(env, jobs, self.system)
        if pool is not None and pool not in self.pools:
            raise InfeasibleError(
                f"{what} asks for bundle {pool[1]} of placement group {pool[0]!r}, which is "
                f"not reserved on node {self.node_id} (removed, or not ready yet)"
            )
        if not demand.fits_in(self.total) or not self._gpu_feasible(demand["GPU"]):
            raise InfeasibleError(
                f"{what} needs {demand.to_amounts()}; the largest node has "
                f"{self.total.to_amounts()}. Lower the demand or add a node that has it."
            )
        fut: asyncio.Future[_LeaseRecord] = asyncio.get_running_loop().create_future()
        self.waiting.append(_Waiting(demand, fut, dedicated, pool, env))
        self._dispatch()
        return await fut

    def _dispatch(self) -> None:
        pool = self.pool
        if pool is None:
            return
        # bundle reservations first: they were decided cluster-wide and hold nothing yet
        while self.reserving:
            reserve, rfut = self.reserving[0]
            total = Resources()
            for _, bundle in reserve.bundles:
                total = total + bundle
            if rfut.done():
                self.reserving.popleft()
                continue
            if not total.fits_in(self.available):
                break
            self.reserving.popleft()
            self.available = self.available - total
            for index, bundle in reserve.bundles:
                self.pools[(reserve.group_id, index)] = bundle
            self.reserved_seq = max(self.reserved_seq, reserve.seq)
            self._load_changed()
            rfut.set_result(None)
        skipped: deque[_Waiting] = deque()
        need_worker = False
        need_envs: dict[str, Any] = {}
        while self.waiting:
            waiting = self.waiting.popleft()
            demand, fut, dedicated = waiting.demand, waiting.fut, waiting.dedicated
            if fut.done():
                continue
            free = self.pools.get(waiting.pool) if waiting.pool is not None else self.available
            if free is None:  # its placement group was removed meanwhile
                fut.set_exception(InfeasibleError(
                    f"placement group {waiting.pool[0]!r} was removed"))  # type: ignore[index]
                continue
            units = demand["GPU"]
            if not demand.fits_in(free) or not self.gpus.can_allocate(units):
                skipped.append(waiting)
                continue
            worker = pool.idle(waiting.env.key if waiting.env is not None else "")
            if worker is None:
                skipped.append(waiting)
                if waiting.env is None:
                    need_worker = True
                else:
                    need_envs[waiting.env.key] = waiting.env
                continue
            if waiting.pool is not None:
                self.pools[waiting.pool] = free - demand
            else:
                self.available = self.available - demand
            self._load_changed()
            gpus = self.gpus.allocate(units)
            assert gpus is not None  # can_allocate said so, and nothing ran in between
            record = _LeaseRecord(next(self._lease_ids), demand, worker, gpus, units,
                                  pool=waiting.pool)
            pool.set_state(worker, WorkerState.ACTOR if dedicated else WorkerState.LEASED)
            worker.lease_id = record.lease_id
            self.leases[record.lease_id] = record
            fut.set_result(record)
            if dedicated:  # a worker given to an actor, not one that died: not a restart
                self._replenish(restart=False)
        self.waiting = skipped
        if (need_worker and pool.count(WorkerState.STARTING) == 0
                and pool.size < self._worker_cap()):
            self._spawn_worker()
        for key, env in need_envs.items():
            self._env_worker(key, env)

    def _env_worker(self, key: str, env: Any) -> None:
        """Start a worker of runtime environment ``env`` (one at a time per environment);
        when the node has all the workers it may, an idle one of another environment makes
        room (workers of different environments never share a process)."""
        pool = self.pool
        assert pool is not None
        if self.env_starting.get(key):
            return
        if pool.size >= self._worker_cap():
            other = pool.idle_other(key)
            if other is None:
                return  # every worker is busy: one of them will be idle or gone
            pool.set_state(other, WorkerState.DEAD)  # its exit is handled when it is reaped
            pool.kill(other)
        self.env_starting[key] = 1
        self._background(self._start_worker(env))

    def release(self, lease_id: int, *, keep_worker: bool = False, worker_ok: bool = True
                ) -> None:
        """Give a lease's resources back; its worker becomes idle again unless ``keep_worker``
        (an actor's) or the owner saw it fail (``worker_ok=False``: it is killed, not reused).
        """
        record = self.leases.pop(lease_id, None)
        if record is None:
            return
        if record.owner is not None:
            owned = self.owner_leases.get(record.owner)
            if owned is not None:
                owned.discard(lease_id)
        if not worker_ok and self.pool is not None:
            keep_worker = True
            # its exit is handled when it is reaped
            self.pool.set_state(record.worker, WorkerState.DEAD)
            self.pool.kill(record.worker)
        if record.blocked:
            self.blocked_leases -= 1
        back = record.demand if not record.blocked else (
            record.demand - Resources({"CPU": record.demand["CPU"]})
        )
        if record.pool is not None and record.pool in self.pools:
            self.pools[record.pool] = self.pools[record.pool] + record.demand
            if record.blocked:  # its CPU was lent to the node's free pool meanwhile
                self.available = self.available - Resources({"CPU": record.demand["CPU"]})
        else:
            self.available = self.available + back
        self.gpus.release(record.gpu_ids, record.gpu_units)
        self._load_changed()
        worker = record.worker
        if worker.state in (WorkerState.LEASED, WorkerState.ACTOR) and not keep_worker:
            assert self.pool is not None
            self.pool.set_state(worker, WorkerState.IDLE)
            worker.lease_id = None
        self._dispatch()

    def resize(self, lease_id: int, hold: Resources) -> None:
        """An actor is up: it keeps only ``hold`` of what it needed to be placed."""
        record = self.leases.get(lease_id)
        if record is None:
            return
        cpu_back = record.demand["CPU"] - hold["CPU"]
        if cpu_back > 0:
            back = Resources({"CPU": cpu_back})
            record.demand = record.demand - back
            if record.pool is not None and record.pool in self.pools:
                self.pools[record.pool] = self.pools[record.pool] + back
            else:
                self.available = self.available + back
            self._load_changed()
            self._dispatch()

    def _blocked(self, worker_id: str, blocked: bool) -> None:
        pool = self.pool
        handle = pool.workers.get(worker_id) if pool is not None else None
        if handle is None or handle.lease_id is None:
            return
        record = self.leases.get(handle.lease_id)
        if record is None or record.blocked == blocked:
            return
        cpu = Resources({"CPU": record.demand["CPU"]})
        record.blocked = blocked
        self.blocked_leases += 1 if blocked else -1
        if blocked:
            self.available = self.available + cpu
        else:  # may oversubscribe for a moment, as Ray does, rather than deadlock
            avail = dict(self.available)
            avail["CPU"] = avail.get("CPU", 0) - cpu["CPU"]
            self.available = Resources(avail)
        self._load_changed()
        self._dispatch()

    def _worker_cap(self) -> int:
        """How many worker processes the node may have now: ``max_workers`` for tasks, one per
        actor, and one more per task blocked waiting for others (its children need a worker
        while it holds one: without it a tree of waits deeper than the cap deadlocks, as Ray
        avoids the same way). The extra ones are bounded by ``4 * max_workers``."""
        extra = min(self.blocked_leases, 4 * self.max_workers)
        return self.max_workers + len(self.actors) + extra

    def _gpu_feasible(self, units: int) -> bool:
        """Could this node ever give ``units`` of GPU (with all its GPUs free)?"""
        return GpuAllocator(self.gpus.count).can_allocate(units)

    # -- workers -------------------------------------------------------------------------------

    def _spawn_worker(self) -> None:
        assert self.pool is not None
        self._background(self._start_worker())

    async def _start_worker(self, env: Any = None) -> None:
        assert self.pool is not None
        try:
            if env is None:
                await self.pool.start()
            else:
                try:
                    await self.pool.start(env, self.env_folders[env.key])
                except Exception as exc:
                    if not self.pool.closing:  # what waits for this environment fails
                        self._fail_env(env.key, exc)
                    raise
                finally:
                    self.env_starting.pop(env.key, None)
        except Exception as exc:
            if self.pool.closing:
                return  # shutting down: a worker still starting was stopped on purpose
            log.error("node %s could not start a worker: %s", self.node_id, exc)
            self._fail_waiting(exc)
            return
        self._dispatch()

    def _fail_env(self, key: str, exc: BaseException) -> None:
        for waiting in self.waiting:
            if waiting.env is not None and waiting.env.key == key and not waiting.fut.done():
                waiting.fut.set_exception(WorkerCrashedError(
                    f"no worker process of runtime environment {key} could start: {exc}"))

    def _fail_waiting(self, exc: BaseException) -> None:
        pool = self.pool
        if pool is not None and pool.count(WorkerState.IDLE, WorkerState.STARTING):
            return
        for waiting in self.waiting:
            if not waiting.fut.done():
                waiting.fut.set_exception(
                    WorkerCrashedError(f"no worker process could start: {exc}"))
        self.waiting.clear()

    def _replenish(self, *, restart: bool = True) -> None:
        """Keep ``prestart`` workers available for tasks. A replacement for a worker that
        exited counts against the restart intensity (``restart``); one for a worker that an
        actor took does not (with forked workers, creating actors is fast enough to exceed
        it)."""
        pool = self.pool
        if pool is None:
            return
        usable = pool.count(WorkerState.IDLE, WorkerState.STARTING, WorkerState.LEASED)
        if usable < self.prestart and pool.size < self._worker_cap():
            if restart:
                self._replacements, exceeded = add_restart(
                    self._replacements, time.monotonic(), 10 * max(1, self.prestart), 10.0
                )
                if exceeded:
                    log.error("node %s: workers keep dying; not replacing them for now",
                              self.node_id)
                    return
            self._spawn_worker()

    def _worker_exited(self, handle: WorkerHandle) -> None:
        if handle.lease_id is not None:
            self.release(handle.lease_id, keep_worker=True)
        for host in list(self.hosts.values()):
            if host.worker is handle:
                host.process_died(handle.exit_code)
        self._replenish()
        self._dispatch()

    # -- user actors ---------------------------------------------------------------------------

    async def _start_actor(self, spec: ActorSpec, bundle: tuple[str, int] | None = None
                           ) -> None:
        old = self.actors.pop(spec.actor_id, None)
        if old is not None:  # a restart by an af.supervise tree: the last generation is over
            await self.system.stop(old)
        restarts = spec.max_restarts if spec.max_restarts >= 0 else UNLIMITED
        while True:
            try:
                sup = await self.system.spawn(
                    lambda restarts=restarts: Supervisor(
                        [ChildSpec(factory=ActorHost, args=(self, spec, bundle), name="host",
                                   restart="transient", shutdown=5.0)],
                        max_restarts=restarts, within_s=math.inf,
                    ),
                    name=f"actor-{spec.actor_id}",
                )
                break
            except Exception as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                if (isinstance(cause, WorkerCrashedError) and restarts > 0
                        and not self.stopping):
                    # its process died while the instance was being built (a crash, not an
                    # error of its constructor): that costs a restart, as a crash later does
                    restarts -= 1
                    log.warning("node %s: the process of actor %s died while it was being "
                                "created; starting it again", self.node_id, spec.class_name)
                    continue
                self.head.tell_nowait(
                    ActorDown(spec.actor_id, -1, True, creation_error(spec, cause),
                              self.node_id))
                return
        self.actors[spec.actor_id] = sup
        self.system.on_terminated(sup, lambda n: self._actor_sup_ended(spec, n))
        # the worker cap (max_workers + actors up) just rose: actors still waiting for a
        # worker may start one now (else, with none starting, nothing would ever wake them)
        self._dispatch()

    def _actor_sup_ended(self, spec: ActorSpec, notice: Terminated) -> None:
        self.actors.pop(spec.actor_id, None)
        self.hosts.pop(spec.actor_id, None)
        error: BaseException | None = None
        if notice.cause is not None:
            error = ActorDiedError(
                spec.class_name, f"it crashed and max_restarts={spec.max_restarts} is used up",
                notice.cause.__cause__ or notice.cause,
            )
        self.head.tell_nowait(ActorDown(spec.actor_id, -1, True, error, self.node_id))

    async def _kill_actor(self, actor_id: str, no_restart: bool) -> None:
        sup = self.actors.get(actor_id)
        if sup is None:
            return
        if no_restart:
            host = self.hosts.get(actor_id)
            if host is not None:
                host.killed = True
            await self.system.stop(sup)
        else:
            host = self.hosts.get(actor_id)
            if host is not None and host.worker is not None and self.pool is not None:
                self.pool.kill(host.worker)


def _ref_args(ref: ActorRef) -> list[Any]:
    """What a worker needs to rebuild ``ref`` (see actorflow.runtime.restore_ref)."""
    system = ref.slot.system
    return [system.uid, system.address, ref.id, ref.path]
