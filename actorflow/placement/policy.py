"""Placement policy: which node takes a demand, as a pure function of a cluster view.

No processes, no asyncio: :class:`ClusterView` is the placement actor's picture of the
cluster (each node's totals and free resources), :func:`choose_node` answers one demand with a
:data:`Decision`, and :class:`GpuAllocator` hands out GPU ids on one node. Amounts are exact
integers in units of ``1/UNIT`` (:mod:`actorflow.placement.resources`).

Utilization
    A node's utilization is its critical resource fraction: the largest ``used / total`` over
    the resources it has. "Utilization after the grant" is that with ``demand`` taken too.

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
    it free now; ``Infeasible(message)`` when no live node could ever hold it. The message names
    the demand in user units and the node that comes closest, and says what to change. With no
    live node at all the answer is ``Wait`` (nodes join and rejoin; that is not a verdict).

Speed
    A decision must not walk every node. For each demand shape (the ``Resources`` value) the
    view keeps an index of the live nodes that can take it now, bucketed by their utilization
    after the grant (1,024 buckets, plus one bit that says "above the threshold", so the
    threshold test is exact), with a bitmask of the non-empty buckets: the busiest node under the
    threshold and the least busy node are a few integer operations away. Grants and releases
    only append the node to a change log; an index catches up with the log when its shape is
    next asked for (or is rebuilt when it fell behind by more than the node count, which costs
    no more). Within one bucket (1/1024 of utilization) the earliest-inserted node wins.
    GPU ids are not part of the view: a node may have enough GPU units in total but no whole
    GPU free; the node's :class:`GpuAllocator` then makes the lease wait there.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from actorflow.placement.resources import UNIT, Resources
from actorflow.placement.strategies import NodeAffinity, PlacementGroupStrategy, parse_strategy

if TYPE_CHECKING:
    from actorflow.placement.groups import GroupReservations

__all__ = [
    "ClusterView",
    "Decision",
    "GpuAllocator",
    "Infeasible",
    "NodeView",
    "Place",
    "ViewStatistics",
    "Wait",
    "choose_node",
    "gpu_demand_error",
    "infeasible_message",
]

BUCKETS: Final = 1024  # utilization resolution of the indexes
_PROBES: Final = 16  # SPREAD: nodes tried in round-robin order before taking the least busy
_MAX_SHAPES: Final = 64  # shape indexes kept (least recently used dropped first)


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as the policy sees it: totals, what is free now, and whether it is alive."""

    node_id: str
    total: Resources
    available: Resources
    alive: bool = True


@dataclass(frozen=True, slots=True)
class Place:
    """Run on ``node_id`` (inside bundle ``bundle_index`` of a placement group, when set)."""

    node_id: str
    bundle_index: int | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    """Some live node could hold the demand, but none has it free now."""

    reason: str


@dataclass(frozen=True, slots=True)
class Infeasible:
    """No live node could ever hold the demand; ``message`` says what to change."""

    message: str


Decision: TypeAlias = Place | Wait | Infeasible


@dataclass(frozen=True, slots=True)
class ViewStatistics:
    nodes: int
    alive: int
    shapes_indexed: int
    log_length: int


# -- internal state -----------------------------------------------------------------------------


class _Node:
    """A node's mutable state. ``util`` is kept equal to ``_util(total, avail)``."""

    __slots__ = ("alive", "avail", "node_id", "total", "total_r", "util")

    def __init__(self, view: NodeView) -> None:
        self.node_id = view.node_id
        self.total_r = view.total
        self.total: dict[str, int] = dict(view.total._d)
        self.avail: dict[str, int] = dict(view.available._d)
        self.alive = view.alive
        self.util = _util(self.total, self.avail)

    def view(self) -> NodeView:
        return NodeView(self.node_id, self.total_r, Resources(self.avail), self.alive)

    def holds(self, items: Iterable[tuple[str, int]]) -> bool:
        """Could this node hold the demand when idle?"""
        total = self.total
        return all(units <= total.get(name, 0) for name, units in items)


def _util(total: dict[str, int], avail: dict[str, int]) -> float:
    u = 0.0
    for name, t in total.items():
        if t > 0:
            f = (t - avail.get(name, 0)) / t
            if f > u:
                u = f
    return u


