"""Placement policy: which node takes a demand, as a pure function of a cluster view.

No processes, no asyncio: :func:`choose_node` answers one demand with a
:data:`~actorflow.placement.decisions.Decision`, reading the indexes of a
:class:`~actorflow.placement.view.ClusterView` (the placement actor's picture of the cluster,
where "utilization" is defined). This module is the policy's face: the view's records and the
decisions are importable from here too.

Policies (``choose_node``)
    ``DEFAULT`` (hybrid, like Ray's): the local node while its utilization after the grant is at
    most ``spread_threshold``; else the busiest node whose utilization after the grant is at most
    the threshold (packing); else the least busy node that can take the demand now (spreading).
    ``SPREAD``: round-robin over the nodes that can take the demand now, so that repeated calls
    visit every node; with ``spread_busy=True``, round-robin over every live node that can hold
    the demand, busy or not (the work queues on a busy one: the Placement actor's choice, as its
    view of what is free lags the nodes' own). ``NodeAffinity``: that node (hard), or that
    node when it can take the demand now and ``DEFAULT`` otherwise (soft).
    ``PlacementGroupStrategy``: a bundle of a reserved group
    (:class:`actorflow.placement.groups.GroupReservations`).

Decisions
    ``Place(node_id)``; ``Wait(reason)`` when some live node could hold the demand but none has
    it free now; ``Infeasible(message)`` when no live node could ever hold it. With no live node
    at all the answer is ``Wait`` (nodes join and rejoin; that is not a verdict). A verdict of
    ``Wait`` or ``Infeasible`` depends only on membership, so a shape's index keeps it until
    membership changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from actorflow.placement.decisions import (
    Decision,
    Infeasible,
    Place,
    Wait,
    gpu_demand_error,
    hint,
    infeasible_message,
)
from actorflow.placement.resources import Resources
from actorflow.placement.strategies import NodeAffinity, PlacementGroupStrategy, parse_strategy
from actorflow.placement.view import (
    BUCKETS,
    ClusterView,
    NodeEntry,
    NodeView,
    ShapeIndex,
    ViewStatistics,
)

if TYPE_CHECKING:
    from actorflow.placement.groups import GroupReservations

__all__ = [
    "ClusterView",
    "Decision",
    "Infeasible",
    "NodeView",
    "Place",
    "ViewStatistics",
    "Wait",
    "choose_node",
    "gpu_demand_error",
    "infeasible_message",
]

_PROBES: Final = 16  # SPREAD: nodes tried in round-robin order before taking the least busy


# -- the decision -------------------------------------------------------------------------------


def choose_node(
    demand: Resources,
    view: ClusterView,
    strategy: object = "DEFAULT",
    *,
    local_node_id: str | None = None,
    spread_threshold: float | None = None,
    groups: GroupReservations | None = None,
    what: str = "task",
    spread_busy: bool = False,
) -> Decision:
    """Where ``demand`` should run under ``strategy`` (see the module docstring).

    ``strategy`` is what :func:`actorflow.placement.strategies.parse_strategy` accepts.
    ``local_node_id`` is the submitter's node (DEFAULT prefers it). ``spread_threshold`` is
    the DEFAULT policy's threshold (``None``: the view's). ``groups`` holds the reserved
    placement groups (needed for a :class:`PlacementGroupStrategy`). ``what`` names the work
    in messages (``"task 'train'"``, ``"actor Counter"``). ``spread_busy``: SPREAD
    round-robins over the nodes that can hold the demand, busy or not, instead of those that
    have it free now (``Wait`` then only when no live node is left). No resources change
    here (only the view's indexes and SPREAD's cursor move): the caller grants a ``Place``
    with ``view.grant`` (or ``groups.grant`` for a placement group's bundle).
    """
    if spread_threshold is None:
        thr = view.spread_threshold
    elif spread_threshold >= 0.0:
        thr = spread_threshold
    else:
        raise ValueError(f"spread_threshold must be >= 0, got {spread_threshold}")
    if strategy is None or strategy == "DEFAULT":
        return _default(view, demand, local_node_id, thr, what)
    if strategy == "SPREAD":
        return _spread(view, demand, what, spread_busy)
    if type(strategy) is NodeAffinity:
        return _affinity(view, demand, strategy, local_node_id, thr, what)
    if type(strategy) is PlacementGroupStrategy:
        if groups is None:
            raise TypeError("choose_node needs groups= for a PlacementGroupStrategy")
        decision: Decision = groups.choose(
            strategy.group_id, strategy.bundle_index, demand, what=what
        )
        return decision
    parsed = parse_strategy(strategy)  # raises for anything invalid
    return choose_node(
        demand, view, parsed, local_node_id=local_node_id, spread_threshold=spread_threshold,
        groups=groups, what=what, spread_busy=spread_busy,
    )


# -- the policies -------------------------------------------------------------------------------


def _unplaceable(view: ClusterView, sh: ShapeIndex, what: str) -> Wait | Infeasible:
    """``sh`` has no node with the demand free: Wait or Infeasible (the verdict only
    depends on membership, so it is kept until that changes)."""
    verdict = sh.verdicts.get(what)
    if verdict is None:
        if len(sh.verdicts) >= 64:
            sh.verdicts.clear()
        verdict = sh.verdicts[what] = _verdict(view, sh, what)
    return verdict


def _verdict(view: ClusterView, sh: ShapeIndex, what: str) -> Wait | Infeasible:
    if sh.gpu_error is not None:
        return Infeasible(f"{what} needs {sh.demand.to_amounts()}; {sh.gpu_error}")
    if sh.eligible:
        return Wait(
            f"no node has {sh.demand.to_amounts()} free now; {len(sh.eligible)} live "
            "node(s) can hold it once work there finishes"
        )
    alive = view.alive_entries()
    if not alive:
        return Wait("no live node in the cluster")
    return Infeasible(infeasible_message(what, sh.demand, (n.total_r for n in alive)))

# -- policies --


def _default(
    view: ClusterView, demand: Resources, local: str | None, thr: float, what: str
) -> Decision:
    sh = view.shape_index(demand)
    if sh.gpu_error is not None:
        return _unplaceable(view, sh, what)
    exact = thr == sh.thr
    qt = int(thr * BUCKETS) if thr * BUCKETS < BUCKETS else BUCKETS
    ln = view.entries.get(local) if local is not None else None
    if ln is not None:
        k = sh.key.get(ln)
        if k is not None and ((k & 1) == 0 if exact else sh.after(ln) <= thr):
            return Place(ln.node_id)
    mask = sh.mask
    if not mask:
        return _unplaceable(view, sh, what)
    if exact:
        under = mask & ((1 << (2 * qt + 1)) - 1)
    else:  # the boundary buckets hold nodes on both sides of thr: test them one by one
        best: NodeEntry | None = None
        best_u = -1.0
        for k in (2 * qt, 2 * qt + 1):
            if mask >> k & 1:
                for n in sh.buckets[k]:
                    u = sh.after(n)
                    if best_u < u <= thr:
                        best, best_u = n, u
        if best is not None:
            return Place(best.node_id)
        under = mask & ((1 << (2 * qt)) - 1)
    if under:
        return Place(sh.first(under.bit_length() - 1).node_id)
    least = sh.buckets[(mask & -mask).bit_length() - 1]
    if ln is not None and ln in least:
        return Place(ln.node_id)
    return Place(next(iter(least)).node_id)


def _spread(view: ClusterView, demand: Resources, what: str, busy: bool) -> Decision:
    sh = view.shape_index(demand)
    if busy and sh.eligible and sh.gpu_error is None:  # every node that can hold it
        n = sh.eligible[sh.cursor]  # (rebuild keeps the cursor inside ``eligible``)
        sh.cursor = (sh.cursor + 1) % len(sh.eligible)
        return Place(n.node_id)
    if not sh.mask or sh.gpu_error is not None:
        return _unplaceable(view, sh, what)
    order = sh.eligible
    key = sh.key
    c = sh.cursor
    size = len(order)
    for _ in range(min(size, _PROBES)):
        n = order[c]
        c += 1
        if c == size:
            c = 0
        if n in key:
            sh.cursor = c
            return Place(n.node_id)
    sh.cursor = c
    mask = sh.mask
    return Place(sh.first((mask & -mask).bit_length() - 1).node_id)


def _affinity(
    view: ClusterView, demand: Resources, aff: NodeAffinity, local: str | None, thr: float,
    what: str,
) -> Decision:
    n = view.entries.get(aff.node_id)
    gpu_error = gpu_demand_error(demand)
    if gpu_error is not None:
        return Infeasible(f"{what} needs {demand.to_amounts()}; {gpu_error}")
    if n is not None and n.alive:
        avail = n.avail
        if all(units <= avail.get(name, 0) for name, units in demand._d.items()):
            return Place(n.node_id)
        if aff.soft:
            return _default(view, demand, local, thr, what)
        if n.holds(demand._d.items()):
            return Wait(
                f"node {aff.node_id!r} (NodeAffinity) has {Resources(avail).to_amounts()} "
                f"free; {what} needs {demand.to_amounts()}"
            )
        return Infeasible(
            f"{what} needs {demand.to_amounts()}; node {aff.node_id!r} (NodeAffinity) has "
            f"{n.total_r.to_amounts()}. {hint(demand, n.total_r)} Or pass "
            "NodeAffinity(..., soft=True) to let it run elsewhere."
        )
    if aff.soft:
        return _default(view, demand, local, thr, what)
    state = "dead" if n is not None else "not in the cluster"
    return Infeasible(
        f"{what} has NodeAffinity to node {aff.node_id!r}, which is {state}. Pick a live "
        "node from af.nodes(), or pass NodeAffinity(..., soft=True) to let it run elsewhere."
    )
