"""Placement groups, the rest (API.md §5, §11): ``af.get_placement_group``,
``af.placement_group_table``, ``lifetime=``, and ``capture_child_tasks``, on a real two-node
cluster started through the CLI (see conftest.py).

Nodes: head ``{"CPU": 1, "r_a": 1}``, node2 ``{"CPU": 2, "r_b": 1}``. A group of one bundle
``{"CPU": 2, "r_b": 1}`` takes all of node2, so work that runs on node2 while it is reserved
runs inside the group's bundle. Every test removes its groups and waits until nothing is held.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from mn_support import Cluster, nonzero, until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NODES = [
    {"name": "head", "num_cpus": 1, "resources": {"r_a": 1}},
    {"name": "node2", "num_cpus": 2, "resources": {"r_b": 1}},
]
ALL_OF_NODE2 = [{"CPU": 2, "r_b": 1}]


@af.remote(num_cpus=0.5)
def where() -> str:
    return af.get_runtime_context().node_id


@af.remote(num_cpus=0.5)
async def where_via_child() -> tuple[str, str]:
    """Its own node and its child's (a grandchild of the task that captures)."""
    return af.get_runtime_context().node_id, await where.remote()


@af.remote  # needs 1 CPU free to be placed: in the group, only its bundle has one on node2
class Probe:
    def where(self) -> str:
        return af.get_runtime_context().node_id


@af.remote(num_cpus=0.5)
async def parent() -> dict[str, Any]:
    """Submits work without a strategy (captured when this task captures), and with an
    explicit "DEFAULT" (never captured)."""
    probe = Probe.remote()
    try:
        actor_node = await probe.where.remote()
    finally:
        await af.kill(probe)
    return {
        "self": af.get_runtime_context().node_id,
        "child": await where.remote(),
        "via_child": await where_via_child.remote(),
        "actor": actor_node,
        "escaped": await where.options(scheduling_strategy="DEFAULT").remote(),
    }


@af.remote(num_cpus=0.5)
def plain_parent() -> af.ObjectRef:
    """A plain-def task (on the worker's task thread or its loop) returns its child's ref."""
    return where.remote()


@af.remote(num_cpus=0.5)
class Capturer:
    """An actor whose calls create an actor and submit tasks without a strategy."""

    async def children(self) -> dict[str, Any]:
        probe = Probe.remote()
        try:
            actor_node = await probe.where.remote()
        finally:
            await af.kill(probe)
        return {"self": af.get_runtime_context().node_id, "child": await where.remote(),
                "actor": actor_node}

    def plain_child(self) -> af.ObjectRef:  # a plain-def method (on its thread)
        return where.remote()


async def settled() -> None:
    async def check() -> bool:
        return nonzero(await af.available_resources()) == nonzero(await af.cluster_resources())

    await until(check, what="every resource to be free again")


async def removed(*groups: af.PlacementGroup) -> None:
    for pg in groups:
        await within(af.remove_placement_group(pg))
    await settled()


# -- get_placement_group ---------------------------------------------------------------------------


async def test_get_placement_group_finds_a_named_group_until_it_is_removed(
        cli_cluster: Cluster) -> None:
    await settled()
    pg = af.placement_group(ALL_OF_NODE2, strategy="STRICT_PACK", name="train")
    try:
        await within(pg.ready())
        got = await within(af.get_placement_group("train"))
        assert got == pg
        assert (got.id, got.name, got.strategy, got.bundle_specs) == (
            pg.id, "train", "STRICT_PACK", ({"CPU": 2.0, "r_b": 1.0},))
        # the handle found by name runs work in the group
        node = await within(where.options(
            scheduling_strategy=af.PlacementGroupStrategy(got, 0)).remote())
        assert node == cli_cluster.ids["node2"]
        with pytest.raises(ValueError, match="'train'"):
            await within(af.get_placement_group("train", namespace="elsewhere"))
    finally:
        await removed(pg)
    with pytest.raises(ValueError, match="'train'"):
        await within(af.get_placement_group("train"))