class _Shape:
    """The index of one demand shape (see "Speed" in the module docstring).

    Invariants (after :meth:`ClusterView._shape` returns it): ``eligible`` lists the live nodes
    whose totals hold the demand, in view order; ``key[n]`` is set exactly for the eligible nodes
    that have the demand free, and ``n in buckets[key[n]]``; bit ``k`` of ``mask`` is set exactly
    when ``buckets[k]`` is non-empty. ``key = 2 * min(int(u * BUCKETS), BUCKETS) + (u > thr)``
    with ``u`` the node's utilization after the grant and ``thr`` the view's threshold.
    """

    __slots__ = (
        "buckets", "cursor", "demand", "eligible", "eligible_set", "epoch", "gpu_error",
        "items", "key", "mask", "pos", "thr", "used", "verdicts",
    )

    def __init__(self, demand: Resources, thr: float) -> None:
        self.demand = demand
        self.items = tuple(demand._d.items())
        self.thr = thr
        self.gpu_error = gpu_demand_error(demand)
        self.eligible: list[_Node] = []
        self.eligible_set: set[_Node] = set()
        self.key: dict[_Node, int] = {}
        self.buckets: dict[int, dict[_Node, None]] = {}
        self.mask = 0
        self.epoch = -1
        self.pos = 0
        self.cursor = 0
        self.used = 0
        self.verdicts: dict[str, Wait | Infeasible] = {}  # by ``what``; valid for an epoch

    def rebuild(self, order: Iterable[_Node], epoch: int, pos: int) -> None:
        items = self.items
        self.eligible = [n for n in order if n.alive and n.holds(items)]
        self.eligible_set = set(self.eligible)
        self.verdicts = {}
        self.key = {}
        self.buckets = {}
        self.mask = 0
        self.epoch = epoch
        self.pos = pos
        if self.cursor >= len(self.eligible):
            self.cursor = 0
        for n in self.eligible:
            self.update(n)

    def after(self, n: _Node) -> float:
        """``n``'s utilization after the grant, or -1.0 when it lacks the demand now."""
        u = n.util
        avail = n.avail
        total = n.total
        for name, units in self.items:
            a = avail.get(name, 0)
            if units > a:
                return -1.0
            t = total[name]
            f = (t - a + units) / t
            if f > u:
                u = f
        return u

    def update(self, n: _Node) -> None:
        """Re-bucket ``n`` after its free resources changed (the hot path: ``after`` inlined).
        Dead nodes are never logged, so liveness needs no test here."""
        if n not in self.eligible_set:
            return
        u = n.util
        avail = n.avail
        total = n.total
        for name, units in self.items:
            a = avail.get(name, 0)
            if units > a:
                u = -1.0
                break
            t = total[name]
            f = (t - a + units) / t
            if f > u:
                u = f
        if u < 0.0:
            new = -1
        else:
            q = int(u * BUCKETS)
            new = 2 * (q if q < BUCKETS else BUCKETS) + (u > self.thr)
        key = self.key
        old = key.get(n, -1)
        if new == old:
            return
        buckets = self.buckets
        if old >= 0:
            bucket = buckets[old]
            del bucket[n]
            if not bucket:
                self.mask ^= 1 << old
        if new >= 0:
            key[n] = new
            into = buckets.get(new)
            if into is None:
                into = buckets[new] = {}
            if not into:
                self.mask |= 1 << new
            into[n] = None
        else:
            del key[n]

    def first(self, key: int) -> _Node:
        return next(iter(self.buckets[key]))

    def ascending(self) -> Iterator[_Node]:
        """The nodes that have the demand free, least busy after the grant first."""
        mask = self.mask
        while mask:
            low = mask & -mask
            yield from self.buckets[low.bit_length() - 1]
            mask ^= low

    def descending(self) -> Iterator[_Node]:
        """The nodes that have the demand free, busiest after the grant first."""
        mask = self.mask
        while mask:
            k = mask.bit_length() - 1
            yield from self.buckets[k]
            mask ^= 1 << k


# -- the view -----------------------------------------------------------------------------------


