"""A driver whose event loop is busy is not a dead driver (reliability.md): the cluster's
peers see it silent far past ``peer_timeout_s`` (2 s here) yet keep its links, its tasks and
its actors, and every result arrives once its loop runs again."""

from __future__ import annotations

import asyncio
import sys
import time

import cloudpickle
import pytest
from actor_support import Counter
from mn_support import Cluster, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

BLOCK_S = 10.0  # five peer timeouts


@af.remote
def plus_one(i: int) -> int:
    return i + 1


@af.remote
async def slow_square(i: int) -> int:
    await asyncio.sleep(0.05)
    return i * i


async def test_a_driver_whose_loop_blocks_for_ten_seconds_gets_every_result(
        cli_cluster: Cluster) -> None:
    counter = Counter.remote()
    assert await within(counter.incr.remote()) == 1
    refs = [slow_square.remote(i) for i in range(100)]
    calls = [counter.incr.remote() for _ in range(50)]
    time.sleep(BLOCK_S)  # noqa: ASYNC251 - the point: user code that holds the loop
    assert await within(af.get(refs), 60.0) == [i * i for i in range(100)]
    assert await within(af.get(calls), 60.0) == list(range(2, 52))
    assert await within(counter.incr.remote()) == 52
    assert await within(plus_one.remote(1)) == 2


async def test_a_hundred_thousand_tasks_in_one_list_comprehension(cli_cluster: Cluster) -> None:
    start = time.monotonic()
    refs = [plus_one.remote(i) for i in range(100_000)]
    submitted = time.monotonic() - start
    values = await within(af.get(refs), 240.0)
    assert values == list(range(1, 100_001))
    print(f"100,000 tasks: submitted in {submitted:.2f} s, all back in "
          f"{time.monotonic() - start:.2f} s")
