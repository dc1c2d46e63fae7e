"""Ownership with borrowers (issue 16, API.md §3): a ref that leaves its owner's process keeps
its object alive exactly as long as some process holds it or some kept value carries it; then
the object is freed. Real worker processes on one shared embedded cluster; the owner's table
(and the worker-side tables, asked through actors) is what is checked."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time

import cloudpickle
import numpy as np
import pytest
from cl_support import until

import actorflow as af
from actorflow.objects.ref import current_core

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2, "resources": {"gate": 1}}
BIG = 200_000  # float64s: 1.6 MB, a shared-memory segment


def owned_here(object_id: str) -> bool:
    return object_id in current_core().objects.entries


async def eventually(check, timeout: float, what: str) -> float:
    """Poll an async ``check`` until it holds; returns how long it took."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@af.remote(num_cpus=0)
class Keeper:
    def __init__(self) -> None:
        self.kept: list[af.ObjectRef] = []

    async def keep(self, refs: list[af.ObjectRef]) -> int:
        self.kept.extend(refs)
        return len(self.kept)

    async def total(self) -> list[float]:
        return [float((await r).sum()) for r in self.kept]

    async def drop(self) -> None:
        self.kept.clear()
        gc.collect()

    def pid(self) -> int:
        return os.getpid()


@af.remote(num_cpus=0)
class Maker:
    def make(self) -> list[af.ObjectRef]:
        return [af.put(np.ones(BIG))]

    def has(self, object_id: str) -> bool:
        return object_id in current_core().objects.entries


@af.remote
async def relay(keeper, refs: list[af.ObjectRef]) -> int:
    return await keeper.keep.remote(refs)


@af.remote
async def hold_nothing(refs: list[af.ObjectRef]) -> int:
    return len(refs)


async def test_a_ref_through_three_processes_kept_by_an_actor_lives_until_dropped(
        shared_cluster: af.Runtime) -> None:
    keeper = Keeper.remote()
    x = af.put(np.ones(BIG))
    oid = x.id
    # driver -> a task's worker -> the keeper actor (three processes)
    assert await relay.remote(keeper, [x]) == 1
    del x
    gc.collect()
    await asyncio.sleep(1.0)  # (time for a wrong free to happen)
    assert owned_here(oid), "freed while the keeper actor still held a ref"
    assert await keeper.total.remote() == [float(BIG)]
    await keeper.drop.remote()
    await until(lambda: not owned_here(oid), 1.0, "the object freed once the keeper let go")
    await af.kill(keeper)


async def test_a_ref_passed_and_dropped_by_a_task_is_freed(shared_cluster: af.Runtime) -> None:
    x = af.put(np.ones(BIG))
    oid = x.id
    assert await hold_nothing.remote([x, x]) == 2
    del x
    await until(lambda: not owned_here(oid), 1.0, "the object freed after the task let go")


async def test_a_ref_returned_by_its_owner_lives_while_the_caller_holds_it(
        shared_cluster: af.Runtime) -> None:
    maker = Maker.remote()
    out = maker.make.remote()
    (inner,) = await out
    del out  # the result (a list carrying the ref) is freed here: its lend goes too
    gc.collect()
    await asyncio.sleep(0.5)
    assert await maker.has.remote(inner.id), "freed while the driver held a borrowed ref"
    assert float((await inner).sum()) == float(BIG)
    oid = inner.id
    del inner
    gc.collect()
    await eventually(lambda: _gone(maker, oid), 1.0,
                     "the maker's object freed once the driver let go")
    await af.kill(maker)


async def _gone(maker, oid: str) -> bool:
    return not await maker.has.remote(oid)


async def test_a_ref_inside_a_put_value_lives_as_long_as_that_value(
        shared_cluster: af.Runtime) -> None:
    x = af.put(np.ones(BIG))
    oid = x.id
    outer = af.put({"inside": [x]})
    del x
    gc.collect()
    assert owned_here(oid), "freed while a stored value carried it"
    value = await outer
    assert float((await value["inside"][0]).sum()) == float(BIG)
    del value
    gc.collect()
    assert owned_here(oid)
    del outer
    gc.collect()
    await until(lambda: not owned_here(oid), 1.0, "the object freed with the value carrying it")


async def test_a_borrower_that_dies_stops_counting(shared_cluster: af.Runtime) -> None:
    keeper = Keeper.remote()
    x = af.put(np.ones(BIG))
    oid = x.id
    assert await keeper.keep.remote([x]) == 1
    pid = await keeper.pid.remote()
    del x
    gc.collect()
    assert owned_here(oid)
    os.kill(pid, signal.SIGKILL)  # the borrower's process dies, with no word to the owner
    await until(lambda: not owned_here(oid), 5.0, "the object freed after its borrower died")


async def test_a_cancelled_task_never_run_lets_its_arguments_go(
        shared_cluster: af.Runtime) -> None:
    gate = Keeper.options(resources={"gate": 1}).remote()  # holds the only "gate"
    assert await gate.keep.remote([]) == 0
    x = af.put(np.ones(BIG))
    oid = x.id
    never = hold_nothing.options(resources={"gate": 1}).remote([x])  # queued behind it
    del x
    gc.collect()
    await asyncio.sleep(0.2)
    assert owned_here(oid)
    await af.cancel(never)
    with pytest.raises(af.TaskCancelledError):
        await asyncio.wait_for(never, 10)
    del never
    gc.collect()
    await until(lambda: not owned_here(oid), 1.0, "the object freed once the task was dropped")
    await af.kill(gate)
