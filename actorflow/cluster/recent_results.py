"""A worker's recent task results, for the ``Local`` arguments of the tasks pushed behind them.

An owner pushes a task whose arguments are still being made right behind the tasks that make
them, on the same worker (``cluster/following.py``); the worker takes those arguments from the
returns it keeps here (bounded: :data:`RECENT_RESULTS` values, :data:`RECENT_BYTES` bytes of
inline ones). A value no longer here is fetched from its owner.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from actorflow.cluster.protocol import Failed, Local, MissingFunction, Payload, TaskSpec
from actorflow.objects.ref import ObjectRef
from actorflow.runtime import restore_ref

if TYPE_CHECKING:
    from actorflow.cluster.core import Core

__all__ = ["RECENT_BYTES", "RECENT_RESULTS", "RecentResults"]

#: Most task returns a worker keeps for the Local arguments of later tasks, and their bytes.
RECENT_RESULTS = 1024
RECENT_BYTES = 16 << 20


class RecentResults:
    """The latest tasks' returns of one worker, by object id (see the module docstring)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.results: OrderedDict[str, Payload] = OrderedDict()
        self.nbytes = 0  # (a segment counts 64)

    def take(self, resolved: tuple[Payload | Local, ...]) -> tuple[Payload, ...] | None:
        """``resolved`` with its Local arguments taken from the recent results; None when one
        of them is not there (it is fetched then)."""
        if not any(type(p) is Local for p in resolved):
            return resolved  # type: ignore[return-value]  # no Local left
        out: list[Payload] = []
        for p in resolved:
            if type(p) is Local:
                got = self.results.get(p.object_id)
                if got is None:
                    return None
                out.append(got)
            else:
                out.append(p)  # type: ignore[arg-type]  # not a Local
        return tuple(out)

    async def with_values(self, resolved: tuple[Payload | Local, ...]) -> tuple[Payload, ...]:
        """``resolved`` with every Local argument's value: recent, or from its owner."""
        taken = self.take(resolved)
        if taken is not None:
            return taken
        out: list[Payload] = []
        for p in resolved:
            if type(p) is Local:
                got = self.results.get(p.object_id)
                if got is None:
                    ref = ObjectRef(p.object_id, restore_ref(*p.owner))
                    (got,) = await self.core.reads.payloads((ref,))
                out.append(got)
            else:
                out.append(p)  # type: ignore[arg-type]  # not a Local
        return tuple(out)

    def remember(self, spec: TaskSpec, returns: tuple[Payload, ...]) -> None:
        """Keep a task's returns for the Local arguments of tasks pushed behind it."""
        recent = self.results
        if spec.num_returns == 1:
            ids: tuple[str, ...] = (spec.task_id,)
        else:
            ids = tuple(f"{spec.task_id}.{i}" for i in range(spec.num_returns))
        for oid, payload in zip(ids, returns, strict=False):
            if type(payload) is Failed and isinstance(payload.error, MissingFunction):
                continue  # its owner sends it again: followers wait for that run's value
            recent[oid] = payload
            self.nbytes += len(payload) if type(payload) is bytes else 64
        while len(recent) > RECENT_RESULTS or self.nbytes > RECENT_BYTES:
            _, old = recent.popitem(last=False)
            self.nbytes -= len(old) if type(old) is bytes else 64
