"""API.md §11, ``af.util.ActorPool`` and ``af.util.Queue``, on one shared cluster with real
worker processes (each actor a process of its own).

Order is shown with a ``Board`` actor instead of sleeps: a call that must stay unfinished
waits on the board until the test opens it, and calls note on the board what they did. Every
test kills the actors and shuts the queues it made (the ``made`` fixture), pass or fail.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import cloudpickle
import pytest
import pytest_asyncio
from cl_support import within

import actorflow as af
from actorflow.util import ActorPool, Empty, Full, Queue

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}


@af.remote
class Board:
    """Where calls wait (``wait`` until ``open``), meet (``arrive``) and note what they did."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.met = asyncio.Event()
        self.arrived = 0
        self.waiting = 0
        self.noted: list[Any] = []

    async def wait(self) -> None:
        self.waiting += 1
        await self.opened.wait()

    async def open(self) -> None:
        self.opened.set()

    async def arrive(self, n: int) -> None:
        self.arrived += 1
        if self.arrived >= n:
            self.met.set()
        await self.met.wait()

    async def note(self, value: Any) -> None:
        self.noted.append(value)

    async def state(self) -> dict[str, Any]:
        return {"waiting": self.waiting, "noted": list(self.noted)}


@af.remote
class Worker:
    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.calls = 0

    async def work(self, v: int, board: af.ActorHandle | None = None, hold: bool = False,
                   meet: int = 0) -> int:
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.calls += 1
        try:
            if board is not None and hold:
                await board.wait.remote()
            if board is not None and meet:
                await board.arrive.remote(meet)
            await asyncio.sleep(0.01)
            if board is not None:
                await board.note.remote(v)
            return v * 2
        finally:
            self.active -= 1

    async def fail(self, v: int) -> int:
        raise ValueError(f"bad value {v}")

    async def counts(self) -> dict[str, int]:
        return {"peak": self.peak, "calls": self.calls}


@af.remote
async def map_in_a_task(workers: list[af.ActorHandle], values: list[int]) -> list[int]:
    pool = ActorPool(workers)
    return [out async for out in pool.map(lambda a, v: a.work.remote(v), values)]


@af.remote
async def produce(q: Queue, items: list[Any]) -> int:
    for item in items:
        await q.put(item)
    return len(items)


@af.remote
class Consumer:
    async def take(self, q: Queue, n: int) -> list[Any]:
        return [await q.get(timeout=20) for _ in range(n)]


@pytest_asyncio.fixture(loop_scope="module")
async def made(shared_cluster: af.Runtime) -> AsyncIterator[list[Any]]:
    """Actors and queues a test appends here are killed after it (pass or fail)."""
    things: list[Any] = []
    yield things
    for thing in things:
        if isinstance(thing, Queue):
            await within(thing.shutdown())
        else:
            await within(af.kill(thing))


def workers(made: list[Any], n: int) -> list[af.ActorHandle]:
    handles = [Worker.remote() for _ in range(n)]
    made.extend(handles)
    return handles


def board(made: list[Any]) -> af.ActorHandle:
    handle = Board.remote()
    made.append(handle)
    return handle


async def until_board(b: af.ActorHandle, check: Any, what: str) -> dict[str, Any]:
    for _ in range(400):
        state = await within(b.state.remote())
        if check(state):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"the board never showed {what}: {state}")


def double(a: af.ActorHandle, v: int) -> af.ObjectRef:
    return a.work.remote(v)


# -- ActorPool -----------------------------------------------------------------------------------


async def test_sample_of_section_11(made: list[Any]) -> None:
    pool = af.util.ActorPool(workers(made, 3))
    items = list(range(12))
    outs = [out async for out in pool.map(lambda a, v: a.work.remote(v), items)]
    assert outs == [2 * v for v in items]
    unordered = [out async for out in pool.map_unordered(double, items)]
    assert sorted(unordered) == [2 * v for v in items]
    assert not pool.has_next()


async def test_every_actor_works_at_once_and_on_one_call_at_a_time(made: list[Any]) -> None:
    handles = workers(made, 3)
    pool = ActorPool(handles)
    b = board(made)
    # the first three calls meet on the board: they finish only if all three run at once
    outs = await within(_collect(pool.map(
        lambda a, v: a.work.remote(v, b, meet=3 if v < 3 else 0), range(15))))
    assert outs == [2 * v for v in range(15)]
    counts = await within(af.get([h.counts.remote() for h in handles]))
    assert [c["peak"] for c in counts] == [1, 1, 1]  # never two calls on one actor
    assert sum(c["calls"] for c in counts) == 15 and all(c["calls"] for c in counts)