async def test_get_placement_group_of_an_unknown_name_raises_value_error(
        cli_cluster: Cluster) -> None:
    with pytest.raises(ValueError, match="'no-such-group'"):
        await within(af.get_placement_group("no-such-group"))


async def test_a_name_in_use_fails_the_second_group_and_is_free_again_after_removal(
        cli_cluster: Cluster) -> None:
    await settled()
    first = af.placement_group([{"CPU": 0.5}], name="dup")
    second = af.placement_group([{"CPU": 0.5}], name="dup")
    third: af.PlacementGroup | None = None
    try:
        await within(first.ready())
        with pytest.raises(ValueError, match="'dup'"):
            await within(second.ready())
        assert await within(af.get_placement_group("dup")) == first
        await within(af.remove_placement_group(second))  # the loser's removal frees nothing
        assert await within(af.get_placement_group("dup")) == first
        await within(af.remove_placement_group(first))
        third = af.placement_group([{"CPU": 0.5}], name="dup")
        await within(third.ready())
        assert await within(af.get_placement_group("dup")) == third
    finally:
        await removed(first, second, *([third] if third is not None else []))


# -- placement_group_table -------------------------------------------------------------------------


async def test_placement_group_table_shows_each_group_through_its_states(
        cli_cluster: Cluster) -> None:
    await settled()
    node2 = cli_cluster.ids["node2"]
    holder = af.placement_group([{"r_b": 1}], name="holder", lifetime="detached")
    waiting = af.placement_group([{"r_b": 1}, {"r_a": 1}], strategy="SPREAD")
    try:
        await within(holder.ready())
        entry = await within(af.placement_group_table(holder))
        assert entry == {
            "placement_group_id": holder.id, "name": "holder",
            "namespace": af.get_runtime_context().namespace, "strategy": "PACK",
            "state": "CREATED", "lifetime": "detached", "bundles": [{"r_b": 1.0}],
            "bundles_to_node_id": {0: node2}, "job_id": af.get_runtime_context().job_id,
        }
        # the second group needs r_b, which the first holds: it waits, placed nowhere
        entry = await within(af.placement_group_table(waiting))
        assert (entry["state"], entry["bundles_to_node_id"], entry["lifetime"], entry["name"]
                ) == ("PENDING", {}, None, None)
        assert entry["bundles"] == [{"r_b": 1.0}, {"r_a": 1.0}]
        table = await within(af.placement_group_table())
        assert {holder.id, waiting.id} <= set(table)
        assert table[holder.id]["state"] == "CREATED" and table[waiting.id]["state"] == "PENDING"

        await within(af.remove_placement_group(holder))
        await within(waiting.ready())
        table = await within(af.placement_group_table())
        assert (table[holder.id]["state"], table[holder.id]["bundles_to_node_id"]) == (
            "REMOVED", {})
        assert table[waiting.id]["state"] == "CREATED"
        assert table[waiting.id]["bundles_to_node_id"] == {0: node2,
                                                          1: cli_cluster.ids["head"]}
    finally:
        await removed(holder, waiting)


async def test_placement_group_table_marks_a_group_that_can_never_be_placed(
        cli_cluster: Cluster) -> None:
    pg = af.placement_group([{"CPU": 64}])
    try:
        with pytest.raises(af.InfeasibleError):
            await within(pg.ready())
        assert (await within(af.placement_group_table(pg)))["state"] == "INFEASIBLE"
    finally:
        await removed(pg)


async def test_lifetime_takes_detached_or_none() -> None:
    with pytest.raises(ValueError, match="lifetime"):
        af.placement_group([{"CPU": 1}], lifetime="forever")
    with pytest.raises(TypeError, match="capture_child_tasks"):
        af.PlacementGroupStrategy(af.PlacementGroup("pg-id", ({"CPU": 1.0},), "PACK"),
                                  capture_child_tasks=1)  # type: ignore[arg-type]


# -- capture_child_tasks ---------------------------------------------------------------------------


