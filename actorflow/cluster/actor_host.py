"""The host of one user actor on a node: :class:`ActorHost` runs one incarnation of it (it takes
a dedicated worker process from its node, builds the instance there, reports where it runs to the
head) as the child of the actor's supervisor on the node, which restarts it within the actor's
``max_restarts``; when the worker process dies, the host fails and the supervisor decides.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actorflow._errors import ActorDiedError, TaskError, WorkerCrashedError
from actorflow.cluster.protocol import ActorDown, ActorSpec, ActorUp, HostActor
from actorflow.placement.strategies import PlacementGroupStrategy
from actorflow.runtime import Actor

if TYPE_CHECKING:
    from actorflow.cluster.node import Node
    from actorflow.cluster.pool import WorkerHandle

__all__ = ["ActorHost", "ProcessDied", "creation_error"]


@dataclass(frozen=True, slots=True)
class ProcessDied:
    """(The node, to a host.) The host's worker process exited with ``code``."""

    pid: int
    code: int | None


def creation_error(spec: ActorSpec, cause: BaseException) -> ActorDiedError:
    return ActorDiedError(spec.class_name, "it could not be created", cause)


class ActorHost(Actor):
    """Runs one incarnation of a user actor: a worker process, the instance, its location."""

    def __init__(self, node: Node, spec: ActorSpec, bundle: tuple[str, int] | None = None
                 ) -> None:
        self.node = node
        self.spec = spec
        self.bundle = bundle
        self.worker: WorkerHandle | None = None
        self.lease_id: int | None = None
        self.killed = False

    async def on_start(self) -> None:
        node, spec = self.node, self.spec
        record = await node.leases.acquire(spec.demand, what=f"actor {spec.class_name}",
                                           dedicated=True, pool=self.bundle,
                                           env=spec.runtime_env)
        self.lease_id = record.lease_id
        self.worker = record.worker
        assert record.worker.ref is not None
        try:
            strategy = spec.strategy
            actor_ref = await record.worker.ref.ask(HostActor(
                spec.actor_id, spec.class_name, spec.cls_blob, spec.args, spec.resolved,
                spec.max_concurrency, record.gpu_ids, spec.job_id,
                strategy.for_children() if isinstance(strategy, PlacementGroupStrategy)
                else None,
            ))
        except TaskError as exc:
            # the constructor raised (or the process died while building it): the actor is
            # dead for good, as in Ray; a normal stop keeps the transient host from restarting
            self._release(kill=True)
            node.head.tell_nowait(ActorDown(spec.actor_id, self._incarnation(), True,
                                            creation_error(spec, exc), node.node_id))
            self.killed = True
            self.stop()
            return
        except Exception as exc:  # the process died while building it: a crash, restartable
            self._release(kill=True)
            raise WorkerCrashedError(
                f"the process of actor {spec.class_name} died while it was being created: {exc}"
            ) from exc
        node.leases.resize(record.lease_id, spec.hold)
        node.actors.hosts[spec.actor_id] = self
        self.actor_ref = actor_ref
        node.head.tell_nowait(ActorUp(spec.actor_id, actor_ref, self._incarnation(),
                                      node.node_id, record.worker.pid))

    def _incarnation(self) -> int:
        cell = self.ref.slot.cell
        return cell.incarnation if cell is not None else 0

    def process_died(self, code: int | None) -> None:
        if self.worker is not None:
            try:
                self.ref.tell_nowait(ProcessDied(self.worker.pid, code))
            except Exception:
                pass

    async def receive(self, message: Any) -> Any:
        if type(message) is ProcessDied:
            self._release(kill=False)
            self.node.head.tell_nowait(ActorDown(self.spec.actor_id, self._incarnation(), False,
                                                     node_id=self.node.node_id))
            raise WorkerCrashedError(
                f"the process (pid {message.pid}) of actor {self.spec.class_name} exited "
                f"with code {message.code}"
            )
        raise TypeError(f"actor host got an unexpected {type(message).__name__}")

    async def on_stop(self) -> None:
        worker = self.worker
        self._release(kill=True)
        if worker is not None and worker.exited is not None:
            await asyncio.wait([worker.exited], timeout=5.0)

    def _release(self, *, kill: bool) -> None:
        node = self.node
        if self.lease_id is not None:
            node.leases.release(self.lease_id, keep_worker=True)
            self.lease_id = None
        worker, self.worker = self.worker, None
        if kill and worker is not None and node.pool is not None:
            node.pool.kill(worker)
        if node.actors.hosts.get(self.spec.actor_id) is self:
            del node.actors.hosts[self.spec.actor_id]
