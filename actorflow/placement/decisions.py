"""What a placement policy answers, and the words of its refusals.

A decision is ``Place(node_id)``; ``Wait(reason)`` when some live node could hold the demand
but none has it free now; or ``Infeasible(message)`` when no live node could ever hold it. The
message names the demand in user units and the node that comes closest, and says what to
change (:func:`infeasible_message`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from actorflow.placement.resources import UNIT, Resources

__all__ = [
    "Decision",
    "Infeasible",
    "Place",
    "Wait",
    "gpu_demand_error",
    "hint",
    "infeasible_message",
]


@dataclass(frozen=True, slots=True)
class Place:
    """Run on ``node_id`` (inside bundle ``bundle_index`` of a placement group, when set)."""

    node_id: str
    bundle_index: int | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    """Some live node could hold the demand, but none has it free now."""

    reason: str


@dataclass(frozen=True, slots=True)
class Infeasible:
    """No live node could ever hold the demand; ``message`` says what to change."""

    message: str


Decision: TypeAlias = Place | Wait | Infeasible


def gpu_demand_error(demand: Resources) -> str | None:
    """Why no node can hold this GPU demand (above 1 GPU it must be whole), or None."""
    units = demand["GPU"]
    if units > UNIT and units % UNIT:
        low, high = units // UNIT, units // UNIT + 1
        return (
            "a demand of more than 1 GPU must be a whole number of GPUs. Use "
            f"num_gpus={low} or {high}, or a fraction below 1."
        )
    return None


def _fmt(units: int) -> str:
    amount = units / UNIT
    return str(int(amount)) if amount == int(amount) else f"{amount:g}"


_OPTION = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}


def _short(demand: Resources, total: Resources) -> list[str]:
    """The resources of ``demand`` that ``total`` has too little of."""
    return [name for name in sorted(demand) if demand[name] > total[name]]


def _node_with(demand: Resources, names: Sequence[str]) -> str:
    """'2 GPUs and 8 CPUs': what a node must have to hold ``demand``'s ``names``."""
    amounts = []
    for name in names:
        amount = _fmt(demand[name])
        if name in ("CPU", "GPU"):
            amounts.append(f"{amount} {name}{'' if amount == '1' else 's'}")
        elif name == "memory":
            amounts.append(f"{amount} bytes of memory")
        else:
            amounts.append(f"{name}={amount}")
    return _and(amounts)


def _and(parts: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def hint(demand: Resources, total: Resources, lower: str | None = None) -> str:
    """'Lower num_gpus or add a node with 2 GPUs.' for the resources ``total`` lacks
    (``lower`` replaces the first half, e.g. 'Shrink bundle 0')."""
    short = _short(demand, total)
    if not short:
        return ""
    if lower is None:
        lower = "Lower " + _and([_OPTION.get(name, f"resources[{name!r}]") for name in short])
    return f"{lower} or add a node with {_node_with(demand, short)}."


def _closeness(demand: Resources, total: Resources) -> tuple[float, float, int]:
    fractions = [min(1.0, total[name] / units) for name, units in demand.items()] or [1.0]
    return (min(fractions), sum(fractions), sum(total.values()))


def infeasible_message(
    what: str, demand: Resources, totals: Iterable[Resources], *, lower: str | None = None
) -> str:
    """``"{what} needs {...}; the largest node has {...}. Lower ... or add a node with ..."``;
    "the largest node" is the one that comes closest to holding ``demand``. ``lower`` replaces
    the advice's first half ("Lower num_gpus")."""
    candidates = list(totals)
    if not candidates:
        return f"{what} needs {demand.to_amounts()}; the cluster has no live node."
    largest = max(candidates, key=lambda t: _closeness(demand, t))
    advice = hint(demand, largest, lower) or "Lower the demand or add a node that has it."
    return (
        f"{what} needs {demand.to_amounts()}; the largest node has {largest.to_amounts()}. "
        f"{advice}"
    )

