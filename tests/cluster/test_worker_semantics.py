"""What user code sees of the worker: a returned ObjectRef stays a ref, numpy arguments are
read-only whatever their size, ``async def __init__`` is awaited, and each call of a batch
answers when it finishes. On one shared cluster with real worker processes."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from cl_support import within

import actorflow as af

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}


# -- a returned ObjectRef is the result, not its value (issue 14) --------------------------------


@af.remote
def add_one(x: int) -> int:
    return x + 1


@af.remote
def put_and_return(value):
    return af.put(value)  # plain def: the "return af.put" pattern


@af.remote
async def put_and_return_async(value):
    return af.put(value)


@af.remote
def submit_and_return(x: int):
    return add_one.remote(x)  # a nested task's ref, still pending when this returns


@af.remote
def collect_garbage() -> int:
    return gc.collect()


@af.remote
class RefMaker:
    def put(self, value):
        return af.put(value)

    async def put_async(self, value):
        return af.put(value)


async def test_a_plain_task_that_returns_a_ref_gives_the_ref(shared_cluster: af.Runtime) -> None:
    inner = await within(put_and_return.remote({"v": 41}))
    assert isinstance(inner, af.ObjectRef)
    assert await within(inner) == {"v": 41}
    inner = await within(put_and_return_async.remote([1, 2]))
    assert isinstance(inner, af.ObjectRef)
    assert await within(inner) == [1, 2]


async def test_a_returned_ref_outlives_the_workers_copy(shared_cluster: af.Runtime) -> None:
    refs = await within(af.get([put_and_return.remote(i) for i in range(8)]))
    nested = await within(submit_and_return.remote(10))
    # the workers dropped their own copies long ago; collect whatever cycles held them
    await within(af.get([collect_garbage.remote() for _ in range(4)]))
    await asyncio.sleep(0.2)
    assert all(isinstance(r, af.ObjectRef) for r in refs)
    assert await within(af.get(refs)) == list(range(8))
    assert isinstance(nested, af.ObjectRef)
    assert await within(nested) == 11


async def test_an_actor_method_that_returns_a_ref_gives_the_ref(
        shared_cluster: af.Runtime) -> None:
    maker = RefMaker.remote()
    try:
        one = await within(maker.put.remote("one"))
        assert isinstance(one, af.ObjectRef) and await within(one) == "one"
        # queued together: the batch path answers them
        many = await within(af.get([maker.put.remote(i) for i in range(20)]))
        assert all(isinstance(r, af.ObjectRef) for r in many)
        assert await within(af.get(many)) == list(range(20))
        back = await within(maker.put_async.remote("async"))
        assert isinstance(back, af.ObjectRef) and await within(back) == "async"
    finally:
        await within(af.kill(maker))


# -- numpy arguments are read-only at every size (issue 14, API.md §3) -----------------------------


def _flags(value) -> list[bool]:
    """The writeable flag of every array in ``value`` (arrays, lists and dicts of them)."""
    if isinstance(value, np.ndarray):
        return [bool(value.flags.writeable)]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _flags(v)]
    if isinstance(value, list | tuple):
        return [f for v in value for f in _flags(v)]
    return []


@af.remote
def flags_of(*args, **kwargs) -> list[bool]:
    return _flags(args) + _flags(kwargs)


@af.remote
async def flags_of_async(*args, **kwargs) -> list[bool]:
    return _flags(args) + _flags(kwargs)


@af.remote
class FlagReader:
    def __init__(self, arr) -> None:
        self.init_flags = _flags(arr)

    def init(self) -> list[bool]:
        return self.init_flags

    def flags(self, *args, **kwargs) -> list[bool]:
        return _flags(args) + _flags(kwargs)


def _arrays(n: int) -> dict[str, np.ndarray]:
    """Arrays of ``n`` float64s in the layouts that pickle differently."""
    base = np.arange(2 * n, dtype=np.float64)
    return {"contiguous": base[:n].copy(), "strided": base[::2],
            "fortran": np.asfortranarray(base[:n].reshape(2, -1)),
            "objects": np.array([1, "a"], dtype=object)}


@pytest.mark.parametrize("n", [10, 1_000, 100_000], ids=["tiny", "small", "large"])
async def test_numpy_arguments_are_read_only_at_every_size(
        shared_cluster: af.Runtime, n: int) -> None:
    arrays = _arrays(n)
    expected = [False] * len(arrays)
    # as positional and keyword arguments, nested in containers, and as ObjectRef arguments
    assert await within(flags_of.remote(*arrays.values())) == expected
    assert await within(flags_of_async.remote(**arrays)) == expected
    nested = await within(flags_of.remote([arrays], x={"y": arrays["strided"]}))
    assert nested == [*expected, False]
    assert await within(flags_of.remote(af.put(arrays["contiguous"]),
                                        af.put(arrays["strided"]))) == [False, False]
    reader = FlagReader.remote(arrays["strided"])
    try:
        assert await within(reader.init.remote()) == [False]
        assert await within(reader.flags.remote(**arrays)) == expected
        # queued together, plain-def calls run as a batch
        many = await within(af.get([reader.flags.remote(arrays["contiguous"])
                                    for _ in range(10)]))
        assert many == [[False]] * 10
    finally:
        await within(af.kill(reader))


# -- async def __init__ is awaited on the actor's loop (issue 14) ----------------------------------


@af.remote
class AsyncInit:
    async def __init__(self, start: int, *, step: int = 1) -> None:
        await asyncio.sleep(0.01)  # it may await: it runs on the actor's loop
        self.loop = asyncio.get_running_loop()
        self.n = start + step

    async def same_loop(self) -> bool:
        return asyncio.get_running_loop() is self.loop

    def value(self) -> int:
        return self.n


@af.remote
class AsyncInitFails:
    async def __init__(self) -> None:
        await asyncio.sleep(0)
        raise ValueError("cannot build asynchronously")

    def f(self) -> int:
        return 1


async def test_an_async_init_is_awaited_on_the_actors_loop(shared_cluster: af.Runtime) -> None:
    actor = AsyncInit.remote(40, step=2)
    try:
        assert await within(actor.value.remote()) == 42
        assert await within(actor.same_loop.remote()) is True
    finally:
        await within(af.kill(actor))
    broken = AsyncInitFails.remote()
    with pytest.raises(af.ActorDiedError, match="cannot build asynchronously") as info:
        await within(broken.f.remote())
    assert isinstance(info.value.cause, ValueError)


# -- each call of a batch answers when it finishes (issue 13) --------------------------------------


@af.remote(max_restarts=1, max_task_retries=-1)
class SlowLog:
    """Plain-def calls that take long (so they run on the actor's thread) and log each run."""

    def __init__(self, log: str) -> None:
        self.log = log

    def work(self, i: int, seconds: float) -> int:
        time.sleep(seconds)
        with open(self.log, "a") as f:
            f.write(f"{i}\n")
        return i

    def pid(self) -> int:
        return os.getpid()


@af.remote
def slow_task(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


async def test_calls_queued_together_answer_one_by_one_and_rerun_only_if_unfinished(
        shared_cluster: af.Runtime, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    actor = SlowLog.remote(str(log))
    try:
        pid = await within(actor.pid.remote())
        refs = [actor.work.remote(i, 0.3) for i in range(8)]  # one batch at the actor
        assert await within(refs[1]) == 1
        # the second call answered while later calls of its batch still run
        ready, _ = await within(af.wait(refs, num_returns=len(refs), timeout=0))
        assert refs[-1] not in ready
        answered = set(ready)
        os.kill(pid, signal.SIGKILL)  # at-least-once: the calls in flight run again
        assert await within(af.get(refs)) == list(range(8))
        runs = [int(line) for line in log.read_text().split()]
        assert sorted(set(runs)) == list(range(8))  # every call ran
        for i, ref in enumerate(refs):
            if ref in answered:  # answered before the kill: never run again
                assert runs.count(i) == 1, (i, runs)
        assert await within(actor.pid.remote()) != pid  # (a new incarnation)
    finally:
        await within(af.kill(actor))


async def test_tasks_queued_together_answer_one_by_one(shared_cluster: af.Runtime) -> None:
    # all the CPUs each: one worker at a time. Short tasks are pipelined onto it and run as
    # batches; then they turn long, six of them in flight on that worker
    whole = slow_task.options(num_cpus=2)
    assert await within(af.get([whole.remote(i, 0) for i in range(50)])) == list(range(50))
    refs = [whole.remote(i, 0.2) for i in range(50, 56)]
    first = await within(af.wait(refs, num_returns=1))
    ready, _ = await within(af.wait(refs, num_returns=len(refs), timeout=0))
    assert first[0][0] in ready and len(ready) < len(refs)
    assert await within(af.get(refs)) == list(range(50, 56))
