"""Placement groups: bundles of resources reserved on nodes together, all or none.

A group is a list of bundles (``Resources``) and a strategy:

- ``STRICT_PACK``: every bundle on one node.
- ``PACK``: as few nodes as possible (one when the sum fits a node, else first-fit decreasing,
  filling the nodes the group already uses before opening another).
- ``STRICT_SPREAD``: every bundle on a different node.
- ``SPREAD``: different nodes where possible, shared ones otherwise.

:func:`plan_group` is pure: it returns a :class:`GroupPlan` (a node per bundle) computed
against the nodes' free resources, ``Wait`` when the cluster could hold the group but not now,
or ``Infeasible`` when no state of the live cluster could (a bundle larger than every node;
STRICT_PACK's sum larger than every node; STRICT_SPREAD with fewer live nodes able to hold a
bundle than bundles; PACK/SPREAD when even the idle cluster cannot hold them). A plan is never
partial. :func:`reserve_group` then applies it to the view in one step, all or nothing, and
:func:`release_group` gives it back.

Once reserved, :class:`~actorflow.placement.reservations.GroupReservations` (re-exported
here) keeps each bundle as a resource pool of its own.

How: STRICT_SPREAD places the bundles with the fewest candidate nodes first, each on the least
busy node left, and falls back to an exact bipartite matching. When greedy placement fails, PACK
and SPREAD search the assignments exhaustively (nodes with identical free resources are tried
once) within a step budget, for groups of at most 64 bundles; a search that runs out of budget
(or is not run) answers ``Wait`` rather than ``Infeasible``: that verdict is only given when it
is proven. Candidate nodes come from the view's per-shape indexes, so a plan does not walk every
node in the common case.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from actorflow.placement.policy import (
    ClusterView,
    Infeasible,
    Wait,
    gpu_demand_error,
    infeasible_message,
)
from actorflow.placement.reservations import BundleView, GroupReservations
from actorflow.placement.resources import Resources
from actorflow.placement.strategies import GroupStrategy, parse_group_strategy
from actorflow.placement.view import NodeEntry

__all__ = [
    "BundleView",
    "GroupPlan",
    "GroupReservations",
    "parse_bundles",
    "plan_group",
    "release_group",
    "reserve_group",
]

#: nodes tried by the exhaustive search before it gives up: on the free resources now (done
#: again whenever the group is re-planned) and on the idle cluster (only to prove infeasibility)
SEARCH_BUDGET_NOW: Final = 2_000
SEARCH_BUDGET_IDLE: Final = 20_000
_SCAN_NOW: Final = 256  # candidates per bundle the search looks at on the free resources
_SEARCH_MAX_BUNDLES: Final = 64  # larger groups are not searched (the search recurses)

Items = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class GroupPlan:
    """Where each bundle goes: ``nodes[i]`` is bundle ``i``'s node."""

    nodes: tuple[str, ...]

    def per_node(self, bundles: Sequence[Resources]) -> dict[str, Resources]:
        """The total to reserve on each node."""
        out: dict[str, dict[str, int]] = {}
        for node_id, bundle in zip(self.nodes, bundles, strict=True):
            acc = out.setdefault(node_id, {})
            for name, units in bundle.items():
                acc[name] = acc.get(name, 0) + units
        return {node_id: Resources(acc) for node_id, acc in out.items()}


def parse_bundles(bundles: object) -> list[Resources]:
    """A user's bundles (``[{"CPU": 1, "GPU": 1}, ...]``) as ``Resources``; ``TypeError`` or
    ``ValueError`` saying what is wrong."""
    if isinstance(bundles, Mapping) or not isinstance(bundles, Sequence) or isinstance(
        bundles, str | bytes
    ):
        raise TypeError(
            'bundles must be a list of dicts such as [{"CPU": 1, "GPU": 1}], got '
            f"{type(bundles).__name__}"
        )
    if not bundles:
        raise ValueError("a placement group needs at least one bundle")
    out = []
    for i, bundle in enumerate(bundles):
        if not isinstance(bundle, Mapping):
            raise TypeError(
                f'bundle {i} must be a dict such as {{"CPU": 1}}, got {type(bundle).__name__}'
            )
        for name, amount in bundle.items():
            if not isinstance(name, str) or isinstance(amount, bool) or not isinstance(
                amount, int | float
            ):
                raise TypeError(
                    f"bundle {i} maps resource names to numbers, got {name!r}: {amount!r}"
                )
        res = Resources.of(bundle)
        if not res:
            raise ValueError(f"bundle {i} is empty: a bundle must reserve something")
        error = gpu_demand_error(res)
        if error is not None:
            raise ValueError(f"bundle {i} {bundle}: {error}")
        out.append(res)
    return out


