"""A cluster across a real network link: the head (and the driver) on this host, a node on
another (a Linux network namespace joined by a veth pair, see ``tests/netns_support.py``).

Work crosses the link both ways (the node and its workers listen on the namespace's address,
the driver on the address the head's host reaches it at); when the link is cut, the head
declares the node dead about ``peer_timeout`` later, retries its tasks elsewhere within their
budgets and restarts its actors elsewhere; when the link heals, the node is fenced: it never
counts as alive again under its old id, and its actor's old incarnation serves nothing.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import cloudpickle
import numpy as np
import pytest
import pytest_asyncio
from mn_support import CliCluster, Started, live_nodes, until, within
from netns_support import NetNs, netns, netns_unavailable

import actorflow as af

why_not = netns_unavailable()
pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(why_not is not None, reason=why_not or "")]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PEER_TIMEOUT = 2.0


@dataclass
class Far:
    cli: CliCluster
    ns: NetNs
    far: Started
    head_id: str
    far_id: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def split(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Far]:
    with netns() as ns:
        tmp = tmp_path_factory.mktemp("partition")
        cli = CliCluster(tmp, peer_timeout=PEER_TIMEOUT)
        try:
            head = cli.start_head(num_cpus=2, resources={"r_near": 1}, host=ns.here_ip)
            await cli.wait_head(head)
            # another host: its own network, and its own temp folder (where unix sockets of
            # loopback listeners live: no path between the two but the veth)
            far_tmp = tmp / "far-tmp"
            far_tmp.mkdir()
            far = cli.start_node("far", num_cpus=1, resources={"r_far": 1},
                                 prefix=[*ns.prefix, "env", f"TMPDIR={far_tmp}"])
            await cli.wait_ready(far)
            assert cli.address is not None and ns.here_ip in cli.address
            await within(af.init(address=cli.address, token=cli.token, log_to_driver=False))

            async def two() -> list[dict] | None:
                views = live_nodes(await af.nodes())
                return views if len(views) == 2 else None

            views = await until(two, what="both nodes")
            by_res = {("far" if "r_far" in v["resources"] else "near"): v for v in views}
            assert ns.there_ip in by_res["far"]["address"], by_res
            yield Far(cli, ns, far, by_res["near"]["node_id"], by_res["far"]["node_id"])
        except BaseException:
            print(cli.logs())
            raise
        finally:
            ns.heal()
            if af.is_initialized():
                await within(af.shutdown())
            survivors = cli.stop()
            assert not survivors, survivors


@af.remote(resources={"r_far": 0.01})
def on_far(n: int) -> tuple[str, np.ndarray]:
    return af.get_runtime_context().node_id, np.arange(n, dtype=np.int64)


@af.remote
def where(delay: float) -> str:
    time.sleep(delay)
    return af.get_runtime_context().node_id


@af.remote(num_cpus=0, max_restarts=1, max_task_retries=-1)
class Keeper:
    def __init__(self) -> None:
        self.n = 0

    def bump(self) -> tuple[str, int]:
        self.n += 1
        return af.get_runtime_context().node_id, self.n


async def test_work_crosses_the_link_both_ways(split: Far) -> None:
    node, values = await within(on_far.remote(10))
    assert node == split.far_id and values.tolist() == list(range(10))
    # a large value made over there, read here (a shared-memory segment of another host)
    node, values = await within(on_far.remote(1 << 20))
    assert node == split.far_id and int(values[-1]) == (1 << 20) - 1
    # an argument made here, used over there
    big = np.ones(1 << 20, dtype=np.int64)

    @af.remote(resources={"r_far": 0.01})
    def total(a: np.ndarray) -> int:
        return int(a.sum())

    assert await within(total.remote(big)) == 1 << 20


async def test_a_cut_node_is_declared_dead_its_work_moves_and_it_stays_fenced(
        split: Far) -> None:
    affinity = af.NodeAffinity(split.far_id, soft=True)
    keeper = Keeper.options(scheduling_strategy=affinity).remote()
    assert await within(keeper.bump.remote()) == (split.far_id, 1)
    slow = where.options(scheduling_strategy=affinity, max_retries=2).remote(3.0)
    await asyncio.sleep(0.5)  # it runs over there

    split.ns.cut()
    cut_at = time.monotonic()

    async def far_dead() -> bool:
        views = {v["node_id"]: v for v in await af.nodes()}
        return not views[split.far_id]["alive"]

    await until(far_dead, timeout=4 * PEER_TIMEOUT + 10, what="the far node declared dead")
    assert time.monotonic() - cut_at <= 4 * PEER_TIMEOUT + 10
    # its task ran again here, within its retries; its actor restarted here, from __init__
    assert await within(slow, 30) == split.head_id
    assert await within(keeper.bump.remote(), 30) == (split.head_id, 1)

    split.ns.heal()
    # fenced: the far node never counts as alive again under its id, and the old incarnation
    # of the actor serves nothing (calls go on reaching the new one)
    for i in range(2, 8):
        views = {v["node_id"]: v for v in await within(af.nodes())}
        assert not views[split.far_id]["alive"], views[split.far_id]
        assert await within(keeper.bump.remote()) == (split.head_id, i)
        await asyncio.sleep(0.5)