async def test_a_capturing_task_runs_its_children_and_actors_in_its_group(
        cli_cluster: Cluster) -> None:
    await settled()
    node2, head = cli_cluster.ids["node2"], cli_cluster.ids["head"]
    pg = af.placement_group(ALL_OF_NODE2, strategy="STRICT_PACK")
    try:
        await within(pg.ready())
        strategy = af.PlacementGroupStrategy(pg, 0, capture_child_tasks=True)
        got = await within(parent.options(scheduling_strategy=strategy).remote(), 60)
        # node2 has nothing free outside the group: work there runs in its bundle
        assert got == {"self": node2, "child": node2, "via_child": (node2, node2),
                       "actor": node2, "escaped": head}, {
            k: [cli_cluster.name_of(n) for n in (v if isinstance(v, tuple) else (v,))]
            for k, v in got.items()}
        ref = await within(plain_parent.options(scheduling_strategy=strategy).remote())
        assert await within(ref) == node2
    finally:
        await removed(pg)


async def test_a_capturing_actor_runs_its_children_and_actors_in_its_group(
        cli_cluster: Cluster) -> None:
    await settled()
    node2, head = cli_cluster.ids["node2"], cli_cluster.ids["head"]
    pg = af.placement_group(ALL_OF_NODE2, strategy="STRICT_PACK")
    try:
        await within(pg.ready())
        for capture, inside in ((True, node2), (False, head)):
            strategy = af.PlacementGroupStrategy(pg, 0, capture_child_tasks=capture)
            actor = Capturer.options(scheduling_strategy=strategy).remote()
            try:
                got = await within(actor.children.remote(), 60)
                assert got == {"self": node2, "child": inside, "actor": inside}, (capture, got)
                ref = await within(actor.plain_child.remote())
                assert await within(ref) == inside, capture
            finally:
                await af.kill(actor)
    finally:
        await removed(pg)


async def test_without_capture_children_leave_the_group(cli_cluster: Cluster) -> None:
    await settled()
    node2, head = cli_cluster.ids["node2"], cli_cluster.ids["head"]
    pg = af.placement_group(ALL_OF_NODE2, strategy="STRICT_PACK")
    try:
        await within(pg.ready())
        strategy = af.PlacementGroupStrategy(pg, 0)  # capture_child_tasks=False
        got = await within(parent.options(scheduling_strategy=strategy).remote(), 60)
        assert got["self"] == node2
        assert got["child"] == head and got["via_child"] == (head, head), got
        ref = await within(plain_parent.options(scheduling_strategy=strategy).remote())
        assert await within(ref) == head
    finally:
        await removed(pg)


async def test_a_group_removed_under_a_capturing_task_fails_its_children_with_infeasible(
        cli_cluster: Cluster, tmp_path: Path) -> None:
    """Nothing lost: a child captured into a group that is gone fails with a typed error."""
    await settled()
    pg = af.placement_group(ALL_OF_NODE2, strategy="STRICT_PACK")
    started, go = tmp_path / "started", tmp_path / "go"
    try:
        await within(pg.ready())
        strategy = af.PlacementGroupStrategy(pg, 0, capture_child_tasks=True)
        ref = child_after.options(scheduling_strategy=strategy).remote(str(started), str(go))
        await until(started.exists, what="the capturing task to start")
        await within(af.remove_placement_group(pg))
        go.touch()
        with pytest.raises(af.InfeasibleError) as info:
            await within(ref, 60)
        assert isinstance(info.value, af.TaskError), info.value  # raised in the task
    finally:
        await removed(pg)


def _handshake(started: str, go: str, timeout: float = 30.0) -> None:
    Path(started).touch()
    deadline = time.monotonic() + timeout
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {go} after {timeout} s")
        time.sleep(0.02)


@af.remote(num_cpus=0.5)
async def child_after(started: str, go: str) -> str:
    """Says it started (a file), waits for the driver's go (a file), then submits a child."""
    await asyncio.to_thread(_handshake, started, go)
    return await where.remote()