class ClusterView:
    """The cluster as the policy sees it: nodes, their totals and free resources.

    Updates are cheap (``grant``/``release``/``set_available`` are O(size of the demand) plus an
    append to the change log); ``choose_node`` reads the per-shape indexes. ``spread_threshold``
    is the DEFAULT policy's threshold that the indexes are built for (other thresholds work, a
    little slower).
    """

    def __init__(self, nodes: Iterable[NodeView] = (), *, spread_threshold: float = 0.5) -> None:
        if not spread_threshold >= 0.0:
            raise ValueError(f"spread_threshold must be >= 0, got {spread_threshold}")
        self.spread_threshold = float(spread_threshold)
        self._nodes: dict[str, _Node] = {}
        self._epoch = 0  # bumped when membership (node set or liveness) changes
        self._log: list[_Node] = []  # nodes whose free resources changed, oldest first
        self._log_base = 0  # position (since the start) of _log[0]
        self._shapes: dict[Resources, _Shape] = {}
        self._tick = itertools.count()
        # sums over the live nodes, kept up to date between membership changes
        self._sums_epoch = -1
        self._total_sum: dict[str, int] = {}
        self._free_sum: dict[str, int] = {}
        for node in nodes:
            self.add_node(node)

    # -- membership --

    def add_node(self, node: NodeView) -> None:
        """Add a node, or replace the one with the same id (its state is taken from ``node``)."""
        self._nodes.pop(node.node_id, None)
        self._nodes[node.node_id] = _Node(node)
        self._epoch += 1

    def remove_node(self, node_id: str) -> None:
        """Forget a node (a no-op for an unknown id)."""
        if self._nodes.pop(node_id, None) is not None:
            self._epoch += 1

    def set_alive(self, node_id: str, alive: bool) -> None:
        n = self._get(node_id)
        if n.alive != alive:
            n.alive = alive
            self._epoch += 1

    # -- resources --

    def grant(self, node_id: str, demand: Resources) -> None:
        """Take ``demand`` from the node's free resources; ``ValueError`` (and no change) when
        the node is dead or lacks it."""
        n = self._get(node_id)
        avail = n.avail
        items = demand._d.items()
        for name, units in items:
            if avail.get(name, 0) < units:
                raise ValueError(
                    f"node {node_id!r} has {Resources(avail).to_amounts()} free; cannot grant "
                    f"{demand.to_amounts()}"
                )
        if not n.alive:
            raise ValueError(f"node {node_id!r} is dead; cannot grant {demand.to_amounts()}")
        total = n.total
        u = n.util
        sums = self._free_sum if self._sums_epoch == self._epoch else None
        for name, units in items:
            a = avail[name] - units
            avail[name] = a
            if sums is not None:
                sums[name] = sums.get(name, 0) - units
            t = total.get(name, 0)
            if t > 0:
                f = (t - a) / t
                if f > u:
                    u = f
        n.util = u
        self._touch(n)

    def release(self, node_id: str, demand: Resources) -> None:
        """Give ``demand`` back to the node; ``ValueError`` (and no change) when that would
        leave more free than the node has."""
        n = self._get(node_id)
        avail = n.avail
        total = n.total
        items = demand._d.items()
        for name, units in items:
            if avail.get(name, 0) + units > total.get(name, 0):
                raise ValueError(
                    f"releasing {demand.to_amounts()} on node {node_id!r} would leave more free "
                    f"than its total {n.total_r.to_amounts()}"
                )
        sums = self._free_sum if n.alive and self._sums_epoch == self._epoch else None
        for name, units in items:
            avail[name] = avail.get(name, 0) + units
            if sums is not None:
                sums[name] = sums.get(name, 0) + units
        n.util = _util(total, avail)
        self._touch(n)

    def set_available(self, node_id: str, available: Resources) -> None:
        """Replace a node's free resources (a node's own report)."""
        n = self._get(node_id)
        if n.alive and self._sums_epoch == self._epoch:
            sums = self._free_sum
            for name, units in n.avail.items():
                sums[name] = sums.get(name, 0) - units
            for name, units in available._d.items():
                sums[name] = sums.get(name, 0) + units
        n.avail = dict(available._d)
        n.util = _util(n.total, n.avail)
        self._touch(n)

    def fits_now(self, node_id: str, demand: Resources) -> bool:
        n = self._nodes.get(node_id)
        if n is None or not n.alive:
            return False
        avail = n.avail
        return all(units <= avail.get(name, 0) for name, units in demand._d.items())

    # -- queries --

    def node(self, node_id: str) -> NodeView:
        return self._get(node_id).view()

    def nodes(self) -> list[NodeView]:
        return [n.view() for n in self._nodes.values()]

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    def total_resources(self) -> Resources:
        """The sum of the live nodes' totals."""
        self._sums()
        return Resources(self._total_sum)

    def available_resources(self) -> Resources:
        """The sum of the live nodes' free resources."""
        self._sums()
        return Resources(self._free_sum)

    def statistics(self) -> ViewStatistics:
        return ViewStatistics(
            nodes=len(self._nodes),
            alive=sum(1 for n in self._nodes.values() if n.alive),
            shapes_indexed=len(self._shapes),
            log_length=len(self._log),
        )

    # -- internals (also used by actorflow.placement.groups) --

    def _get(self, node_id: str) -> _Node:
        n = self._nodes.get(node_id)
        if n is None:
            raise KeyError(f"no node {node_id!r} in the cluster view")
        return n

    def _sums(self) -> tuple[dict[str, int], dict[str, int]]:
        """(sum of totals, sum of free resources) over the live nodes."""
        if self._sums_epoch != self._epoch:
            alive = self._alive()
            self._total_sum = _sum(n.total for n in alive)
            self._free_sum = _sum(n.avail for n in alive)
            self._sums_epoch = self._epoch
        return self._total_sum, self._free_sum

    def _alive(self) -> list[_Node]:
        return [n for n in self._nodes.values() if n.alive]

    def _touch(self, n: _Node) -> None:
        if not n.alive:
            return  # no index holds a dead node; membership changes rebuild them anyway
        log = self._log
        log.append(n)
        keep = max(256, len(self._nodes))
        if len(log) > 2 * keep:
            drop = len(log) - keep
            del log[:drop]
            self._log_base += drop

    def _shape(self, demand: Resources) -> _Shape:
        """The up-to-date index of ``demand``'s shape."""
        sh = self._shapes.get(demand)
        end = len(self._log)
        if sh is None:
            if len(self._shapes) >= _MAX_SHAPES:
                oldest = min(self._shapes.values(), key=lambda s: s.used)
                del self._shapes[oldest.demand]
            sh = self._shapes[demand] = _Shape(demand, self.spread_threshold)
            sh.rebuild(self._nodes.values(), self._epoch, self._log_base + end)
        elif sh.epoch != self._epoch:
            sh.rebuild(self._nodes.values(), self._epoch, self._log_base + end)
        else:
            start = sh.pos - self._log_base
            if start < 0 or end - start > len(self._nodes):
                sh.rebuild(self._nodes.values(), self._epoch, self._log_base + end)
            elif start < end:
                update = sh.update
                for n in self._log[start:end]:
                    update(n)
                sh.pos = self._log_base + end
        sh.used = next(self._tick)
        return sh

    def _unplaceable(self, sh: _Shape, what: str) -> Wait | Infeasible:
        """``sh`` has no node with the demand free: Wait or Infeasible (the verdict only
        depends on membership, so it is kept until that changes)."""
        verdict = sh.verdicts.get(what)
        if verdict is None:
            if len(sh.verdicts) >= 64:
                sh.verdicts.clear()
            verdict = sh.verdicts[what] = self._verdict(sh, what)
        return verdict

    def _verdict(self, sh: _Shape, what: str) -> Wait | Infeasible:
        if sh.gpu_error is not None:
            return Infeasible(f"{what} needs {sh.demand.to_amounts()}; {sh.gpu_error}")
        if sh.eligible:
            return Wait(
                f"no node has {sh.demand.to_amounts()} free now; {len(sh.eligible)} live "
                "node(s) can hold it once work there finishes"
            )
        alive = self._alive()
        if not alive:
            return Wait("no live node in the cluster")
        return Infeasible(infeasible_message(what, sh.demand, (n.total_r for n in alive)))

    # -- policies --

    def _default(self, demand: Resources, local: str | None, thr: float, what: str) -> Decision:
        sh = self._shape(demand)
        if sh.gpu_error is not None:
            return self._unplaceable(sh, what)
        exact = thr == sh.thr
        qt = int(thr * BUCKETS) if thr * BUCKETS < BUCKETS else BUCKETS
        ln = self._nodes.get(local) if local is not None else None
        if ln is not None:
            k = sh.key.get(ln)
            if k is not None and ((k & 1) == 0 if exact else sh.after(ln) <= thr):
                return Place(ln.node_id)
        mask = sh.mask
        if not mask:
            return self._unplaceable(sh, what)
        if exact:
            under = mask & ((1 << (2 * qt + 1)) - 1)
        else:  # the boundary buckets hold nodes on both sides of thr: test them one by one
            best: _Node | None = None
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

    def _spread(self, demand: Resources, what: str, busy: bool) -> Decision:
        sh = self._shape(demand)
        if busy and sh.eligible and sh.gpu_error is None:  # every node that can hold it
            n = sh.eligible[sh.cursor]  # (rebuild keeps the cursor inside ``eligible``)
            sh.cursor = (sh.cursor + 1) % len(sh.eligible)
            return Place(n.node_id)
        if not sh.mask or sh.gpu_error is not None:
            return self._unplaceable(sh, what)
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
        self, demand: Resources, aff: NodeAffinity, local: str | None, thr: float, what: str
    ) -> Decision:
        n = self._nodes.get(aff.node_id)
        gpu_error = gpu_demand_error(demand)
        if gpu_error is not None:
            return Infeasible(f"{what} needs {demand.to_amounts()}; {gpu_error}")
        if n is not None and n.alive:
            avail = n.avail
            if all(units <= avail.get(name, 0) for name, units in demand._d.items()):
                return Place(n.node_id)
            if aff.soft:
                return self._default(demand, local, thr, what)
            if n.holds(demand._d.items()):
                return Wait(
                    f"node {aff.node_id!r} (NodeAffinity) has {Resources(avail).to_amounts()} "
                    f"free; {what} needs {demand.to_amounts()}"
                )
            return Infeasible(
                f"{what} needs {demand.to_amounts()}; node {aff.node_id!r} (NodeAffinity) has "
                f"{n.total_r.to_amounts()}. {_hint(demand, n.total_r)} Or pass "
                "NodeAffinity(..., soft=True) to let it run elsewhere."
            )
        if aff.soft:
            return self._default(demand, local, thr, what)
        state = "dead" if n is not None else "not in the cluster"
        return Infeasible(
            f"{what} has NodeAffinity to node {aff.node_id!r}, which is {state}. Pick a live "
            "node from af.nodes(), or pass NodeAffinity(..., soft=True) to let it run elsewhere."
        )


