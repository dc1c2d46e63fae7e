"""The Placement actor's records of placement groups, and what a head's store keeps of them.

:class:`GroupRecord` is one group as the Placement actor (:mod:`actorflow.placement.actor`)
knows it. :class:`KeptGroups` (a part of that actor) marks each change of a group in the
head's store through the saver the head hands over (``KeepGroups``), one pickled row per group,
and takes the rows back when a restarted head hands them over: see the actor's docstring.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actorflow._errors import InfeasibleError
from actorflow.placement.groups import GroupPlan, GroupReservations
from actorflow.placement.messages import PlaceTask, ReleaseBundles, ReserveBundles
from actorflow.placement.policy import ClusterView
from actorflow.placement.resources import Resources
from actorflow.runtime import ActorRef

__all__ = [
    "NODE_BACK_WAIT_S",
    "TABLE_STATES",
    "GroupRecord",
    "GroupState",
    "KeptGroup",
    "KeptGroups",
    "NotBack",
    "group_row",
    "read_group_row",
]

log = logging.getLogger("actorflow.placement")

#: Seconds after a restart of the head during which work waits for the nodes to register
#: again (with its bundle's node, or any that can take it) instead of being infeasible.
NODE_BACK_WAIT_S = 30.0


class NotBack(Exception):
    """The node the work needs (a bundle's: ``node_id``; any that fits it: "") has not
    registered again with the restarted head yet."""

    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.node_id = node_id


class GroupState(enum.Enum):
    PENDING = "PENDING"  # waits for room; holds nothing
    RESERVING = "RESERVING"  # planned and held in the view; nodes are setting bundles aside
    READY = "READY"
    INFEASIBLE = "INFEASIBLE"  # never can be (no cluster state fits it, or its name is taken)
    REMOVED = "REMOVED"


#: what ``af.placement_group_table()`` shows for each state (Ray's names where Ray has one)
TABLE_STATES = {
    GroupState.PENDING: "PENDING",
    GroupState.RESERVING: "PENDING",
    GroupState.READY: "CREATED",
    GroupState.INFEASIBLE: "INFEASIBLE",
    GroupState.REMOVED: "REMOVED",
}


@dataclass(slots=True)
class GroupRecord:
    group_id: str
    bundles: tuple[Resources, ...]
    strategy: str
    name: str | None
    namespace: str = ""
    lifetime: str | None = None
    job_id: str = ""
    state: GroupState = GroupState.PENDING
    plan: GroupPlan | None = None
    error: BaseException | None = None
    acks_left: int = 0
    unconfirmed: set[int] = field(default_factory=set)  # taken back: not seen on its node yet
    changed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True, slots=True)
class KeptGroup:
    group_id: str
    bundles: tuple[Resources, ...]
    strategy: str
    name: str | None
    namespace: str
    lifetime: str | None
    job_id: str
    state: str
    plan: GroupPlan | None
    error: BaseException | None


def group_row(group_id: str, bundles: tuple[Resources, ...], strategy: str, name: str | None,
              namespace: str, lifetime: str | None, job_id: str, state: str,
              plan: GroupPlan | None, error: BaseException | None) -> bytes:
    return pickle.dumps({
        "group_id": group_id, "bundles": [b.to_amounts() for b in bundles],
        "strategy": strategy, "name": name, "namespace": namespace, "lifetime": lifetime,
        "job_id": job_id, "state": state,
        "plan": list(plan.nodes) if plan is not None else None,
        # the error's kind and text: a name taken (ValueError) or infeasible
        "error": None if error is None else (isinstance(error, ValueError), str(error)),
    }, protocol=5)


def read_group_row(row: bytes) -> KeptGroup:
    g: dict[str, Any] = pickle.loads(row)
    error: BaseException | None = None
    if g["error"] is not None:
        taken, text = g["error"]
        error = ValueError(text) if taken else InfeasibleError(text)
    plan = g["plan"]
    return KeptGroup(
        g["group_id"], tuple(Resources.of(b) for b in g["bundles"]), g["strategy"], g["name"],
        g["namespace"], g["lifetime"], g["job_id"], g["state"],
        GroupPlan(tuple(plan)) if plan is not None else None, error)


class KeptGroups:
    """The Placement actor's part that keeps its groups in a head's store (module docstring)."""

    view: ClusterView
    groups: GroupReservations
    refs: dict[str, ActorRef]
    records: dict[str, GroupRecord]
    names: dict[tuple[str, str], str]
    waiting: list[str]
    _seq: dict[str, int]
    _unapplied: dict[str, dict[int, Resources]]
    #: marks a group changed in the head's store (KeepGroups); None: nothing is kept
    _save: Callable[[str, Any, Callable[[Any], bytes | None]], None] | None
    #: taken back from the store: node id -> its bundles (group id, index) to check
    _expected: dict[str, list[tuple[str, int]]]
    _arrived: asyncio.Event
    _rejoin_until: float

    if TYPE_CHECKING:  # (the actor's own)
        def place(self, demand: Resources, strategy: Any, local: str | None, what: str
                  ) -> tuple[str, ActorRef, tuple[str, int] | None]: ...

    async def _place_waiting(self, msg: PlaceTask
                             ) -> tuple[str, ActorRef, tuple[str, int] | None]:
        """:meth:`place`; after a restart of the head, a demand that needs a node that has not
        registered again yet waits for it (bounded by :data:`NODE_BACK_WAIT_S`)."""
        while True:
            try:
                return self.place(msg.demand, msg.strategy, msg.from_node, msg.what)
            except NotBack as exc:
                left = self._rejoin_until - time.monotonic()
                if exc.node_id and left <= 0:  # (a bundle's node: waited for since the restart)
                    raise InfeasibleError(
                        f"{msg.what} asks for a placement group bundle on node "
                        f"{exc.node_id}, which has not registered again with the "
                        f"restarted head in {NODE_BACK_WAIT_S:.0f} s") from None
                arrived = self._arrived
                try:
                    await asyncio.wait_for(arrived.wait(), max(left, 0.5))
                except TimeoutError:
                    pass

    def _rejoining(self) -> bool:
        """Is this a restarted head's placement whose nodes may still be registering again?"""
        return time.monotonic() < self._rejoin_until

    def _changed(self, record: GroupRecord) -> None:
        record.changed.set()
        record.changed = asyncio.Event()
        self._keep(record)

    def _keep(self, record: GroupRecord) -> None:
        if self._save is not None:
            self._save(record.group_id, record, _row)

    # -- a restarted head's groups -----------------------------------------------------------

    def _take_back(self, rows: tuple[bytes, ...]) -> None:
        """The groups a restarted head's store kept (see the module docstring)."""
        for row in rows:
            try:
                g = read_group_row(row)
            except Exception as exc:  # a row of another version: left out
                log.warning("a kept placement group cannot be read back (%s): left out", exc)
                continue
            record = GroupRecord(g.group_id, g.bundles, g.strategy, g.name, g.namespace,
                            g.lifetime, g.job_id, GroupState(g.state), error=g.error)
            self.records[record.group_id] = record
            if g.name is not None and record.state is not GroupState.INFEASIBLE:
                self.names[(g.namespace, g.name)] = g.group_id
            if record.state is GroupState.PENDING or (
                    record.state is GroupState.RESERVING and g.plan is None):
                record.state = GroupState.PENDING
                self.waiting.append(record.group_id)
                continue
            if g.plan is None or record.state is GroupState.INFEASIBLE:
                continue
            record.plan = g.plan
            self.groups.add(record.group_id, list(g.bundles), g.plan, name=g.name)
            record.unconfirmed = set(range(len(g.bundles)))
            for index, node_id in enumerate(g.plan.nodes):
                self._expected.setdefault(node_id, []).append((record.group_id, index))
        if rows:
            log.info("placement groups taken back: %d", len(self.records))

    def _check_kept(self, node_id: str, held: tuple[tuple[str, int], ...] | None) -> None:
        """A node registered with the restarted head holding ``held`` (None: it could not say;
        taken as holding what it should): the kept bundles it holds are reserved there again
        in the view; those it lacks are reserved anew; bundles of groups this head does not
        know are given back."""
        expected = self._expected.pop(node_id, [])
        present = set(held) if held is not None else set(expected)
        redo: dict[str, list[int]] = {}
        for group_id, index in expected:
            record = self.records.get(group_id)
            if record is None or record.state is GroupState.REMOVED:
                continue
            if (group_id, index) in present:
                self._hold(node_id, record.bundles[index])
                self._confirmed(record, (index,))
            else:
                redo.setdefault(group_id, []).append(index)
        for group_id, indexes in redo.items():
            record = self.records[group_id]
            items = tuple((i, record.bundles[i]) for i in indexes)
            total = Resources()
            for _, bundle in items:
                total = total + bundle
            seq = self._seq[node_id] = self._seq.get(node_id, 0) + 1
            self._unapplied.setdefault(node_id, {})[seq] = total
            self._hold(node_id, total)
            log.info("placement group %s: bundles %s reserved again on node %s", group_id,
                     indexes, node_id)
            fut = self.refs[node_id].ask_nowait(ReserveBundles(group_id, items, seq))
            fut.add_done_callback(functools.partial(self._rereserved, record, tuple(indexes)))
        for group_id in {g for g, _ in present if g not in self.records}:
            log.info("node %s gives back the bundles of placement group %s, which this head "
                     "does not know", node_id, group_id)
            self.refs[node_id].tell_nowait(ReleaseBundles(group_id))

    def _hold(self, node_id: str, bundle: Resources) -> None:
        try:
            self.view.grant(node_id, bundle)
        except ValueError:  # (the node's next load report sets its figure right)
            log.debug("node %s: the view cannot hold %s", node_id, bundle.to_amounts())

    def _rereserved(self, record: GroupRecord, indexes: tuple[int, ...],
                    fut: asyncio.Future[Any]) -> None:
        error = None if fut.cancelled() else fut.exception()
        if error is not None:
            log.warning("placement group %s: reserving bundles %s again failed: %s",
                        record.group_id, indexes, error)
            return
        self._confirmed(record, indexes)

    def _confirmed(self, record: GroupRecord, indexes: tuple[int, ...]) -> None:
        record.unconfirmed.difference_update(indexes)
        if not record.unconfirmed and record.state is GroupState.RESERVING:
            record.state = GroupState.READY
            self._changed(record)


def _row(record: GroupRecord) -> bytes | None:
    """What the head's store keeps of a group (None: nothing, it was removed)."""
    if record.state is GroupState.REMOVED:
        return None
    return group_row(record.group_id, record.bundles, record.strategy, record.name,
                     record.namespace, record.lifetime, record.job_id, record.state.value,
                     record.plan, record.error)
