"""API.md §5 on a real three-node cluster started through the CLI (see conftest.py).

Nodes: head ``{"CPU": 1, "r_a": 1}``, node2 ``{"CPU": 1, "r_b": 1}``, node3 ``{"CPU": 1,
"r_c": 1}`` with two declared GPUs it does not have (``--num-gpus 2``). The driver is this
process. Every test leaves the cluster as it found it (actors killed, groups removed), and the
tests that count free resources first wait until nothing is held.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import sys
import time
from collections import Counter
from typing import Any

import cloudpickle
import numpy as np
import pytest
from mn_support import Cluster, cli, live_nodes, memory_of, nonzero, until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
# workers cannot import this test module: its functions and classes travel by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NODES = [
    {"name": "head", "num_cpus": 1, "resources": {"r_a": 1}},
    {"name": "node2", "num_cpus": 1, "resources": {"r_b": 1}},
    {"name": "node3", "num_cpus": 1, "resources": {"r_c": 1}, "num_gpus": 2},
]
#: "fails fast": the verdict comes well before any wait for resources would end
FAST_S = 10.0


@af.remote
def where() -> str:
    return af.get_runtime_context().node_id


@af.remote
async def where_after(delay: float) -> str:
    await asyncio.sleep(delay)
    return af.get_runtime_context().node_id


@af.remote
class Box:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def where(self) -> str:
        return af.get_runtime_context().node_id

    def add(self, item: Any) -> int:
        self.items.append(item)
        return len(self.items)


@af.remote(resources={"r_c": 1})
async def call_actor_from_node3(box: af.ActorHandle, item: Any) -> tuple[str, str, int]:
    count = await box.add.remote(item)
    return af.get_runtime_context().node_id, await box.where.remote(), count


@af.remote(resources={"r_b": 1})
def make_array(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@af.remote(resources={"r_c": 1})
def summarize(arr: np.ndarray) -> dict[str, Any]:
    return {"node": af.get_runtime_context().node_id, "sum": float(arr.sum()),
            "shape": arr.shape, "first": float(arr[0]), "last": float(arr[-1])}


@af.remote(resources={"r_c": 1})
async def summarize_nested(refs: list[af.ObjectRef]) -> dict[str, Any]:
    arr = await refs[0]  # a ref inside a list is not resolved for the task: it fetches it
    return {"node": af.get_runtime_context().node_id, "sum": float(arr.sum()),
            "shape": arr.shape}


@af.remote(num_cpus=0, num_gpus=1)
async def gpu_probe(hold: float) -> dict[str, Any]:
    cuda_start = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = list(af.get_gpu_ids())
    start = time.monotonic()
    await asyncio.sleep(hold)
    end = time.monotonic()
    return {"ids": ids, "cuda": cuda_start, "cuda_end": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "ids_end": list(af.get_gpu_ids()), "start": start, "end": end,
            "node": af.get_runtime_context().node_id, "pid": os.getpid()}


# -- helpers -------------------------------------------------------------------------------------


async def settled(cluster: Cluster) -> dict[str, float]:
    """Wait until nothing is held anywhere (free == total); returns the totals."""
    async def check() -> dict[str, float] | None:
        total = nonzero(await af.cluster_resources())
        free = nonzero(await af.available_resources())
        return total if total == free else None

    return await until(check, what="every resource to be free again")


def parse_infeasible(exc: BaseException) -> tuple[dict[str, float], dict[str, float]]:
    """The demand and "the largest node" an InfeasibleError names."""
    text = str(exc)
    demand = re.search(r"needs (\{[^}]*\})", text)
    largest = re.search(r"largest node has (\{[^}]*\})", text)
    assert demand and largest, f"the message does not name the demand and the largest node: {text}"
    return ast.literal_eval(demand.group(1)), ast.literal_eval(largest.group(1))


def overlapping(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def max_concurrency(records: list[dict[str, Any]]) -> int:
    events = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    level = best = 0
    for _, step in events:
        level += step
        best = max(best, level)
    return best


# -- the cluster as the CLI started it -------------------------------------------------------------


async def test_three_nodes_with_their_resources(cli_cluster: Cluster) -> None:
    views = live_nodes(await within(af.nodes()))
    by_id = {v["node_id"]: nonzero(v["resources"]) for v in views}
    ids = cli_cluster.ids
    assert by_id == {
        ids["head"]: {"CPU": 1.0, "r_a": 1.0},
        ids["node2"]: {"CPU": 1.0, "r_b": 1.0},
        ids["node3"]: {"CPU": 1.0, "r_c": 1.0, "GPU": 2.0},
    }
    total = await within(af.cluster_resources())
    assert nonzero(total) == {"CPU": 3.0, "GPU": 2.0, "r_a": 1.0, "r_b": 1.0, "r_c": 1.0}
    # each node declares this machine's memory (API.md §12): three nodes here
    assert memory_of(total) == sum(memory_of(v["resources"]) for v in views)
    assert all(memory_of(v["resources"]) > 2**28 for v in views)
    # the CLI sees the same cluster (its state folder says where)
    out = await asyncio.to_thread(cli, ["list", "nodes", "--json"], cli_cluster.cli.env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["node_id"] for r in rows if r["alive"]} == set(ids.values())


# -- routing by resources and strategy ------------------------------------------------------------


async def test_custom_resources_route_tasks_to_their_node(cli_cluster: Cluster) -> None:
    ids = cli_cluster.ids
    for resource, name in (("r_b", "node2"), ("r_c", "node3"), ("r_a", "head")):
        got = await within(where.options(resources={resource: 1}).remote())
        assert got == ids[name], (resource, cli_cluster.name_of(got))


async def test_spread_uses_every_node(cli_cluster: Cluster) -> None:
    refs = [where_after.options(scheduling_strategy="SPREAD").remote(0.05) for _ in range(24)]
    used = await within(af.get(refs), 60)
    assert set(used) == set(cli_cluster.ids.values()), [cli_cluster.name_of(u) for u in used]


async def test_spread_still_spreads_when_a_node_is_busy_at_submission(
        cli_cluster: Cluster) -> None:
    """A burst submitted while node2 is busy for a moment: SPREAD sends node2 its share (it
    runs once node2 is free), as Ray's spread policy does (free nodes round-robin first, then
    the feasible ones round-robin), instead of piling the overflow onto one node."""
    await settled(cli_cluster)
    blocker = where_after.options(resources={"r_b": 1}).remote(1.0)

    async def node2_busy() -> bool:
        free = await af.available_resources()
        return free.get("r_b", 0.0) == 0.0  # a resource all in use is left out

    await until(node2_busy, what="the blocker to run on node2")
    refs = [where_after.options(scheduling_strategy="SPREAD").remote(0.5) for _ in range(12)]
    used = await within(af.get(refs), 60)
    assert await within(blocker) == cli_cluster.ids["node2"]
    counts = Counter(cli_cluster.name_of(u) for u in used)
    assert set(used) == set(cli_cluster.ids.values()), f"tasks per node: {dict(counts)}"


async def test_default_spills_to_an_idle_node_when_the_local_one_is_busy(
        cli_cluster: Cluster) -> None:
    """DEFAULT takes the driver's node (the head's) while it has room, and spills a task over
    to an idle node when it is busy, as Ray users expect, instead of waiting there."""
    await settled(cli_cluster)
    head = cli_cluster.ids["head"]
    assert await within(where.remote()) == head, "an idle local node takes DEFAULT work"
    blocker = where_after.options(resources={"r_a": 1}).remote(3.0)  # holds the head's CPU

    async def head_busy() -> bool:
        free = await af.available_resources()
        return free.get("r_a", 0.0) == 0.0
    await until(head_busy, what="the blocker to run on the head")
    start = asyncio.get_running_loop().time()
    spilled = await within(where.remote(), 60)
    assert spilled != head, "a DEFAULT task waited on its busy node while others were idle"
    assert asyncio.get_running_loop().time() - start < 2.5, "it waited for the blocker"
    assert await within(blocker) == head


async def test_hard_node_affinity_to_each_node(cli_cluster: Cluster) -> None:
    for name, node_id in cli_cluster.ids.items():
        strategy = af.NodeAffinity(node_id, soft=False)
        got = await within(af.get([where.options(scheduling_strategy=strategy).remote()
                                   for _ in range(3)]))
        assert set(got) == {node_id}, (name, [cli_cluster.name_of(g) for g in got])


async def test_affinity_to_an_unknown_node_fails_fast_and_soft_falls_back(
        cli_cluster: Cluster) -> None:
    unknown = "feedf00d"
    assert unknown not in cli_cluster.ids.values()
    t0 = time.monotonic()
    with pytest.raises(af.InfeasibleError) as info:
        await within(where.options(scheduling_strategy=af.NodeAffinity(unknown)).remote())
    assert time.monotonic() - t0 < FAST_S
    assert unknown in str(info.value)
    got = await within(
        where.options(scheduling_strategy=af.NodeAffinity(unknown, soft=True)).remote())
    assert got in cli_cluster.ids.values()


@pytest.mark.parametrize(("options", "key", "amount"), [
    ({"resources": {"r_z": 1}}, "r_z", 1.0),
    ({"num_cpus": 64}, "CPU", 64.0),
    ({"num_gpus": 4, "num_cpus": 0}, "GPU", 4.0),
], ids=["custom", "cpus", "gpus"])
async def test_an_infeasible_task_fails_fast_naming_demand_and_largest_node(
        cli_cluster: Cluster, options: dict[str, Any], key: str, amount: float) -> None:
    t0 = time.monotonic()
    with pytest.raises(af.InfeasibleError) as info:
        await within(where.options(**options).remote())
    assert time.monotonic() - t0 < FAST_S
    demand, largest = parse_infeasible(info.value)
    assert demand.get(key) == amount, str(info.value)
    assert nonzero(largest) in [nonzero(r) for r in cli_cluster.resources.values()], (
        str(info.value))
    # the cluster is not wedged by it
    assert await within(where.remote()) in cli_cluster.ids.values()


async def test_an_infeasible_actor_fails_fast(cli_cluster: Cluster) -> None:
    box = Box.options(resources={"r_z": 1}).remote()
    t0 = time.monotonic()
    with pytest.raises((af.InfeasibleError, af.ActorDiedError)) as info:
        await within(box.where.remote())
    assert time.monotonic() - t0 < FAST_S
    error = info.value
    if isinstance(error, af.ActorDiedError):  # dead for good, and the cause says why
        assert isinstance(error.__cause__ or getattr(error, "cause", None),
                          af.InfeasibleError), repr(error)
    assert "r_z" in str(error) or "r_z" in str(getattr(error, "cause", "")), str(error)


# -- actors and objects across nodes ---------------------------------------------------------------


async def test_actors_are_placed_by_custom_resource(cli_cluster: Cluster) -> None:
    ids = cli_cluster.ids
    boxes = {name: Box.options(resources={res: 0.5}).remote()
             for name, res in (("head", "r_a"), ("node2", "r_b"), ("node3", "r_c"))}
    try:
        for name, box in boxes.items():
            got = await within(box.where.remote())
            assert got == ids[name], (name, cli_cluster.name_of(got))
        # a live actor holds what it asked for (and no CPU), on its own node
        free = nonzero(await within(af.available_resources()))
        assert free.get("r_b") == 0.5 and free.get("r_c") == 0.5 and free.get("r_a") == 0.5
    finally:
        for box in boxes.values():
            await within(af.kill(box))
    await settled(cli_cluster)


async def test_a_task_on_node3_calls_an_actor_on_node2(cli_cluster: Cluster) -> None:
    ids = cli_cluster.ids
    box = Box.options(resources={"r_b": 0.5}).remote()
    try:
        assert await within(box.add.remote("from the driver")) == 1
        task_node, actor_node, count = await within(call_actor_from_node3.remote(box, "x"))
        assert (task_node, actor_node, count) == (ids["node3"], ids["node2"], 2)
        # the handle went both ways: the driver sees what the task added
        assert await within(box.add.remote("again")) == 3
    finally:
        await within(af.kill(box))


async def test_a_large_array_made_on_node2_is_read_on_node3_and_in_the_driver(
        cli_cluster: Cluster) -> None:
    n = 2_000_000  # 16 MB: far above the inline limit, so it lives in node2's shared memory
    ref = make_array.remote(n)
    expected_sum = float(n * (n - 1) / 2)
    out = await within(summarize.remote(ref), 60)
    assert out["node"] == cli_cluster.ids["node3"]
    assert (out["sum"], tuple(out["shape"]), out["first"], out["last"]) == (
        expected_sum, (n,), 0.0, float(n - 1))
    nested = await within(summarize_nested.remote([ref]), 60)
    assert nested["node"] == cli_cluster.ids["node3"]
    assert (nested["sum"], tuple(nested["shape"])) == (expected_sum, (n,))
    arr = await within(ref, 60)
    assert isinstance(arr, np.ndarray) and arr.shape == (n,)
    assert np.array_equal(arr, np.arange(n, dtype=np.float64))
    # its first read from the driver's node came by a bulk pull from node2's listener straight
    # into the driver (a private, writable copy); the second maps the copy the node then keeps
    # (tests/multinode/test_mn_copies.py): a read-only view, as for a value made on its node
    assert arr.flags.writeable
    again = await within(ref, 60)
    assert np.array_equal(again, arr) and not again.flags.writeable
    # the driver's own put, read on node3
    mine = af.put(np.full(n, 2.0))
    out = await within(summarize.remote(mine), 60)
    assert out["node"] == cli_cluster.ids["node3"] and out["sum"] == 2.0 * n


# -- GPU ids (declared GPUs on node3) --------------------------------------------------------------


async def test_whole_gpu_ids_are_exclusive_under_concurrency(cli_cluster: Cluster) -> None:
    records = await within(af.get([gpu_probe.remote(0.5) for _ in range(8)]), 90)
    for r in records:
        assert r["node"] == cli_cluster.ids["node3"]
        assert len(r["ids"]) == 1 and r["ids"][0] in (0, 1), r
        assert r["ids_end"] == r["ids"], r
        assert r["cuda"] == str(r["ids"][0]) and r["cuda_end"] == r["cuda"], r
    for i, a in enumerate(records):
        for b in records[i + 1:]:
            if overlapping(a, b):
                assert a["ids"] != b["ids"], ("two running tasks share a GPU", a, b)
    level = max_concurrency(records)
    assert level <= 2, f"{level} tasks ran at once on 2 GPUs"
    assert level == 2, "the two GPUs were never used at once"


async def test_fractional_gpus_share_an_id_two_at_a_time(cli_cluster: Cluster) -> None:
    records = await within(af.get([gpu_probe.options(num_gpus=0.5).remote(0.5)
                                   for _ in range(8)]), 90)
    for r in records:
        assert r["node"] == cli_cluster.ids["node3"]
        assert len(r["ids"]) == 1 and r["ids"][0] in (0, 1), r
        assert r["cuda"] == str(r["ids"][0]) and r["cuda_end"] == r["cuda"], r
    for gpu in (0, 1):
        on_it = [r for r in records if r["ids"] == [gpu]]
        assert max_concurrency(on_it) <= 2, f"more than two 0.5-GPU tasks on GPU {gpu} at once"
    shared = any(overlapping(a, b) and a["ids"] == b["ids"]
                 for i, a in enumerate(records) for b in records[i + 1:])
    assert shared, "no two 0.5-GPU tasks ever shared a GPU"
    assert max_concurrency(records) <= 4


# -- placement groups -----------------------------------------------------------------------------


async def bundle_nodes(pg: Any, count: int, **options: Any) -> list[str]:
    refs = [where.options(scheduling_strategy=af.PlacementGroupStrategy(pg, i), **options
                          ).remote() for i in range(count)]
    return list(await within(af.get(refs)))


async def test_strict_spread_puts_each_bundle_on_its_own_node(cli_cluster: Cluster) -> None:
    await settled(cli_cluster)
    pg = af.placement_group([{"CPU": 1}] * 3, strategy="STRICT_SPREAD", name="mn-spread")
    try:
        await within(pg.ready())
        nodes = await bundle_nodes(pg, 3)
        assert len(set(nodes)) == 3 and set(nodes) == set(cli_cluster.ids.values())
        # the group holds every CPU: nothing is left outside it
        assert nonzero(await within(af.available_resources())).get("CPU", 0.0) == 0.0
    finally:
        await within(af.remove_placement_group(pg))
    await settled(cli_cluster)


async def test_strict_pack_puts_every_bundle_on_one_node(cli_cluster: Cluster) -> None:
    await settled(cli_cluster)
    # only node2 has r_b, so STRICT_PACK has one choice for both bundles
    pg = af.placement_group([{"CPU": 0.5, "r_b": 0.5}, {"CPU": 0.5}], strategy="STRICT_PACK")
    try:
        await within(pg.ready())
        nodes = await bundle_nodes(pg, 2, num_cpus=0.5)
        assert nodes == [cli_cluster.ids["node2"]] * 2, [cli_cluster.name_of(n) for n in nodes]
        free = nonzero(await within(af.available_resources()))
        assert free.get("r_b", 0.0) == 0.5 and free.get("CPU") == 2.0, free
    finally:
        await within(af.remove_placement_group(pg))
    await settled(cli_cluster)


async def test_competing_groups_wait_whole_and_the_second_gets_ready_after_removal(
        cli_cluster: Cluster) -> None:
    total = await settled(cli_cluster)
    first = af.placement_group([{"r_a": 1}, {"r_b": 1}], strategy="SPREAD", name="first")
    await within(first.ready())
    after_first = dict(total, r_a=0.0, r_b=0.0)
    # needs r_b (held by the first) and r_c (free): it must wait, holding nothing
    second = af.placement_group([{"r_b": 1}, {"r_c": 1}], strategy="SPREAD", name="second")
    waiter = asyncio.ensure_future(second.ready())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=2.0)
        assert not done, "the second group got ready although r_b is reserved by the first"
        assert nonzero(await within(af.available_resources())) == nonzero(after_first)
        await within(af.remove_placement_group(first))
        await within(waiter)
        assert nonzero(await within(af.available_resources())) == nonzero(
            dict(total, r_b=0.0, r_c=0.0))
        nodes = [await within(where.options(
            num_cpus=0, resources={res: 1},
            scheduling_strategy=af.PlacementGroupStrategy(second, i)).remote())
            for i, res in enumerate(("r_b", "r_c"))]
        assert nodes == [cli_cluster.ids["node2"], cli_cluster.ids["node3"]]
    finally:
        if not waiter.done():
            waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        await within(af.remove_placement_group(second))
        await within(af.remove_placement_group(first))  # again: a no-op
    await settled(cli_cluster)


@pytest.mark.parametrize(("bundles", "strategy"), [
    ([{"CPU": 64}], "PACK"),
    ([{"CPU": 1}] * 4, "STRICT_SPREAD"),
    ([{"CPU": 1}, {"CPU": 1}], "STRICT_PACK"),
    ([{"r_z": 1}], "SPREAD"),
], ids=["too-big", "more-bundles-than-nodes", "pack-more-than-a-node", "unknown-resource"])
async def test_a_group_no_cluster_could_fit_is_infeasible(
        cli_cluster: Cluster, bundles: list[dict[str, float]], strategy: str) -> None:
    pg = af.placement_group(bundles, strategy=strategy)
    try:
        t0 = time.monotonic()
        with pytest.raises(af.InfeasibleError):
            await within(pg.ready())
        assert time.monotonic() - t0 < FAST_S
    finally:
        await within(af.remove_placement_group(pg))
    await settled(cli_cluster)
