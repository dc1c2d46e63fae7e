"""Group ``placement``: the placement policy (``actorflow.placement``) on a simulated cluster.

Pure policy code, in this process: no actors, no processes, no event loop. The cluster is a
``ClusterView`` of 1,000 nodes of four kinds (600 x 16 CPU; 250 x 32 CPU + 4 GPU; 100 x 8 CPU
+ ``ssd``; 50 x 64 CPU + 8 GPU), built fresh for each repetition from a seeded RNG, and
pre-filled (untimed) before the timed region.

- ``placement_tasks`` (decisions/s): n decisions ``choose_node(demand, view, strategy)`` over a
  mix of demands (1 CPU; 0.5 CPU; 2 CPU + 4 GiB; 4 CPU; 1 CPU + 1 GPU; 1 CPU + 0.25 GPU; 1 CPU
  + 0.5 ssd; 0.2% infeasible 16 GPUs) and strategies (DEFAULT from a random local node 70%,
  DEFAULT with no local node 5%, SPREAD 15%, NodeAffinity hard 5% / soft 5%). Every ``Place``
  is granted on the view; outstanding grants are released at random so that their number
  follows a sawtooth between 4,000 and 15,000 (the cluster passes from mostly idle to packed
  and back, so DEFAULT both packs and spreads, and some decisions Wait); every 10,000
  decisions a node dies (its grants are dropped) and one comes back. The timed region holds the
  decisions, grants and releases alike; value = n / time. Extras: ``placed``, ``waited``,
  ``infeasible``, ``ops_per_s`` (decisions + grants + releases per second), ``cpu_value``
  (n / CPU seconds of this process: on a shared, loaded machine the wall-clock value drops
  while this does not), ``cpu_s``, ``cpu_us_per_op``. Target: value >= 20,000 decisions/s.
- ``placement_groups`` (groups/s): n placement groups of 1 to 8 bundles (from 1 CPU; 4 CPU;
  2 CPU + 1 GPU; 1 CPU + 0.5 GPU) with a random strategy (PACK, SPREAD, STRICT_PACK,
  STRICT_SPREAD) planned with ``plan_group`` against the same kind of cluster; each plan is
  reserved on the view (``reserve_group``) and live groups are removed at random
  (``release_group``) so that their number follows a sawtooth between 200 and 2,000. value =
  n / time, plans, reservations and removals included. Extras: ``planned``, ``waited``,
  ``infeasible``, ``bundles_mean``, ``cpu_value``, ``cpu_s``, ``cpu_us_per_op``.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

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
from actorflow.placement.resources import Resources
from actorflow.placement.strategies import NodeAffinity
from benchmarks._common import log, meta, sig, summarize

WORKLOADS = ("placement_tasks", "placement_groups")

# name: (unit, n, quick n)
_SPEC: dict[str, tuple[str, int, int]] = {
    "placement_tasks": ("decisions/s", 100_000, 10_000),
    "placement_groups": ("groups/s", 20_000, 2_000),
}
TASKS_TARGET = 20_000.0  # decisions/s
NODES = 1_000
GIB = 1 << 30

# (count, totals) per node kind
_KINDS: tuple[tuple[int, dict[str, float]], ...] = (
    (600, {"CPU": 16, "memory": 64 * GIB}),
    (250, {"CPU": 32, "GPU": 4, "memory": 128 * GIB}),
    (100, {"CPU": 8, "memory": 32 * GIB, "ssd": 1}),
    (50, {"CPU": 64, "GPU": 8, "memory": 512 * GIB}),
)

# (weight, demand)
_DEMANDS: tuple[tuple[float, dict[str, float]], ...] = (
    (40.0, {"CPU": 1}),
    (10.0, {"CPU": 0.5}),
    (10.0, {"CPU": 2, "memory": 4 * GIB}),
    (7.0, {"CPU": 4}),
    (10.0, {"CPU": 1, "GPU": 1}),
    (8.0, {"CPU": 1, "GPU": 0.25}),
    (5.0, {"CPU": 1, "ssd": 0.5}),
    (0.2, {"GPU": 16}),  # no node has 16 GPUs: Infeasible
)

_BUNDLES: tuple[dict[str, float], ...] = (
    {"CPU": 1}, {"CPU": 4}, {"CPU": 2, "GPU": 1}, {"CPU": 1, "GPU": 0.5},
)
_GROUP_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def _cluster(rng: random.Random) -> tuple[ClusterView, list[str]]:
    kinds = [totals for count, totals in _KINDS for _ in range(count)]
    rng.shuffle(kinds)
    nodes = []
    for i, totals in enumerate(kinds):
        res = Resources.of(totals)
        nodes.append(NodeView(f"node-{i:04d}", res, res))
    view = ClusterView(nodes)
    return view, [n.node_id for n in nodes]


def _sawtooth(i: int, low: int, high: int, period: int) -> int:
    """Rises from ``low`` to ``high`` over ``period`` steps, then falls back."""
    phase = i % (2 * period)
    step = phase if phase < period else 2 * period - phase
    return low + (high - low) * step // period


# -- placement_tasks ------------------------------------------------------------------------------


def _tasks_rep(n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    view, ids = _cluster(rng)
    weights = [w for w, _ in _DEMANDS]
    menu = [Resources.of(d) for _, d in _DEMANDS]
    # pre-drawn inputs, so the timed loop measures placement and not the RNG
    demands = rng.choices(menu, weights, k=n)
    strategies: list[Any] = []
    locals_: list[str | None] = []
    for _ in range(n):
        r = rng.random()
        node = rng.choice(ids)
        if r < 0.70:
            strategies.append("DEFAULT")
            locals_.append(node)
        elif r < 0.75:
            strategies.append("DEFAULT")
            locals_.append(None)
        elif r < 0.90:
            strategies.append("SPREAD")
            locals_.append(None)
        else:
            strategies.append(NodeAffinity(node, soft=r >= 0.95))
            locals_.append(None)
    picks = [rng.random() for _ in range(n)]
    low, high, period = 4_000, 15_000, 30_000

    held: list[tuple[str, Resources]] = []
    dead: list[str] = []

    def fill(count: int) -> None:  # untimed: start from a busy cluster
        one = menu[0]
        while len(held) < count:
            node = rng.choice(ids)
            if view.fits_now(node, one):
                view.grant(node, one)
                held.append((node, one))

    fill(low)
    placed = waited = infeasible = grants = releases = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        demand = demands[i]
        decision = choose_node(demand, view, strategies[i], local_node_id=locals_[i])
        if type(decision) is Place:
            view.grant(decision.node_id, demand)
            held.append((decision.node_id, demand))
            placed += 1
            grants += 1
        elif type(decision) is Wait:
            waited += 1
        else:
            infeasible += 1
        cap = _sawtooth(i, low, high, period)
        drop = 1 if picks[i] < 0.5 else 0
        while held and (drop > 0 or len(held) > cap):
            j = rng.randrange(len(held))
            node, res = held[j]
            held[j] = held[-1]
            held.pop()
            view.release(node, res)
            releases += 1
            drop -= 1
        if i % 10_000 == 9_999:  # a node dies, and one comes back
            if dead:
                back = dead.pop()
                view.set_alive(back, True)
                view.set_available(back, view.node(back).total)
            gone = ids[(i // 10_000) % len(ids)]
            view.set_alive(gone, False)
            dead.append(gone)
            held = [(nd, r) for nd, r in held if nd != gone]
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    ops = n + grants + releases
    return {
        "value": n / wall,
        "placed": placed,
        "waited": waited,
        "infeasible": infeasible,
        "ops_per_s": ops / wall,
        "cpu_value": n / cpu,  # decisions per CPU second: what a shared machine's load hides
        "cpu_s": cpu,
        "cpu_us_per_op": cpu / n * 1e6,
        "nodes": NODES,
        "shapes_indexed": view.statistics().shapes_indexed,
    }


# -- placement_groups -----------------------------------------------------------------------------


def _groups_rep(n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    view, _ = _cluster(rng)
    menu = [Resources.of(b) for b in _BUNDLES]
    requests = []
    for _ in range(n):
        k = rng.randint(1, 8)
        bundle = rng.choice(menu)
        # most groups are uniform (as training jobs are); some mix two bundle kinds
        bundles = [bundle] * k if rng.random() < 0.7 else [rng.choice(menu) for _ in range(k)]
        requests.append((bundles, rng.choice(_GROUP_STRATEGIES)))
    picks = [rng.random() for _ in range(n)]
    low, high, period = 200, 2_000, 6_000

    live: list[tuple[list[Resources], GroupPlan]] = []
    planned = waited = infeasible = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n):
        bundles, strategy = requests[i]
        plan = plan_group(bundles, strategy, view)
        if type(plan) is GroupPlan:
            reserve_group(view, bundles, plan)
            live.append((bundles, plan))
            planned += 1
        elif type(plan) is Wait:
            waited += 1
        elif type(plan) is Infeasible:
            infeasible += 1
        cap = _sawtooth(i, low, high, period)
        drop = 1 if picks[i] < 0.3 else 0
        while live and (drop > 0 or len(live) > cap):
            j = rng.randrange(len(live))
            old_bundles, old_plan = live[j]
            live[j] = live[-1]
            live.pop()
            release_group(view, old_bundles, old_plan)
            drop -= 1
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return {
        "value": n / wall,
        "planned": planned,
        "waited": waited,
        "infeasible": infeasible,
        "bundles_mean": statistics.fmean(len(b) for b, _ in requests),
        "cpu_value": n / cpu,
        "cpu_s": cpu,
        "cpu_us_per_op": cpu / n * 1e6,
        "nodes": NODES,
    }


# -- the group's entry point ----------------------------------------------------------------------

_REPS = {"placement_tasks": _tasks_rep, "placement_groups": _groups_rep}


def run(quick: bool, reps: int, only: set[str] | None = None) -> list[dict[str, Any]]:
    """Run the selected placement workloads (all by default); one summarized record each."""
    provenance = meta(quick)
    records = []
    for name in WORKLOADS:
        if only is not None and name not in only:
            continue
        unit, n_full, n_quick = _SPEC[name]
        n = n_quick if quick else n_full
        one_rep = _REPS[name]
        one_rep(min(n, 2_000), 12345)  # warm-up (imports, first indexes)
        runs = []
        for r in range(reps):
            rep = one_rep(n, r)
            runs.append(rep)
            log(f"[{name}] rep {r + 1}/{reps}: {rep['value']:,.0f} {unit}")
        rec = summarize(name, unit, n, runs, provenance)
        if name == "placement_tasks":
            rec["target"] = f"value >= {TASKS_TARGET:,.0f}"
            rec["target_value"] = TASKS_TARGET
            rec["target_met"] = rec["value"] >= TASKS_TARGET
        rec["value"] = sig(rec["value"])
        records.append(rec)
    return records


if __name__ == "__main__":
    import json
    import sys

    for record in run("--quick" in sys.argv, 1):
        print(json.dumps(record))