# -- planning -----------------------------------------------------------------------------------


class _Work:
    """Free resources while planning: each node's (free now, or total when ``idle``) minus what
    this plan has taken so far."""

    __slots__ = ("idle", "taken")

    def __init__(self, idle: bool) -> None:
        self.idle = idle
        self.taken: dict[NodeEntry, dict[str, int]] = {}

    def base(self, n: NodeEntry) -> dict[str, int]:
        return n.total if self.idle else n.avail

    def fits(self, n: NodeEntry, items: Items) -> bool:
        base = n.total if self.idle else n.avail
        taken = self.taken.get(n)
        if taken is None:
            return all(units <= base.get(name, 0) for name, units in items)
        return all(units + taken.get(name, 0) <= base.get(name, 0) for name, units in items)

    def take(self, n: NodeEntry, items: Items) -> None:
        taken = self.taken.setdefault(n, {})
        for name, units in items:
            taken[name] = taken.get(name, 0) + units

    def give(self, n: NodeEntry, items: Items) -> None:
        taken = self.taken[n]
        for name, units in items:
            taken[name] -= units

    def signature(self, n: NodeEntry) -> tuple[tuple[str, int], ...]:
        """Nodes with the same signature and untouched by this plan are interchangeable."""
        return tuple(sorted(self.base(n).items()))


def _size(bundle: Resources) -> tuple[int, int, int]:
    return (bundle["GPU"], bundle["CPU"], sum(bundle.values()))


class _Planner:
    """One ``plan_group`` call (see the module docstring)."""

    def __init__(
        self, bundles: Sequence[Resources], view: ClusterView, exclude: Collection[str]
    ) -> None:
        self.bundles = list(bundles)
        self.items: list[Items] = [tuple(b._d.items()) for b in bundles]
        self.view = view
        self.exclude = exclude
        # largest first: first-fit decreasing, and the search fails fast
        self.order = sorted(range(len(bundles)), key=lambda i: _size(bundles[i]), reverse=True)

    def ok(self, n: NodeEntry) -> bool:
        return not self.exclude or n.node_id not in self.exclude

    def candidates(self, i: int, idle: bool) -> Iterator[NodeEntry]:
        """Nodes that could take bundle ``i`` (free now, least busy first; or when idle)."""
        sh = self.view.shape_index(self.bundles[i])
        nodes: Iterable[NodeEntry] = sh.eligible if idle else sh.ascending()
        return (n for n in nodes if self.ok(n))

    # -- the strategies --

    def strict_pack(self, idle: bool) -> list[NodeEntry] | None:
        """All on one node: the least busy (after the largest bundle) that holds the sum. The
        sum is checked on the largest bundle's candidates instead of being indexed itself:
        groups come in too many sums for an index each."""
        need = tuple(_sum_items(self.items)._d.items())
        work = _Work(idle)
        n = next((n for n in self.candidates(self.order[0], idle) if work.fits(n, need)), None)
        return None if n is None else [n] * len(self.bundles)

    def strict_spread(self, idle: bool) -> list[NodeEntry] | None:
        k = len(self.bundles)
        shapes = dict.fromkeys(self.bundles)  # bundles of one shape share their candidates
        room = {}
        for b in shapes:
            sh = self.view.shape_index(b)
            room[b] = len(sh.eligible) if idle else len(sh.key)
        # greedy, the bundles with the fewest candidate nodes first, each on the least busy
        # node left; one pass over each shape's candidates in all
        used: set[NodeEntry] = set()
        chosen: dict[int, NodeEntry] = {}
        walks: dict[Resources, Iterator[NodeEntry]] = {}
        for i in sorted(range(k), key=lambda i: room[self.bundles[i]]):
            walk = walks.get(self.bundles[i])
            if walk is None:
                walk = walks[self.bundles[i]] = self.candidates(i, idle)
            n = next((n for n in walk if n not in used), None)
            if n is None:
                break
            used.add(n)
            chosen[i] = n
        else:
            return [chosen[i] for i in range(k)]
        # exact: a bipartite matching; k candidates per bundle are enough (a bundle with k of
        # them always finds one that the other k-1 bundles left free)
        lists = {b: list(_take(self.candidates(self.bundles.index(b), idle), k)) for b in shapes}
        if len({n for cands in lists.values() for n in cands}) < k:
            return None
        return _match([lists[b] for b in self.bundles])

    def greedy(self, idle: bool, spread: bool) -> list[NodeEntry] | None:
        work = _Work(idle)
        used: list[NodeEntry] = []
        chosen: dict[int, NodeEntry] = {}
        for i in self.order:
            items = self.items[i]
            n: NodeEntry | None = None
            if not spread:  # PACK: fill the nodes already used first
                n = next((u for u in used if work.fits(u, items)), None)
            if n is None:
                taken = set(used)
                n = next((c for c in self.candidates(i, idle) if c not in taken
                          and work.fits(c, items)), None)
            if n is None and spread:  # SPREAD: share a node when no other is left
                n = next((u for u in used if work.fits(u, items)), None)
            if n is None:
                return None
            work.take(n, items)
            if n not in used:
                used.append(n)
            chosen[i] = n
        return [chosen[i] for i in range(len(self.bundles))]

    def one_node(self) -> list[NodeEntry] | None:
        """PACK: everything on one node when the sum fits one now."""
        return self.strict_pack(idle=False)

    def search(self, idle: bool) -> list[NodeEntry] | bool | None:
        """Any assignment (nodes may be shared): a plan, None when proven impossible, or False
        when the budget ran out first."""
        k = len(self.bundles)
        if k > _SEARCH_MAX_BUNDLES:
            return False
        work = _Work(idle)
        groups: list[list[list[NodeEntry]]] = []  # per bundle: candidate nodes by signature
        complete = True  # every candidate of every bundle is represented
        for i in range(k):
            by_sig: dict[tuple[tuple[str, int], ...], list[NodeEntry]] = {}
            for seen, n in enumerate(self.candidates(i, idle)):
                if not idle and seen == _SCAN_NOW:
                    complete = False
                    break
                group = by_sig.setdefault(work.signature(n), [])
                if len(group) < k:  # k of a kind: one is always left that no bundle took
                    group.append(n)
            groups.append(list(by_sig.values()))
        chosen: dict[int, NodeEntry] = {}
        used: list[NodeEntry] = []
        budget = [SEARCH_BUDGET_IDLE if idle else SEARCH_BUDGET_NOW]

        def options(i: int) -> Iterator[NodeEntry]:
            seen = set(used)
            yield from used
            for group in groups[i]:
                fresh = next((n for n in group if n not in seen), None)
                if fresh is not None:
                    yield fresh

        def place(pos: int) -> bool | None:
            if pos == k:
                return True
            i = self.order[pos]
            items = self.items[i]
            for n in list(options(i)):
                budget[0] -= 1
                if budget[0] < 0:
                    return None
                if not work.fits(n, items):
                    continue
                work.take(n, items)
                new = n not in used
                if new:
                    used.append(n)
                chosen[i] = n
                found = place(pos + 1)
                if found is not False:
                    return found
                work.give(n, items)
                if new:
                    used.pop()
            return False

        found = place(0)
        if found is None or (found is False and not complete):
            return False
        if not found:
            return None
        return [chosen[i] for i in range(k)]


