"""Placement groups (API.md §5): resources reserved on nodes together, all bundles or none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from actorflow.api.remote import _on_loop
from actorflow.cluster.bootstrap import placement_of
from actorflow.cluster.protocol import CreateGroup, RemoveGroup, WaitGroup
from actorflow.objects.ref import current_core
from actorflow.placement.groups import parse_bundles
from actorflow.placement.strategies import parse_group_strategy

__all__ = ["PlacementGroup", "placement_group", "remove_placement_group"]


@dataclass(frozen=True, eq=False)
class PlacementGroup:
    """A placement group: ``await pg.ready()`` waits until every bundle is reserved.

    Run work in it with ``scheduling_strategy=af.PlacementGroupStrategy(pg, bundle_index)``.
    Picklable; usable from any task or actor.
    """

    id: str
    bundle_specs: tuple[dict[str, float], ...]
    strategy: str
    name: str | None = None

    async def ready(self, timeout: float | None = None) -> None:
        """Return once every bundle is reserved; raise InfeasibleError if no cluster state
        could ever hold the group (or it was removed), GetTimeoutError after ``timeout``."""
        core = current_core()
        await placement_of(core.head).ask(WaitGroup(self.id), timeout=timeout)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"PlacementGroup({self.id}{label}, {self.strategy}, {list(self.bundle_specs)})"


def placement_group(
    bundles: Sequence[Mapping[str, float]],
    strategy: str = "PACK",
    name: str | None = None,
) -> PlacementGroup:
    """Ask the cluster to reserve ``bundles`` (e.g. ``[{"CPU": 1, "GPU": 1}] * 2``) with
    ``strategy`` PACK | SPREAD | STRICT_PACK | STRICT_SPREAD. Returns at once; the group holds
    nothing until all of it can be reserved (``await pg.ready()``)."""
    parsed = parse_bundles(bundles)
    group_strategy = parse_group_strategy(strategy)
    core = current_core()
    pg = PlacementGroup(core.new_id(), tuple(b.to_amounts() for b in parsed), group_strategy,
                        name)

    def send() -> None:
        placement_of(core.head).tell_nowait(
            CreateGroup(pg.id, tuple(parsed), group_strategy, name)
        )

    _on_loop(core, send)
    return pg


async def remove_placement_group(pg: PlacementGroup) -> None:
    """Release the group's reservations (work still running in it keeps what it holds until
    it ends)."""
    if not isinstance(pg, PlacementGroup):
        raise TypeError(f"remove_placement_group() takes a PlacementGroup, got {pg!r}")
    await placement_of(current_core().head).ask(RemoveGroup(pg.id))

