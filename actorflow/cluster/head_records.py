"""The Head's records (:mod:`actorflow.cluster.head`): an actor's and a node's, and the
messages the head sends itself.

An actor's record moves through::

    PENDING --ActorUp--> ALIVE --ActorDown(final=False)--> RESTARTING --ActorUp--> ALIVE ...
       |                   |                                   |
       +-------------------+----ActorDown(final=True)----------+--> DEAD (with the cause)
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from dataclasses import dataclass, field

from actorflow._errors import ActorDiedError
from actorflow.cluster.protocol import ActorLocation, ActorSpec, StartActor
from actorflow.placement.resources import Resources
from actorflow.runtime import ActorRef, Terminated

__all__ = [
    "ActorRecord",
    "ActorState",
    "Collect",
    "HolderGone",
    "NodeLost",
    "NodeRecord",
    "StartAt",
    "unsupervised",
]


def unsupervised(spec: ActorSpec) -> ActorSpec:
    return dataclasses.replace(spec, supervised=False)


class ActorState(enum.Enum):
    PENDING = "PENDING"
    ALIVE = "ALIVE"
    RESTARTING = "RESTARTING"
    DEAD = "DEAD"


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where the placement put an actor: a node, and maybe a placement group bundle."""

    node: ActorRef
    bundle: tuple[str, int] | None

    def start(self, spec: ActorSpec) -> None:
        self.node.tell_nowait(StartActor(spec, self.bundle))


@dataclass(frozen=True, slots=True)
class HolderGone:
    holder: ActorRef


@dataclass(frozen=True, slots=True)
class Collect:
    actor_id: str


@dataclass(frozen=True, slots=True)
class NodeLost:
    node_id: str
    notice: Terminated


@dataclass(slots=True)
class NodeRecord:
    node_id: str
    ref: ActorRef
    address: str | None
    resources: Resources
    alive: bool = True


@dataclass(slots=True)
class ActorRecord:
    spec: ActorSpec
    state: ActorState = ActorState.PENDING
    location: ActorLocation | None = None
    death: ActorDiedError | None = None
    node_id: str | None = None
    pid: int | None = None
    restarts: int = 0
    generation: int = 0  # counts incarnations cluster-wide (the head is the authority)
    last_error: BaseException | None = None
    failed_attempt: BaseException | None = None  # a supervised start that ended
    collecting: bool = False  # no handle to it is left: it is being stopped
    orphaned: BaseException | None = None  # its creator's process ended (why): being stopped
    job_ended: bool = False  # its job ended: being stopped
    changed: asyncio.Event = field(default_factory=asyncio.Event)
