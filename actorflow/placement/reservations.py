"""Reserved placement groups: each bundle a resource pool of its own.

:class:`GroupReservations` keeps the groups whose plan (:func:`actorflow.placement.groups.
plan_group`) is reserved on the view: work with ``PlacementGroupStrategy(pg, bundle_index)``
runs in bundle ``i``'s pool (any bundle with room for -1), never in the node's free resources,
which no longer include the reservation. Pure bookkeeping, no asyncio.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from actorflow.placement.policy import Decision, Infeasible, Place, Wait, gpu_demand_error
from actorflow.placement.resources import Resources

if TYPE_CHECKING:
    from actorflow.placement.groups import GroupPlan

__all__ = ["BundleView", "GroupReservations"]

_REMEMBER_REMOVED: Final = 65_536  # removed group ids kept to answer "removed" (not "wait")

@dataclass(frozen=True, slots=True)
class BundleView:
    """One reserved bundle: its node, what it reserves, and what of that is free now."""

    index: int
    node_id: str
    total: Resources
    available: Resources
    lost: bool = False


class _Bundle:
    __slots__ = ("avail", "index", "lost", "node_id", "total")

    def __init__(self, index: int, node_id: str, total: Resources) -> None:
        self.index = index
        self.node_id = node_id
        self.total = total
        self.avail: dict[str, int] = dict(total._d)
        self.lost = False

    def fits(self, demand: Resources) -> bool:
        avail = self.avail
        return all(units <= avail.get(name, 0) for name, units in demand._d.items())

    def view(self) -> BundleView:
        return BundleView(self.index, self.node_id, self.total, Resources(self.avail), self.lost)


class _Group:
    __slots__ = ("bundles", "group_id", "name")

    def __init__(self, group_id: str, name: str | None, bundles: list[_Bundle]) -> None:
        self.group_id = group_id
        self.name = name
        self.bundles = bundles


class GroupReservations:
    """The reserved placement groups, each bundle a resource pool of its own.

    ``add`` a group once its plan is reserved on the view; ``choose``/``grant``/``release``
    place work inside bundles; ``remove`` ends a group and says what to give back to the view.
    """

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}
        self._removed: dict[str, None] = {}

    def __contains__(self, group_id: object) -> bool:
        return group_id in self._groups

    def __len__(self) -> int:
        return len(self._groups)

    def add(
        self, group_id: str, bundles: Sequence[Resources], plan: GroupPlan, *,
        name: str | None = None,
    ) -> None:
        if group_id in self._groups:
            raise ValueError(f"placement group {group_id!r} is already reserved")
        if len(plan.nodes) != len(bundles):
            raise ValueError(f"the plan has {len(plan.nodes)} nodes for {len(bundles)} bundles")
        self._groups[group_id] = _Group(group_id, name, [
            _Bundle(i, node_id, bundle)
            for i, (node_id, bundle) in enumerate(zip(plan.nodes, bundles, strict=True))
        ])
        self._removed.pop(group_id, None)

    def remove(self, group_id: str) -> dict[str, Resources]:
        """End a group: what it reserved per node (give it back with ``view.release``; lost
        bundles are left out). Work still running in it is the caller's to stop."""
        group = self._groups.pop(group_id, None)
        self._removed[group_id] = None
        if len(self._removed) > _REMEMBER_REMOVED:
            del self._removed[next(iter(self._removed))]
        if group is None:
            return {}
        out: dict[str, dict[str, int]] = {}
        for b in group.bundles:
            if b.lost:
                continue
            acc = out.setdefault(b.node_id, {})
            for name, units in b.total.items():
                acc[name] = acc.get(name, 0) + units
        return {node_id: Resources(acc) for node_id, acc in out.items()}

    def bundles(self, group_id: str) -> list[BundleView]:
        return [b.view() for b in self._group(group_id).bundles]

    def node_lost(self, node_id: str) -> list[str]:
        """Mark the bundles on a dead node lost; the ids of the groups that had one."""
        hit = []
        for group in self._groups.values():
            lost = False
            for b in group.bundles:
                if b.node_id == node_id and not b.lost:
                    b.lost = lost = True
            if lost:
                hit.append(group.group_id)
        return hit

    def rehome(self, group_id: str, moves: Mapping[int, str]) -> None:
        """Lost bundles reserved again (``{bundle_index: node_id}``): they start empty."""
        group = self._group(group_id)
        for i, node_id in moves.items():
            old = group.bundles[i]
            group.bundles[i] = _Bundle(i, node_id, old.total)

    def choose(
        self, group_id: str, bundle_index: int, demand: Resources, *, what: str = "task"
    ) -> Decision:
        """Which bundle (and so node) takes ``demand``: ``Place(node_id, bundle_index)``,
        ``Wait`` (the bundle is busy, lost, or the group is not reserved yet) or ``Infeasible``
        (the group was removed, the index is out of range, or the bundle is too small)."""
        group = self._groups.get(group_id)
        if group is None:
            if group_id in self._removed:
                return Infeasible(f"{what} uses placement group {group_id!r}, which was removed")
            return Wait(f"placement group {group_id!r} is not reserved yet")
        label = f"placement group {group.name or group_id!r}"
        bundles = group.bundles
        if bundle_index >= len(bundles):
            return Infeasible(
                f"{what} asks for bundle_index={bundle_index}, but {label} has "
                f"{len(bundles)} bundle(s); use -1 (any) or 0..{len(bundles) - 1}"
            )
        error = gpu_demand_error(demand)
        if error is not None:
            return Infeasible(f"{what} needs {demand.to_amounts()}; {error}")
        pool = bundles if bundle_index < 0 else [bundles[bundle_index]]
        for b in pool:
            if not b.lost and b.fits(demand):
                return Place(b.node_id, b.index)
        if any(demand.fits_in(b.total) for b in pool):
            return Wait(f"{what} waits for {demand.to_amounts()} to be free in {label}")
        which = "its bundles" if bundle_index < 0 else f"bundle {bundle_index}"
        largest = max((b.total for b in pool), key=lambda t: sum(t.values()))
        return Infeasible(
            f"{what} needs {demand.to_amounts()}; {which} of {label} reserve at most "
            f"{largest.to_amounts()}. Lower the demand or make the bundles larger."
        )

    def grant(self, group_id: str, bundle_index: int, demand: Resources) -> None:
        """Take ``demand`` from bundle ``bundle_index``'s pool; ``ValueError`` (and no change)
        when it is not free there."""
        b = self._bundle(group_id, bundle_index)
        if b.lost or not b.fits(demand):
            raise ValueError(
                f"bundle {bundle_index} of placement group {group_id!r} has "
                f"{Resources(b.avail).to_amounts()} free; cannot grant {demand.to_amounts()}"
            )
        for name, units in demand._d.items():
            b.avail[name] -= units

    def release(self, group_id: str, bundle_index: int, demand: Resources) -> None:
        """Give ``demand`` back to the bundle's pool (a no-op when the group was removed or
        the bundle re-homed since); ``ValueError`` when that would exceed what it reserves."""
        group = self._groups.get(group_id)
        if group is None:
            return
        b = group.bundles[bundle_index]
        total = b.total
        for name, units in demand._d.items():
            if b.avail.get(name, 0) + units > total[name]:
                raise ValueError(
                    f"releasing {demand.to_amounts()} to bundle {bundle_index} of placement "
                    f"group {group_id!r} would exceed its {total.to_amounts()}"
                )
        for name, units in demand._d.items():
            b.avail[name] = b.avail.get(name, 0) + units

    def _group(self, group_id: str) -> _Group:
        group = self._groups.get(group_id)
        if group is None:
            raise KeyError(f"no reserved placement group {group_id!r}")
        return group

    def _bundle(self, group_id: str, index: int) -> _Bundle:
        bundles = self._group(group_id).bundles
        if not 0 <= index < len(bundles):
            raise IndexError(f"placement group {group_id!r} has no bundle {index}")
        return bundles[index]
