"""Reuse of shared-memory segments (``actorflow/objects/store.py``): a freed segment is copied
over only when nobody can still see its old value. Checked with real shared memory and real
worker processes: arrays kept by the driver, by a task's worker and by an actor keep their
values while new values are stored; a stale reference to a reused segment fails loudly.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import cloudpickle
import numpy as np
import pytest
from cl_support import until, within

import actorflow as af
from actorflow._errors import ObjectLostError
from actorflow.objects import shm
from actorflow.objects import store as store_mod
from actorflow.objects.ref import current_core
from actorflow.objects.serialization import serialize
from actorflow.objects.store import POOL_SEGMENTS, SPARE_MIN, SegmentStore

pytestmark = pytest.mark.asyncio(loop_scope="module")
cloudpickle.register_pickle_by_value(sys.modules[__name__])

CLUSTER = {"num_cpus": 1}
N = 200_000  # 1.6 MB arrays: over the inline limit, so they live in segments


def _array(fill: float) -> np.ndarray:
    return np.full(N, fill)


@af.remote
def total(a: np.ndarray) -> float:
    return float(a.sum())


def _kept() -> list[np.ndarray]:
    """Arrays a task chose to keep, in its worker process (on a module every task sees: the
    functions of this module travel by value, each with its own globals)."""
    if not hasattr(sys, "_af_test_kept"):
        sys._af_test_kept = []  # type: ignore[attr-defined]
    return sys._af_test_kept  # type: ignore[attr-defined,no-any-return]


@af.remote
def keep_it(a: np.ndarray) -> float:
    _kept().append(a)
    return float(a[0])


@af.remote
def kept_firsts() -> list[float]:
    return [float(a[0]) for a in _kept()]


@af.remote
class Holder:
    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []

    def hold(self, a: np.ndarray) -> float:
        self.arrays.append(a)
        return float(a[-1])

    def firsts(self) -> list[float]:
        return [float(a[0]) for a in self.arrays]

    def total(self, a: np.ndarray) -> float:
        return float(a.sum())


def _exists(name: str) -> bool:
    return os.path.exists(os.path.join(shm.SHM_DIR, name))


def _segments() -> set[str]:
    return {name for name in os.listdir(shm.SHM_DIR) if name.startswith("af-")}


# -- the store itself -------------------------------------------------------------------------


async def test_store_reuses_a_freed_segment_and_refuses_stale_reads() -> None:
    names = iter(f"af-test-{os.getpid()}-{i}" for i in range(100))
    store = SegmentStore(lambda: next(names))
    try:
        name1, _, gen1 = store.write(serialize(_array(1.0)))
        meta, buffers = store.read(name1, gen1)
        assert float(np.frombuffer(buffers[0])[0]) == 1.0
        del meta, buffers
        store.free(name1)  # nothing views it, nobody else got it: kept for reuse
        name2, _, gen2 = store.write(serialize(_array(2.0)))
        assert name2 == name1 and gen2 != gen1
        with pytest.raises(ObjectLostError, match="freed"):
            store.read(name1, gen1)
        _, buffers = store.read(name2, gen2)
        view = np.frombuffer(buffers[0])
        assert view[0] == 2.0
        store.free(name2)  # a view is alive: the segment is unlinked, the view stays good
        name3, _, _ = store.write(serialize(_array(3.0)))
        assert name3 != name2 and view[0] == 2.0
        store.shared(name3)  # went to a reader that will not report
        store.free(name3)
        assert not _exists(name3)
        # lent to a reader: reused only after it reports
        name4, _, _ = store.write(serialize(_array(4.0)))
        store.lent(name4)
        store.free(name4)
        assert not _exists(name4)
        name5, _, _ = store.write(serialize(_array(5.0)))
        store.lent(name5)
        store.returned([name5])
        store.free(name5)
        assert _exists(name5)  # pooled
        # the pool is bounded
        written = [store.write(serialize(_array(float(i))))[0]
                   for i in range(POOL_SEGMENTS + 3)]
        for name in written:
            store.free(name)
        assert store.statistics()["pooled"] == POOL_SEGMENTS
    finally:
        store.close()
    assert not [n for n in os.listdir(shm.SHM_DIR) if n.startswith(f"af-test-{os.getpid()}-")]


async def test_store_makes_a_spare_for_a_value_that_left() -> None:
    """A large value that leaves the process (a result: keep=False) leaves a spare behind for
    the next one of its size, which is then a copy over the spare's pages; a spare that cannot
    be made (no room) or comes in after close is counted or unlinked, never leaked."""
    prefix = f"af-test-{os.getpid()}-spare-"
    names = iter(f"{prefix}{i}" for i in range(100))
    asked: list[tuple[str, int]] = []
    store = SegmentStore(lambda: next(names), make_spare=lambda n, c: asked.append((n, c)))
    big = np.full(SPARE_MIN // 8 + 10, 7.0)
    try:
        first, used, _ = store.write(serialize(big), keep=False)
        assert len(asked) == 1
        spare, capacity = asked[0]
        assert spare != first and capacity >= used
        store.add_spare(spare, capacity, shm.blank_segment(spare, capacity))
        assert store.statistics()["pooled"] == 1
        assert store.write(serialize(big), keep=False)[0] in (spare,)  # no spare twice
        assert len(asked) == 2  # ... and the pool is short again: the next one is asked for
        store.spare_failed(asked[1][1])
        assert store.statistics()["spares_failed"] == 1
        with pytest.raises(OSError):  # it leaves nothing behind when there is no room
            shm.blank_segment(f"{prefix}full", capacity, keep_free=1.0)
        assert not _exists(f"{prefix}full")
        small = store.write(serialize(_array(1.0)), keep=False)  # small: no spare for it
        assert len(asked) == 2
        # a large value kept here asks for one ahead (the pool has none of its size) ...
        kept = store.write(serialize(big))[0]
        assert len(asked) == 3
        store.spare_failed(asked[2][1])
        store.free(kept)  # ... which it does not need when it comes back
        shared = store.write(serialize(big))[0]
        assert shared == kept and len(asked) == 4
        store.spare_failed(asked[3][1])
        store.shared(shared)  # went by ref: gone when freed, and a spare is asked for then
        store.free(shared)
        assert len(asked) == 5 and not _exists(shared)
        store.spare_failed(asked[4][1])
        for name in (first, spare, small[0]):
            shm.unlink_segment(name)  # (the caller's: results leave the store)
        late = f"{prefix}late"
        late_mapping = shm.blank_segment(late, capacity)
    finally:
        store.close()
    store.add_spare(late, capacity, late_mapping)  # after close: unlinked at once
    assert not [n for n in os.listdir(shm.SHM_DIR) if n.startswith(prefix)]


async def test_a_spare_refused_at_once_does_not_block_the_store() -> None:
    """The owner may refuse a spare at once, from inside the write that asked for it (a
    closed Core does): the store's lock is re-entered, not deadlocked."""
    prefix = f"af-test-{os.getpid()}-refused-"
    names = iter(f"{prefix}{i}" for i in range(10))
    store = SegmentStore(lambda: next(names),
                         make_spare=lambda name, capacity: store.spare_failed(capacity))
    done = threading.Event()

    def write() -> None:
        name = store.write(serialize(np.full(SPARE_MIN // 8 + 10, 1.0)), keep=False)[0]
        shm.unlink_segment(name)
        done.set()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    assert done.wait(30), "the write blocked on the store's own lock"
    assert store.statistics()["spares_failed"] == 1
    store.close()
    assert not [n for n in os.listdir(shm.SHM_DIR) if n.startswith(prefix)]


async def test_store_unlinks_pooled_segments_left_idle() -> None:
    prefix = f"af-test-{os.getpid()}-idle-"
    names = iter(f"{prefix}{i}" for i in range(100))
    pooled: list[int] = []
    store = SegmentStore(lambda: next(names), on_pooled=lambda: pooled.append(1))
    try:
        first = store.write(serialize(_array(1.0)))[0]
        second = store.write(serialize(_array(2.0)))[0]
        assert store.trim_idle() is None  # nothing pooled
        store.free(first)
        assert pooled == [1]  # the pool stopped being empty: the owner is told, once
        store.free(second)
        assert pooled == [1]
        now = time.monotonic()
        wait = store.trim_idle(now)
        assert wait is not None and 0 < wait <= store_mod.POOL_IDLE_S
        assert store.trim_idle(now + store_mod.POOL_IDLE_S + 1) is None
        assert store.statistics()["pooled"] == 0
        assert not _exists(first) and not _exists(second)
        store.free(store.write(serialize(_array(3.0)))[0])
        assert pooled == [1, 1]  # empty, then not: told again
    finally:
        store.close()
    assert not [n for n in os.listdir(shm.SHM_DIR) if n.startswith(prefix)]


# -- end to end -----------------------------------------------------------------------------


async def test_driver_views_survive_new_puts(shared_cluster: af.Runtime) -> None:
    ref = af.put(_array(1.0))
    held = await within(af.get(ref))
    del ref  # freed while `held` still views it
    for i in range(POOL_SEGMENTS + 2):
        again = await within(af.get(af.put(_array(10.0 + i))))
        assert again[0] == 10.0 + i
        del again
    assert held[0] == 1.0 and held[-1] == 1.0


async def test_arguments_kept_by_a_task_or_an_actor_keep_their_values(
        shared_cluster: af.Runtime) -> None:
    firsts = []
    for i in range(6):
        firsts.append(await within(keep_it.remote(_array(float(i)))))
        assert await within(total.remote(_array(100.0 + i))) == (100.0 + i) * N
    assert firsts == [float(i) for i in range(6)]
    assert await within(kept_firsts.remote()) == [float(i) for i in range(6)]
    holder = Holder.remote()
    for i in range(6):
        assert await within(holder.hold.remote(_array(float(i)))) == float(i)
        assert await within(holder.total.remote(_array(50.0 + i))) == (50.0 + i) * N
    assert await within(holder.firsts.remote()) == [float(i) for i in range(6)]
    await within(af.kill(holder))


async def test_repeated_large_arguments_reuse_one_segment(shared_cluster: af.Runtime) -> None:
    before = _segments()
    for i in range(10):
        assert await within(total.remote(_array(float(i)))) == float(i) * N
    # one segment went round and round (plus at most the one made before the first report)
    assert len(_segments() - before) <= 2


@af.remote
def big_result(fill: float) -> np.ndarray:
    return np.full(SPARE_MIN // 8 + 10, fill)


@af.remote
def spares_made(at_least: int) -> int:
    """How many spares this worker made, once it has made ``at_least`` (they are made on a
    low-priority thread, so they may come a little after the result that asked for them)."""
    deadline = time.monotonic() + 20.0
    store = current_core().store
    while store.spares_made < at_least and time.monotonic() < deadline:
        time.sleep(0.01)
    return store.spares_made


@af.remote
def big_sum(a: np.ndarray) -> float:
    return float(a.sum())


async def test_large_values_that_leave_get_spares(shared_cluster: af.Runtime) -> None:
    """A worker returning large results, and a driver whose large puts go to tasks by ref
    (segments that never come back), make spares and use them; the values stay right."""
    out = await within(big_result.remote(1.0))
    assert out[0] == out[-1] == 1.0
    assert await within(spares_made.remote(1)) >= 1
    # the next result goes into that spare, which leaves the pool short: another is made
    out = await within(big_result.remote(2.0))
    assert out[0] == out[-1] == 2.0 and await within(spares_made.remote(2)) >= 2
    del out
    big = np.arange(SPARE_MIN // 8 + 10, dtype=np.float64)
    made = current_core().store.spares_made
    for _ in range(3):
        ref = af.put(big)  # (into a pooled segment or a spare, from the second time on)
        assert await within(big_sum.remote(ref)) == float(big.sum())
        del ref  # went by ref: never reused, so the pool is short by one
        assert await within(big_sum.remote(big)) == float(big.sum())
        await until(lambda m=made: current_core().store.spares_made > m,
                    what="a spare made in the driver")
        made = current_core().store.spares_made


async def test_an_idle_process_lets_its_pooled_segments_go(
        shared_cluster: af.Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    store = current_core().store
    store.trim_idle(time.monotonic() + 3600)  # what earlier tests left: gone
    monkeypatch.setattr(store_mod, "POOL_IDLE_S", 0.3)
    ref = af.put(_array(5.0))
    assert (await within(af.get(ref)))[0] == 5.0
    del ref  # freed, nothing views it: pooled
    await until(lambda: store.statistics()["pooled"] == 0, what="the idle pool emptied")
