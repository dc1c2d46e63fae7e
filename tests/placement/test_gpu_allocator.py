"""GpuAllocator: whole GPUs exclusive, fractions packed together, never over-allocated."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actorflow.placement.gpus import GpuAllocator
from actorflow.placement.resources import UNIT


def test_whole_gpus_are_exclusive_and_lowest_first() -> None:
    gpus = GpuAllocator(4)
    assert gpus.allocate(2 * UNIT) == (0, 1)
    assert gpus.allocate(UNIT) == (2,)
    assert gpus.allocate(2 * UNIT) is None
    assert gpus.allocate(UNIT) == (3,)
    assert gpus.allocate(1) is None
    gpus.release((0, 1), 2 * UNIT)
    assert gpus.free_units() == (UNIT, UNIT, 0, 0)


def test_fractions_share_a_gpu_and_pack_onto_the_fullest() -> None:
    gpus = GpuAllocator(2)
    assert gpus.allocate(UNIT // 2) == (0,)
    assert gpus.allocate(UNIT // 4) == (0,)  # packed with the first half
    assert gpus.allocate(UNIT // 2) == (1,)  # 0 has a quarter left
    assert gpus.allocate(UNIT // 4) == (0,)  # best fit: exactly the quarter left
    assert gpus.free_units() == (0, UNIT // 2)
    assert gpus.allocate(UNIT) is None  # no whole GPU free
    assert not gpus.can_allocate(UNIT)
    assert gpus.can_allocate(UNIT // 2)


def test_fractions_keep_whole_gpus_free_when_they_can() -> None:
    gpus = GpuAllocator(2)
    for _ in range(4):
        assert gpus.allocate(UNIT // 4) == (0,)
    assert gpus.allocate(UNIT) == (1,)


def test_zero_and_invalid_demands() -> None:
    gpus = GpuAllocator(2)
    assert gpus.allocate(0) == ()
    gpus.release((), 0)
    with pytest.raises(ValueError, match="whole GPUs"):
        gpus.allocate(UNIT + UNIT // 2)
    with pytest.raises(ValueError, match="cannot allocate"):
        gpus.allocate(-1)
    with pytest.raises(ValueError, match=">= 0 GPUs"):
        GpuAllocator(-1)
    assert GpuAllocator(0).allocate(1) is None
    assert GpuAllocator(3).count == 3


def test_bad_releases_change_nothing() -> None:
    gpus = GpuAllocator(2)
    ids = gpus.allocate(UNIT // 2)
    assert ids == (0,)
    before = gpus.free_units()
    for bad_ids, units in [((0,), UNIT), ((1,), UNIT // 2), ((0, 0), 2 * UNIT), ((5,), 1),
                           ((0, 1), UNIT // 2), ((0,), 0)]:
        with pytest.raises(ValueError):
            gpus.release(bad_ids, units)
        assert gpus.free_units() == before
    gpus.release((0,), UNIT // 2)
    with pytest.raises(ValueError, match="was not allocated"):
        gpus.release((0,), UNIT // 2)  # a double release
    assert repr(gpus) == "GpuAllocator(free=[1.0, 1.0])"


_UNITS = st.sampled_from([1, 2500, 3333, 5000, 6667, 9999, UNIT, 2 * UNIT, 3 * UNIT])


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(0, 6),
    ops=st.lists(st.tuples(st.booleans(), _UNITS, st.integers(0, 1000)), max_size=200),
)
def test_never_over_allocates(count: int, ops: list[tuple[bool, int, int]]) -> None:
    gpus = GpuAllocator(count)
    held: list[tuple[tuple[int, ...], int]] = []
    for alloc, units, pick in ops:
        if not alloc and held:
            ids, u = held.pop(pick % len(held))
            gpus.release(ids, u)
        else:
            free = gpus.free_units()
            ids_or_none = gpus.allocate(units)
            if units >= UNIT:
                whole = [i for i, f in enumerate(free) if f == UNIT]
                if ids_or_none is None:
                    assert len(whole) < units // UNIT
                else:
                    assert list(ids_or_none) == whole[: units // UNIT]
            elif ids_or_none is None:
                assert all(f < units for f in free)
            else:
                (gid,) = ids_or_none
                assert free[gid] == min(f for f in free if f >= units)  # best fit
            if ids_or_none is not None:
                held.append((ids_or_none, units))
        # exact accounting: free + held == everything, per GPU
        used = [0] * count
        whole_owner: set[int] = set()
        for ids, u in held:
            for gid in ids:
                used[gid] += min(u, UNIT)
                if u >= UNIT:
                    assert gid not in whole_owner
                    whole_owner.add(gid)
        for gid, f in enumerate(gpus.free_units()):
            assert 0 <= f <= UNIT
            assert f + used[gid] == UNIT
            if gid in whole_owner:
                assert used[gid] == UNIT  # a whole GPU is shared with nothing
    for ids, u in held:
        gpus.release(ids, u)
    assert gpus.free_units() == (UNIT,) * count
