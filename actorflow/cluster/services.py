"""Services that run in the head's process beside the Head actor (the dashboard, the job
manager, the metrics and event stores...).

Each service is a module named in :data:`HEAD_SERVICES` with ``async def start(ctx:
HeadContext) -> None``, which spawns its actors in ``ctx.system`` (they stop when the head's
system shuts down, in the reverse order of their spawns) and reads its settings from
``ctx.options``: the keyword options of ``af.init`` (embedded cluster) or the parsed flags of
``actorflow start --head`` (a flag's ``dest`` name), whichever started the head. A service
whose settings turn it off returns without spawning anything. A service that fails to start
fails the head's start: a cluster never runs without what it was asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actorflow.runtime import ActorRef, ActorSystem

__all__ = ["HEAD_SERVICES", "HeadContext", "start_head_services"]

#: The modules whose ``start(ctx)`` runs when a head starts, in this order.
HEAD_SERVICES: tuple[str, ...] = (
    "actorflow.jobs.manager",
    "actorflow.state.store",
    "actorflow.metrics.service",
    "actorflow.dashboard",
)


@dataclass(frozen=True)
class HeadContext:
    """What a head service may use: the head's system and actors, the cluster's token and
    session, the start options, and ``info`` where it reports what the user should see (the
    dashboard's URL...): ``actorflow start`` prints it, ``af.init`` logs it."""

    system: ActorSystem
    head: ActorRef
    placement: ActorRef
    token: str
    session: str
    options: Mapping[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


async def start_head_services(ctx: HeadContext) -> None:
    for module in HEAD_SERVICES:
        start = importlib.import_module(module).start
        await start(ctx)
