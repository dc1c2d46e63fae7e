"""GPU ids of one node: which GPUs a lease or an actor gets (the node's allocator)."""

from __future__ import annotations

from collections.abc import Sequence

from actorflow.placement.resources import UNIT

__all__ = ["GpuAllocator"]


class GpuAllocator:
    """GPU ids of one node. A demand of whole GPUs (``units`` a multiple of ``UNIT``) gets that
    many GPUs to itself; a fraction (``units < UNIT``) shares one GPU with other fractions,
    packed onto the fullest GPU that still has room (best fit, lowest id on ties). Exact
    integer arithmetic; never hands out more than a GPU has.
    """

    __slots__ = ("_free",)

    def __init__(self, count: int) -> None:
        if count < 0:
            raise ValueError(f"a node has >= 0 GPUs, got {count}")
        self._free = [UNIT] * count  # free units per GPU id

    @property
    def count(self) -> int:
        return len(self._free)

    def free_units(self) -> tuple[int, ...]:
        """Free units per GPU id."""
        return tuple(self._free)

    def allocate(self, units: int) -> tuple[int, ...] | None:
        """GPU ids for ``units`` (``()`` for 0), or None when they are not free now.
        ``ValueError`` for a demand no allocator could meet (above 1 GPU, not whole)."""
        free = self._free
        if units <= 0:
            if units < 0:
                raise ValueError(f"cannot allocate {units} GPU units")
            return ()
        if units >= UNIT:
            if units % UNIT:
                raise ValueError(
                    f"{units / UNIT:g} GPUs: above 1 GPU a demand must be whole GPUs"
                )
            need = units // UNIT
            ids = [i for i, f in enumerate(free) if f == UNIT][:need]
            if len(ids) < need:
                return None
            for i in ids:
                free[i] = 0
            return tuple(ids)
        best = -1
        for i, f in enumerate(free):
            if f >= units and (best < 0 or f < free[best]):
                best = i
        if best < 0:
            return None
        free[best] -= units
        return (best,)

    def can_allocate(self, units: int) -> bool:
        """Would :meth:`allocate` succeed now (without allocating)?"""
        if units <= 0:
            return units == 0
        if units >= UNIT:
            return units % UNIT == 0 and sum(1 for f in self._free if f == UNIT) >= units // UNIT
        return any(f >= units for f in self._free)

    def release(self, ids: Sequence[int], units: int) -> None:
        """Give back what ``allocate(units)`` returned as ``ids``; ``ValueError`` (and no
        change) when that does not match what could have been handed out."""
        free = self._free
        if units <= 0:
            if ids or units < 0:
                raise ValueError(f"releasing GPU ids {tuple(ids)} for {units} units")
            return
        share = UNIT if units >= UNIT else units
        expect = units // UNIT if units >= UNIT else 1
        if len(ids) != expect or len(set(ids)) != len(ids):
            raise ValueError(f"releasing GPU ids {tuple(ids)} does not match {units} units")
        for i in ids:
            if not 0 <= i < len(free) or free[i] + share > UNIT:
                raise ValueError(f"GPU {i} was not allocated {share} units; cannot release")
        for i in ids:
            free[i] += share

    def __repr__(self) -> str:
        return f"GpuAllocator(free={[f / UNIT for f in self._free]})"
