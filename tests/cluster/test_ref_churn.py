"""A million ref operations end where they began (issue 16): refs are created, passed to tasks
and to an actor that keeps a window of them (borrowers), and dropped, a million operations in
all, with large values among them that go to shared memory and spill past a small
``object_store_memory``. At the end the owner's table and ledger, the borrower's table, the
node's store (used bytes, objects, bytes spilled on disk) and /dev/shm are back to their
baseline."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections import deque

import cloudpickle
import numpy as np
import pytest
from cl_support import runtime_segments

import actorflow as af
from actorflow.objects.ref import current_core

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MIB = 1 << 20
CLUSTER = {"num_cpus": 2, "object_store_memory": 48 * MIB}
PER_BATCH = 2000  # refs made per batch; each is created, passed twice and dropped: 4 ops
OPS = 1_000_000
BIG_EVERY = 4  # a batch in this many carries an 8 MiB value too (the window spills them)


@af.remote(num_cpus=0)
class Window:
    """Keeps the refs of the last few batches (a borrower), dropping older ones."""

    def __init__(self) -> None:
        self.kept: deque[list[af.ObjectRef]] = deque(maxlen=8)

    async def keep(self, refs: list[af.ObjectRef]) -> int:
        self.kept.append(refs)
        return len(refs)

    async def first_of_each(self) -> list[int]:
        return [await batch[0] for batch in self.kept]

    async def drop(self) -> None:
        self.kept.clear()
        gc.collect()

    def table(self) -> tuple[int, int]:
        core = current_core()
        return len(core.objects.entries), core.borrowing.describe()["borrowed"]


@af.remote
def count(refs: list[af.ObjectRef]) -> int:
    return len(refs)


async def store_totals() -> dict[str, int]:
    totals = (await af.memory_summary())["totals"]
    return {k: totals[k] for k in ("objects_in_store", "object_store_used", "spilled_now_bytes")}


async def settle(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


@pytest.mark.timeout(180)  # (12-30 s on a 2-core VM, more when it is shared)
async def test_a_million_ref_operations_leave_nothing_behind(shared_cluster: af.Runtime) -> None:
    core = current_core()
    window = Window.remote()
    base_window = await window.table.remote()
    base_table = len(core.objects.entries)
    base_store = await store_totals()
    base_segments = set(runtime_segments(shared_cluster))
    ops = batches = 0
    start = time.monotonic()
    while ops < OPS:
        refs = [af.put(batches * PER_BATCH + i) for i in range(PER_BATCH)]
        if batches % BIG_EVERY == 0:
            refs.append(af.put(np.full(8 * MIB, batches % 251, dtype=np.uint8)))
        assert await count.remote(refs) == len(refs)
        assert await window.keep.remote(refs) == len(refs)
        del refs
        ops += 4 * PER_BATCH
        batches += 1
    took = time.monotonic() - start
    # the window still holds the last batches: their objects are alive and readable
    firsts = await window.first_of_each.remote()
    assert firsts == [b * PER_BATCH for b in range(batches - len(firsts), batches)]
    assert len(core.objects.entries) > base_table
    await window.drop.remote()
    gc.collect()

    async def back() -> bool:
        return (len(core.objects.entries) == base_table and not core.objects.borrows.lends
                and not core.objects.borrows.holders)

    await settle(back, 5.0)
    assert len(core.objects.entries) == base_table, "the owner's table did not empty"
    assert not core.objects.borrows.lends and not core.objects.borrows.holders
    assert await window.table.remote() == base_window

    async def store_back() -> bool:
        return await store_totals() == base_store

    await settle(store_back, 5.0)
    assert await store_totals() == base_store
    left = set(runtime_segments(shared_cluster)) - base_segments
    assert len(left) <= core.store.statistics()["pooled"], left  # only this process's pool
    print(f"{ops:,} ref operations in {took:.1f} s ({ops / took:,.0f}/s)")
    await af.kill(window)