def _take(it: Iterator[NodeEntry], k: int) -> Iterator[NodeEntry]:
    for _, n in zip(range(k), it, strict=False):
        yield n


def _match(cands: list[list[NodeEntry]]) -> list[NodeEntry] | None:
    """A distinct node per bundle from its candidates, or None: Kuhn's augmenting paths, with
    an explicit stack (a group may have more bundles than Python's recursion limit)."""
    owner: dict[NodeEntry, int] = {}
    for root in sorted(range(len(cands)), key=lambda i: len(cands[i])):  # tightest first
        seen: set[NodeEntry] = set()
        stack: list[tuple[int, Iterator[NodeEntry]]] = [(root, iter(cands[root]))]
        path: list[NodeEntry] = []  # path[j]: the node stack[j] reaches stack[j + 1] through
        while stack:
            it = stack[-1][1]
            n = next((c for c in it if c not in seen), None)
            if n is None:  # a dead end: back up
                stack.pop()
                if path:
                    path.pop()
                continue
            seen.add(n)
            held_by = owner.get(n)
            if held_by is None:  # free: every bundle on the path moves one node along
                for (b, _), node in zip(stack, [*path, n], strict=True):
                    owner[node] = b
                break
            path.append(n)
            stack.append((held_by, iter(cands[held_by])))
        else:
            return None
    out: dict[int, NodeEntry] = {i: n for n, i in owner.items()}
    return [out[i] for i in range(len(cands))]


def _sum_items(items: Iterable[Items]) -> Resources:
    acc: dict[str, int] = {}
    for bundle in items:
        for name, units in bundle:
            acc[name] = acc.get(name, 0) + units
    return Resources(acc)


