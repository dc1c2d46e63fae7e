"""choose_node and ClusterView: every policy and its edge cases, without processes; and the
fast indexes checked against a brute-force model under random operations."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pl_support import R, check_default, cluster, fits, same

from actorflow.placement.policy import (
    ClusterView,
    Infeasible,
    NodeView,
    Place,
    Wait,
    choose_node,
)
from actorflow.placement.resources import Resources
from actorflow.placement.strategies import NodeAffinity, PlacementGroupStrategy

CPU1 = R(CPU=1)


def place(view: ClusterView, demand: Resources, strategy: object = "DEFAULT",
          local: str | None = None, **kw: object) -> str:
    """Decide, expect a Place, grant it; the node id."""
    decision = choose_node(demand, view, strategy, local_node_id=local, **kw)  # type: ignore[arg-type]
    assert isinstance(decision, Place), decision
    view.grant(decision.node_id, demand)
    return decision.node_id


# -- DEFAULT --------------------------------------------------------------------------------------


def test_default_prefers_local_then_packs_then_spreads() -> None:
    view = same(3, CPU=4)
    got = [place(view, CPU1, local="n1") for _ in range(8)]
    # local while <= 50% after the grant; then the busiest node still under the threshold
    # (n0 twice, then n2 twice); then the least busy node, the local one on ties
    assert got == ["n1", "n1", "n0", "n0", "n2", "n2", "n1", "n0"]


def test_default_without_local_packs_the_busiest_node_under_the_threshold() -> None:
    view = same(4, CPU=10)
    for _ in range(3):
        view.grant("n2", CPU1)
    assert [place(view, CPU1) for _ in range(3)] == ["n2", "n2", "n0"]


def test_default_threshold_counts_after_the_grant() -> None:
    view = cluster({"CPU": 1}, {"CPU": 8})
    # the 1-CPU local node would be 100% used: the policy packs onto n1 instead
    assert place(view, CPU1, local="n0") == "n1"


def test_utilization_is_the_critical_resource() -> None:
    view = cluster({"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1})
    view.grant("n0", R(GPU=1))  # n0's GPU is all used: utilization 1.0 though CPUs are idle
    assert place(view, CPU1, local="n0") == "n1"


def test_default_falls_back_to_the_least_busy_node() -> None:
    view = same(3, CPU=4)
    for node, k in (("n0", 3), ("n1", 2), ("n2", 3)):
        for _ in range(k):
            view.grant(node, CPU1)
    assert place(view, CPU1, local="n0") == "n1"


def test_spread_threshold_one_packs_the_local_node_full() -> None:
    view = same(2, CPU=4, threshold=1.0)
    assert [place(view, CPU1, local="n1") for _ in range(5)] == ["n1"] * 4 + ["n0"]


def test_spread_threshold_zero_spreads() -> None:
    view = same(3, CPU=4, threshold=0.0)
    assert sorted(place(view, CPU1, local="n1") for _ in range(3)) == ["n0", "n1", "n2"]


@pytest.mark.parametrize("thr", [0.3, 0.31, 0.7, 0.0, 1.0])
def test_a_threshold_other_than_the_views_is_exact(thr: float) -> None:
    view = same(3, CPU=10)
    rng = random.Random(7)
    for _ in range(40):
        local = rng.choice(["n0", "n1", "n2", None])
        decision = choose_node(CPU1, view, "DEFAULT", local_node_id=local, spread_threshold=thr)
        if not isinstance(decision, Place):
            break
        check_default(view, CPU1, decision.node_id, local, thr)
        view.grant(decision.node_id, CPU1)


def test_zero_demand_is_placed_by_utilization() -> None:
    view = same(2, CPU=2)
    view.grant("n0", R(CPU=2))
    assert place(view, Resources(), local="n0") == "n1"
    assert place(view, Resources(), local="n1") == "n1"


def test_fractions_pack_exactly() -> None:
    view = same(2, CPU=1, threshold=1.0)
    third = R(CPU=0.3333)
    assert [place(view, third, local="n0") for _ in range(4)] == ["n0", "n0", "n0", "n1"]
    assert view.node("n0").available == R(CPU=0.0001)


def test_wait_when_feasible_but_busy() -> None:
    view = same(2, CPU=1)
    place(view, CPU1)
    place(view, CPU1)
    decision = choose_node(CPU1, view, "DEFAULT")
    assert isinstance(decision, Wait)
    assert "2 live node(s)" in decision.reason
    view.release("n1", CPU1)
    assert choose_node(CPU1, view, "DEFAULT") == Place("n1")


def test_infeasible_message_names_the_demand_and_the_largest_node() -> None:
    view = cluster({"CPU": 4, "GPU": 1}, {"CPU": 2})
    decision = choose_node(R(GPU=2), view, "DEFAULT")
    assert decision == Infeasible(
        "task needs {'GPU': 2.0}; the largest node has {'CPU': 4.0, 'GPU': 1.0}. "
        "Lower num_gpus or add a node with 2 GPUs."
    )


def test_infeasible_largest_node_is_the_closest_one() -> None:
    view = cluster({"CPU": 64}, {"CPU": 4, "GPU": 1}, {"CPU": 8})
    decision = choose_node(R(CPU=2, GPU=2), view, "SPREAD", what="task 'train'")
    assert isinstance(decision, Infeasible)
    assert decision.message.startswith(
        "task 'train' needs {'CPU': 2.0, 'GPU': 2.0}; the largest node has {'CPU': 4.0, 'GPU': 1.0}"
    )


@pytest.mark.parametrize(
    ("demand", "advice"),
    [
        (R(CPU=8), "Lower num_cpus or add a node with 8 CPUs."),
        (R(CPU=1, ssd=2), "Lower resources['ssd'] or add a node with ssd=2."),
        (R(memory=2048), "Lower memory or add a node with 2048 bytes of memory."),
        (R(CPU=8, GPU=1, ssd=1),
         "Lower num_cpus, num_gpus and resources['ssd'] or add a node with 8 CPUs, 1 GPU and "
         "ssd=1."),
    ],
)
def test_infeasible_advice(demand: Resources, advice: str) -> None:
    view = cluster({"CPU": 4, "memory": 1024})
    decision = choose_node(demand, view, "DEFAULT")
    assert isinstance(decision, Infeasible)
    assert decision.message.endswith(advice)


def test_more_than_one_gpu_must_be_whole() -> None:
    view = cluster({"CPU": 4, "GPU": 4})
    for strategy in ("DEFAULT", "SPREAD", NodeAffinity("n0")):
        decision = choose_node(R(GPU=1.5), view, strategy)
        assert isinstance(decision, Infeasible)
        assert "num_gpus=1 or 2" in decision.message
    assert isinstance(choose_node(R(GPU=0.5), view, "DEFAULT"), Place)
    assert isinstance(choose_node(R(GPU=2), view, "DEFAULT"), Place)


def test_no_live_node_is_a_wait_not_a_verdict() -> None:
    assert isinstance(choose_node(CPU1, ClusterView(), "DEFAULT"), Wait)
    view = same(1, CPU=4)
    view.set_alive("n0", False)
    assert choose_node(CPU1, view, "SPREAD") == Wait("no live node in the cluster")


def test_dead_nodes_do_not_count_for_feasibility() -> None:
    view = cluster({"GPU": 2}, {"CPU": 4})
    view.set_alive("n0", False)
    assert isinstance(choose_node(R(GPU=2), view, "DEFAULT"), Infeasible)
    view.set_alive("n0", True)
    assert choose_node(R(GPU=2), view, "DEFAULT") == Place("n0")


# -- SPREAD ---------------------------------------------------------------------------------------


def test_spread_visits_every_node_in_turn() -> None:
    view = same(5, CPU=100)
    assert [place(view, CPU1, "SPREAD") for _ in range(10)] == [f"n{i % 5}" for i in range(10)]


def test_spread_round_robins_even_without_grants() -> None:
    view = same(4, CPU=1)
    got = [choose_node(CPU1, view, "SPREAD") for _ in range(8)]
    assert [d.node_id for d in got if isinstance(d, Place)] == [f"n{i % 4}" for i in range(8)]


def test_spread_uses_small_nodes_too() -> None:
    view = cluster({"CPU": 100}, {"CPU": 2})
    assert [place(view, CPU1, "SPREAD") for _ in range(4)] == ["n0", "n1", "n0", "n1"]
    assert [place(view, CPU1, "SPREAD") for _ in range(2)] == ["n0", "n0"]  # n1 is full


def test_spread_skips_nodes_that_cannot_hold_the_demand() -> None:
    view = cluster({"CPU": 4}, {"CPU": 4, "GPU": 1}, {"CPU": 4}, {"CPU": 4, "GPU": 1})
    got = {place(view, R(GPU=0.25), "SPREAD") for _ in range(6)}
    assert got == {"n1", "n3"}


def test_spread_waits_then_fails_when_nothing_fits() -> None:
    view = same(2, CPU=1)
    place(view, CPU1, "SPREAD")
    place(view, CPU1, "SPREAD")
    assert isinstance(choose_node(CPU1, view, "SPREAD"), Wait)
    assert isinstance(choose_node(R(CPU=2), view, "SPREAD"), Infeasible)


def test_spread_with_mostly_full_nodes_still_finds_the_free_one() -> None:
    view = same(100, CPU=1)
    for i in range(100):
        if i != 77:
            view.grant(f"n{i}", CPU1)
    assert choose_node(CPU1, view, "SPREAD") == Place("n77")


def test_spread_busy_round_robins_over_busy_nodes_too() -> None:
    """The Placement actor's SPREAD: every node that can hold the demand gets its turn, busy or
    not (the work queues there), where plain SPREAD skips the busy ones."""
    view = same(3, CPU=1)
    view.grant("n1", CPU1)
    got = [choose_node(CPU1, view, "SPREAD", spread_busy=True) for _ in range(6)]
    assert got == [Place(f"n{i % 3}") for i in range(6)]
    plain = [choose_node(CPU1, view, "SPREAD") for _ in range(4)]
    assert all(isinstance(d, Place) and d.node_id != "n1" for d in plain), plain


def test_spread_busy_skips_nodes_that_cannot_hold_the_demand_and_dead_ones() -> None:
    view = cluster({"CPU": 4}, {"CPU": 4, "GPU": 1}, {"CPU": 4}, {"CPU": 4, "GPU": 1},
                   {"CPU": 4, "GPU": 1})
    view.grant("n3", R(GPU=1))  # busy: still in the round
    view.set_alive("n4", False)
    got = [choose_node(R(GPU=1), view, "SPREAD", spread_busy=True) for _ in range(4)]
    assert got == [Place("n1"), Place("n3"), Place("n1"), Place("n3")]


def test_spread_busy_verdicts() -> None:
    view = same(2, CPU=1)
    view.grant("n0", CPU1)
    view.grant("n1", CPU1)
    assert isinstance(choose_node(CPU1, view, "SPREAD", spread_busy=True), Place)
    assert isinstance(choose_node(R(CPU=2), view, "SPREAD", spread_busy=True), Infeasible)
    assert isinstance(choose_node(R(GPU=1.5), view, "SPREAD", spread_busy=True), Infeasible)
    view.set_alive("n0", False)
    view.set_alive("n1", False)
    assert choose_node(CPU1, view, "SPREAD", spread_busy=True) == Wait(
        "no live node in the cluster")


# -- NodeAffinity ---------------------------------------------------------------------------------


def test_hard_affinity() -> None:
    view = same(2, CPU=2)
    hard = NodeAffinity("n1")
    assert place(view, CPU1, hard, local="n0") == "n1"
    assert place(view, CPU1, hard) == "n1"
    decision = choose_node(CPU1, view, hard)
    assert isinstance(decision, Wait)
    assert "NodeAffinity" in decision.reason


def test_hard_affinity_to_a_dead_unknown_or_small_node_is_infeasible() -> None:
    view = same(2, CPU=2)
    view.set_alive("n1", False)
    dead = choose_node(CPU1, view, NodeAffinity("n1"))
    assert isinstance(dead, Infeasible)
    assert "which is dead" in dead.message and "soft=True" in dead.message
    unknown = choose_node(CPU1, view, NodeAffinity("nope"))
    assert isinstance(unknown, Infeasible)
    assert "not in the cluster" in unknown.message
    small = choose_node(R(CPU=3), view, NodeAffinity("n0"))
    assert isinstance(small, Infeasible)
    assert "node 'n0' (NodeAffinity) has {'CPU': 2.0}" in small.message
    assert "add a node with 3 CPUs" in small.message


def test_soft_affinity_prefers_the_node_else_default() -> None:
    view = same(3, CPU=2)
    soft = NodeAffinity("n2", soft=True)
    assert [place(view, CPU1, soft, local="n0") for _ in range(3)] == ["n2", "n2", "n0"]
    view.set_alive("n2", False)
    assert place(view, CPU1, soft, local="n1") == "n1"
    assert place(view, CPU1, NodeAffinity("nope", soft=True), local="n1") == "n1"
    assert place(view, CPU1, NodeAffinity("n0", soft=True)) == "n0"  # n0 has 1 CPU free
    assert isinstance(choose_node(R(CPU=3), view, NodeAffinity("n0", soft=True)), Infeasible)


# -- placement groups through choose_node ---------------------------------------------------------


@dataclass(frozen=True)
class FakeGroup:
    id: str


def test_placement_group_strategy_needs_the_reservations() -> None:
    view = same(1, CPU=2)
    with pytest.raises(TypeError, match="groups="):
        choose_node(CPU1, view, PlacementGroupStrategy(FakeGroup("g")))


def test_invalid_strategies_raise() -> None:
    view = same(1, CPU=2)
    with pytest.raises(ValueError, match="unknown scheduling_strategy"):
        choose_node(CPU1, view, "PACK")
    with pytest.raises(TypeError, match="scheduling_strategy must be"):
        choose_node(CPU1, view, 3)


# -- the view -------------------------------------------------------------------------------------


def test_grant_and_release_refuse_without_changing_anything() -> None:
    view = same(1, CPU=2, GPU=1)
    view.grant("n0", R(CPU=1.5, GPU=0.5))
    before = view.node("n0")
    with pytest.raises(ValueError, match="cannot grant"):
        view.grant("n0", R(CPU=0.5, GPU=0.75))
    with pytest.raises(ValueError, match="more free than its total"):
        view.release("n0", R(CPU=0.5, GPU=0.75))
    assert view.node("n0") == before
    with pytest.raises(KeyError, match="no node 'zz'"):
        view.grant("zz", CPU1)
    view.set_alive("n0", False)
    with pytest.raises(ValueError, match="dead"):
        view.grant("n0", R(CPU=0.5))


def test_set_available_is_seen_by_the_next_decision() -> None:
    view = same(2, CPU=4)
    view.set_available("n0", R(CPU=0))
    assert place(view, CPU1, local="n0") == "n1"
    view.set_available("n0", R(CPU=4))
    assert place(view, CPU1, local="n0") == "n0"
    assert view.available_resources() == R(CPU=6)


def test_membership_changes() -> None:
    view = same(2, CPU=4)
    assert place(view, CPU1, local="n1") == "n1"
    view.add_node(NodeView("n1", R(CPU=4, GPU=1), R(CPU=4, GPU=1)))  # replaced, idle
    assert view.node("n1").available == R(CPU=4, GPU=1)
    assert place(view, R(GPU=1), local="n0") == "n1"
    view.remove_node("n1")
    view.remove_node("n1")  # no-op
    assert "n1" not in view and len(view) == 1
    assert isinstance(choose_node(R(GPU=1), view, "DEFAULT"), Infeasible)
    assert view.total_resources() == R(CPU=4)


def test_sums_and_statistics() -> None:
    view = cluster({"CPU": 4, "GPU": 2}, {"CPU": 2})
    view.grant("n0", R(CPU=1, GPU=0.5))
    view.set_available("n1", R(CPU=0.5))
    assert view.total_resources() == R(CPU=6, GPU=2)
    assert view.available_resources() == R(CPU=3.5, GPU=1.5)
    view.set_alive("n1", False)
    assert view.available_resources() == R(CPU=3, GPU=1.5)
    view.release("n1", R(CPU=0.5))  # a dead node's release leaves the live sums alone
    assert view.available_resources() == R(CPU=3, GPU=1.5)
    stats = view.statistics()
    assert (stats.nodes, stats.alive) == (2, 1)
    with pytest.raises(ValueError, match="spread_threshold"):
        ClusterView(spread_threshold=-1)
    with pytest.raises(ValueError, match="spread_threshold"):
        choose_node(R(CPU=1), view, "DEFAULT", spread_threshold=-0.1)


def test_many_shapes_and_a_long_log_stay_consistent() -> None:
    """More shapes than the index keeps, and far more changes than nodes between two queries
    of a rare shape: both force rebuilds, which must agree with the model."""
    view = same(20, CPU=8)
    rng = random.Random(3)
    held: list[tuple[str, Resources]] = []
    shapes = [R(CPU=k / 100) for k in range(1, 101)]
    rare = R(CPU=3)
    for step in range(3000):
        demand = rng.choice(shapes)
        local = f"n{rng.randrange(20)}"
        decision = choose_node(demand, view, "DEFAULT", local_node_id=local)
        if isinstance(decision, Place):
            check_default(view, demand, decision.node_id, local, 0.5)
            view.grant(decision.node_id, demand)
            held.append((decision.node_id, demand))
        if held and rng.random() < 0.45:
            view.release(*held.pop(rng.randrange(len(held))))
        if step % 500 == 0:
            decision = choose_node(rare, view, "DEFAULT")
            if isinstance(decision, Place):
                check_default(view, rare, decision.node_id, None, 0.5)
    assert view.statistics().shapes_indexed <= 64


# -- the indexes against the model ----------------------------------------------------------------

_TOTALS = st.fixed_dictionaries(
    {"CPU": st.sampled_from([1, 2, 4, 8])},
    optional={"GPU": st.sampled_from([1, 2]), "ssd": st.just(1)},
)
_DEMANDS = [R(CPU=1), R(CPU=0.5), R(CPU=2), R(CPU=1, GPU=1), R(GPU=0.25), R(ssd=0.5),
            R(CPU=0.3333), R(GPU=2), R(CPU=16)]


@settings(max_examples=60, deadline=None)
@given(
    totals=st.lists(_TOTALS, min_size=1, max_size=8),
    seed=st.integers(0, 2**32 - 1),
    thr=st.sampled_from([0.5, 0.25, 0.8, 1.0]),
)
def test_decisions_match_the_model(totals: list[dict[str, float]], seed: int, thr: float) -> None:
    view = cluster(*totals, threshold=thr)
    rng = random.Random(seed)
    ids = [f"n{i}" for i in range(len(totals))]
    held: list[tuple[str, Resources]] = []
    for _ in range(150):
        op = rng.random()
        if op < 0.03:
            view.set_alive(rng.choice(ids), rng.random() < 0.6)
            held = [(n, d) for n, d in held if view.node(n).alive]
            continue
        if held and op < 0.35:
            view.release(*held.pop(rng.randrange(len(held))))
            continue
        demand = rng.choice(_DEMANDS)
        strategy = rng.choice(["DEFAULT", "SPREAD", NodeAffinity(rng.choice(ids), soft=True)])
        local = rng.choice([*ids, None])
        decision = choose_node(demand, view, strategy, local_node_id=local)
        alive = [n for n in view.nodes() if n.alive]
        free = [n.node_id for n in alive if fits(demand, n.available)]
        holds = [n.node_id for n in alive if fits(demand, n.total)]
        if isinstance(decision, Place):
            assert decision.node_id in free
            if strategy == "DEFAULT":
                check_default(view, demand, decision.node_id, local, thr)
            if isinstance(strategy, NodeAffinity) and strategy.node_id in free:
                assert decision.node_id == strategy.node_id
            view.grant(decision.node_id, demand)
            held.append((decision.node_id, demand))
        elif isinstance(decision, Wait):
            assert not free and (holds or not alive)
        else:
            assert not holds and alive
