"""Messages to and from the Placement actor (see :mod:`actorflow.placement.actor`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actorflow.placement.resources import Resources
from actorflow.runtime import ActorRef, restore_ref

__all__ = [
    "AddNode",
    "CreateGroup",
    "GetGroup",
    "GroupTable",
    "KeepGroups",
    "NodeGone",
    "NodeLoad",
    "PlaceTask",
    "ReleaseBundles",
    "RemoveGroup",
    "ReserveBundles",
    "WaitGroup",
    "placement_of",
]


@dataclass(frozen=True, slots=True)
class AddNode:
    """Head -> placement: a node joined (``ref`` is its Node actor)."""

    node_id: str
    ref: Any
    resources: Resources
    #: the bundles ``(group_id, index)`` the node holds, when the head asked it (a head that
    #: restarted asks each node that registers: its kept groups are checked against them);
    #: None when not asked
    held: tuple[tuple[str, int], ...] | None = None


@dataclass(frozen=True, slots=True)
class KeepGroups:
    """Head -> placement, in its own process, as it starts with a store: ``save(group_id,
    record, encode)`` marks a group changed in the head's store (written in batches, off the
    loop); ``rows`` are the groups the store kept (pickled), taken back now (a restart)."""

    save: Any
    rows: tuple[bytes, ...] = ()
    restarted: bool = False  # the head took its cluster back from the store


@dataclass(frozen=True, slots=True)
class NodeGone:
    """Head -> placement: a node left or died."""

    node_id: str


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """Node -> head: what is free on the node now (sent when it changes), and the sequence
    number of the last bundle reservation it has applied (so the head knows which of its
    reservations the figure already includes)."""

    node_id: str
    available: Resources
    pending: int = 0
    reserved_seq: int = 0


@dataclass(frozen=True, slots=True)
class ReserveBundles:
    """Ask (head -> node): set these bundles of group ``group_id`` aside (waits for room)."""

    group_id: str
    bundles: tuple[tuple[int, Resources], ...]
    seq: int


@dataclass(frozen=True, slots=True)
class ReleaseBundles:
    """Tell (head -> node): the group is removed; give its bundles back."""

    group_id: str


@dataclass(frozen=True, slots=True)
class CreateGroup:
    """Ask (owner -> head): reserve a placement group, all bundles or none; answers at once."""

    group_id: str
    bundles: tuple[Resources, ...]
    strategy: str
    name: str | None = None
    namespace: str = ""  # a name is unique within its namespace
    lifetime: str | None = None  # "detached" or None: a detached one outlives its job
    job_id: str = ""  # the job that made it (removed when that job ends, unless detached)


@dataclass(frozen=True, slots=True)
class WaitGroup:
    """Ask: answers once the group is reserved; raises InfeasibleError if it never can be."""

    group_id: str


@dataclass(frozen=True, slots=True)
class RemoveGroup:
    group_id: str


@dataclass(frozen=True, slots=True)
class GetGroup:
    """Ask: the group named ``name`` in ``namespace`` (not removed), as
    ``(group_id, bundles, strategy)``; raises ValueError naming the name when there is none."""

    name: str
    namespace: str


@dataclass(frozen=True, slots=True)
class GroupTable:
    """Ask: one group's entry (``group_id``), or every group's by id (None); see
    ``Placement.table_entry``. Raises KeyError for an unknown id."""

    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class PlaceTask:
    """Ask (node -> head): which node should run a task of this demand and strategy?
    Answers ``(node_id, node_ref)`` or raises InfeasibleError."""

    demand: Resources
    strategy: Any
    from_node: str | None
    what: str = "a task"


def placement_of(head: ActorRef) -> ActorRef:
    """The Placement actor beside ``head`` (same process, well-known id ``placement``)."""
    system = head.slot.system
    return restore_ref(system.uid, system.address, "placement", "placement")
