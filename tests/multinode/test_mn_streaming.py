"""Streaming generators across nodes (API.md §11): the producer runs on another node than the
driver that reads it; backpressure holds it to N unread values, measured at the producer."""

from __future__ import annotations

import asyncio
import sys

import cloudpickle
import numpy as np
import pytest
from mn_support import Cluster, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NODES = [
    {"name": "head", "num_cpus": 1, "resources": {"r_a": 1}},
    {"name": "node2", "num_cpus": 1, "resources": {"r_b": 1}},
]


@af.remote(resources={"r_b": 0.001})
async def far(n: int):
    for i in range(n):
        yield {"i": i, "node": af.get_runtime_context().node_id}


@af.remote(resources={"r_b": 0.001})
def far_arrays(n: int, size: int):
    for i in range(n):
        yield np.full(size, i % 251, dtype=np.uint8)


@af.remote(resources={"r_b": 0.001})
class Producer:
    def __init__(self) -> None:
        self.made = 0

    async def values(self, n: int):
        for i in range(n):
            self.made = i + 1
            yield i

    def made_so_far(self) -> int:
        return self.made


async def test_a_thousand_values_from_another_node(cli_cluster: Cluster) -> None:
    node2 = cli_cluster.ids["node2"]
    seen = [await ref async for ref in far.remote(1000)]
    assert [v["i"] for v in seen] == list(range(1000))
    assert {v["node"] for v in seen} == {node2}
    assert af.get_runtime_context().node_id != node2


async def test_large_values_from_another_node(cli_cluster: Cluster) -> None:
    size = 3 << 20
    arrays = [await ref async for ref in far_arrays.remote(4, size)]
    assert [int(a[0]) for a in arrays] == [0, 1, 2, 3]
    assert all(a.nbytes == size and int(a[-1]) == i for i, a in enumerate(arrays))


async def test_backpressure_holds_a_remote_producer(cli_cluster: Cluster) -> None:
    producer = Producer.remote()
    gen = producer.values.options(generator_backpressure=4).remote(200)
    first = await within(gen.__anext__())
    await asyncio.sleep(1.0)
    ahead = await within(producer.made_so_far.remote())
    assert ahead <= 1 + 4 + 1, ahead  # read 1, may hold 4 more, one made and waiting to go
    rest = [await ref async for ref in gen]
    assert [await within(first), *rest] == list(range(200))
    assert await within(producer.made_so_far.remote()) == 200
