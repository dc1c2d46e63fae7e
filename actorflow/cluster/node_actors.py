"""The user actors a node hosts.

Each lives under its own one-child supervisor (restart kind ``transient``, intensity
``max_restarts`` with no window, as Ray counts restarts), whose child, an
:class:`~actorflow.cluster.actor_host.ActorHost`, takes a worker process for the actor, builds
the instance there, and reports the actor's location to the head. The actor's process dying
crashes the host, and the supervisor restarts it while ``max_restarts`` allows; when it is used
up (or the creation failed for good) the head hears ``ActorDown``.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from actorflow._errors import ActorDiedError, WorkerCrashedError
from actorflow._limits import UNLIMITED
from actorflow.cluster.actor_host import ActorHost, creation_error
from actorflow.cluster.protocol import ActorDown, ActorSpec, KillActor, StartActor
from actorflow.runtime import ActorRef, Terminated
from actorflow.supervision import ChildSpec, Supervisor

if TYPE_CHECKING:
    from actorflow.cluster.node import Node
    from actorflow.cluster.pool import WorkerHandle

__all__ = ["HostedActors"]

log = logging.getLogger("actorflow.node")


class HostedActors:
    """The user actors of one :class:`~actorflow.cluster.node.Node` (see the module
    docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.supervisors: dict[str, ActorRef] = {}  # actor_id -> its supervisor
        self.hosts: dict[str, ActorHost] = {}  # actor_id -> running host

    def __len__(self) -> int:
        return len(self.supervisors)

    async def start(self, message: StartActor) -> None:
        """Host the actor of ``message`` under a supervisor of its own (see the module
        docstring); its creation failing for good is reported to the head."""
        node = self.node
        spec, bundle = message.spec, message.bundle
        old = self.supervisors.pop(spec.actor_id, None)
        if old is not None:  # a restart by an af.supervise tree: the last generation is over
            await node.system.stop(old)
        restarts = spec.max_restarts if spec.max_restarts >= 0 else UNLIMITED
        while True:
            try:
                sup = await node.system.spawn(
                    lambda restarts=restarts: Supervisor(
                        [ChildSpec(factory=ActorHost, args=(node, spec, bundle), name="host",
                                   restart="transient", shutdown=5.0)],
                        max_restarts=restarts, within_s=math.inf,
                    ),
                    name=f"actor-{spec.actor_id}",
                )
                break
            except Exception as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                if (isinstance(cause, WorkerCrashedError) and restarts > 0
                        and not node.stopping):
                    # its process died while the instance was being built (a crash, not an
                    # error of its constructor): that costs a restart, as a crash later does
                    restarts -= 1
                    log.warning("node %s: the process of actor %s died while it was being "
                                "created; starting it again", node.node_id, spec.class_name)
                    continue
                node.head.tell_nowait(
                    ActorDown(spec.actor_id, -1, True, creation_error(spec, cause),
                              node.node_id))
                return
        self.supervisors[spec.actor_id] = sup
        node.system.on_terminated(sup, lambda n: self._ended(spec, n))
        # the worker cap (max_workers + actors up) just rose: actors still waiting for a
        # worker may start one now (else, with none starting, nothing would ever wake them)
        node.leases.grant()

    def _ended(self, spec: ActorSpec, notice: Terminated) -> None:
        node = self.node
        self.supervisors.pop(spec.actor_id, None)
        self.hosts.pop(spec.actor_id, None)
        error: BaseException | None = None
        if notice.cause is not None:
            error = ActorDiedError(
                spec.class_name, f"it crashed and max_restarts={spec.max_restarts} is used up",
                notice.cause.__cause__ or notice.cause,
            )
        node.head.tell_nowait(ActorDown(spec.actor_id, -1, True, error, node.node_id))

    async def kill(self, message: KillActor) -> None:
        """Stop an actor for good (``no_restart``), or kill its process (its supervisor
        restarts it while ``max_restarts`` allows)."""
        node = self.node
        actor_id, no_restart = message.actor_id, message.no_restart
        sup = self.supervisors.get(actor_id)
        if sup is None:
            return
        if no_restart:
            host = self.hosts.get(actor_id)
            if host is not None:
                host.killed = True
            await node.system.stop(sup)
        else:
            host = self.hosts.get(actor_id)
            if host is not None and host.worker is not None and node.pool is not None:
                node.pool.kill(host.worker)

    def worker_exited(self, handle: WorkerHandle) -> None:
        """``handle``'s process ended: the actor it hosted (if any) crashed."""
        for host in list(self.hosts.values()):
            if host.worker is handle:
                host.process_died(handle.exit_code)

    def listed(self) -> list[tuple[str, ActorRef | None, int]]:
        """``(actor id, its ref, its process id)`` of each actor here (None, 0: starting)."""
        out = []
        for actor_id in self.supervisors:
            host = self.hosts.get(actor_id)
            worker = host.worker if host is not None else None
            out.append((actor_id, host.actor_ref if host is not None else None,
                        worker.pid if worker is not None else 0))
        return out

    async def stop(self) -> None:
        """Stop every actor here (the node stops)."""
        for sup in list(self.supervisors.values()):
            await self.node.system.stop(sup, timeout=5.0)
