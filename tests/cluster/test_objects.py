"""API.md §3, objects: put/get, wait, as_completed, cancel, refs, zero-copy numpy; on one
shared cluster with real worker processes."""

from __future__ import annotations

import asyncio
import mmap
import os
import pickle
import sys
import tracemalloc
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from cl_support import runtime_segments, until, within

import actorflow as af
from actorflow.objects.ref import current_core
from actorflow.objects.store import POOL_SEGMENTS

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 2}


@af.remote
async def echo(x):
    return x


@af.remote
async def sleep_then(value, seconds: float):
    await asyncio.sleep(seconds)
    return value


@af.remote
async def add_one(x: int) -> int:
    return x + 1


@af.remote
def fail(msg: str):
    raise RuntimeError(msg)


@af.remote
async def block_until_cancelled(started: str, cancelled: str) -> str:
    Path(started).touch()  # noqa: ASYNC240 - an empty marker file
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        # a running async task gets CancelledError inside
        Path(cancelled).touch()  # noqa: ASYNC240 - an empty marker file
        raise
    return "not cancelled"


@af.remote
def mark_and_return(path: str, value):
    Path(path).touch()
    return value


# -- put / get ------------------------------------------------------------------------------------


async def test_put_get_and_await_ref(shared_cluster: af.Runtime) -> None:
    value = {"a": [1, 2, 3], "b": "text"}
    ref = af.put(value)                        # sync, returns ObjectRef
    assert isinstance(ref, af.ObjectRef)
    value["a"].append(4)                       # serialized at put: later changes are not seen
    assert await within(af.get(ref, timeout=None)) == {"a": [1, 2, 3], "b": "text"}
    assert await within(ref) == {"a": [1, 2, 3], "b": "text"}
    r1, r2 = af.put(1), af.put(2)
    assert await within(af.get([r1, r2])) == [1, 2]
    # a put value reaches a task
    assert await within(echo.remote(ref)) == {"a": [1, 2, 3], "b": "text"}


async def test_get_list_keeps_the_order_of_the_refs_not_of_completion(
    shared_cluster: af.Runtime,
) -> None:
    # r0 waits for r1 (its argument), so r1 finishes first; get still returns [r0, r1, r2]
    r1 = sleep_then.remote("one", 0.2)
    r0 = add_one.remote(sleep_then.remote(0, 0.4))
    r2 = af.put("two")
    assert await within(af.get([r0, r1, r2])) == [1, "one", "two"]


async def test_get_timeout_raises_get_timeout_error_which_is_a_timeout_error(
    shared_cluster: af.Runtime,
) -> None:
    ref = sleep_then.remote("late", 1.0)
    with pytest.raises(af.GetTimeoutError, match=r"timed out after 0\.05"):
        await af.get(ref, timeout=0.05)
    try:
        await af.get([ref], timeout=0.05)
    except TimeoutError as exc:               # the stdlib type catches it too
        assert isinstance(exc, af.GetTimeoutError)
    else:
        raise AssertionError("get() did not time out")
    # the task went on running: a later get has its value
    assert await within(af.get(ref, timeout=10)) == "late"


async def test_get_raises_the_task_error(shared_cluster: af.Runtime) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        await within(af.get([af.put(1), fail.remote("boom")]))


async def test_get_rejects_what_is_not_a_ref(shared_cluster: af.Runtime) -> None:
    with pytest.raises(TypeError, match="ObjectRef"):
        await af.get([1])  # type: ignore[list-item]


# -- wait -----------------------------------------------------------------------------------------


async def test_wait_returns_num_returns_ready_in_order(shared_cluster: af.Runtime) -> None:
    slow = sleep_then.remote("slow", 30)
    fast = [af.put(i) for i in range(3)]
    refs = [fast[0], slow, fast[1], fast[2]]
    ready, not_ready = await within(af.wait(refs, num_returns=1, timeout=None))
    assert ready == [fast[0]] and not_ready == [slow, fast[1], fast[2]]
    ready, not_ready = await within(af.wait(refs, num_returns=3))
    assert ready == fast and not_ready == [slow]
    await af.cancel(slow)


async def test_wait_timeout_returns_what_is_ready_instead_of_raising(
    shared_cluster: af.Runtime,
) -> None:
    slow = sleep_then.remote("slow", 30)
    failed = fail.remote("counts as ready")
    done = af.put("done")
    loop = asyncio.get_running_loop()
    start = loop.time()
    ready, not_ready = await within(af.wait([slow, failed, done], num_returns=3, timeout=0.3))
    elapsed = loop.time() - start
    assert ready == [failed, done] and not_ready == [slow]
    assert 0.25 <= elapsed < 5.0
    ready, not_ready = await within(af.wait([slow], num_returns=1, timeout=0))
    assert ready == [] and not_ready == [slow]
    await af.cancel(slow)


async def test_wait_checks_num_returns(shared_cluster: af.Runtime) -> None:
    with pytest.raises(ValueError, match="num_returns"):
        await af.wait([af.put(1)], num_returns=2)


# -- as_completed ---------------------------------------------------------------------------------


async def test_as_completed_yields_in_completion_order(shared_cluster: af.Runtime) -> None:
    # a chain: each task takes the previous one's result, so they finish r0, r1, r2
    r0 = add_one.remote(0)
    r1 = add_one.remote(r0)
    r2 = add_one.remote(r1)
    seen = []

    async def collect() -> None:
        async for ref in af.as_completed([r2, r0, r1]):
            seen.append(ref)

    await within(collect())
    assert seen == [r0, r1, r2]
    assert await within(af.get(seen)) == [1, 2, 3]


# -- cancel ---------------------------------------------------------------------------------------


