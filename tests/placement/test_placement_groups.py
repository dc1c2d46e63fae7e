"""plan_group, reserve_group / release_group and GroupReservations, without processes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from pl_support import R, cluster, same

import actorflow.placement.groups as groups_mod
from actorflow.placement.groups import (
    GroupPlan,
    GroupReservations,
    parse_bundles,
    plan_group,
    release_group,
    reserve_group,
)
from actorflow.placement.policy import Infeasible, Place, Wait, choose_node
from actorflow.placement.resources import Resources
from actorflow.placement.strategies import PlacementGroupStrategy

CPU1 = R(CPU=1)


def plan(bundles: list[Resources], strategy: str, view: object, **kw: object) -> GroupPlan:
    out = plan_group(bundles, strategy, view, **kw)  # type: ignore[arg-type]
    assert isinstance(out, GroupPlan), out
    return out


# -- strategies -----------------------------------------------------------------------------------


def test_strict_pack_puts_everything_on_one_node() -> None:
    view = cluster({"CPU": 2}, {"CPU": 8}, {"CPU": 4})
    p = plan([R(CPU=2)] * 3, "STRICT_PACK", view)
    assert p.nodes == ("n1",) * 3


def test_strict_pack_waits_or_fails() -> None:
    view = same(2, CPU=4)
    view.grant("n0", CPU1)
    view.grant("n1", CPU1)
    assert isinstance(plan_group([R(CPU=2)] * 2, "STRICT_PACK", view), Wait)
    out = plan_group([R(CPU=2)] * 3, "STRICT_PACK", view, name="big")
    assert isinstance(out, Infeasible)
    assert out.message.startswith(
        "placement group 'big' (STRICT_PACK: all 3 bundles on one node) needs {'CPU': 6.0}; "
        "the largest node has {'CPU': 4.0}."
    )
    assert "strategy PACK" in out.message and "add a node with 6 CPUs" in out.message


def test_pack_uses_one_node_when_the_sum_fits() -> None:
    view = same(3, CPU=8)
    assert len(set(plan([R(CPU=2)] * 4, "PACK", view).nodes)) == 1


def test_pack_uses_as_few_nodes_as_it_can() -> None:
    view = same(4, CPU=4)
    p = plan([R(CPU=2)] * 6, "PACK", view)
    assert sorted(Counter(p.nodes).values()) == [2, 2, 2]


def test_strict_spread_puts_bundles_on_different_nodes() -> None:
    view = same(4, CPU=4)
    p = plan([CPU1] * 4, "STRICT_SPREAD", view)
    assert sorted(p.nodes) == ["n0", "n1", "n2", "n3"]


def test_strict_spread_needs_enough_nodes() -> None:
    view = same(3, CPU=4)
    out = plan_group([CPU1] * 4, "STRICT_SPREAD", view, name="train")
    assert isinstance(out, Infeasible)
    assert "needs 4 different nodes (STRICT_SPREAD)" in out.message
    assert "3 live node(s) can" in out.message
    view.grant("n0", R(CPU=4))  # busy, not gone: wait
    assert isinstance(plan_group([CPU1] * 3, "STRICT_SPREAD", view), Wait)


def test_strict_spread_counts_only_nodes_that_hold_a_bundle() -> None:
    view = cluster({"CPU": 4, "GPU": 1}, {"CPU": 4}, {"CPU": 4}, {"CPU": 4, "GPU": 1})
    assert isinstance(plan_group([R(GPU=1)] * 3, "STRICT_SPREAD", view), Infeasible)
    p = plan([R(GPU=1)] * 2, "STRICT_SPREAD", view)
    assert sorted(p.nodes) == ["n0", "n3"]


def test_strict_spread_finds_the_matching_that_greedy_misses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # each bundle fits two of the three nodes, in a cycle; greedy gives the GPU bundle n1 and
    # the ssd bundle n2 (both less busy than n0, whose CPU is used), and the tpu bundle, which
    # fits only n1 and n2, is left out; the matching moves the GPU bundle to n0
    view = cluster({"GPU": 2, "ssd": 2, "CPU": 1}, {"GPU": 2, "tpu": 2}, {"ssd": 2, "tpu": 2})
    view.grant("n0", CPU1)
    matched = []
    real = groups_mod._match

    def spy(cands: list[list[object]]) -> object:
        out = real(cands)  # type: ignore[arg-type]
        matched.append(out is not None)
        return out

    monkeypatch.setattr(groups_mod, "_match", spy)
    p = plan([R(GPU=1), R(ssd=1), R(tpu=1)], "STRICT_SPREAD", view)
    assert p.nodes == ("n0", "n2", "n1")
    assert matched == [True]


def test_a_strict_spread_group_larger_than_the_recursion_limit() -> None:
    view = cluster(*([{"CPU": 4, "ssd": 1}] * 600 + [{"CPU": 1}] * 600))
    bundles = [CPU1] * 600 + [R(ssd=1)] * 600  # greedy gives the CPU bundles the ssd nodes
    p = plan(bundles, "STRICT_SPREAD", view)
    assert len(set(p.nodes)) == 1200
    assert all(int(node[1:]) < 600 for node in p.nodes[600:])
    assert isinstance(plan_group([CPU1] * 1201, "STRICT_SPREAD", view), Infeasible)
    assert isinstance(plan_group([R(CPU=2)] * 1200, "PACK", view), GroupPlan)
    # each 3-CPU bundle needs an ssd node: 601 cannot fit, but groups of more than 64 bundles
    # are not searched, so that is not proven: the group waits
    assert isinstance(plan_group([R(CPU=3)] * 601, "PACK", view), Wait)


def test_spread_prefers_distinct_nodes_then_shares() -> None:
    view = same(3, CPU=4)
    p = plan([CPU1] * 3, "SPREAD", view)
    assert len(set(p.nodes)) == 3
    p = plan([CPU1] * 5, "SPREAD", view)
    assert len(set(p.nodes)) == 3


def test_search_finds_a_packing_first_fit_decreasing_misses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # two 10-CPU nodes, bundles 5,4,4,3,2,2 (20 in all): first-fit decreasing gets
    # {5,4} + {4,3,2} and has no room for the last 2; the only packings are {5,3,2} + {4,4,2}
    view = same(2, CPU=10)
    bundles = [R(CPU=c) for c in (5, 4, 4, 3, 2, 2)]
    searched = []
    real = groups_mod._Planner.search

    def spy(self: groups_mod._Planner, idle: bool) -> object:
        out = real(self, idle)
        searched.append((idle, out is not None and out is not False))
        return out

    monkeypatch.setattr(groups_mod._Planner, "search", spy)
    for strategy in ("PACK", "SPREAD"):
        p = plan(bundles, strategy, view)
        assert sorted(p.per_node(bundles).values(), key=str) == [R(CPU=10), R(CPU=10)]
    assert searched == [(False, True), (False, True)]


def test_search_proves_infeasibility_or_waits_when_out_of_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    view = same(2, CPU=10)
    bundles = [R(CPU=6)] * 3  # 18 of 20 CPUs, but no node holds two
    assert isinstance(plan_group(bundles, "PACK", view), Infeasible)
    monkeypatch.setattr(groups_mod, "SEARCH_BUDGET_IDLE", 1)
    assert isinstance(plan_group(bundles, "PACK", view), Wait)


def test_pack_and_spread_infeasible_only_when_proven() -> None:
    view = same(3, CPU=4)
    out = plan_group([R(CPU=3)] * 4, "PACK", view)
    assert isinstance(out, Infeasible)
    assert "even the idle cluster" in out.message
    out = plan_group([R(CPU=3)] * 4, "SPREAD", view)
    assert isinstance(out, Infeasible)
    view.grant("n0", R(CPU=2))
    assert isinstance(plan_group([R(CPU=3)] * 3, "PACK", view), Wait)


def test_a_bundle_larger_than_every_node_is_infeasible() -> None:
    view = cluster({"CPU": 4, "GPU": 1}, {"CPU": 8})
    for strategy in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
        out = plan_group([CPU1, R(CPU=2, GPU=2)], strategy, view, name="g")
        assert isinstance(out, Infeasible)
        assert out.message == (
            "placement group 'g': bundle 1 needs {'CPU': 2.0, 'GPU': 2.0}; the largest node "
            "has {'CPU': 4.0, 'GPU': 1.0}. Shrink bundle 1 or add a node with 2 GPUs."
        )


def test_no_live_node_waits() -> None:
    view = same(1, CPU=4)
    view.set_alive("n0", False)
    assert plan_group([CPU1], "PACK", view) == Wait("no live node in the cluster")


def test_exclude_nodes() -> None:
    view = same(3, CPU=4)
    p = plan([CPU1] * 2, "STRICT_SPREAD", view, exclude_nodes={"n0"})
    assert sorted(p.nodes) == ["n1", "n2"]
    assert isinstance(
        plan_group([CPU1] * 3, "STRICT_SPREAD", view, exclude_nodes={"n0"}), Infeasible
    )


def test_bad_input() -> None:
    view = same(1, CPU=4)
    with pytest.raises(ValueError, match="at least one bundle"):
        plan_group([], "PACK", view)
    with pytest.raises(ValueError, match="unknown placement group strategy"):
        plan_group([CPU1], "DEFAULT", view)


# -- reserving ------------------------------------------------------------------------------------


def test_reserve_and_release_are_all_or_nothing() -> None:
    view = same(2, CPU=4)
    bundles = [R(CPU=2)] * 3
    p = plan(bundles, "PACK", view)
    reserve_group(view, bundles, p)
    assert view.available_resources() == R(CPU=2)
    before = view.nodes()
    with pytest.raises(ValueError, match="stale"):
        reserve_group(view, bundles, p)
    assert view.nodes() == before
    release_group(view, bundles, p)
    assert view.available_resources() == R(CPU=8)


def test_release_skips_nodes_that_left() -> None:
    view = same(2, CPU=4)
    bundles = [CPU1] * 2
    p = plan(bundles, "STRICT_SPREAD", view)
    reserve_group(view, bundles, p)
    view.remove_node("n0")
    release_group(view, bundles, p)
    assert view.available_resources() == R(CPU=4)


def test_parse_bundles() -> None:
    assert parse_bundles([{"CPU": 1, "GPU": 0.5}, {"ssd": 1}]) == [R(CPU=1, GPU=0.5), R(ssd=1)]
    with pytest.raises(TypeError, match="list of dicts"):
        parse_bundles({"CPU": 1})
    with pytest.raises(ValueError, match="at least one"):
        parse_bundles([])
    with pytest.raises(TypeError, match="bundle 1 must be a dict"):
        parse_bundles([{"CPU": 1}, 2])
    with pytest.raises(ValueError, match="bundle 0 is empty"):
        parse_bundles([{"CPU": 0}])
    with pytest.raises(ValueError, match="whole number of GPUs"):
        parse_bundles([{"GPU": 1.5}])
    with pytest.raises(TypeError, match="names to numbers"):
        parse_bundles([{"CPU": "1"}])
    with pytest.raises(ValueError, match="must be >= 0"):
        parse_bundles([{"CPU": -1}])


# -- GroupReservations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeGroup:
    id: str


def reserved(view: object, bundles: list[Resources], strategy: str, gid: str = "g"
             ) -> tuple[GroupReservations, GroupPlan]:
    groups = GroupReservations()
    p = plan(bundles, strategy, view)
    reserve_group(view, bundles, p)  # type: ignore[arg-type]
    groups.add(gid, bundles, p, name="train")
    return groups, p


def test_tasks_run_inside_their_bundle() -> None:
    view = same(2, CPU=4)
    groups, p = reserved(view, [R(CPU=2), R(CPU=1)], "STRICT_SPREAD")
    strategy = PlacementGroupStrategy(FakeGroup("g"), 1)
    d = choose_node(CPU1, view, strategy, groups=groups)
    assert d == Place(p.nodes[1], 1)
    groups.grant("g", 1, CPU1)
    w = choose_node(CPU1, view, strategy, groups=groups)
    assert isinstance(w, Wait)
    groups.release("g", 1, CPU1)
    assert choose_node(CPU1, view, strategy, groups=groups) == Place(p.nodes[1], 1)


def test_any_bundle_takes_the_first_with_room() -> None:
    view = same(2, CPU=4)
    groups, _ = reserved(view, [CPU1, R(CPU=2)], "STRICT_SPREAD")
    anyb = PlacementGroupStrategy(FakeGroup("g"))
    got = []
    for _ in range(3):
        d = choose_node(CPU1, view, anyb, groups=groups)
        assert isinstance(d, Place) and d.bundle_index is not None
        groups.grant("g", d.bundle_index, CPU1)
        got.append(d.bundle_index)
    assert got == [0, 1, 1]
    assert isinstance(choose_node(CPU1, view, anyb, groups=groups), Wait)
    assert [b.available for b in groups.bundles("g")] == [Resources(), Resources()]


def test_group_decisions_that_fail() -> None:
    view = same(2, CPU=4)
    groups, _ = reserved(view, [CPU1, R(CPU=2)], "PACK")
    too_big = groups.choose("g", 0, R(CPU=2), what="task 'x'")
    assert isinstance(too_big, Infeasible)
    assert too_big.message.startswith(
        "task 'x' needs {'CPU': 2.0}; bundle 0 of placement group 'train' reserve at most"
    )
    assert isinstance(groups.choose("g", -1, R(CPU=3)), Infeasible)
    out_of_range = groups.choose("g", 2, CPU1)
    assert isinstance(out_of_range, Infeasible)
    assert "has 2 bundle(s); use -1 (any) or 0..1" in out_of_range.message
    assert isinstance(groups.choose("g", 0, R(GPU=1.5)), Infeasible)
    assert isinstance(groups.choose("later", 0, CPU1), Wait)
    with pytest.raises(ValueError, match="cannot grant"):
        groups.grant("g", 0, R(CPU=2))
    with pytest.raises(ValueError, match="would exceed"):
        groups.release("g", 0, CPU1)
    with pytest.raises(KeyError):
        groups.grant("nope", 0, CPU1)
    with pytest.raises(IndexError):
        groups.grant("g", 5, CPU1)


def test_remove_gives_the_reservation_back() -> None:
    view = same(2, CPU=4)
    groups, p = reserved(view, [CPU1, R(CPU=2)], "STRICT_PACK")
    assert view.available_resources() == R(CPU=5)
    groups.grant("g", 0, CPU1)
    back = groups.remove("g")
    assert back == {p.nodes[0]: R(CPU=3)}
    for node_id, res in back.items():
        view.release(node_id, res)
    assert view.available_resources() == R(CPU=8)
    assert "g" not in groups and len(groups) == 0
    removed = groups.choose("g", 0, CPU1)
    assert isinstance(removed, Infeasible) and "was removed" in removed.message
    groups.release("g", 0, CPU1)  # work that ends after the removal: a no-op
    assert groups.remove("g") == {}


def test_lost_bundles() -> None:
    view = same(3, CPU=4)
    groups, p = reserved(view, [CPU1, CPU1], "STRICT_SPREAD")
    assert groups.node_lost(p.nodes[0]) == ["g"]
    assert groups.node_lost(p.nodes[0]) == []
    assert isinstance(groups.choose("g", 0, CPU1), Wait)
    assert groups.choose("g", -1, CPU1) == Place(p.nodes[1], 1)
    assert groups.remove("g") == {p.nodes[1]: CPU1}
    groups2, p2 = reserved(view, [CPU1, CPU1], "STRICT_SPREAD", gid="h")
    groups2.node_lost(p2.nodes[1])
    again = plan([CPU1], "STRICT_SPREAD", view, exclude_nodes={p2.nodes[0], p2.nodes[1]})
    groups2.rehome("h", {1: again.nodes[0]})
    assert groups2.choose("h", 1, CPU1) == Place(again.nodes[0], 1)
    with pytest.raises(ValueError, match="already reserved"):
        groups2.add("h", [CPU1], GroupPlan(("n0",)))
    with pytest.raises(ValueError, match="1 nodes for 2 bundles"):
        groups2.add("k", [CPU1, CPU1], GroupPlan(("n0",)))


def test_a_capturing_strategy_hands_its_children_any_bundle_of_its_group() -> None:
    pg = FakeGroup("g")
    captures = PlacementGroupStrategy(pg, 1, capture_child_tasks=True)
    child = captures.for_children()
    assert child == PlacementGroupStrategy(pg, -1, capture_child_tasks=True)
    assert child is not None and child.for_children() == child  # grandchildren too
    assert PlacementGroupStrategy(pg, 1).for_children() is None
    with pytest.raises(TypeError, match="capture_child_tasks"):
        PlacementGroupStrategy(pg, 0, capture_child_tasks="yes")  # type: ignore[arg-type]