async def _collect(it: AsyncIterator[Any]) -> list[Any]:
    return [out async for out in it]


async def test_map_keeps_order_while_the_other_actors_go_on(made: list[Any]) -> None:
    pool = ActorPool(workers(made, 2))
    b = board(made)
    results = pool.map(lambda a, v: a.work.remote(v, b, hold=v == 0), range(10))
    first = asyncio.ensure_future(anext(results))
    # item 0 holds one actor; the other works through what map looks ahead (2 x 2 actors)
    # (item 0's call may reach the board after items 1-3 on a loaded machine: wait for both)
    state = await until_board(b, lambda s: len(s["noted"]) >= 3 and s["waiting"] == 1,
                              "items 1-3 done while item 0 waits")
    assert state["noted"][:3] == [1, 2, 3]
    assert not first.done()  # the result of item 0 comes first
    await within(b.open.remote())
    assert await within(first) == 0
    assert await within(_collect(results)) == [2 * v for v in range(1, 10)]


async def test_map_unordered_returns_results_as_they_finish(made: list[Any]) -> None:
    pool = ActorPool(workers(made, 2))
    b = board(made)
    results = pool.map_unordered(lambda a, v: a.work.remote(v, b, hold=v == 0), range(10))
    early = [await within(anext(results)) for _ in range(9)]  # item 0 is still held
    assert sorted(early) == [2 * v for v in range(1, 10)]
    await within(b.open.remote())
    assert await within(anext(results)) == 0
    with pytest.raises(StopAsyncIteration):
        await within(anext(results))


async def test_submit_get_next_pop_idle_and_push_as_ray(made: list[Any]) -> None:
    a1, a2 = workers(made, 2)
    pool = ActorPool([a1])
    assert not pool.has_next()
    pool.submit(double, 1)
    assert pool.has_next() and not pool.has_free()
    assert pool.pop_idle() is None
    assert await within(pool.get_next()) == 2
    assert not pool.has_next() and pool.has_free()
    assert pool.pop_idle() == a1
    assert not pool.has_free()
    pool.push(a1)
    with pytest.raises(ValueError):
        pool.push(a1)
    pool.submit(double, 1)
    pool.submit(double, 2)  # pending: the only actor is busy
    pool.push(a2)  # takes the pending call at once
    assert not pool.has_free()
    assert {await within(pool.get_next_unordered()) for _ in range(2)} == {2, 4}
    pool.submit(double, 3)
    pool.submit(double, 4)
    pool.submit(double, 5)
    assert [await within(pool.get_next()) for _ in range(3)] == [6, 8, 10]
    with pytest.raises(ValueError):
        await pool.get_next()


async def test_get_next_timeout_keeps_the_result_or_drops_it(made: list[Any]) -> None:
    (a,) = workers(made, 1)
    pool = ActorPool([a])
    b = board(made)
    pool.submit(lambda w, v: w.work.remote(v, b, hold=True), 1)
    with pytest.raises(af.GetTimeoutError) as info:
        await within(pool.get_next(timeout=0.2))
    assert isinstance(info.value, TimeoutError)
    assert pool.has_next()  # still the next result
    with pytest.raises(af.GetTimeoutError):
        await within(pool.get_next_unordered(timeout=0))
    with pytest.raises(af.GetTimeoutError):
        await within(pool.get_next(timeout=0.1, ignore_if_timedout=True))
    assert not pool.has_next()  # dropped; its call still holds the actor
    pool.submit(double, 7)
    assert pool.pop_idle() is None
    await within(b.open.remote())
    assert await within(pool.get_next()) == 14  # not the dropped result
    assert pool.pop_idle() == a


async def test_errors_come_back_with_their_result(made: list[Any]) -> None:
    (a,) = workers(made, 1)
    pool = ActorPool([a])
    pool.submit(lambda w, v: w.fail.remote(v), 3)
    with pytest.raises(ValueError) as info:
        await within(pool.get_next())
    assert isinstance(info.value, af.TaskError)
    assert pool.has_free()  # the actor goes on
    with pytest.raises(TypeError):
        pool.submit(lambda w, v: v, 1)  # fn must return an ObjectRef
    assert pool.has_free() and not pool.has_next()
    results = pool.map(lambda w, v: w.fail.remote(v) if v == 2 else w.work.remote(v), range(5))
    assert [await within(anext(results)) for _ in range(2)] == [0, 2]
    with pytest.raises(ValueError):
        await within(anext(results))
    with pytest.raises(StopAsyncIteration):  # the error ended the iteration
        await within(anext(results))


