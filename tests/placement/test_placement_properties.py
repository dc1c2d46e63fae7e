"""Property tests of the placement layer: exact resource arithmetic over a million fractional
grants and releases, plan_group's all-or-nothing contract (checked against brute force on
small clusters), STRICT_SPREAD distinctness, SPREAD coverage, and that a decision does not do
O(nodes) work in the common case (counted, not timed: the benchmarks time it)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pl_support import R, cluster, fits

import actorflow.placement.view as view_mod
from actorflow.placement.groups import (
    GroupPlan,
    plan_group,
    release_group,
    reserve_group,
)
from actorflow.placement.policy import (
    ClusterView,
    Infeasible,
    NodeView,
    Place,
    Wait,
    choose_node,
)
from actorflow.placement.resources import UNIT, Resources
from actorflow.placement.strategies import NodeAffinity

# -- exact arithmetic -----------------------------------------------------------------------------

OPS_PER_EXAMPLE = 200_000
EXAMPLES = 5  # 1,000,000 grants and releases in all


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), nodes=st.integers(1, 4))
@example(seed=12454, nodes=2)  # n0 has one CPU: the default policy places elsewhere
def test_a_million_fractional_grants_and_releases_are_exact(seed: int, nodes: int) -> None:
    rng = random.Random(seed)
    totals = [R(CPU=rng.randint(1, 64), GPU=rng.randint(1, 8), mem=rng.randint(1, 10**6))
              for _ in range(nodes)]
    view = ClusterView(NodeView(f"n{i}", t, t) for i, t in enumerate(totals))
    # fractions down to 1/10,000: 0.1, 0.3333, 0.0007, ... (a float sum of these drifts)
    # fractions down to 1/10,000 (0.1, 0.3333, 0.0007, ...: a float sum of these drifts),
    # each no larger than the smallest node, so an idle node always takes one
    pool = [Resources.of({"CPU": rng.randint(1, UNIT) / UNIT,
                          "GPU": rng.randint(0, UNIT - 1) / UNIT,
                          "mem": rng.randint(0, UNIT - 1) / UNIT}) for _ in range(500)]
    held: list[tuple[int, Resources]] = []
    taken = [dict.fromkeys(("CPU", "GPU", "mem"), 0) for _ in range(nodes)]
    grants = releases = 0

    def release_one() -> None:
        i, res = held.pop(rng.randrange(len(held)))
        view.release(f"n{i}", res)
        for name, units in res.items():
            taken[i][name] -= units

    for step in range(OPS_PER_EXAMPLE):
        if held and (rng.random() < 0.5 or step >= OPS_PER_EXAMPLE - len(held)):
            release_one()
            releases += 1
            continue
        i = rng.randrange(nodes)
        res = rng.choice(pool)
        if view.fits_now(f"n{i}", res):
            view.grant(f"n{i}", res)
            held.append((i, res))
            for name, units in res.items():
                taken[i][name] += units
            grants += 1
        else:  # the node is full: a release instead (an idle node always fits)
            assert held
            release_one()
            releases += 1
        if step % 20_000 == 0:
            for j, t in enumerate(totals):
                expect = {name: t[name] - taken[j][name] for name in t}
                assert view.node(f"n{j}").available == Resources(expect)
    assert grants + releases == OPS_PER_EXAMPLE and not held and grants == releases
    for i, t in enumerate(totals):
        assert view.node(f"n{i}").available == t  # back exactly where it started
    assert view.available_resources() == view.total_resources()
    # and it decides as a fresh view of the same nodes does (not always "n0": the default
    # policy leaves a local node that one CPU would fill past its threshold, as Ray's does)
    fresh = ClusterView(NodeView(f"n{i}", t, t) for i, t in enumerate(totals))
    for demand in (R(CPU=1), pool[0]):
        assert (choose_node(demand, view, "DEFAULT", local_node_id="n0")
                == choose_node(demand, fresh, "DEFAULT", local_node_id="n0"))


@settings(max_examples=50, deadline=None)
@given(amounts=st.lists(st.integers(1, 30_000), min_size=1, max_size=2_000),
       seed=st.integers(0, 1000))
def test_resources_add_and_subtract_exactly(amounts: list[int], seed: int) -> None:
    parts = [Resources.of({"GPU": a / UNIT}) for a in amounts]
    total = Resources()
    for p in parts:
        total = total + p
    assert total["GPU"] == sum(amounts)
    random.Random(seed).shuffle(parts)
    for p in parts:
        total = total - p
    assert total == Resources() and len(total) == 0


# -- plan_group against brute force ---------------------------------------------------------------

_SMALL_TOTALS = st.fixed_dictionaries(
    {"CPU": st.sampled_from([1, 2, 3, 4])}, optional={"GPU": st.sampled_from([1, 2])}
)
_BUNDLE = st.sampled_from([R(CPU=1), R(CPU=2), R(CPU=0.5), R(CPU=1, GPU=1), R(GPU=0.5),
                           R(CPU=3), R(CPU=4, GPU=2)])
_STRATEGY = st.sampled_from(["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"])


def _valid(bundles: Sequence[Resources], nodes: Sequence[str], strategy: str,
           free: dict[str, Resources]) -> bool:
    if strategy == "STRICT_PACK" and len(set(nodes)) != 1:
        return False
    if strategy == "STRICT_SPREAD" and len(set(nodes)) != len(nodes):
        return False
    need: dict[str, Resources] = {}
    for node, b in zip(nodes, bundles, strict=True):
        need[node] = need.get(node, Resources()) + b
    return all(fits(res, free[node]) for node, res in need.items())


def _any_valid(bundles: Sequence[Resources], strategy: str, free: dict[str, Resources]) -> bool:
    return any(_valid(bundles, combo, strategy, free)
               for combo in itertools.product(sorted(free), repeat=len(bundles)))


@settings(max_examples=300, deadline=None)
@given(
    totals=st.lists(_SMALL_TOTALS, min_size=1, max_size=4),
    busy=st.lists(st.tuples(st.integers(0, 3), _BUNDLE), max_size=6),
    dead=st.sets(st.integers(0, 3), max_size=2),
    bundles=st.lists(_BUNDLE, min_size=1, max_size=4),
    strategy=_STRATEGY,
)
def test_plan_group_is_all_or_nothing_and_complete(
    totals: list[dict[str, float]], busy: list[tuple[int, Resources]], dead: set[int],
    bundles: list[Resources], strategy: str,
) -> None:
    view = cluster(*totals)
    for i, res in busy:
        node = f"n{i % len(totals)}"
        if view.fits_now(node, res):
            view.grant(node, res)
    for i in dead:
        if i < len(totals):
            view.set_alive(f"n{i}", False)
    before = view.nodes()
    out = plan_group(bundles, strategy, view)
    assert view.nodes() == before  # planning is pure
    alive = [n for n in before if n.alive]
    free = {n.node_id: n.available for n in alive}
    idle = {n.node_id: n.total for n in alive}
    if isinstance(out, GroupPlan):
        assert len(out.nodes) == len(bundles)
        assert _valid(bundles, out.nodes, strategy, free)
        reserve_group(view, bundles, out)
        per_node = out.per_node(bundles)
        for n in view.nodes():
            assert all(units >= 0 for units in n.available.values())
            want = next(b.available for b in before if b.node_id == n.node_id)
            assert n.available + per_node.get(n.node_id, Resources()) == want
        release_group(view, bundles, out)
        assert view.nodes() == before
    elif isinstance(out, Wait):
        assert not _any_valid(bundles, strategy, free)  # complete on small clusters
        assert not alive or _any_valid(bundles, strategy, idle)
    else:
        assert isinstance(out, Infeasible)
        assert alive and not _any_valid(bundles, strategy, idle)


@settings(max_examples=100, deadline=None)
@given(
    totals=st.lists(st.fixed_dictionaries({"CPU": st.integers(1, 8)},
                                          optional={"GPU": st.integers(1, 4)}),
                    min_size=1, max_size=30),
    bundles=st.lists(st.sampled_from([R(CPU=1), R(CPU=2), R(GPU=1), R(CPU=1, GPU=0.5)]),
                     min_size=1, max_size=12),
    seed=st.integers(0, 1000),
)
def test_strict_spread_bundles_land_on_distinct_nodes(
    totals: list[dict[str, float]], bundles: list[Resources], seed: int
) -> None:
    view = cluster(*totals)
    rng = random.Random(seed)
    for i in range(len(totals)):
        if rng.random() < 0.3:
            view.grant(f"n{i}", R(CPU=1))
    out = plan_group(bundles, "STRICT_SPREAD", view)
    nodes = view.nodes()
    if isinstance(out, GroupPlan):
        assert len(set(out.nodes)) == len(bundles)
        for node, b in zip(out.nodes, bundles, strict=True):
            assert fits(b, view.node(node).available)
    elif isinstance(out, Wait):
        assert not _matchable(bundles, [n.available for n in nodes])
        assert _matchable(bundles, [n.total for n in nodes])
    else:
        assert not _matchable(bundles, [n.total for n in nodes])


def _matchable(bundles: Sequence[Resources], nodes: Sequence[Resources]) -> bool:
    """Whether every bundle gets a node of its own (augmenting paths over all nodes)."""
    owner: dict[int, int] = {}

    def augment(b: int, seen: set[int]) -> bool:
        for j, free in enumerate(nodes):
            if j not in seen and fits(bundles[b], free):
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = b
                    return True
        return False

    return all(augment(b, set()) for b in range(len(bundles)))


# -- SPREAD coverage ------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    totals=st.lists(st.fixed_dictionaries({"CPU": st.integers(2, 64)},
                                          optional={"GPU": st.integers(1, 8)}),
                    min_size=1, max_size=40),
    grant=st.booleans(),
)
def test_spread_uses_every_node_over_n_calls(totals: list[dict[str, float]], grant: bool) -> None:
    view = cluster(*totals)
    demand = R(CPU=1)
    used = set()
    for _ in range(len(totals)):
        decision = choose_node(demand, view, "SPREAD")
        assert isinstance(decision, Place)
        used.add(decision.node_id)
        if grant:
            view.grant(decision.node_id, demand)
    assert used == {f"n{i}" for i in range(len(totals))}


# -- decision cost (counted, not timed) -----------------------------------------------------------


def test_decisions_do_not_walk_every_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """On 1,000 nodes, 5,000 decisions with grants and releases rebuild each shape index
    about once and re-bucket only the nodes that changed: per decision, work is O(shapes),
    not O(nodes)."""
    counts = {"rebuild": 0, "update": 0}
    real_rebuild, real_update = view_mod.ShapeIndex.rebuild, view_mod.ShapeIndex.update

    def rebuild(self: view_mod.ShapeIndex, *args: object) -> None:
        counts["rebuild"] += 1
        real_rebuild(self, *args)  # type: ignore[arg-type]

    def update(self: view_mod.ShapeIndex, n: object) -> None:
        counts["update"] += 1
        real_update(self, n)  # type: ignore[arg-type]

    monkeypatch.setattr(view_mod.ShapeIndex, "rebuild", rebuild)
    monkeypatch.setattr(view_mod.ShapeIndex, "update", update)
    view = cluster(*([{"CPU": 16, "GPU": 2}] * 500 + [{"CPU": 8}] * 500))
    rng = random.Random(0)
    shapes = [R(CPU=1), R(CPU=0.5), R(CPU=2), R(CPU=1, GPU=1), R(GPU=0.25)]
    held: list[tuple[str, Resources]] = []
    decisions = 5_000
    for _ in range(decisions):
        demand = rng.choice(shapes)
        strategy = rng.choice(["DEFAULT", "SPREAD", NodeAffinity(f"n{rng.randrange(1000)}")])
        d = choose_node(demand, view, strategy, local_node_id=f"n{rng.randrange(1000)}")
        if isinstance(d, Place):
            view.grant(d.node_id, demand)
            held.append((d.node_id, demand))
        if held and rng.random() < 0.5:
            view.release(*held.pop(rng.randrange(len(held))))
    building = counts["update"] - counts["rebuild"] * 1000  # at most the rebuilds' share
    assert counts["rebuild"] <= 2 * len(shapes)
    # each grant or release re-buckets its node once per shape
    assert building <= 2 * decisions * len(shapes)
