"""Placement groups (API.md §5): resources reserved on nodes together, all bundles or none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from actorflow.api.remote import _on_loop
from actorflow.cluster.bootstrap import placement_of
from actorflow.cluster.driver_job import job_of, namespace_of
from actorflow.cluster.protocol import CreateGroup, RemoveGroup, WaitGroup
from actorflow.objects.ref import current_core
from actorflow.placement.groups import parse_bundles
from actorflow.placement.messages import GetGroup, GroupTable
from actorflow.placement.strategies import parse_group_strategy

__all__ = [
    "PlacementGroup",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]


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
    lifetime: str | None = None,
) -> PlacementGroup:
    """Ask the cluster to reserve ``bundles`` (e.g. ``[{"CPU": 1, "GPU": 1}] * 2``) with
    ``strategy`` PACK | SPREAD | STRICT_PACK | STRICT_SPREAD. Returns at once; the group holds
    nothing until all of it can be reserved (``await pg.ready()``).

    ``name``: unique among the groups of this job's namespace that are not removed; others
    find the group with ``af.get_placement_group(name)``. A name in use makes ``pg.ready()``
    raise ValueError. ``lifetime="detached"`` (or None) is recorded and shown by
    ``af.placement_group_table()``: a group that is not detached is removed when its job ends
    (its driver shuts down, exits or dies); a detached one lives until
    ``af.remove_placement_group``.
    """
    parsed = parse_bundles(bundles)
    group_strategy = parse_group_strategy(strategy)
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"placement_group(name=...) takes a non-empty string, got {name!r}")
    if lifetime is not None and lifetime != "detached":
        raise ValueError(
            f'placement_group(lifetime=...) takes "detached" or None, got {lifetime!r}'
        )
    core = current_core()
    pg = PlacementGroup(core.new_id(), tuple(b.to_amounts() for b in parsed), group_strategy,
                        name)
    namespace = namespace_of(core)
    job_id = job_of(core)  # (in a task: the job that sent it)

    def send() -> None:
        placement_of(core.head).tell_nowait(
            CreateGroup(pg.id, tuple(parsed), group_strategy, name, namespace, lifetime, job_id)
        )

    _on_loop(core, send)
    return pg


async def remove_placement_group(pg: PlacementGroup) -> None:
    """Release the group's reservations (work still running in it keeps what it holds until
    it ends)."""
    if not isinstance(pg, PlacementGroup):
        raise TypeError(f"remove_placement_group() takes a PlacementGroup, got {pg!r}")
    await placement_of(current_core().head).ask(RemoveGroup(pg.id))



async def get_placement_group(name: str, namespace: str | None = None) -> PlacementGroup:
    """The placement group created with ``name=name`` (in ``namespace``, default: this job's)
    and not removed; ValueError naming the name when there is none."""
    if not isinstance(name, str):
        raise TypeError(f"get_placement_group() takes a name string, got {name!r}")
    core = current_core()
    ns = namespace if namespace is not None else namespace_of(core)
    group_id, bundles, strategy = await placement_of(core.head).ask(GetGroup(name, ns))
    return PlacementGroup(group_id, tuple(b.to_amounts() for b in bundles), strategy, name)


async def placement_group_table(pg: PlacementGroup | None = None) -> dict[Any, Any]:
    """The cluster's placement groups, as Ray's ``placement_group_table``: ``{group id:
    entry}``, or ``pg``'s entry alone. Async, like the other cluster views (``af.nodes()``):
    ``await af.placement_group_table()``. An entry has ``placement_group_id``, ``name``,
    ``namespace``, ``strategy``, ``state`` (``"PENDING"`` until every bundle is reserved,
    ``"CREATED"``, ``"REMOVED"``, or ``"INFEASIBLE"`` when ``pg.ready()`` raises),
    ``lifetime``, ``bundles`` (a dict of amounts per bundle) and ``bundles_to_node_id``
    (bundle index -> node id, empty until the group is placed and after it is removed)."""
    if pg is not None and not isinstance(pg, PlacementGroup):
        raise TypeError(f"placement_group_table() takes a PlacementGroup or None, got {pg!r}")
    table: dict[Any, Any] = await placement_of(current_core().head).ask(
        GroupTable(None if pg is None else pg.id))
    return table