def plan_group(
    bundles: Sequence[Resources],
    strategy: GroupStrategy | str,
    view: ClusterView,
    *,
    name: str | None = None,
    exclude_nodes: Collection[str] = (),
) -> GroupPlan | Wait | Infeasible:
    """Where to reserve ``bundles`` under ``strategy`` now (see the module docstring). Pure:
    the view is not changed; apply a plan with :func:`reserve_group`. ``exclude_nodes`` keeps
    nodes out of the plan (e.g. the surviving nodes of a STRICT_SPREAD group whose lost bundles
    are re-planned)."""
    strat = parse_group_strategy(strategy)
    what = f"placement group {name!r}" if name else "placement group"
    if not bundles:
        raise ValueError("a placement group needs at least one bundle")
    planner = _Planner(bundles, view, exclude_nodes)
    if not any(n.alive and planner.ok(n) for n in view.entries.values()):
        return Wait("no live node in the cluster")
    for i, bundle in enumerate(bundles):  # each bundle must fit some node
        error = gpu_demand_error(bundle)
        if error is not None:
            return Infeasible(f"{what}: bundle {i} needs {bundle.to_amounts()}; {error}")
        if next(planner.candidates(i, True), None) is None:
            return Infeasible(infeasible_message(
                f"{what}: bundle {i}", bundle, _totals(planner), lower=f"Shrink bundle {i}",
            ))

    need = _sum_items(planner.items)
    total_sum, free_sum = view.sums()
    # necessary conditions, over the whole cluster (exclusions make the sums over-count)
    free_ok = bool(exclude_nodes) or all(u <= free_sum.get(r, 0) for r, u in need.items())
    idle_ok = bool(exclude_nodes) or all(u <= total_sum.get(r, 0) for r, u in need.items())
    nodes: list[NodeEntry] | None = None
    if strat == "STRICT_PACK":
        if free_ok:
            nodes = planner.strict_pack(idle=False)
        if nodes is None and planner.strict_pack(idle=True) is None:
            return Infeasible(infeasible_message(
                f"{what} (STRICT_PACK: all {len(bundles)} bundles on one node)", need,
                _totals(planner), lower="Use fewer or smaller bundles, or strategy PACK,",
            ))
    elif strat == "STRICT_SPREAD":
        if free_ok:
            nodes = planner.strict_spread(idle=False)
        if nodes is None and planner.strict_spread(idle=True) is None:
            able = {n for b in dict.fromkeys(bundles)
                    for n in planner.candidates(bundles.index(b), True)}
            return Infeasible(
                f"{what} needs {len(bundles)} different nodes (STRICT_SPREAD) that can each "
                f"hold its bundle {[b.to_amounts() for b in bundles]}; {len(able)} live "
                f"node(s) can. Add nodes, use fewer bundles, or use strategy SPREAD."
            )
    else:
        spread = strat == "SPREAD"
        if free_ok:
            nodes = None if spread else planner.one_node()
            if nodes is None:
                nodes = planner.greedy(idle=False, spread=spread)
            if nodes is None:
                found = planner.search(idle=False)
                nodes = found if isinstance(found, list) else None
        if nodes is None and (not idle_ok or _never_fits(planner)):
            return Infeasible(
                f"{what} needs {[b.to_amounts() for b in bundles]} (in all "
                f"{need.to_amounts()}); even the idle cluster, "
                f"{Resources(total_sum).to_amounts()} over {len(list(_totals(planner)))} live "
                "node(s), cannot hold these bundles. Use fewer or smaller bundles, or add nodes."
            )
    if nodes is None:
        return Wait(
            f"{what} ({strat}, {len(bundles)} bundle(s)) does not fit the free resources now"
        )
    return GroupPlan(tuple(n.node_id for n in nodes))


def _totals(planner: _Planner) -> Iterator[Resources]:
    return (n.total_r for n in planner.view.alive_entries() if planner.ok(n))


def _never_fits(planner: _Planner) -> bool:
    """Proven: no state of the live cluster can hold the bundles (nodes may be shared)."""
    if planner.greedy(idle=True, spread=False) is not None:
        return False
    return planner.search(idle=True) is None


def reserve_group(view: ClusterView, bundles: Sequence[Resources], plan: GroupPlan) -> None:
    """Take ``plan``'s bundles from the view's free resources, all or nothing: ``ValueError``
    (and no change) when a node no longer has its share free or is dead."""
    per_node = plan.per_node(bundles)
    for node_id, need in per_node.items():
        if not view.fits_now(node_id, need):
            raise ValueError(
                f"the plan is stale: node {node_id!r} cannot reserve {need.to_amounts()} now; "
                "plan the group again"
            )
    for node_id, need in per_node.items():
        view.grant(node_id, need)


def release_group(view: ClusterView, bundles: Sequence[Resources], plan: GroupPlan) -> None:
    """Give a reserved group's resources back (nodes no longer in the view are skipped)."""
    for node_id, need in plan.per_node(bundles).items():
        if node_id in view:
            view.release(node_id, need)