async def test_a_dead_actor_gives_a_typed_error_not_a_hang(made: list[Any]) -> None:
    dead, alive = workers(made, 2)
    await within(af.kill(dead))
    pool = ActorPool([dead])
    pool.submit(double, 1)
    with pytest.raises(af.ActorDiedError) as info:
        await within(pool.get_next())
    assert info.value.actor == "Worker"
    pool.push(alive)
    outs = []
    with pytest.raises(af.ActorDiedError):
        async for out in pool.map(double, range(6)):
            outs.append(out)


async def test_a_pool_without_actors_raises_instead_of_hanging(shared_cluster: af.Runtime
                                                               ) -> None:
    pool = ActorPool([])
    with pytest.raises(ValueError):
        await pool.get_next_unordered()
    pool.submit(double, 1)
    with pytest.raises(RuntimeError):
        await within(pool.get_next())
    assert pool.has_next()
    with pytest.raises(RuntimeError):
        await within(_collect(pool.map(double, [1])))


async def test_concurrent_get_next_callers_take_distinct_results(made: list[Any]) -> None:
    pool = ActorPool(workers(made, 2))
    for v in range(6):
        pool.submit(double, v)
    outs = await within(asyncio.gather(*(pool.get_next() for _ in range(6))))
    assert outs == [0, 2, 4, 6, 8, 10]


async def test_leaving_a_map_early_drops_its_results(made: list[Any]) -> None:
    pool = ActorPool(workers(made, 2))
    pulled: list[int] = []

    def values() -> Iterator[int]:
        for v in range(1000):
            pulled.append(v)
            yield v

    results = pool.map(double, values())
    assert [await within(anext(results)) for _ in range(2)] == [0, 2]
    await results.aclose()
    assert len(pulled) <= 2 + 2 * 2  # values are read as the work goes, a bounded window ahead
    assert not pool.has_next()
    assert await within(_collect(pool.map(double, [10, 11]))) == [20, 22]  # only its own
    assert pool.pop_idle() is not None and pool.pop_idle() is not None  # both actors free


async def test_a_pool_works_inside_a_task(made: list[Any]) -> None:
    handles = workers(made, 2)
    assert await within(map_in_a_task.remote(handles, list(range(8)))) == [
        2 * v for v in range(8)]


# -- Queue ---------------------------------------------------------------------------------------


def queue(made: list[Any], maxsize: int = 0) -> Queue:
    q = af.util.Queue(maxsize=maxsize)
    made.append(q)
    return q


async def test_queue_is_fifo_with_sizes(made: list[Any]) -> None:
    q = queue(made, maxsize=100)
    assert await within(q.empty()) and not await within(q.full())
    for i in range(10):
        await within(q.put(i))
    assert await within(q.qsize()) == 10
    assert [await within(q.get()) for _ in range(5)] == [0, 1, 2, 3, 4]
    await within(q.put_nowait_batch([10, 11]))
    assert await within(q.get_nowait_batch(7)) == [5, 6, 7, 8, 9, 10, 11]
    assert await within(q.get_nowait_batch(0)) == []
    small = queue(made, maxsize=2)
    await within(small.put_nowait("a"))
    await within(small.put("b", block=False))
    assert await within(small.full())
    stats = await within(small.statistics())
    assert (stats.size, stats.maxsize, stats.puts, stats.gets) == (2, 2, 2, 0)


async def test_nowait_and_timeouts_raise_typed_errors(made: list[Any]) -> None:
    q = queue(made, maxsize=1)
    with pytest.raises(Empty) as empty:
        await within(q.get_nowait())
    assert isinstance(empty.value, asyncio.QueueEmpty)
    assert isinstance(empty.value, af.ActorflowError)
    assert empty.value.timeout is None
    with pytest.raises(Empty) as empty:
        await within(q.get(timeout=0.1))
    assert empty.value.timeout == 0.1
    await within(q.put(1))
    with pytest.raises(Full) as full:
        await within(q.put_nowait(2))
    assert isinstance(full.value, asyncio.QueueFull) and isinstance(full.value, af.ActorflowError)
    assert (full.value.maxsize, full.value.timeout) == (1, None)
    with pytest.raises(Full) as full:
        await within(q.put(2, timeout=0.1))
    assert full.value.timeout == 0.1
    with pytest.raises(Full) as full:
        await within(q.put_nowait_batch([2, 3]))
    assert full.value.count == 2
    with pytest.raises(Empty) as empty:
        await within(q.get_nowait_batch(2))
    assert empty.value.count == 2
    assert await within(q.get_nowait_batch(1)) == [1]  # the failed batches took nothing
    with pytest.raises(ValueError):
        await q.get(timeout=-1)
    for err in (Full(5, 0.5, 2), Empty(0.25, 3)):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert vars(back) == vars(err)


