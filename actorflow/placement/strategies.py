"""Scheduling strategies: the objects users pass as ``scheduling_strategy=`` and the names of
placement-group strategies, with the parsers that turn user input into them.

Public (exported by ``actorflow`` as ``af.NodeAffinity`` and ``af.PlacementGroupStrategy``):

- ``"DEFAULT"`` (or ``None``): pack the local node up to the spread threshold, then the busiest
  node still under it, then the least busy one (see :func:`actorflow.placement.policy.choose_node`).
- ``"SPREAD"``: round-robin over the nodes that can take the work.
- :class:`NodeAffinity`: that node only (``soft=False``), or that node when it can take the
  work now and the default policy otherwise (``soft=True``).
- :class:`PlacementGroupStrategy`: inside a reserved bundle of a placement group.

Placement-group strategies (``af.placement_group(..., strategy=...)``): ``PACK``, ``SPREAD``,
``STRICT_PACK``, ``STRICT_SPREAD`` (see :mod:`actorflow.placement.groups`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

__all__ = [
    "GROUP_STRATEGIES",
    "STRATEGY_NAMES",
    "GroupStrategy",
    "NodeAffinity",
    "PlacementGroupStrategy",
    "Strategy",
    "parse_group_strategy",
    "parse_strategy",
]

STRATEGY_NAMES: Final = ("DEFAULT", "SPREAD")
GROUP_STRATEGIES: Final = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")

GroupStrategy: TypeAlias = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]


@dataclass(frozen=True, slots=True)
class NodeAffinity:
    """Run on the node ``node_id`` (an id from ``af.nodes()``).

    With ``soft=False`` the work waits for that node, and fails with ``af.InfeasibleError``
    when the node is dead, unknown, or too small for the demand. With ``soft=True`` the node
    is preferred when it can take the work now; otherwise the default policy picks a node.
    """

    node_id: str
    soft: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not self.node_id:
            raise TypeError(
                f"NodeAffinity(node_id=...) takes a node id string (see af.nodes()), "
                f"got {self.node_id!r}"
            )
        if not isinstance(self.soft, bool):
            raise TypeError(f"NodeAffinity(soft=...) takes True or False, got {self.soft!r}")


@dataclass(frozen=True, slots=True)
class PlacementGroupStrategy:
    """Run inside a bundle of the placement group ``placement_group`` (what
    ``af.placement_group(...)`` returned): bundle ``bundle_index``, or any bundle with room
    when it is -1. The work uses the group's reserved resources, not the node's free ones.

    With ``capture_child_tasks=True`` (Ray's ``placement_group_capture_child_tasks``), the tasks
    and actors that this task submits without a ``scheduling_strategy`` of their own go into
    the same group too (any bundle with room), and so do theirs. An explicit strategy, even
    ``"DEFAULT"``, leaves the group. (Work submitted from an actor's methods is not captured
    yet: only from tasks.)
    """

    placement_group: Any
    bundle_index: int = -1
    capture_child_tasks: bool = False

    def __post_init__(self) -> None:
        if not isinstance(getattr(self.placement_group, "id", None), str):
            raise TypeError(
                "PlacementGroupStrategy(placement_group=...) takes what af.placement_group() "
                f"returned, got {self.placement_group!r}"
            )
        index = self.bundle_index
        if isinstance(index, bool) or not isinstance(index, int) or index < -1:
            raise ValueError(
                "PlacementGroupStrategy(bundle_index=...) takes -1 (any bundle) or a bundle's "
                f"index (0, 1, ...), got {index!r}"
            )
        if not isinstance(self.capture_child_tasks, bool):
            raise TypeError(
                "PlacementGroupStrategy(capture_child_tasks=...) takes True or False, got "
                f"{self.capture_child_tasks!r}"
            )

    @property
    def group_id(self) -> str:
        """The placement group's id."""
        gid: str = self.placement_group.id
        return gid

    def for_children(self) -> PlacementGroupStrategy | None:
        """The strategy of the work that a task placed with this strategy submits without one
        of its own: any bundle of the same group, capturing in turn; None when this strategy
        does not capture."""
        if not self.capture_child_tasks:
            return None
        return PlacementGroupStrategy(self.placement_group, -1, True)


Strategy: TypeAlias = Literal["DEFAULT", "SPREAD"] | NodeAffinity | PlacementGroupStrategy

_CHOICES = (
    '"DEFAULT" (or None), "SPREAD", af.NodeAffinity(node_id, soft=False) or '
    "af.PlacementGroupStrategy(pg, bundle_index=-1)"
)


def parse_strategy(value: object) -> Strategy:
    """A user's ``scheduling_strategy`` as a :data:`Strategy` (``None`` is ``"DEFAULT"``).

    Raises ``ValueError`` for an unknown name and ``TypeError`` for anything else, both
    listing the valid choices.
    """
    if value is None or value == "DEFAULT":
        return "DEFAULT"
    if value == "SPREAD":
        return "SPREAD"
    if isinstance(value, NodeAffinity | PlacementGroupStrategy):
        return value
    if isinstance(value, str):
        hint = ""
        if value.upper() in STRATEGY_NAMES:
            hint = f" (names are upper case: {value.upper()!r})"
        elif value.upper() in GROUP_STRATEGIES:
            hint = (
                f" ({value!r} is a placement-group strategy: create the group with "
                f"af.placement_group(bundles, strategy={value.upper()!r}) and pass "
                "af.PlacementGroupStrategy(pg))"
            )
        raise ValueError(f"unknown scheduling_strategy {value!r}{hint}; use {_CHOICES}")
    raise TypeError(
        f"scheduling_strategy must be {_CHOICES}; got {type(value).__name__} {value!r}"
    )


def parse_group_strategy(value: object) -> GroupStrategy:
    """A placement group's ``strategy`` (default ``"PACK"`` for ``None``)."""
    if value is None:
        return "PACK"
    if value == "PACK":
        return "PACK"
    if value == "SPREAD":
        return "SPREAD"
    if value == "STRICT_PACK":
        return "STRICT_PACK"
    if value == "STRICT_SPREAD":
        return "STRICT_SPREAD"
    choices = ", ".join(repr(s) for s in GROUP_STRATEGIES)
    if isinstance(value, str):
        hint = f" (names are upper case: {value.upper()!r})" if (
            value.upper() in GROUP_STRATEGIES) else ""
        raise ValueError(f"unknown placement group strategy {value!r}{hint}; use one of {choices}")
    raise TypeError(
        f"placement group strategy must be one of {choices}; got {type(value).__name__} "
        f"{value!r}"
    )
