"""The Head's part that keeps the nodes: membership, a node's loss, and the cluster's views.

A mixin of :class:`~actorflow.cluster.head.Head` (its module stays about actors). A node
registers (``RegisterNode``; again after a restart of the head, naming its live actors, and a
node the head declared dead is refused: fencing); the head watches its ref, and when its
process ends or its link goes silent the node's resources leave the cluster and its actors
restart elsewhere while their ``max_restarts`` allows, else die with ``NodeDiedError``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any, cast

from actorflow._errors import ActorDiedError, ActorflowError, NodeDiedError
from actorflow.cluster import head_restore
from actorflow.cluster.head_records import ActorRecord, ActorState, NodeLost, NodeRecord, StartAt
from actorflow.cluster.holds import Watches
from actorflow.cluster.jobs_table import JobsTable
from actorflow.cluster.protocol import ActorDown, ActorSpec, NodeInfo, RegisterNode
from actorflow.placement.messages import AddNode, NodeGone
from actorflow.runtime import ActorRef, Terminated

if TYPE_CHECKING:
    from actorflow.cluster.head import Head

__all__ = ["HeadNodes"]

log = logging.getLogger("actorflow.head")


class HeadNodes:
    """See the module docstring."""

    nodes: dict[str, NodeRecord]
    actors: dict[str, ActorRecord]
    placement: ActorRef
    ref: ActorRef
    system: Any
    closing: bool
    watches: Watches
    jobs: JobsTable

    def _head(self) -> Head:
        return cast("Head", self)

    if TYPE_CHECKING:  # (the head's own, and its other parts')
        async def _place(self, spec: ActorSpec) -> StartAt: ...
        def _changed(self, record: ActorRecord) -> None: ...
        def _down(self, msg: ActorDown) -> None: ...
        def _orphan(self, creator_id: str, cause: ActorDiedError) -> None: ...

    def _register(self, msg: RegisterNode, held: tuple[tuple[str, int], ...] | None) -> None:
        known = self.nodes.get(msg.node_id)
        if msg.rejoin and known is not None and not known.alive:  # fenced: never comes back
            raise NodeDiedError(f"node {msg.node_id} was declared dead; its actors run elsewhere")
        record = NodeRecord(msg.node_id, msg.node, msg.address, msg.resources)
        self.nodes[msg.node_id] = record
        head_restore.save_node(self._head(), record)
        self.placement.tell_nowait(AddNode(msg.node_id, msg.node, msg.resources, held))
        if msg.rejoin:  # again, after a restart of the head: its actors run on
            head_restore.rejoin(self._head(), msg)
        if known is None or not known.alive or known.ref != msg.node:
            self.watch_node(msg.node_id, msg.node)

    def watch_node(self, node_id: str, node: ActorRef) -> None:
        """Declare the node lost when its process ends or its link goes silent."""

        def lost(notice: Terminated) -> None:
            try:
                self.placement.tell_nowait(NodeGone(node_id))
                self.ref.tell_nowait(NodeLost(node_id, notice))
            except ActorflowError:
                pass  # the cluster is stopping: the placement or the head itself is gone

        self.system.on_terminated(node, lost)

    async def _node_lost(self, node_id: str, notice: Terminated) -> None:
        """A node stopped or went silent: its resources leave the cluster; its actors restart
        elsewhere while their max_restarts allows, else die with NodeDiedError."""
        record = self.nodes.get(node_id)
        if record is None or not record.alive:
            return
        record.alive = False
        head_restore.save_node(self._head(), record)
        if notice.reason.abnormal and not self.closing:
            log.warning("node %s is gone (%s)", node_id, notice.reason.value)
        # a snapshot: actors are created (and placed) while this awaits their new places
        for actor in list(self.actors.values()):
            if actor.node_id != node_id or actor.state is ActorState.DEAD:
                continue
            spec = actor.spec
            cause = NodeDiedError(f"node {node_id} died ({notice.reason.value})")
            left = spec.max_restarts < 0 or actor.restarts < spec.max_restarts
            if left and not self.closing and any(n.alive for n in self.nodes.values()):
                if spec.max_restarts >= 0:  # restarts count cluster-wide, as in Ray
                    spec = dataclasses.replace(
                        spec, max_restarts=max(0, spec.max_restarts - actor.restarts - 1))
                actor.state = ActorState.RESTARTING
                actor.location = None
                actor.node_id = None
                self._changed(actor)
                self._orphan(spec.actor_id,
                             ActorDiedError(spec.class_name, "its node died", cause))
                try:
                    (await self._place(spec)).start(spec)
                except Exception as exc:
                    self._down(ActorDown(spec.actor_id, -1, True, exc))
            else:
                self._down(ActorDown(spec.actor_id, -1, True, cause))

    def _fenced(self, node_id: str) -> bool:
        """Is ``node_id`` a node this head declared dead? What it says of its actors is stale:
        they were restarted elsewhere or died with it (DESIGN.md, fencing)."""
        node = self.nodes.get(node_id) if node_id else None
        return node is not None and not node.alive

    async def _list(self, what: str) -> Any:
        if what == "nodes":
            # a snapshot: nodes may join or leave while their live figures are asked for
            nodes = list(self.nodes.values())
            lives = await asyncio.gather(
                *(self._live_info(node) for node in nodes), return_exceptions=True)
            out = []
            for node, live in zip(nodes, lives, strict=True):
                info: dict[str, Any] = {
                    "node_id": node.node_id, "address": node.address, "alive": node.alive,
                    "resources": node.resources.to_amounts(), "ref": node.ref,
                }
                if isinstance(live, dict):
                    info["available"] = live["available"]
                elif live is not None:
                    info["alive"] = False
                out.append(info)
            return out
        if what == "watches":
            return self.watches.counts()
        if what == "jobs":
            return self.jobs.views()
        if what == "actors":
            return [
                {
                    "actor_id": aid, "class_name": r.spec.class_name, "name": r.spec.name,
                    "namespace": r.spec.namespace, "state": r.state.value,
                    "node_id": r.node_id, "pid": r.pid, "restarts": r.restarts,
                    "job_id": r.spec.job_id, "lifetime": r.spec.lifetime,
                }
                for aid, r in self.actors.items()
            ]
        raise ValueError(f"unknown view {what!r}; use nodes, actors, jobs or watches")

    @staticmethod
    async def _live_info(node: NodeRecord) -> dict[str, Any] | None:
        """A live node's own figures; None for a node known to be gone."""
        if not node.alive:
            return None
        result: dict[str, Any] = await node.ref.ask(NodeInfo(), timeout=5.0)
        return result