async def test_put_waits_for_room_and_get_for_an_item(made: list[Any]) -> None:
    q = queue(made, maxsize=2)
    await within(q.put(1))
    await within(q.put(2))
    blocked = asyncio.ensure_future(q.put(3))
    await _until_stats(q, lambda s: s.putters == 1, "a waiting put")
    assert not blocked.done()
    assert await within(q.get()) == 1
    await within(blocked)
    assert await within(q.get_nowait_batch(2)) == [2, 3]
    getter = asyncio.ensure_future(q.get())
    await _until_stats(q, lambda s: s.getters == 1, "a waiting get")
    await within(q.put("x"))
    assert await within(getter) == "x"


async def _until_stats(q: Queue, check: Any, what: str) -> Any:
    for _ in range(400):
        stats = await within(q.statistics())
        if check(stats):
            return stats
        await asyncio.sleep(0.02)
    raise AssertionError(f"the queue never showed {what}: {stats}")


async def test_a_cancelled_get_loses_no_item(made: list[Any]) -> None:
    q = queue(made)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(q.get(), 0.3)  # its wait at the actor is ended too
    await _until_stats(q, lambda s: s.getters == 0, "no waiting get")
    await within(q.put("kept"))
    assert await within(q.get_nowait()) == "kept"
    # cancelled while the answer is on its way: the item taken goes back to the head
    cancelled = 0
    for i in range(5):
        await within(q.put_nowait_batch([i, "next"]))
        taker = asyncio.ensure_future(q.get_nowait())
        await asyncio.sleep(0)  # the call is sent
        taker.cancel()
        try:
            assert await within(taker) == i
            assert await within(q.get_nowait()) == "next"
        except asyncio.CancelledError:
            cancelled += 1
            assert await within(q.get_nowait_batch(2)) == [i, "next"]
        assert await within(q.qsize()) == 0
    assert cancelled  # the give-back path ran


async def test_a_cancelled_put_puts_nothing(made: list[Any]) -> None:
    q = queue(made, maxsize=1)
    await within(q.put("a"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(q.put("b"), 0.3)
    await _until_stats(q, lambda s: s.putters == 0, "no waiting put")
    assert await within(q.get()) == "a"
    assert await within(q.qsize()) == 0


async def test_a_queue_is_shared_by_tasks_and_actors(made: list[Any]) -> None:
    q = queue(made, maxsize=3)
    consumer = Consumer.remote()
    made.append(consumer)
    taken = consumer.take.remote(q, 20)
    counts = [produce.remote(q, [(p, i) for i in range(10)]) for p in range(2)]
    assert await within(af.get(counts)) == [10, 10]
    items = await within(taken)
    for p in range(2):
        assert [i for (pp, i) in items if pp == p] == list(range(10))  # FIFO per producer
    ref = af.put([1, 2, 3])
    await within(q.put(ref))
    back = await within(q.get())
    assert isinstance(back, af.ObjectRef) and await within(back) == [1, 2, 3]
    copy = pickle.loads(cloudpickle.dumps(q))
    await within(copy.put("via a copy"))
    assert await within(q.get()) == "via a copy"


async def test_the_queue_actor_dying_is_a_typed_error(made: list[Any]) -> None:
    q = queue(made)
    waiting = asyncio.ensure_future(q.get())
    stats = await _until_stats(q, lambda s: s.getters == 1, "a waiting get")
    os.kill(stats.pid, signal.SIGKILL)
    with pytest.raises(af.ActorDiedError):
        await within(waiting)
    with pytest.raises(af.ActorDiedError):
        await within(q.put(1))
    other = queue(made, maxsize=1)
    await within(other.put(1))
    blocked = asyncio.ensure_future(other.put(2))
    await _until_stats(other, lambda s: s.putters == 1, "a waiting put")
    await within(other.shutdown())
    with pytest.raises(af.ActorDiedError):
        await within(blocked)


async def test_queue_options_are_checked(shared_cluster: af.Runtime) -> None:
    with pytest.raises(ValueError):
        Queue(actor_options={"max_restarts": 1})
    with pytest.raises(TypeError):
        Queue(maxsize=2.5)  # type: ignore[arg-type]
