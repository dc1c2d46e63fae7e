"""A large value made on another node than its owner's (a task's result computed there) is
freed on that node once its last ref in the owner is dropped (issue 16), whether or not the
owner ever read it; and what a driver owned on other nodes goes when it shuts down."""

from __future__ import annotations

import gc
import sys
from typing import Any

import cloudpickle
import numpy as np
import pytest
from mn_support import Cluster, until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NODES = [
    {"name": "head", "num_cpus": 1, "resources": {"r_a": 1}},
    {"name": "node2", "num_cpus": 1, "resources": {"r_b": 1}},
]
SIZE = 8 << 20


@af.remote(resources={"r_b": 0.01})
def made_there(seed: int) -> np.ndarray:
    return np.full(SIZE, seed, dtype=np.uint8)


async def _segments(node_id: str) -> dict[str, Any]:
    summary = await within(af.memory_summary())
    return {o["segment"]: o for o in summary["objects"] if o["node_id"] == node_id}


async def _big_segments(node_id: str) -> set[str]:
    return {k for k, o in (await _segments(node_id)).items() if o["size"] >= SIZE}


async def _drop_and_see_freed(node_id: str, refs: list[af.ObjectRef]) -> None:
    async def there() -> set[str] | None:
        found = await _big_segments(node_id)
        return found if len(found) >= len(refs) else None

    before = await until(there, what="the results in the node's store")
    refs.clear()
    gc.collect()

    async def freed() -> bool:
        return not (await _big_segments(node_id) & before)

    await until(freed, timeout=5.0, what="the results freed on their node")


async def test_a_result_never_read_here_is_freed_on_its_node_when_dropped(
        cli_cluster: Cluster) -> None:
    node2 = cli_cluster.ids["node2"]
    unread = [made_there.remote(2)]  # the owner never talks to node2 about it
    await within(af.wait(unread, fetch_local=False))
    await _drop_and_see_freed(node2, unread)


async def test_a_result_read_here_is_freed_on_its_node_when_dropped(
        cli_cluster: Cluster) -> None:
    node2 = cli_cluster.ids["node2"]
    read = [made_there.remote(1)]
    assert int((await within(read[0]))[-1]) == 1
    await _drop_and_see_freed(node2, read)
