"""Large values never stall the event loop (reliability.md): a value too large to copy on the
loop's thread is refused at once with a SerializationError naming its size and the limit;
``af.put_async`` copies any size off the loop (the loop's worst lag is measured) and its ref
reaches a task."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator

import cloudpickle
import numpy as np
import pytest
from cl_support import run_python, within

import actorflow as af
from actorflow.cluster.core import SYNC_COPY_LIMIT

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 1}


@af.remote
def summary(a: np.ndarray) -> tuple[float, int]:
    return float(a[:: 1 << 12].sum()), a.nbytes


class LagMeter:
    """How late a 5 ms sleep on the loop wakes, at worst, while it runs."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.perf_counter() - start - 0.005)

    async def __aenter__(self) -> LagMeter:
        self._task = asyncio.ensure_future(self._run())
        await asyncio.sleep(0.02)
        self.worst = 0.0
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await within(self._task)


@pytest.fixture(scope="module")
def two_gib() -> AsyncIterator[np.ndarray]:
    yield np.ones((2 << 30) // 8)  # type: ignore[misc]


async def test_a_two_gib_argument_is_refused_at_once_naming_size_and_limit(
        shared_cluster: af.Runtime, two_gib: np.ndarray) -> None:
    async with LagMeter() as lag:
        start = time.perf_counter()
        with pytest.raises(af.SerializationError) as info:
            summary.remote(two_gib)
        with pytest.raises(af.SerializationError):
            af.put(two_gib)
        took = time.perf_counter() - start
    assert took < 1.0
    assert info.value.size is not None and info.value.size >= two_gib.nbytes
    assert info.value.limit == SYNC_COPY_LIMIT
    assert lag.worst < 0.1, f"the loop stalled {lag.worst * 1000:.0f} ms"


async def test_put_async_copies_two_gib_off_the_loop_and_a_task_reads_it(
        shared_cluster: af.Runtime, two_gib: np.ndarray) -> None:
    async with LagMeter() as lag:
        ref = await within(af.put_async(two_gib), 60.0)
    assert lag.worst < 0.1, f"the loop stalled {lag.worst * 1000:.0f} ms during put_async"
    total, nbytes = await within(summary.remote(ref), 60.0)
    assert nbytes == two_gib.nbytes and total == float(two_gib[:: 1 << 12].sum())
    del ref


async def test_a_value_under_the_limit_still_goes_the_sync_way(shared_cluster: af.Runtime
                                                               ) -> None:
    small = np.arange(1 << 20, dtype=np.float64)  # 8 MiB
    assert await within(summary.remote(small)) == (float(small[:: 1 << 12].sum()), small.nbytes)
    assert (await within(af.get(af.put(small))) == small).all()


@af.remote
async def make(n: int) -> np.ndarray:
    return np.ones(n)


async def test_a_large_result_of_an_async_task_is_not_refused(shared_cluster: af.Runtime
                                                              ) -> None:
    n = (SYNC_COPY_LIMIT + (16 << 20)) // 8  # over the limit for a caller's sync copy
    out = await within(make.remote(n), 60.0)
    assert out.nbytes == n * 8 and out[-1] == 1.0


async def test_a_cancelled_put_async_leaves_no_segment() -> None:
    """In a process of its own, so that no other test's objects are counted: the store's
    live segments come back to none once the cancelled copy has ended."""
    out = await asyncio.to_thread(run_python, """
        import asyncio, time
        import numpy as np
        import actorflow as af
        from actorflow.objects.ref import current_core

        async def main():
            store = current_core().store
            value = np.ones((512 << 20) // 8)
            putting = asyncio.ensure_future(af.put_async(value))
            await asyncio.sleep(0.01)  # the copy is under way in its thread
            putting.cancel()
            try:
                await putting
            except asyncio.CancelledError:
                print("cancelled")
            def stats():
                return store.statistics()

            deadline = time.monotonic() + 30  # until the copy has ended in its thread
            while not (stats()["written"] or stats()["pooled"]):
                assert time.monotonic() < deadline, "the copy never ended"
                await asyncio.sleep(0.05)
            deadline = time.monotonic() + 5  # then until its segment is let go
            while stats()["written"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            print("written", stats()["written"])

        af.run(main, num_cpus=1)
    """, timeout=90.0)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cancelled", "written", "0"], out.stdout
