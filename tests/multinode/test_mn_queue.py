"""``af.util.Queue`` (API.md §11) across nodes of a real cluster started through the CLI.

Nodes: head ``{"CPU": 2, "r_a": 1}`` (the driver's node, where the producer tasks run),
node2 ``{"CPU": 1, "r_b": 1}`` (the queue's actor and the consumer actors), node3
``{"CPU": 1, "r_c": 1}`` (a queue whose node is killed; the last test). A queue with
``maxsize`` holds the producers back until consumers on the other node take items.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import cloudpickle
import pytest
from mn_support import Cluster, live_nodes, until, within

import actorflow as af
from actorflow.util import Queue, QueueStatistics

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NODES = [
    {"name": "head", "num_cpus": 2, "resources": {"r_a": 1}},
    {"name": "node2", "num_cpus": 1, "resources": {"r_b": 1}},
    {"name": "node3", "num_cpus": 1, "resources": {"r_c": 1}},
]
PRODUCERS = 3
ITEMS = 12  # per producer
MAXSIZE = 4


@af.remote(num_cpus=0.5)
async def produce(q: Queue, p: int, n: int) -> str:
    for i in range(n):
        await q.put((p, i))
    return af.get_runtime_context().node_id


@af.remote
class Consumer:
    async def consume(self, q: Queue) -> dict[str, Any]:
        """Take items until a ``None``; the node it ran on, and what it took, in order."""
        taken = []
        while (item := await q.get(timeout=60)) is not None:
            taken.append(item)
            await asyncio.sleep(0.005)  # slower than the producers: the queue stays full
        return {"node": af.get_runtime_context().node_id, "taken": taken}

    async def wait_on(self, q: Queue) -> dict[str, Any]:
        try:
            return {"item": await q.get()}
        except af.ActorDiedError as exc:
            return {"error": type(exc).__name__, "actor": exc.actor,
                    "cause": type(exc.cause).__name__}


async def stats_until(q: Queue, check: Any, what: str) -> QueueStatistics:
    async def probe() -> QueueStatistics | None:
        stats = await q.statistics()
        return stats if check(stats) else None

    found: QueueStatistics = await until(probe, what=what)
    return found


async def test_producer_tasks_and_consumer_actors_on_two_nodes(cli_cluster: Cluster) -> None:
    head, node2 = cli_cluster.ids["head"], cli_cluster.ids["node2"]
    q = Queue(maxsize=MAXSIZE, actor_options={"scheduling_strategy": af.NodeAffinity(node2)})
    consumers: list[af.ActorHandle] = []
    try:
        on_head = produce.options(scheduling_strategy=af.NodeAffinity(head))
        producers = [on_head.remote(q, p, ITEMS) for p in range(PRODUCERS)]
        # no consumer yet: the queue fills up and every producer waits for room
        stats = await stats_until(q, lambda s: s.putters == PRODUCERS, "every producer held")
        assert (stats.size, stats.maxsize, stats.node_id) == (MAXSIZE, MAXSIZE, node2)
        ready, _ = await within(af.wait(producers, num_returns=len(producers), timeout=0.5))
        assert ready == []

        on_node2 = Consumer.options(scheduling_strategy=af.NodeAffinity(node2))
        consumers = [on_node2.remote() for _ in range(2)]
        results = [c.consume.remote(q) for c in consumers]
        assert await within(af.get(producers), 60) == [head] * PRODUCERS
        for _ in consumers:
            await within(q.put(None))
        outs = await within(af.get(results), 60)

        assert [out["node"] for out in outs] == [node2, node2]
        taken = [tuple(item) for out in outs for item in out["taken"]]
        expected = {(p, i) for p in range(PRODUCERS) for i in range(ITEMS)}
        assert len(taken) == len(expected) and set(taken) == expected  # each item exactly once
        for out in outs:  # first in, first out: each producer's items in its order
            for p in range(PRODUCERS):
                mine = [i for (pp, i) in out["taken"] if pp == p]
                assert mine == sorted(mine)
        assert all(out["taken"] for out in outs)  # both consumers took items
        end = await within(q.statistics())
        total = PRODUCERS * ITEMS + len(consumers)
        assert (end.size, end.putters, end.getters, end.puts, end.gets) == (0, 0, 0, total, total)
    finally:
        for consumer in consumers:
            await within(af.kill(consumer))
        await within(q.shutdown())


async def test_a_queue_whose_node_dies_fails_its_callers_typed(cli_cluster: Cluster) -> None:
    node2, node3 = cli_cluster.ids["node2"], cli_cluster.ids["node3"]
    q = Queue(actor_options={"scheduling_strategy": af.NodeAffinity(node3)})
    consumer = Consumer.options(scheduling_strategy=af.NodeAffinity(node2)).remote()
    try:
        await within(q.put("first"))
        assert (await within(q.statistics())).node_id == node3
        remote_wait = consumer.wait_on.remote(q)
        assert await within(remote_wait) == {"item": "first"}
        remote_wait = consumer.wait_on.remote(q)
        local_wait = asyncio.ensure_future(q.get())
        await stats_until(q, lambda s: s.getters == 2, "two waiting gets")

        cli_cluster.cli.started["node3"].proc.send_signal(signal.SIGKILL)

        with pytest.raises(af.ActorDiedError) as info:
            await within(local_wait)
        assert isinstance(info.value.cause, af.NodeDiedError), info.value
        got = await within(remote_wait)
        assert got["error"] == "ActorDiedError" and got["cause"] == "NodeDiedError", got
        with pytest.raises(af.ActorDiedError):
            await within(q.put("after"))

        async def node3_dead() -> bool:
            return node3 not in {v["node_id"] for v in live_nodes(await af.nodes())}

        await until(node3_dead, what="node3 seen dead")
    finally:
        await within(af.kill(consumer))
