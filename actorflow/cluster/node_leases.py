"""A node's resources and its worker leases: what is free, which lease holds what, who waits.

:class:`Leases` keeps these books for one :class:`~actorflow.cluster.node.Node`, on the node's
loop: its free resources, the placement group bundles set aside on it, its GPU ids, the granted
leases and their owners, and the requests that wait. :meth:`Leases.grant` hands out what fits,
in order: bundle reservations first (decided cluster-wide, they hold nothing yet), then the
waiting requests, each once its demand fits what is free (in its bundle, when it has one) and a
worker of its runtime environment is idle; when none is, it asks the node's
:class:`~actorflow.cluster.node_workers.Workers` for one. Never more CPU-holding work than
``num_cpus``, but for one exception: a lease whose task waits for others (``WorkerBlocked``)
lends its CPU back until the wait ends, so the node may oversubscribe for a moment (as Ray
does) rather than deadlock. A demand larger than the whole node fails at once with
:class:`~actorflow.InfeasibleError`. GPU ids are assigned per lease: whole GPUs exclusively,
fractions share an id.

The owner of a lease is watched: when its process ends, its leases come back, their workers
killed rather than reused (they may still run its tasks). Each change of what is free is
reported to the placement actor (``NodeLoad``), once per loop turn.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actorflow._errors import InfeasibleError, WorkerCrashedError
from actorflow.cluster.pool import WorkerHandle, WorkerState
from actorflow.cluster.protocol import NodeLoad, RequestLease, ReserveBundles
from actorflow.placement.gpus import GpuAllocator
from actorflow.placement.resources import UNIT, Resources
from actorflow.runtime import ActorRef

if TYPE_CHECKING:
    from actorflow.cluster.node import Node

__all__ = ["LeaseRecord", "Leases"]


@dataclass(slots=True)
class _Waiting:
    demand: Resources
    fut: asyncio.Future[LeaseRecord]
    dedicated: bool
    pool: tuple[str, int] | None = None
    env: Any = None  # a ResolvedEnv: the worker must be one of it


@dataclass(slots=True)
class LeaseRecord:
    """A granted lease: its worker, what it holds (GPU ids included), and its owner."""

    lease_id: int
    demand: Resources
    worker: WorkerHandle
    gpu_ids: tuple[int, ...]
    gpu_units: int
    blocked: bool = False
    owner: ActorRef | None = None
    pool: tuple[str, int] | None = None


class Leases:
    """See the module docstring."""

    def __init__(self, node: Node, resources: Resources) -> None:
        self.node = node
        self.total = resources
        self.available = resources
        self.gpus = GpuAllocator(resources["GPU"] // UNIT)
        self.granted: dict[int, LeaseRecord] = {}
        self.waiting: deque[_Waiting] = deque()
        self.owner_leases: dict[ActorRef, set[int]] = {}
        self.gone_owners: dict[ActorRef, None] = {}  # (ordered: the oldest forgotten first)
        # placement group bundles set aside here: (group_id, index) -> what is free in it
        self.pools: dict[tuple[str, int], Resources] = {}
        self.reserving: deque[tuple[ReserveBundles, asyncio.Future[None]]] = deque()
        self.reserved_seq = 0
        self.blocked = 0  # leases whose task waits for others (its CPU lent back)
        self._ids = itertools.count(1)
        self._load_handle: asyncio.Handle | None = None

    # -- asking and giving back ---------------------------------------------------------------

    async def acquire(self, demand: Resources, *, what: str, dedicated: bool = False,
                      pool: tuple[str, int] | None = None, env: Any = None) -> LeaseRecord:
        """Wait until ``demand`` fits (in placement group bundle ``pool`` when given) and a
        worker is idle (one of runtime environment ``env``: its packages are made ready on
        this machine first); grant both."""
        if env is not None:
            await self.node.workers.prepare_env(env)
        if pool is not None and pool not in self.pools:
            raise InfeasibleError(
                f"{what} asks for bundle {pool[1]} of placement group {pool[0]!r}, which is "
                f"not reserved on node {self.node.node_id} (removed, or not ready yet)"
            )
        if not demand.fits_in(self.total) or not self.gpu_feasible(demand["GPU"]):
            raise InfeasibleError(
                f"{what} needs {demand.to_amounts()}; the largest node has "
                f"{self.total.to_amounts()}. Lower the demand or add a node that has it."
            )
        fut: asyncio.Future[LeaseRecord] = asyncio.get_running_loop().create_future()
        self.waiting.append(_Waiting(demand, fut, dedicated, pool, env))
        self.grant()
        return await fut

    async def reserve(self, message: ReserveBundles) -> None:
        """Set a placement group's bundles aside here, once they fit what is free."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reserving.append((message, fut))
        self.grant()
        await fut

    def grant(self) -> None:
        """Hand out what fits now (see the module docstring)."""
        node = self.node
        pool = node.pool
        if pool is None:
            return
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
            self.load_changed()
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
            self.load_changed()
            gpus = self.gpus.allocate(units)
            assert gpus is not None  # can_allocate said so, and nothing ran in between
            record = LeaseRecord(next(self._ids), demand, worker, gpus, units, pool=waiting.pool)
            pool.set_state(worker, WorkerState.ACTOR if dedicated else WorkerState.LEASED)
            worker.lease_id = record.lease_id
            self.granted[record.lease_id] = record
            fut.set_result(record)
            if dedicated:  # a worker given to an actor, not one that died: not a restart
                node.workers.replenish(restart=False)
        self.waiting = skipped
        node.workers.wanted(need_worker, need_envs)

    def release(self, lease_id: int, *, keep_worker: bool = False, worker_ok: bool = True
                ) -> None:
        """Give a lease's resources back; its worker becomes idle again unless ``keep_worker``
        (an actor's) or the owner saw it fail (``worker_ok=False``: it is killed, not reused).
        """
        record = self.granted.pop(lease_id, None)
        if record is None:
            return
        pool = self.node.pool
        if record.owner is not None:
            owned = self.owner_leases.get(record.owner)
            if owned is not None:
                owned.discard(lease_id)
        if not worker_ok and pool is not None:
            keep_worker = True
            # its exit is handled when it is reaped
            pool.set_state(record.worker, WorkerState.DEAD)
            pool.kill(record.worker)
        if record.blocked:
            self.blocked -= 1
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
        self.load_changed()
        worker = record.worker
        if worker.state in (WorkerState.LEASED, WorkerState.ACTOR) and not keep_worker:
            assert pool is not None
            pool.set_state(worker, WorkerState.IDLE)
            worker.lease_id = None
        self.grant()

    def resize(self, lease_id: int, hold: Resources) -> None:
        """An actor is up: it keeps only ``hold`` of what it needed to be placed."""
        record = self.granted.get(lease_id)
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
            self.load_changed()
            self.grant()

    def set_blocked(self, worker_id: str, blocked: bool) -> None:
        """The task of ``worker_id``'s lease waits for others (its CPU is lent back to the
        node), or has stopped waiting."""
        pool = self.node.pool
        handle = pool.workers.get(worker_id) if pool is not None else None
        if handle is None or handle.lease_id is None:
            return
        record = self.granted.get(handle.lease_id)
        if record is None or record.blocked == blocked:
            return
        cpu = Resources({"CPU": record.demand["CPU"]})
        record.blocked = blocked
        self.blocked += 1 if blocked else -1
        if blocked:
            self.available = self.available + cpu
        else:  # may oversubscribe for a moment, as Ray does, rather than deadlock
            avail = dict(self.available)
            avail["CPU"] = avail.get("CPU", 0) - cpu["CPU"]
            self.available = Resources(avail)
        self.load_changed()
        self.grant()

    def release_bundles(self, group_id: str) -> None:
        """The group is removed: what is free in its bundles comes back now; what its running
        leases hold comes back as they end."""
        for key in [k for k in self.pools if k[0] == group_id]:
            self.available = self.available + self.pools.pop(key)
        for record in self.granted.values():
            if record.pool is not None and record.pool[0] == group_id:
                record.pool = None
        self.load_changed()
        self.grant()

    def fail_waiting(self, message: str) -> None:
        """Fail every request that waits with ``WorkerCrashedError(message)``."""
        for waiting in self.waiting:
            if not waiting.fut.done():
                waiting.fut.set_exception(WorkerCrashedError(message))
        self.waiting.clear()

    def shut_down(self) -> None:
        """The node is stopping: the requests and reservations that wait for resources would
        hold the stop up, so they fail now."""
        message = f"node {self.node.node_id} is shutting down"
        self.fail_waiting(message)
        for _, fut in self.reserving:
            if not fut.done():
                fut.set_exception(WorkerCrashedError(message))
        self.reserving.clear()

    # -- questions -----------------------------------------------------------------------------

    def serve_here(self, req: RequestLease) -> bool:
        """May this node take the lease without asking the head? (DEFAULT, fits here.)"""
        if req.no_spill:
            return True
        if req.bundle is not None:
            return False
        strategy = req.strategy
        if strategy not in (None, "DEFAULT"):
            return False
        if not (req.demand.fits_in(self.total) and self.gpu_feasible(req.demand["GPU"])):
            return False
        # free here now: take it; busy here: let the placement send it where there is room
        # (it keeps it here when no node has room, so it queues where it was asked)
        return req.demand.fits_in(self.available)

    def gpu_feasible(self, units: int) -> bool:
        """Could this node ever give ``units`` of GPU (with all its GPUs free)?"""
        return GpuAllocator(self.gpus.count).can_allocate(units)

    # -- owners --------------------------------------------------------------------------------

    def watch_owner(self, owner: ActorRef) -> None:
        """Listen for the end of a lease owner's process (once per owner)."""
        if owner not in self.owner_leases and owner not in self.gone_owners:
            self.owner_leases[owner] = set()
            self.node.system.on_terminated(owner, lambda notice: self._owner_gone(owner))

    def track_owner(self, owner: ActorRef, lease_id: int) -> None:
        """Leases of an owner that is gone (its process died, or its link) come back: at
        once for a lease granted after its owner ended (a request that waited; its job
        ended), the worker unused."""
        self.watch_owner(owner)
        leases = self.owner_leases.get(owner)
        if leases is None:  # it has ended
            self.release(lease_id)
            return
        leases.add(lease_id)
        self.granted[lease_id].owner = owner

    def _owner_gone(self, owner: ActorRef) -> None:
        self.gone_owners[owner] = None
        while len(self.gone_owners) > 10_000:
            self.gone_owners.pop(next(iter(self.gone_owners)))
        for lease_id in self.owner_leases.pop(owner, set()):
            record = self.granted.get(lease_id)
            if record is not None:
                # its worker may still run that owner's task: don't hand it out again
                self.release(lease_id, worker_ok=False)

    # -- the load report -----------------------------------------------------------------------

    def load_changed(self) -> None:
        if self._load_handle is None:
            self._load_handle = asyncio.get_running_loop().call_soon(self._report_load)

    def _report_load(self) -> None:
        self._load_handle = None
        try:
            self.node.placement.tell_nowait(NodeLoad(
                self.node.node_id, self.available, len(self.waiting), self.reserved_seq))
        except Exception:
            pass  # the head is gone: the node will be told to stop

    def close(self) -> None:
        """Report no more (the node is stopping)."""
        if self._load_handle is not None:
            self._load_handle.cancel()
