"""API.md §11: streaming generators. A remote function or actor method that yields returns an
``af.ObjectRefGenerator`` whose refs arrive while the task runs; backpressure pauses the
producer; errors come as a last ref; a dropped generator releases its worker; a killed worker's
generator task is retried and delivers every value once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import cloudpickle
import numpy as np
import pytest
from cl_support import until, within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}


@af.remote
async def produce(n: int):
    for i in range(n):
        yield i


@af.remote
def produce_plain(n: int):
    for i in range(n):
        yield i * 10


@af.remote
def arrays(n: int, size: int):
    for i in range(n):
        yield np.full(size, i, dtype=np.uint8)


@af.remote
async def fails_after(n: int):
    for i in range(n):
        yield i
    raise ValueError("no more")


@af.remote
class Counter:
    def __init__(self) -> None:
        self.made = 0

    async def count(self, n: int):
        for i in range(n):
            self.made += 1
            yield i

    def plain(self, n: int):
        for i in range(n):
            self.made += 1
            yield -i

    def made_so_far(self) -> int:
        return self.made


async def _all(gen: af.ObjectRefGenerator) -> list:
    return [await ref async for ref in gen]


async def test_async_and_plain_generators_stream_every_value_in_order(shared_cluster):
    gen = produce.remote(100)
    assert isinstance(gen, af.ObjectRefGenerator)
    assert await within(_all(gen)) == list(range(100))
    assert await within(_all(produce_plain.remote(50))) == [i * 10 for i in range(50)]
    assert await within(_all(produce.remote(0))) == []
    # a plain generator's thread waits for credit with nothing on its way, then goes on
    gen = produce_plain.options(generator_backpressure=3).remote(300)
    assert await within(_all(gen)) == [i * 10 for i in range(300)]
    # the task itself answers how many values it made
    gen = produce.remote(7)
    await within(_all(gen))
    assert await within(gen.task_ref) == 7 and gen.completed()


async def test_large_values_stream_through_shared_memory(shared_cluster):
    size = 2 << 20
    values = await within(_all(arrays.remote(5, size)))
    assert [int(v[0]) for v in values] == [0, 1, 2, 3, 4]
    assert all(v.shape == (size,) and int(v[-1]) == i for i, v in enumerate(values))


async def test_refs_arrive_before_the_task_ends(shared_cluster):
    @af.remote
    async def slow(n: int):
        for i in range(n):
            yield i
            await asyncio.sleep(0.3)

    gen = slow.remote(5)
    start = time.monotonic()
    first = await within(gen.__anext__())
    assert await within(first) == 0
    assert time.monotonic() - start < 1.0  # not after the whole run (~1.5 s)
    assert not gen.completed()
    assert await within(_all(gen)) == [1, 2, 3, 4]


async def test_an_error_comes_after_the_values_made_before_it(shared_cluster):
    refs = [ref async for ref in fails_after.remote(3)]
    assert len(refs) == 4
    assert [await within(r) for r in refs[:3]] == [0, 1, 2]
    with pytest.raises(af.TaskError) as info:
        await within(refs[3])
    assert isinstance(info.value.cause, ValueError)


async def test_backpressure_pauses_the_producer(shared_cluster):
    @af.remote
    async def tracked(counter, n: int):
        for i in range(n):
            await counter.bump.remote()
            yield i

    @af.remote
    class Made:
        def __init__(self) -> None:
            self.n = 0

        def bump(self) -> None:
            self.n += 1

        def get(self) -> int:
            return self.n

    made = Made.remote()
    gen = tracked.options(generator_backpressure=3).remote(made, 50)
    first = await within(gen.__anext__())
    await asyncio.sleep(1.0)  # ample time to make all 50 without backpressure
    ahead = await within(made.get.remote())
    assert ahead <= 3 + 2, ahead  # the producer waits for the consumer
    rest = await within(_all(gen))
    assert [await within(first), *rest] == list(range(50))
    assert await within(made.get.remote()) == 50


async def test_actor_generator_methods(shared_cluster):
    counter = Counter.remote()
    gen = counter.count.remote(20)
    assert isinstance(gen, af.ObjectRefGenerator)
    assert await within(_all(gen)) == list(range(20))
    assert await within(_all(counter.plain.remote(5))) == [0, -1, -2, -3, -4]
    assert await within(counter.made_so_far.remote()) == 25
    # and backpressure per call
    gen = counter.count.options(generator_backpressure=2).remote(10)
    assert await within(_all(gen)) == list(range(10))


async def test_a_dropped_generator_releases_its_worker(shared_cluster):
    @af.remote(num_cpus=2)  # the whole cluster: the next task runs only once it is released
    async def endless():
        i = 0
        while True:
            yield i
            i += 1

    @af.remote(num_cpus=2)
    def after() -> str:
        return "ran"

    gen = endless.options(generator_backpressure=2).remote()
    assert await within(await within(gen.__anext__())) == 0
    del gen
    assert await within(after.remote(), 20) == "ran"


@af.remote(max_retries=2)
def dies_once(marker: str, n: int):
    for i in range(n):
        if i == 5 and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        yield i


async def test_a_killed_generator_runs_again_while_nothing_was_read(shared_cluster, tmp_path):
    marker = tmp_path / "died"  # (the worker makes it before it kills itself)
    gen = dies_once.remote(str(marker), 10)
    await until(marker.exists, what="the first attempt died")
    await asyncio.sleep(0.5)  # the values of the dead attempt came; none is read
    assert await within(_all(gen), 30) == list(range(10))
    assert await within(gen.task_ref) == 10


async def test_a_killed_generator_that_was_read_from_fails_with_a_typed_error(
        shared_cluster, tmp_path):
    marker = tmp_path / "died"
    refs = []
    # with backpressure 2 it makes value 5 (where it dies) only once 4 values were read
    async for ref in dies_once.options(generator_backpressure=2).remote(str(marker), 10):
        refs.append(ref)
    assert [await within(r) for r in refs[:-1]] == list(range(len(refs) - 1))
    assert 4 <= len(refs) - 1 <= 5
    with pytest.raises(af.WorkerCrashedError):
        await within(refs[-1])


async def test_cancel_stops_the_producer(shared_cluster):
    @af.remote
    async def ticks():
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0.01)

    gen = ticks.remote()
    got = [await within(await within(gen.__anext__())) for _ in range(3)]
    assert got == [0, 1, 2]
    await af.cancel(gen)
    rest = [ref async for ref in gen]  # it ends: the values made before the cancel, then it
    assert rest, "the cancel comes as the last ref"
    with pytest.raises(af.TaskCancelledError):
        await within(rest[-1])
    assert [await within(r) for r in rest[:-1]] == list(range(3, 3 + len(rest) - 1))


async def test_a_generator_cannot_have_num_returns():
    async def gen():
        yield 1

    with pytest.raises(ValueError):
        af.remote(num_returns=2)(gen)