def _sum(bags: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for bag in bags:
        for name, units in bag.items():
            out[name] = out.get(name, 0) + units
    return out


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
        return view._default(demand, local_node_id, thr, what)
    if strategy == "SPREAD":
        return view._spread(demand, what, spread_busy)
    if type(strategy) is NodeAffinity:
        return view._affinity(demand, strategy, local_node_id, thr, what)
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


# -- messages -----------------------------------------------------------------------------------


def gpu_demand_error(demand: Resources) -> str | None:
    """Why no node can hold this GPU demand (above 1 GPU it must be whole), or None."""
    units = demand["GPU"]
    if units > UNIT and units % UNIT:
        low, high = units // UNIT, units // UNIT + 1
        return (
            "a demand of more than 1 GPU must be a whole number of GPUs. Use "
            f"num_gpus={low} or {high}, or a fraction below 1."
        )
    return None


def _fmt(units: int) -> str:
    amount = units / UNIT
    return str(int(amount)) if amount == int(amount) else f"{amount:g}"


_OPTION = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}


def _short(demand: Resources, total: Resources) -> list[str]:
    """The resources of ``demand`` that ``total`` has too little of."""
    return [name for name in sorted(demand) if demand[name] > total[name]]


def _node_with(demand: Resources, names: Sequence[str]) -> str:
    """'2 GPUs and 8 CPUs': what a node must have to hold ``demand``'s ``names``."""
    amounts = []
    for name in names:
        amount = _fmt(demand[name])
        if name in ("CPU", "GPU"):
            amounts.append(f"{amount} {name}{'' if amount == '1' else 's'}")
        elif name == "memory":
            amounts.append(f"{amount} bytes of memory")
        else:
            amounts.append(f"{name}={amount}")
    return _and(amounts)


