"""The cluster as the placement policy sees it: each node's totals and free resources.

:class:`ClusterView` is the placement actor's picture of the cluster. It keeps the books
(``grant``, ``release``, ``set_available``, membership) and, for the policies of
:mod:`actorflow.placement.policy` and :mod:`actorflow.placement.groups`, an index per demand
shape. No processes, no asyncio. Amounts are exact integers in units of ``1/UNIT``
(:mod:`actorflow.placement.resources`).

Utilization
    A node's utilization is its critical resource fraction: the largest ``used / total`` over
    the resources it has. "Utilization after the grant" is that with ``demand`` taken too.

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
    GPU free; the node's :class:`~actorflow.placement.gpus.GpuAllocator` then makes the lease
    wait there.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from actorflow.placement.decisions import Infeasible, Wait, gpu_demand_error
from actorflow.placement.resources import Resources

__all__ = ["BUCKETS", "ClusterView", "NodeEntry", "NodeView", "ShapeIndex", "ViewStatistics"]

BUCKETS: Final = 1024  # utilization resolution of the indexes
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
class ViewStatistics:
    nodes: int
    alive: int
    shapes_indexed: int
    log_length: int


# -- the state the placement's decisions read (policy.py, groups.py) -----------------------------


class NodeEntry:
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


class ShapeIndex:
    """The index of one demand shape (see "Speed" in the module docstring).

    Invariants (after :meth:`ClusterView.shape_index` returns it): ``eligible`` lists the live nodes
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
        self.eligible: list[NodeEntry] = []
        self.eligible_set: set[NodeEntry] = set()
        self.key: dict[NodeEntry, int] = {}
        self.buckets: dict[int, dict[NodeEntry, None]] = {}
        self.mask = 0
        self.epoch = -1
        self.pos = 0
        self.cursor = 0
        self.used = 0
        self.verdicts: dict[str, Wait | Infeasible] = {}  # by ``what``; valid for an epoch

    def rebuild(self, order: Iterable[NodeEntry], epoch: int, pos: int) -> None:
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

    def after(self, n: NodeEntry) -> float:
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

    def update(self, n: NodeEntry) -> None:
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

    def first(self, key: int) -> NodeEntry:
        return next(iter(self.buckets[key]))

    def ascending(self) -> Iterator[NodeEntry]:
        """The nodes that have the demand free, least busy after the grant first."""
        mask = self.mask
        while mask:
            low = mask & -mask
            yield from self.buckets[low.bit_length() - 1]
            mask ^= low

    def descending(self) -> Iterator[NodeEntry]:
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
        #: node id -> its entry (read by the decisions; changed only through this view)
        self.entries: dict[str, NodeEntry] = {}
        self._epoch = 0  # bumped when membership (node set or liveness) changes
        self._log: list[NodeEntry] = []  # nodes whose free resources changed, oldest first
        self._log_base = 0  # position (since the start) of _log[0]
        self._shapes: dict[Resources, ShapeIndex] = {}
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
        self.entries.pop(node.node_id, None)
        self.entries[node.node_id] = NodeEntry(node)
        self._epoch += 1

    def remove_node(self, node_id: str) -> None:
        """Forget a node (a no-op for an unknown id)."""
        if self.entries.pop(node_id, None) is not None:
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
        n = self.entries.get(node_id)
        if n is None or not n.alive:
            return False
        avail = n.avail
        return all(units <= avail.get(name, 0) for name, units in demand._d.items())

    # -- queries --

    def node(self, node_id: str) -> NodeView:
        return self._get(node_id).view()

    def nodes(self) -> list[NodeView]:
        return [n.view() for n in self.entries.values()]

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.entries

    def total_resources(self) -> Resources:
        """The sum of the live nodes' totals."""
        self.sums()
        return Resources(self._total_sum)

    def available_resources(self) -> Resources:
        """The sum of the live nodes' free resources."""
        self.sums()
        return Resources(self._free_sum)

    def statistics(self) -> ViewStatistics:
        return ViewStatistics(
            nodes=len(self.entries),
            alive=sum(1 for n in self.entries.values() if n.alive),
            shapes_indexed=len(self._shapes),
            log_length=len(self._log),
        )

    # -- internals (also used by actorflow.placement.policy and .groups) --

    def _get(self, node_id: str) -> NodeEntry:
        n = self.entries.get(node_id)
        if n is None:
            raise KeyError(f"no node {node_id!r} in the cluster view")
        return n

    def sums(self) -> tuple[dict[str, int], dict[str, int]]:
        """(sum of totals, sum of free resources) over the live nodes."""
        if self._sums_epoch != self._epoch:
            alive = self.alive_entries()
            self._total_sum = _sum(n.total for n in alive)
            self._free_sum = _sum(n.avail for n in alive)
            self._sums_epoch = self._epoch
        return self._total_sum, self._free_sum

    def alive_entries(self) -> list[NodeEntry]:
        """The live nodes' entries, in view order."""
        return [n for n in self.entries.values() if n.alive]

    def _touch(self, n: NodeEntry) -> None:
        if not n.alive:
            return  # no index holds a dead node; membership changes rebuild them anyway
        log = self._log
        log.append(n)
        keep = max(256, len(self.entries))
        if len(log) > 2 * keep:
            drop = len(log) - keep
            del log[:drop]
            self._log_base += drop

    def shape_index(self, demand: Resources) -> ShapeIndex:
        """The up-to-date index of ``demand``'s shape."""
        sh = self._shapes.get(demand)
        end = len(self._log)
        if sh is None:
            if len(self._shapes) >= _MAX_SHAPES:
                oldest = min(self._shapes.values(), key=lambda s: s.used)
                del self._shapes[oldest.demand]
            sh = self._shapes[demand] = ShapeIndex(demand, self.spread_threshold)
            sh.rebuild(self.entries.values(), self._epoch, self._log_base + end)
        elif sh.epoch != self._epoch:
            sh.rebuild(self.entries.values(), self._epoch, self._log_base + end)
        else:
            start = sh.pos - self._log_base
            if start < 0 or end - start > len(self.entries):
                sh.rebuild(self.entries.values(), self._epoch, self._log_base + end)
            elif start < end:
                update = sh.update
                for n in self._log[start:end]:
                    update(n)
                sh.pos = self._log_base + end
        sh.used = next(self._tick)
        return sh


def _sum(bags: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for bag in bags:
        for name, units in bag.items():
            out[name] = out.get(name, 0) + units
    return out
