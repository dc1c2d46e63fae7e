"""A failed lease request costs only the task it was for, within that task's retries
(reliability.md): lease requests waiting on a node that is SIGKILLed are asked again
elsewhere, and the tasks behind them run; a demand no live node can ever take still fails
fast with InfeasibleError.

Nodes: head (no CPU), node2 and node3 with one ``slot`` each. node2's slot is held for a
minute and node3's for a few seconds; SPREAD tasks that need a slot queue on both (SPREAD
round-robins over the nodes that can fit them, busy or not); then node2 dies.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import cloudpickle
import pytest
from mn_support import Cluster, live_nodes, until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NODES = [
    {"name": "head", "num_cpus": 0, "resources": {"r_a": 1}},
    {"name": "node2", "num_cpus": 1, "resources": {"r_b": 1, "slot": 1}},
    {"name": "node3", "num_cpus": 1, "resources": {"r_c": 1, "slot": 1}},
]


@af.remote(num_cpus=0)
async def hold(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return af.get_runtime_context().node_id


@af.remote(num_cpus=0, resources={"slot": 1}, scheduling_strategy="SPREAD")
def needs_slot(i: int) -> tuple[int, str]:
    return i, af.get_runtime_context().node_id


async def test_lease_requests_on_a_killed_node_are_asked_again_elsewhere(
        cli_cluster: Cluster) -> None:
    node2, node3 = cli_cluster.ids["node2"], cli_cluster.ids["node3"]
    held2 = hold.options(resources={"r_b": 1, "slot": 1}).remote(120.0)
    held3 = hold.options(resources={"r_c": 1, "slot": 1}).remote(3.0)

    async def both_held() -> bool:
        free = await af.available_resources()
        return free.get("slot", 0.0) == 0.0
    await until(both_held, what="both slots held")
    refs = [needs_slot.remote(i) for i in range(8)]
    await asyncio.sleep(1.0)  # their lease requests wait on node2 and node3
    started = cli_cluster.cli.started["node2"]
    started.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(started.proc.wait, 10)

    results = await within(af.get(refs), 60.0)
    assert [i for i, _ in results] == list(range(8))
    assert {where for _, where in results} == {node3}, "only node3 is left to run them"
    assert await within(held3) == node3
    with pytest.raises(af.InfeasibleError):
        await within(held2, 30.0)  # it ran on the dead node: retried, and nowhere fits it

    async def gone() -> bool:
        return node2 not in {v["node_id"] for v in live_nodes(await af.nodes())}
    await until(gone, what="node2 to leave the live nodes")
    with pytest.raises(af.InfeasibleError):
        await within(hold.options(resources={"r_b": 1}).remote(0.0))