def _and(parts: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def _hint(demand: Resources, total: Resources, lower: str | None = None) -> str:
    """'Lower num_gpus or add a node with 2 GPUs.' for the resources ``total`` lacks
    (``lower`` replaces the first half, e.g. 'Shrink bundle 0')."""
    short = _short(demand, total)
    if not short:
        return ""
    if lower is None:
        lower = "Lower " + _and([_OPTION.get(name, f"resources[{name!r}]") for name in short])
    return f"{lower} or add a node with {_node_with(demand, short)}."


def _closeness(demand: Resources, total: Resources) -> tuple[float, float, int]:
    fractions = [min(1.0, total[name] / units) for name, units in demand.items()] or [1.0]
    return (min(fractions), sum(fractions), sum(total.values()))


def infeasible_message(
    what: str, demand: Resources, totals: Iterable[Resources], *, lower: str | None = None
) -> str:
    """``"{what} needs {...}; the largest node has {...}. Lower ... or add a node with ..."``;
    "the largest node" is the one that comes closest to holding ``demand``. ``lower`` replaces
    the advice's first half ("Lower num_gpus")."""
    candidates = list(totals)
    if not candidates:
        return f"{what} needs {demand.to_amounts()}; the cluster has no live node."
    largest = max(candidates, key=lambda t: _closeness(demand, t))
    hint = _hint(demand, largest, lower) or "Lower the demand or add a node that has it."
    return (
        f"{what} needs {demand.to_amounts()}; the largest node has {largest.to_amounts()}. "
        f"{hint}"
    )


# -- GPU ids ------------------------------------------------------------------------------------


class GpuAllocator:
    """GPU ids of one node. A demand of whole GPUs (``units`` a multiple of ``UNIT``) gets that
    many GPUs to itself; a fraction (``units < UNIT``) shares one GPU with other fractions,
    packed onto the fullest GPU that still has room (best fit, lowest id on ties). Exact
    integer arithmetic; never hands out more than a GPU has.
    """

    __slots__ = ("_free",)

    def __init__(self, count: int) -> None:
        if count < 0:
            raise ValueError(f"a node has >= 0 GPUs, got {count}")
        self._free = [UNIT] * count  # free units per GPU id

    @property
    def count(self) -> int:
        return len(self._free)

    def free_units(self) -> tuple[int, ...]:
        """Free units per GPU id."""
        return tuple(self._free)

    def allocate(self, units: int) -> tuple[int, ...] | None:
        """GPU ids for ``units`` (``()`` for 0), or None when they are not free now.
        ``ValueError`` for a demand no allocator could meet (above 1 GPU, not whole)."""
        free = self._free
        if units <= 0:
            if units < 0:
                raise ValueError(f"cannot allocate {units} GPU units")
            return ()
        if units >= UNIT:
            if units % UNIT:
                raise ValueError(
                    f"{units / UNIT:g} GPUs: above 1 GPU a demand must be whole GPUs"
                )
            need = units // UNIT
            ids = [i for i, f in enumerate(free) if f == UNIT][:need]
            if len(ids) < need:
                return None
            for i in ids:
                free[i] = 0
            return tuple(ids)
        best = -1
        for i, f in enumerate(free):
            if f >= units and (best < 0 or f < free[best]):
                best = i
        if best < 0:
            return None
        free[best] -= units
        return (best,)

    def can_allocate(self, units: int) -> bool:
        """Would :meth:`allocate` succeed now (without allocating)?"""
        if units <= 0:
            return units == 0
        if units >= UNIT:
            return units % UNIT == 0 and sum(1 for f in self._free if f == UNIT) >= units // UNIT
        return any(f >= units for f in self._free)

    def release(self, ids: Sequence[int], units: int) -> None:
        """Give back what ``allocate(units)`` returned as ``ids``; ``ValueError`` (and no
        change) when that does not match what could have been handed out."""
        free = self._free
        if units <= 0:
            if ids or units < 0:
                raise ValueError(f"releasing GPU ids {tuple(ids)} for {units} units")
            return
        share = UNIT if units >= UNIT else units
        expect = units // UNIT if units >= UNIT else 1
        if len(ids) != expect or len(set(ids)) != len(ids):
            raise ValueError(f"releasing GPU ids {tuple(ids)} does not match {units} units")
        for i in ids:
            if not 0 <= i < len(free) or free[i] + share > UNIT:
                raise ValueError(f"GPU {i} was not allocated {share} units; cannot release")
        for i in ids:
            free[i] += share

    def __repr__(self) -> str:
        return f"GpuAllocator(free={[f / UNIT for f in self._free]})"