async def test_cancel_queued_and_running_tasks(shared_cluster: af.Runtime, tmp_path: Path) -> None:
    started = [tmp_path / f"started{i}" for i in range(2)]
    cancelled = [tmp_path / f"cancelled{i}" for i in range(2)]
    # two running tasks take both CPUs...
    running = [block_until_cancelled.remote(str(s), str(c))
               for s, c in zip(started, cancelled, strict=True)]
    await until(lambda: all(s.exists() for s in started), what="both tasks to start")
    # ...so a third one is queued
    queued_marker = tmp_path / "queued_ran"
    queued = mark_and_return.remote(str(queued_marker), "ran")
    await af.cancel(queued, force=False)
    with pytest.raises(af.TaskCancelledError, match="before it ran"):
        await within(queued)
    await af.cancel(running[0])
    with pytest.raises(af.TaskCancelledError, match="while it ran"):
        await within(running[0])
    assert cancelled[0].exists()              # it saw CancelledError inside
    await af.cancel(running[1])
    with pytest.raises(af.TaskCancelledError):
        await within(running[1])
    assert cancelled[1].exists()
    assert not queued_marker.exists()          # the queued task never ran
    # the CPUs are free again: new work runs
    assert await within(echo.remote("after")) == "after"


async def test_cancel_of_a_finished_task_keeps_its_value(shared_cluster: af.Runtime) -> None:
    ref = echo.remote(5)
    assert await within(ref) == 5
    await af.cancel(ref)
    assert await within(ref) == 5


# -- refs -----------------------------------------------------------------------------------------


@af.remote
class Holder:
    async def take(self, top, nested):
        return top, isinstance(nested[0], af.ObjectRef), await nested[0]


async def test_refs_are_hashable_picklable_and_go_to_actors(shared_cluster: af.Runtime) -> None:
    a, b = af.put("a"), af.put("b")
    table = {a: 1, b: 2}
    assert table[a] == 1 and len({a, b, a}) == 2
    copy = pickle.loads(pickle.dumps(a))
    assert copy == a and hash(copy) == hash(a) and table[copy] == 1
    assert await within(copy) == "a"
    copy2 = cloudpickle.loads(cloudpickle.dumps([a, b]))
    assert await within(af.get(copy2)) == ["a", "b"]
    holder = Holder.remote()
    try:
        assert await within(holder.take.remote(a, [b])) == ("a", True, "b")
    finally:
        await af.kill(holder)


@af.remote
async def keep_ref(refs):
    return refs  # the nested ref travels back


async def test_a_ref_that_went_through_a_task_still_resolves(shared_cluster: af.Runtime) -> None:
    inner = af.put({"deep": True})
    (back,) = await within(keep_ref.remote([inner]))
    assert back == inner
    assert await within(back) == {"deep": True}


# -- numpy: zero-copy from shared memory ----------------------------------------------------------


def _shm_backed(arr: np.ndarray) -> bool:
    base = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


@af.remote
def inspect_array(arr: np.ndarray) -> dict:
    return {"writeable": arr.flags.writeable, "shm": _shm_backed(arr), "sum": float(arr.sum()),
            "pid": os.getpid()}


@af.remote
def make_array(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


async def test_numpy_arrays_are_read_zero_copy_from_shared_memory(
    shared_cluster: af.Runtime,
) -> None:
    n = 1_000_000
    arr = np.arange(n, dtype=np.float64)
    ref = af.put(arr)
    assert runtime_segments(shared_cluster)   # the array went to a segment in /dev/shm
    arr[0] = -1.0                                     # put copied it: later writes are not seen
    out = await within(ref)
    assert out.flags.writeable is False
    assert _shm_backed(out)
    assert out[0] == 0.0 and out[-1] == n - 1 and out.shape == (n,) and out.dtype == np.float64
    with pytest.raises(ValueError, match="read-only"):
        out[1] = 5.0
    # a worker reads it from the same pages
    seen = await within(inspect_array.remote(ref))
    assert seen["pid"] != os.getpid()
    assert seen == {**seen, "writeable": False, "shm": True, "sum": float(n * (n - 1) / 2)}
    # and a task's large result comes back the same way
    made = await within(make_array.remote(n))
    assert made.flags.writeable is False and _shm_backed(made) and made[-1] == n - 1


async def test_large_put_is_not_copied_through_python_memory(shared_cluster: af.Runtime) -> None:
    arr = np.ones(4_000_000, dtype=np.float64)  # 32 MB
    was_tracing = tracemalloc.is_tracing()  # (PYTHONTRACEMALLOC may have started it)
    if not was_tracing:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        ref = af.put(arr)
        put_peak = tracemalloc.get_traced_memory()[1] - base
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = await within(ref)
        get_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()
    # a pickled copy (or a bytes copy of the buffer) would show up as ~32 MB here
    assert put_peak < arr.nbytes // 8, f"put allocated {put_peak} bytes for {arr.nbytes}"
    assert get_peak < arr.nbytes // 8, f"get allocated {get_peak} bytes for {arr.nbytes}"
    assert out.flags.writeable is False and float(out.sum()) == 4_000_000.0


async def test_a_freed_object_removes_its_segment(shared_cluster: af.Runtime) -> None:
    before = set(runtime_segments(shared_cluster))
    ref = af.put(np.zeros(1_000_000))
    made = set(runtime_segments(shared_cluster)) - before
    assert len(made) == 1
    del ref  # the last ref in the cluster: the object is freed
    # its segment is removed, or kept (mapped, bounded) for this process's next large value
    kept = set(runtime_segments(shared_cluster)) & made
    assert not kept or current_core().store.statistics()["pooled"] >= 1
    for _ in range(3 * POOL_SEGMENTS):
        again = af.put(np.zeros(1_000_000))
        del again
    assert len(set(runtime_segments(shared_cluster)) - before) <= POOL_SEGMENTS
