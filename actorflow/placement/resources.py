"""Exact resource arithmetic.

Amounts are kept as integers in units of 1/10,000 (so ``num_gpus=0.5`` is 5,000 units):
fractional grants and releases add up exactly, with no floating-point drift after any number
of them. A :class:`Resources` is an immutable mapping ``name -> units`` with no zero entries.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["UNIT", "Resources", "demand_from_options"]

UNIT = 10_000


def _units(name: str, amount: float) -> int:
    if amount < 0:
        raise ValueError(f"resource {name!r} must be >= 0, got {amount}")
    units = round(amount * UNIT)
    if abs(units - amount * UNIT) > 1e-6 * max(1.0, amount * UNIT):
        raise ValueError(f"resource {name!r}={amount} is finer than 1/{UNIT}")
    return units


class Resources(Mapping[str, int]):
    """An immutable bag of resources in integer units (see the module docstring)."""

    __slots__ = ("_d", "_hash")

    def __init__(self, units: Mapping[str, int] | None = None) -> None:
        self._d: dict[str, int] = {k: v for k, v in (units or {}).items() if v}
        self._hash: int | None = None

    @classmethod
    def of(cls, amounts: Mapping[str, float]) -> Resources:
        """From user amounts (floats): ``Resources.of({"CPU": 1, "GPU": 0.5})``."""
        return cls({name: _units(name, float(a)) for name, a in amounts.items()})

    def __getitem__(self, key: str) -> int:
        return self._d.get(key, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._d.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Resources):
            return self._d == other._d
        return NotImplemented

    def __repr__(self) -> str:
        return f"Resources({self.to_amounts()})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Resources, (self._d,))

    def fits_in(self, available: Resources) -> bool:
        """True when every amount here is <= the same amount in ``available``."""
        avail = available._d
        return all(v <= avail.get(k, 0) for k, v in self._d.items())

    def __add__(self, other: Resources) -> Resources:
        d = dict(self._d)
        for k, v in other._d.items():
            d[k] = d.get(k, 0) + v
        return Resources(d)

    def __sub__(self, other: Resources) -> Resources:
        d = dict(self._d)
        for k, v in other._d.items():
            left = d.get(k, 0) - v
            if left < 0:
                raise ValueError(f"releasing more {k} than was held ({self} - {other})")
            d[k] = left
        return Resources(d)

    def to_amounts(self) -> dict[str, float]:
        """User-facing amounts (floats; integral ones as whole numbers)."""
        return {k: v / UNIT for k, v in sorted(self._d.items())}


def demand_from_options(
    num_cpus: float | None,
    num_gpus: float | None,
    memory: float | None,
    resources: Mapping[str, float] | None,
    *,
    default_cpus: float,
) -> Resources:
    """The demand of a task or actor from its options."""
    amounts: dict[str, float] = dict(resources or {})
    for reserved in ("CPU", "GPU", "memory"):
        if reserved in amounts:
            raise ValueError(
                f"use num_cpus / num_gpus / memory instead of resources={{{reserved!r}: ...}}"
            )
    amounts["CPU"] = default_cpus if num_cpus is None else num_cpus
    if num_gpus:
        amounts["GPU"] = num_gpus
    if memory:
        amounts["memory"] = memory
    return Resources.of(amounts)
