"""Lineage reconstruction (API.md §12): a node holding the only copies of task outputs is
SIGKILLed; reading them runs their tasks again (their lost inputs first), within each task's
``max_retries``, whether the owner or a borrower reads them; an output whose task has no
retries left, and a value ``af.put`` there, raise ``af.ObjectLostError``."""

from __future__ import annotations

import asyncio
import signal
import sys

import cloudpickle
import numpy as np
import pytest
from mn_support import Cluster, live_nodes, until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

NODES = [
    {"name": "head", "num_cpus": 2, "resources": {"r_a": 1}},
    {"name": "node2", "num_cpus": 4, "resources": {"r_b": 1}},  # room: nothing spills
]
SIZE = 1 << 20  # 8 MiB of int64: shared memory, never inline


@af.remote
def make(seed: int) -> dict:
    return {"node": af.get_runtime_context().node_id,
            "data": np.full(SIZE, seed, dtype=np.int64)}


@af.remote
def plus(a: dict, k: int) -> dict:
    return {"node": af.get_runtime_context().node_id, "data": a["data"] + k}


@af.remote(num_cpus=0)
class Reader:
    """A borrower: keeps refs it was given (inside a list) and reads them."""

    def __init__(self) -> None:
        self.refs: list = []

    async def keep(self, refs: list) -> None:
        self.refs = refs

    async def read(self) -> list:
        return [(v["node"], int(v["data"][-1])) for v in [await r for r in self.refs]]


@af.remote
def put_there() -> list:
    return [af.put(np.zeros(SIZE, dtype=np.int64))]  # owned by this worker, on its node


async def test_lost_outputs_are_rebuilt_by_running_their_tasks_again(
        cli_cluster: Cluster) -> None:
    node2 = cli_cluster.ids["node2"]
    there = af.NodeAffinity(node2, soft=True)  # on node2 while it lives, else anywhere
    a = make.options(scheduling_strategy=there, max_retries=2).remote(7)
    b = plus.options(scheduling_strategy=there, max_retries=2).remote(a, 1)  # a chain
    lone = make.options(scheduling_strategy=there, max_retries=0).remote(3)
    lent = make.options(scheduling_strategy=there, max_retries=1).remote(5)
    head = cli_cluster.ids["head"]
    reader = Reader.options(scheduling_strategy=af.NodeAffinity(head)).remote()
    await within(reader.keep.remote([lent]))  # borrowed by an actor on the head's node
    assert await within(reader.read.remote()) == [(node2, 5)]
    (put_ref,) = await within(put_there.options(scheduling_strategy=there).remote())
    # made over there (read here, but no copy is kept here: their only copies are on node2)
    for ref, seed in ((a, 7), (b, 8), (lone, 3)):
        made = await within(ref)
        assert made["node"] == node2 and int(made["data"][-1]) == seed
    del made

    started = cli_cluster.cli.started["node2"]
    started.proc.send_signal(signal.SIGKILL)
    await asyncio.to_thread(started.proc.wait, 10)

    async def one_node() -> bool:
        return len(live_nodes(await af.nodes())) == 1

    await until(one_node, what="node2 declared dead")

    value = await within(b, 60)  # b's task runs again, after a's (b's input, lost too)
    assert value["node"] == head and int(value["data"][0]) == 8 == int(value["data"][-1])
    assert (await within(a))["node"] == head and int((await within(a))["data"][-1]) == 7
    with pytest.raises(af.ObjectLostError):  # no retries left to run it again
        await within(lone)
    with pytest.raises(af.ObjectLostError):  # a put value has no task to run again
        await within(put_ref)
    # a borrower's read of a lost result has its owner (this driver) rebuild it
    assert await within(reader.read.remote(), 60) == [(head, 5)]
    # reads after the rebuild find the new copies (one run each)
    assert [v["node"] for v in await within(af.get([a, b]))] == [head, head]
