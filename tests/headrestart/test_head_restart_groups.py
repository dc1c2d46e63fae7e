"""Placement groups live through a restart of the head: a CLI cluster whose head is SIGKILLed
and started again on the same port and state folder. A group made before is found again by
name, ready, shown with its bundles on the same nodes, its actor runs on with its state, its
reservation still holds the node's resources, and removing it gives them back. A group whose
bundle was on the head's own node (which died with the head) is reserved there again."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from actor_support import Counter
from mn_support import until, within
from restart_support import RestartableCluster, nodes_back

import actorflow as af

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(180)


@af.remote(num_cpus=0)
def where() -> str:
    return af.get_runtime_context().node_id


async def _available(node_id: str, resource: str) -> float:
    views = {v["node_id"]: v for v in await af.nodes()}
    return float(views[node_id].get("available", {}).get(resource, -1.0))


async def test_placement_groups_survive_a_head_restart(tmp_path: Path) -> None:
    cluster = RestartableCluster(tmp_path)
    try:
        head = cluster.start_fixed_head()
        await cluster.wait_head(head)
        node = cluster.start_node("node2", num_cpus=2, resources={"r_b": 2})
        await cluster.wait_ready(node)
        assert cluster.address is not None and cluster.token is not None
        await within(af.init(address=cluster.address, token=cluster.token,
                             log_to_driver=False))
        views = await nodes_back(set())
        node_id = next(v["node_id"] for v in views if "r_b" in v["resources"])
        head_node = next(v["node_id"] for v in views if "r_head" in v["resources"])

        pg = af.placement_group([{"CPU": 1, "r_b": 1}], name="kept", lifetime="detached")
        on_head = af.placement_group([{"r_head": 1}], name="on-head", lifetime="detached")
        await within(pg.ready())
        await within(on_head.ready())
        in_pg = af.PlacementGroupStrategy(pg, 0)
        counter = Counter.options(name="in-pg", lifetime="detached", num_cpus=1,
                                  scheduling_strategy=in_pg).remote()
        assert await within(counter.incr.remote()) == 1
        before = await within(af.placement_group_table(pg))
        assert before["bundles_to_node_id"] == {0: node_id}
        assert await within(_available(node_id, "r_b")) == 1.0
        await asyncio.sleep(0.3)  # (the store writes every 50 ms)

        head.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(head.proc.wait, 10)
        head = cluster.start_fixed_head()
        await cluster.wait_ready(head, 60.0)
        await nodes_back({node_id, head_node})

        # found by name, ready, and where it was
        found = await within(af.get_placement_group("kept"), 60.0)
        assert found.id == pg.id
        await within(found.ready())
        after = await within(af.placement_group_table(found))
        assert after["state"] == "CREATED", after
        assert after["bundles_to_node_id"] == {0: node_id}
        assert after["lifetime"] == "detached"
        # its actor ran on with its state; its bundle still holds the node's r_b
        assert await within(counter.incr.remote()) == 2
        assert await within(_available(node_id, "r_b")) == 1.0
        # the bundle on the head's node (which died with the head) is reserved there again
        again = await within(af.get_placement_group("on-head"), 60.0)
        await within(again.ready(), 60.0)
        ref = where.options(scheduling_strategy=af.PlacementGroupStrategy(again, 0),
                            resources={"r_head": 1}).remote()
        assert await within(ref, 60.0) == head_node
        # a new group fits only once the kept one is removed: its reservation still counts
        pg2 = af.placement_group([{"r_b": 2}], name="later")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pg2.ready(), 1.0)

        # removing it gives the node's resources back
        await within(af.kill(counter))
        await within(af.remove_placement_group(found))

        async def freed() -> bool:
            return await _available(node_id, "r_b") == 2.0 or await _ready(pg2)

        await until(freed, 30.0, "the removed group's resources back on its node")
        await within(pg2.ready())
        table = await within(af.placement_group_table())
        assert table[pg.id]["state"] == "REMOVED"
        await within(af.remove_placement_group(pg2))
        await within(af.remove_placement_group(again))
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        if af.is_initialized():
            await within(af.shutdown(), 30.0)
        survivors = await asyncio.to_thread(cluster.stop)
        assert not survivors, f"processes left behind: {survivors}"


async def _ready(pg: Any) -> bool:
    try:
        await asyncio.wait_for(pg.ready(), 0.2)
    except TimeoutError:
        return False
    return True
