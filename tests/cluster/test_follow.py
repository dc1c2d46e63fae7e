"""Tasks that follow their producers: a task whose ObjectRef arguments are made by tasks
already pushed to one worker goes to that worker right behind them, and takes their results
there (``Local`` arguments), with no round trip to the owner between the two
(``TaskSubmitter._follow``, ``Worker._locals``). Checked with real worker processes: results,
failures, a worker killed in the middle of a chain, and merges of chains from two workers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import cloudpickle
import pytest
from cl_support import within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}


@af.remote
def inc(x: int) -> int:
    return x + 1


@af.remote
def inc_slow(x: int) -> int:
    time.sleep(0.005)
    return x + 1


@af.remote
def pid_of(x: int) -> tuple[int, int]:
    return x, os.getpid()


@af.remote
def step_pid(prev: tuple[int, int] | None) -> tuple[int, int]:
    return (0 if prev is None else prev[0] + 1), os.getpid()


@af.remote
def add(a: int, b: int) -> int:
    return a + b


@af.remote(num_returns=2)
def pair(x: int) -> tuple[int, int]:
    return x, x + 1


@af.remote
def boom(x: int) -> int:
    raise KeyError(f"no {x}")


async def test_a_chain_runs_on_one_worker_in_order(shared_cluster: af.Runtime) -> None:
    x = inc.remote(0)
    chain = [x]
    for _ in range(999):
        x = inc.remote(x)
        chain.append(x)
    assert await within(x) == 1000
    assert await within(af.get(chain)) == list(range(1, 1001))
    # every link of a chain runs in the process of the link before it
    y = step_pid.remote(None)
    steps = [y]
    for _ in range(30):
        y = step_pid.remote(y)
        steps.append(y)
    out = await within(af.get(steps))
    assert [n for n, _ in out] == list(range(31))
    assert len({pid for _, pid in out}) == 1


async def test_multiple_returns_and_mixed_arguments_follow(shared_cluster: af.Runtime) -> None:
    a, b = pair.options(num_returns=2).remote(10)
    ready = af.put(100)
    total = add.remote(a, b)  # two returns of one producer
    more = add.remote(total, ready)  # a producer in flight and a ready value
    assert await within(af.get([a, b, total, more])) == [10, 11, 21, 121]


async def test_a_failure_in_a_chain_reaches_every_later_link(shared_cluster: af.Runtime) -> None:
    x = inc.remote(0)
    x = boom.remote(x)
    tail = [inc.remote(x)]
    for _ in range(30):
        tail.append(inc.remote(tail[-1]))
    for ref in (x, tail[0], tail[-1]):
        with pytest.raises(KeyError, match="no 1"):
            await within(ref)


async def test_merging_chains_from_two_workers(shared_cluster: af.Runtime) -> None:
    n = 256
    refs = [inc.remote(i - 1) for i in range(n)]
    while len(refs) > 1:
        refs = [add.remote(refs[i], refs[i + 1]) for i in range(0, len(refs), 2)]
    assert await within(refs[0]) == n * (n - 1) // 2


async def test_a_worker_killed_mid_chain_reruns_what_it_lost(
        shared_cluster: af.Runtime) -> None:
    x = inc_slow.remote(0)
    probe = pid_of.remote(x)  # follows the chain's first link onto its worker
    links = [x]
    for _ in range(199):
        x = inc_slow.remote(x)
        links.append(x)
    _, pid = await within(probe)
    await asyncio.sleep(0.2)  # part of the chain has run on that worker
    os.kill(pid, signal.SIGKILL)
    assert await within(x, 60) == 200
    assert await within(af.get(links), 60) == list(range(1, 201))
