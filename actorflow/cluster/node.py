"""The Node actor: one per machine (per ``actorflow start``): local resources, worker leases,
worker processes, and the user actors placed here.

The Node answers its messages (:meth:`Node.handle`: one handler per message kind, in
``Node.handlers``) and hands each job to its part:

- leases (:class:`~actorflow.cluster.node_leases.Leases`): what is free, which lease holds what,
  who waits; an owner asks for a worker for a resource shape, and the node grants an idle
  worker once the shape fits the free resources. A ``DEFAULT`` request that fits the node's
  totals is served here without asking anyone; otherwise the node asks the Placement actor
  (``PlaceTask``) and answers ``Spillback(node)``.
- worker processes (:class:`~actorflow.cluster.node_workers.Workers`, over the
  :class:`~actorflow.cluster.pool.WorkerPool`): which start, and when.
- objects: the node's store (:mod:`actorflow.objects.spill`: its limit, spilling) and its
  segments, read by other nodes (a bulk pull for large ones).
- its workers' output (:class:`~actorflow.cluster.node_logs.NodeLogs`).

User actors: :class:`~actorflow.cluster.node_actors.HostedActors`.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from actorflow._errors import ObjectLostError, WorkerCrashedError
from actorflow.cluster import copies, hoststats, memory_guard
from actorflow.cluster.jobs_table import FreeSegments
from actorflow.cluster.node_actors import HostedActors
from actorflow.cluster.node_leases import Leases
from actorflow.cluster.node_logs import NodeLogs, ReadLogs
from actorflow.cluster.node_workers import Workers
from actorflow.cluster.pool import WorkerHandle, WorkerPool
from actorflow.cluster.protocol import (
    Fetched,
    FreeSegment,
    KillActor,
    Lease,
    NodeInfo,
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
from actorflow.placement.resources import Resources
from actorflow.runtime import ActorRef, OwnedTasks, ServiceActor, Terminated

__all__ = ["Node"]

log = logging.getLogger("actorflow.node")

#: A segment whose buffers hold this much or more goes to a reader on another node by a bulk
#: pull (straight into the reader's memory) rather than in the answer's frames.
BULK_MIN_BYTES = 1024 * 1024

Handler = Callable[[Any], Awaitable[Any]]


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
        self.segment_prefix = f"af-{node_id}-"  # the names of this node's segments start so
        self.copies = copies.NodeCopies(self)  # secondary copies (cluster/copies.py)
        self.session = session
        self.head = head
        self.placement = placement
        self.token = token
        self.log_to_driver = log_to_driver
        self.leases = Leases(self, resources)
        self.workers = Workers(self, prestart=prestart,
                               max_workers=max_workers or max(4, 4 * prestart))
        self.actors = HostedActors(self)  # user actors (cluster/node_actors.py)
        self._bg = OwnedTasks(f"node {node_id}", log)
        self.pool: WorkerPool | None = None
        self._zygote = zygote  # started early by bootstrap; the pool owns it once made
        self.started_at = time.time()
        self.stopping = False
        # its workers' output: to their drivers, and to files under log_dir (node_logs.py)
        self.logs = NodeLogs(node_id, head, log_dir, log_to_driver)
        #: what answers each kind of message (:meth:`handle`)
        self.handlers: dict[type, Handler] = {
            RequestLease: self._request_lease,
            ReturnLease: self._return_lease,
            WorkerReady: self._worker_ready,
            WorkerBlocked: self._worker_blocked,
            StartActor: self.actors.start,
            KillActor: self.actors.kill,
            ReserveBundles: self.leases.reserve,
            ReleaseBundles: self._release_bundles,
            NodeInfo: self._info,
            ReadSegment: self._read_segment,
            FreeSegment: self._free_segment,
            FreeSegments: self._free_segments,
            ReadLogs: self.logs.read,
            Terminated: self._ignore,
        }
        self.handlers.update(dict.fromkeys(
            (spill.Stored, spill.Freed, spill.Restore, spill.MemoryQuery), self._store_message))
        self.handlers.update(dict.fromkeys(copies.MESSAGES, self.copies.handle))

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
        self.pool = WorkerPool(
            boot=boot, token=self.token, log_to_driver=self.log_to_driver,
            on_exit=self._worker_exited, zygote=zygote, on_output=self.logs.line,
        )
        for _ in range(self.workers.prestart):
            self.workers.spawn()
        threshold, interval = memory_guard.settings()
        if interval:
            self.background(memory_guard.guard(self, threshold, interval))

    def on_stop_requested(self) -> None:
        self.stopping = True
        self.leases.shut_down()

    async def on_stop(self) -> None:
        self.leases.close()
        await self.actors.stop()
        # stop starting workers first (a start cancelled mid-way is cleaned up by asyncio, or
        # its process is registered and the pool's close ends it), then end every worker
        await self._bg.close()
        if self.pool is not None:
            await self.pool.close()
        if self.store is not None:
            await self.store.close()
        await self.logs.close()
        shm.cleanup_session(self.segment_prefix)

    def background(self, coro: Any) -> None:
        """Run ``coro`` as a task the node owns (cancelled when it stops)."""
        self._bg.spawn(coro)

    # -- messages ------------------------------------------------------------------------------

    async def handle(self, message: Any) -> Any:
        handler = self.handlers.get(type(message))
        if handler is None:
            raise TypeError(f"node got an unexpected {type(message).__name__}")
        return await handler(message)

    async def _request_lease(self, message: RequestLease) -> Lease | Spillback:
        leases = self.leases
        bundle = message.bundle
        if not leases.serve_here(message):
            node_id, node, bundle = await self.placement.ask(
                PlaceTask(message.demand, message.strategy, self.node_id)
            )
            if node_id != self.node_id or bundle is not None:
                return Spillback(node_id, node, bundle)
        if message.owner_ref is not None:  # (its end, while it waits, is seen at once)
            leases.watch_owner(message.owner_ref)
        while True:
            record = await leases.acquire(message.demand, what="a task", pool=bundle,
                                          env=message.env)
            if record.lease_id in leases.granted and record.worker.ref is not None:
                break
            # its worker died between the grant and now (the lease went with it): the
            # owner never saw it, so take another worker instead of failing the request
        if message.owner_ref is not None:
            leases.track_owner(message.owner_ref, record.lease_id)
            if record.lease_id not in leases.granted:  # its owner ended while it waited
                raise WorkerCrashedError("the owner of this lease request is gone")
        return Lease(record.lease_id, record.worker.ref, self.node_id, record.gpu_ids,
                     record.worker.control, self.ref)

    async def _return_lease(self, message: ReturnLease) -> None:
        self.leases.release(message.lease_id, worker_ok=message.worker_ok)

    async def _worker_ready(self, message: WorkerReady) -> None:
        assert self.pool is not None
        if self.pool.mark_ready(message.worker_id, message.worker, message.control):
            self.leases.grant()

    async def _worker_blocked(self, message: WorkerBlocked) -> None:
        self.leases.set_blocked(message.worker_id, message.blocked)

    async def _release_bundles(self, message: ReleaseBundles) -> None:
        self.leases.release_bundles(message.group_id)

    async def _info(self, message: NodeInfo) -> dict[str, Any]:
        return self.info()

    async def _ignore(self, message: Any) -> None:
        return None

    async def _store_message(self, message: Any) -> Any:
        return await self.store.handle(message) if self.store is not None else None

    # -- objects -------------------------------------------------------------------------------

    async def _read_segment(self, message: ReadSegment) -> Fetched | Offered:
        """One of this node's segments, for a reader on another node: the mapped pages go out
        as out-of-band buffers, not copied here; or, when the reader can pull (``bulk``) and
        they are large, they are offered for a bulk pull and the reader fetches them itself,
        straight into its own memory (``actorflow.transport.bulk``)."""
        name = message.name
        if not name.startswith(self.segment_prefix):
            raise ValueError(f"segment {name!r} does not belong to node {self.node_id}")
        if self.store is not None:
            await self.store.ensure(name)  # restored first when spilled
        try:
            meta, buffers = shm.read_segment(name)
        except FileNotFoundError:
            raise ObjectLostError(f"object segment {name} is gone from node {self.node_id} "
                                  "(its owner freed it or exited)") from None
        if message.bulk and sum(b.nbytes for b in buffers) >= BULK_MIN_BYTES:
            remoting = self.system.remoting
            ticket = remoting.offer(buffers) if remoting is not None else None
            if ticket is not None:
                assert self.system.address is not None
                return Offered(bytes(meta), tuple(b.nbytes for b in buffers),
                               self.system.address, ticket)
        return Fetched(bytes(meta), tuple(pickle.PickleBuffer(b) for b in buffers))

    async def _free_segment(self, message: FreeSegment) -> None:
        if self.store is not None:
            self.store.freed(message.name)
        if message.name.startswith(self.segment_prefix):
            # the kernel frees the segment's pages in unlink: tens of ms for 100 MiB, so
            # not on this loop (a node serves every lease and actor of its machine)
            self.background(asyncio.to_thread(shm.unlink_segment, message.name))

    async def _free_segments(self, message: FreeSegments) -> None:
        """A job ended: its driver's segments here go, and the task results made for it."""
        if self.store is not None:
            if message.prefix:
                self.store.freed_prefix(message.prefix)
            if message.job_id:
                for name in self.store.freed_job(message.job_id):
                    self.background(asyncio.to_thread(shm.unlink_segment, name))
        if message.prefix.startswith(self.segment_prefix):
            self.background(asyncio.to_thread(shm.cleanup_session, message.prefix))

    # -- what the node tells -------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        pool = self.pool
        leases = self.leases
        return {
            "node_id": self.node_id,
            "address": self.system.address,
            "alive": True,
            "resources": leases.total.to_amounts(),
            "available": leases.available.to_amounts(),
            "workers": len(pool.workers) if pool else 0,
            "leases": len(leases.granted),
            "pending_leases": len(leases.waiting),
            "pending_demands": [w.demand.to_amounts() for w in leases.waiting],
            "bundles": {f"{g}[{i}]": r.to_amounts() for (g, i), r in leases.pools.items()},
            "actors": len(self.actors),
            # (what it tells a restarted head: head_link.py) None: restarting
            "actor_list": self.actors.listed(),
            "lease_list": [
                {"lease_id": r.lease_id, "demand": r.demand.to_amounts(),
                 "worker_pid": r.worker.pid, "state": r.worker.state.value,
                 "gpu_ids": list(r.gpu_ids)}
                for r in leases.granted.values()
            ],
            "object_list": shm.list_segments(self.segment_prefix),
            "host": hoststats.sample(self.node_id),  # the machine's CPU and memory use
            **(self.store.figures() if self.store is not None else {}),
        }

    # -- workers -------------------------------------------------------------------------------

    def _worker_exited(self, handle: WorkerHandle) -> None:
        if handle.lease_id is not None:
            self.leases.release(handle.lease_id, keep_worker=True)
        self.actors.worker_exited(handle)
        self.workers.replenish()
        self.leases.grant()

def _ref_args(ref: ActorRef) -> list[Any]:
    """What a worker needs to rebuild ``ref`` (see actorflow.runtime.restore_ref)."""
    system = ref.slot.system
    return [system.uid, system.address, ref.id, ref.path]
