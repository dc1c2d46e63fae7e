"""The Placement actor: where tasks, actors and placement groups go in the cluster.

It lives in the head's process (well-known id ``placement``) and keeps one
:class:`~actorflow.placement.view.ClusterView`: nodes join and leave through the head
(``AddNode``, ``NodeGone``) and report what is free (``NodeLoad``). Decisions are the pure
policies of :mod:`actorflow.placement.policy` and :mod:`actorflow.placement.groups`; this actor
only applies them and keeps the books.

- Tasks: a node that should not (or cannot) take a lease itself asks ``PlaceTask``; the answer
  names a node (and, for placement group work, a bundle). Leases themselves stay between owners
  and nodes: the scheduler sees lease decisions, not tasks.
- SPREAD work goes round-robin over every live node that can hold it, busy or not (choose_node
  with ``spread_busy=True``): the view's free figures lag the nodes' own, so a node that looks
  busy still gets its share and the work queues there.
- Placement groups are reserved all bundles or none: a group is planned against the view and
  reserved in it in one step, then each node sets its bundles aside (``ReserveBundles``). A
  group that does not fit now waits here, holding nothing; one that never could fails with
  InfeasibleError from ``WaitGroup``. Two groups competing for the same nodes therefore never
  hold half of each other's resources.
- Load reports race with reservations in flight, so each reservation to a node carries a
  sequence number that the node echoes in its reports: the view subtracts those it has not
  applied yet.
- A group's name is unique in its namespace among the groups not removed (``GetGroup`` finds
  it); ``GroupTable`` answers what ``af.placement_group_table()`` shows. A group is kept here
  until it is removed (by its job's end too, unless detached).
- A head that keeps a store (``actorflow start --head``) hands the placement a way to save its
  groups (``KeepGroups``): each change of a group is marked there and written in batches off
  the loop. A restarted head hands back what was kept: groups come back with their plans and
  names, READY ones ready at once; each node that registers again says which bundles it still
  holds (``AddNode.held``): those are counted as reserved there, the missing ones (the head's
  own node died with it; a reservation in flight at the kill) are reserved again, and bundles
  of groups the store does not know (made in the last moments) are given back. For
  :data:`NODE_BACK_WAIT_S` after the restart, work that no node registered so far can take
  (a bundle's node, or any node that fits it, is not back yet) waits for the nodes instead of
  failing as infeasible.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from actorflow._errors import InfeasibleError
from actorflow.placement.groups import (
    GroupPlan,
    GroupReservations,
    plan_group,
    release_group,
    reserve_group,
)
from actorflow.placement.kept import (
    NODE_BACK_WAIT_S,
    TABLE_STATES,
    GroupRecord,
    GroupState,
    KeptGroups,
    NotBack,
)
from actorflow.placement.messages import (
    AddNode,
    CreateGroup,
    GetGroup,
    GroupTable,
    KeepGroups,
    NodeGone,
    NodeLoad,
    PlaceTask,
    ReleaseBundles,
    RemoveGroup,
    ReserveBundles,
    WaitGroup,
)
from actorflow.placement.policy import ClusterView, Infeasible, NodeView, Place, choose_node
from actorflow.placement.resources import Resources
from actorflow.placement.strategies import PlacementGroupStrategy
from actorflow.runtime import ActorRef, ServiceActor

__all__ = ["GroupState", "Placement"]

log = logging.getLogger("actorflow.placement")


class Placement(KeptGroups, ServiceActor):
    """See the module docstring."""

    max_concurrency = 100_000  # WaitGroup answers when a group is ready
    mailbox_size = 1 << 16

    def __init__(self, spread_threshold: float = 0.5) -> None:
        self.view = ClusterView(spread_threshold=spread_threshold)
        self.groups = GroupReservations()
        self.refs: dict[str, ActorRef] = {}
        self.records: dict[str, GroupRecord] = {}
        self.names: dict[tuple[str, str], str] = {}  # (namespace, name) -> group id
        self.waiting: list[str] = []
        self._seq: dict[str, int] = {}
        self._unapplied: dict[str, dict[int, Resources]] = {}
        #: marks a group changed in the head's store (KeepGroups); None: nothing is kept
        self._save: Callable[[str, Any, Callable[[Any], bytes | None]], None] | None = None
        #: taken back from the store: node id -> its bundles (group id, index) to check
        self._expected: dict[str, list[tuple[str, int]]] = {}
        self._arrived = asyncio.Event()  # set (and renewed) whenever a node is added
        #: a restarted head's placement: until then, work that no node registered so far can
        #: take waits for the nodes to register again instead of being infeasible
        self._rejoin_until = 0.0

    async def handle(self, message: Any) -> Any:
        kind = type(message)
        if kind is PlaceTask:
            return await self._place_waiting(message)
        if kind is NodeLoad:
            self._load(message)
            return None
        if kind is AddNode:
            self.view.add_node(NodeView(message.node_id, message.resources, message.resources))
            self.refs[message.node_id] = message.ref
            if message.node_id in self._expected or message.held:
                self._check_kept(message.node_id, message.held)
            self._arrived.set()
            self._arrived = asyncio.Event()
            self._try_groups()
            return None
        if kind is KeepGroups:
            self._save = message.save
            if message.restarted:
                self._rejoin_until = time.monotonic() + NODE_BACK_WAIT_S
            self._take_back(message.rows)
            return None
        if kind is NodeGone:
            self._node_gone(message.node_id)
            return None
        if kind is CreateGroup:
            self._create_group(message)
            return None
        if kind is WaitGroup:
            return await self._wait_group(message.group_id)
        if kind is RemoveGroup:
            self._remove_group(message.group_id)
            return None
        if kind is GetGroup:
            return self._named(message.name, message.namespace)
        if kind is GroupTable:
            return self._table(message.group_id)
        raise TypeError(f"placement got an unexpected {kind.__name__}")

    # -- tasks and actors ----------------------------------------------------------------------

    def place(self, demand: Resources, strategy: Any, local: str | None, what: str
              ) -> tuple[str, ActorRef, tuple[str, int] | None]:
        """``(node_id, node_ref, bundle)`` for ``demand``; InfeasibleError when no node ever
        could take it. When nothing is free now, the best node to wait on."""
        decision = choose_node(demand, self.view, strategy, local_node_id=local,
                               groups=self.groups, what=what, spread_busy=True)
        if type(decision) is Place:
            bundle = None
            if decision.bundle_index is not None and isinstance(strategy, PlacementGroupStrategy):
                bundle = (strategy.group_id, decision.bundle_index)
            ref = self.refs.get(decision.node_id)
            if ref is None:  # a bundle taken back with its group: its node is not back yet
                raise NotBack(decision.node_id)
            return decision.node_id, ref, bundle
        if type(decision) is Infeasible:
            if self._rejoining():
                raise NotBack("")
            raise InfeasibleError(decision.message, demand.to_amounts())
        return self._wait_on(demand, strategy, local, what)

    def _wait_on(self, demand: Resources, strategy: Any, local: str | None, what: str
                 ) -> tuple[str, ActorRef, tuple[str, int] | None]:
        """Nothing is free now: pick where the request should queue."""
        if isinstance(strategy, PlacementGroupStrategy):
            record = self.records.get(strategy.group_id)
            if record is None or record.plan is None:
                raise InfeasibleError(
                    f"{what} uses placement group {strategy.group_id!r}, which is not "
                    "reserved: await pg.ready() before submitting work to it"
                )
            index = strategy.bundle_index
            if index < 0:  # the first bundle large enough
                index = next((i for i, b in enumerate(record.bundles) if demand.fits_in(b)), -1)
                if index < 0:
                    raise InfeasibleError(
                        f"{what} needs {demand.to_amounts()}; no bundle of placement group "
                        f"{strategy.group_id!r} is that large. Lower the demand or make the "
                        "bundles larger."
                    )
            node_id = record.plan.nodes[index]
            ref = self.refs.get(node_id)
            if ref is None:
                raise NotBack(node_id)
            return node_id, ref, (strategy.group_id, index)
        target = getattr(strategy, "node_id", None)
        candidates = [n for n in self.view.nodes() if n.alive and demand.fits_in(n.total)]
        if target is not None:
            chosen = [n for n in candidates if n.node_id == target]
            candidates = chosen or candidates
        if not candidates:
            if self._rejoining():
                raise NotBack("")
            raise InfeasibleError(f"{what} needs {demand.to_amounts()}: no live node fits it now")
        if local is not None:
            mine = [n for n in candidates if n.node_id == local]
            candidates = mine or candidates
        best = max(candidates, key=lambda n: sum(n.available.values()))
        return best.node_id, self.refs[best.node_id], None

    # -- load ----------------------------------------------------------------------------------

    def _load(self, msg: NodeLoad) -> None:
        if msg.node_id not in self.view:
            return
        pending = self._unapplied.get(msg.node_id, {})
        for seq in [s for s in pending if s <= msg.reserved_seq]:
            del pending[seq]  # the node's figure includes these already
        available = dict(msg.available)
        for reserved in pending.values():
            for name, units in reserved.items():
                available[name] = max(0, available.get(name, 0) - units)
        total = self.view.node(msg.node_id).total
        self.view.set_available(msg.node_id, Resources(
            {k: min(v, total[k]) for k, v in available.items()}
        ))
        if self.waiting:
            self._try_groups()

    def _node_gone(self, node_id: str) -> None:
        if node_id not in self.view:  # (a node of a restarted head's store that never came back)
            if self._expected.pop(node_id, None) is not None:
                for group_id in self.groups.node_lost(node_id):
                    log.warning("placement group %s lost bundles on node %s", group_id, node_id)
            return
        self.view.set_alive(node_id, False)
        self._unapplied.pop(node_id, None)
        for group_id in self.groups.node_lost(node_id):
            log.warning("placement group %s lost bundles on node %s", group_id, node_id)

    # -- placement groups ----------------------------------------------------------------------

    def _create_group(self, msg: CreateGroup) -> None:
        if msg.group_id in self.records:
            raise ValueError(f"placement group {msg.group_id!r} exists already")
        record = self.records[msg.group_id] = GroupRecord(
            msg.group_id, msg.bundles, msg.strategy, msg.name, msg.namespace, msg.lifetime,
            msg.job_id)
        if msg.name is not None:
            key = (msg.namespace, msg.name)
            if key in self.names:  # it never will be: pg.ready() raises this
                record.state = GroupState.INFEASIBLE
                record.error = ValueError(
                    f"a placement group named {msg.name!r} already exists in namespace "
                    f"{msg.namespace!r}; remove it first (af.remove_placement_group) or pick "
                    "another name"
                )
                return
            self.names[key] = msg.group_id
        self.waiting.append(msg.group_id)
        self._keep(record)
        self._try_groups()

    def _named(self, name: str, namespace: str) -> tuple[str, tuple[Resources, ...], str]:
        group_id = self.names.get((namespace, name))
        if group_id is None:
            raise ValueError(
                f"no placement group named {name!r} in namespace {namespace!r}; check the name "
                "and the namespace (af.init(namespace=...)), and that it was not removed"
            )
        record = self.records[group_id]
        return group_id, record.bundles, record.strategy

    def _table(self, group_id: str | None) -> dict[Any, Any]:
        if group_id is None:
            return {gid: self.table_entry(r) for gid, r in self.records.items()}
        record = self.records.get(group_id)
        if record is None:
            raise KeyError(f"no placement group {group_id!r}")
        return self.table_entry(record)

    @staticmethod
    def table_entry(record: GroupRecord) -> dict[str, Any]:
        """A group as ``af.placement_group_table()`` shows it. ``bundles_to_node_id`` maps
        each bundle's index to its node once the group is planned (empty while PENDING)."""
        plan = record.plan if record.state is not GroupState.REMOVED else None
        return {
            "placement_group_id": record.group_id,
            "name": record.name,
            "namespace": record.namespace,
            "strategy": record.strategy,
            "state": TABLE_STATES[record.state],
            "lifetime": record.lifetime,
            "job_id": record.job_id,
            "bundles": [b.to_amounts() for b in record.bundles],
            "bundles_to_node_id": dict(enumerate(plan.nodes)) if plan is not None else {},
        }

    def _try_groups(self) -> None:
        for group_id in list(self.waiting):
            record = self.records[group_id]
            decision = plan_group(list(record.bundles), record.strategy, self.view,
                                  name=record.name)
            if isinstance(decision, GroupPlan):
                self.waiting.remove(group_id)
                self._reserve(record, decision)
            elif type(decision) is Infeasible:
                self.waiting.remove(group_id)
                record.state = GroupState.INFEASIBLE
                record.error = InfeasibleError(decision.message)
                self._changed(record)

    def _reserve(self, record: GroupRecord, plan: GroupPlan) -> None:
        bundles = list(record.bundles)
        reserve_group(self.view, bundles, plan)
        self.groups.add(record.group_id, bundles, plan, name=record.name)
        record.plan = plan
        record.state = GroupState.RESERVING
        self._keep(record)
        by_node: dict[str, list[tuple[int, Resources]]] = {}
        for index, node_id in enumerate(plan.nodes):
            by_node.setdefault(node_id, []).append((index, bundles[index]))
        record.acks_left = len(by_node)
        for node_id, items in by_node.items():
            seq = self._seq[node_id] = self._seq.get(node_id, 0) + 1
            total = Resources()
            for _, bundle in items:
                total = total + bundle
            self._unapplied.setdefault(node_id, {})[seq] = total
            fut = self.refs[node_id].ask_nowait(ReserveBundles(record.group_id, tuple(items), seq))
            fut.add_done_callback(functools.partial(self._reserved, record))

    def _reserved(self, record: GroupRecord, fut: asyncio.Future[Any]) -> None:
        error = None if fut.cancelled() else fut.exception()
        if record.state is not GroupState.RESERVING:
            return
        if error is not None:
            log.warning("placement group %s: a node failed to reserve: %s",
                        record.group_id, error)
            return  # the node is gone: NodeGone marks its bundles lost
        record.acks_left -= 1
        if record.acks_left == 0:
            record.state = GroupState.READY
            self._changed(record)

    async def _wait_group(self, group_id: str) -> None:
        while True:
            record = self.records.get(group_id)
            if record is None:
                raise KeyError(f"no placement group {group_id!r}")
            if record.state is GroupState.READY:
                return
            if record.state is GroupState.INFEASIBLE:
                assert record.error is not None
                if isinstance(record.error, ValueError):  # its name was taken
                    raise ValueError(str(record.error))
                raise InfeasibleError(str(record.error))
            if record.state is GroupState.REMOVED:
                raise InfeasibleError(f"placement group {group_id!r} was removed")
            await record.changed.wait()

    def _remove_group(self, group_id: str) -> None:
        record = self.records.get(group_id)
        if record is None or record.state is GroupState.REMOVED:
            return
        if record.name is not None and self.names.get((record.namespace, record.name)) == (
                group_id):
            del self.names[(record.namespace, record.name)]
        if group_id in self.waiting:
            self.waiting.remove(group_id)
        if record.plan is not None and group_id in self.groups:
            self.groups.remove(group_id)
            release_group(self.view, list(record.bundles), record.plan)
            for node_id in set(record.plan.nodes):
                ref = self.refs.get(node_id)
                if ref is not None:
                    try:
                        ref.tell_nowait(ReleaseBundles(group_id))
                    except Exception:
                        pass  # the node is gone, and its bundles with it
        record.state = GroupState.REMOVED
        self._changed(record)
        self._try_groups()
