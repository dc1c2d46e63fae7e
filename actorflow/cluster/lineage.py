"""Lineage: rebuilding a task's lost output by running the task again (API.md §12).

The owner of a task's returns keeps the task (its spec, its ObjectRef arguments, its retries
left) for every return that went to shared memory, for as long as that object lives here:
:meth:`Lineage.remember` when the task ends, :meth:`Lineage.forget` when the object is freed.
Small returns travel inside the reply and cannot be lost; ``af.put`` values have no task, so
once their node is gone they raise ``af.ObjectLostError``.

When a read finds an output's every copy gone (its node died), :meth:`Lineage.rebuild` runs its
task again, within the task's ``max_retries`` (a rebuild spends one), after rebuilding its own
lost ObjectRef arguments first, recursively. The object keeps its id: refs already handed out
stay valid, and every reader waiting on it gets the new value. Concurrent reads of one lost
object share one rebuild.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

from actorflow._errors import ObjectLostError
from actorflow.cluster.protocol import Failed, GetClusterInfo, InShm, Payload

if TYPE_CHECKING:
    from actorflow.cluster.core import Core
    from actorflow.cluster.submitter import PendingTask
    from actorflow.objects.ref import ObjectRef

__all__ = ["Lineage"]


class Lineage:
    """The tasks whose shared-memory outputs this process owns (see the module docstring)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        #: return object id -> the task that made it, and that task's ObjectRef arguments
        self.tasks: dict[str, tuple[PendingTask, list[ObjectRef]]] = {}
        self._rebuilding: dict[str, asyncio.Future[None]] = {}  # task id -> its rebuild

    def remember(self, pending: PendingTask, returns: tuple[Payload, ...],
                 deps: list[ObjectRef]) -> None:
        if any(type(p) is InShm for p in returns):
            for object_id in pending.return_ids:
                self.tasks[object_id] = (pending, deps)

    def forget(self, object_id: str) -> None:
        self.tasks.pop(object_id, None)

    def __len__(self) -> int:
        return len(self.tasks)

    async def rebuild_lost(self, object_id: str) -> Payload:
        """A borrower could not read ``object_id``: rebuild it when its copy is on a node that
        died (and its task is known here); else answer the payload as it is (another read
        may already have rebuilt it)."""
        payload = await self.core.objects.payload(object_id)
        if type(payload) is InShm and payload.node_id in await self._dead_nodes():
            return await self.rebuild(object_id, ObjectLostError(
                f"object {object_id} is lost: node {payload.node_id}, which held its only "
                "copy, died"))
        return payload

    async def _dead_nodes(self) -> set[str]:
        info = await self.core.head.ask(GetClusterInfo(), timeout=30.0)
        return {n["node_id"] for n in info.nodes if not n["alive"]}

    async def rebuild(self, object_id: str, cause: BaseException) -> Payload:
        """The payload of ``object_id`` once its task ran again; a Failed (``cause``, or why
        it cannot be rebuilt) when it has no task here or its retries are used up."""
        known = self.tasks.get(object_id)
        if known is None:
            return Failed(cause if isinstance(cause, ObjectLostError) else ObjectLostError(
                f"object {object_id} is lost and cannot be rebuilt: {cause}"))
        pending, deps = known
        task_id = pending.spec.task_id
        running = self._rebuilding.get(task_id)
        if running is None:
            running = self._rebuilding[task_id] = self.core.loop.create_future()
            try:
                await self._run_again(pending, deps, cause)
            finally:
                del self._rebuilding[task_id]
                if not running.done():
                    running.set_result(None)
        else:
            await running
        return await self.core.objects.payload(object_id)

    async def _run_again(self, pending: PendingTask, deps: list[ObjectRef],
                         cause: BaseException) -> None:
        core = self.core
        name = pending.spec.name
        if pending.retries_left <= 0:
            error = ObjectLostError(
                f"an output of task {name!r} is lost ({cause}) and the task cannot be run "
                "again: its retries are used up (raise max_retries to allow rebuilds)")
            for object_id in pending.return_ids:
                self._settle_again(object_id, Failed(error))
            return
        # its own lost arguments first (their nodes died too), recursively
        dead = await self._dead_nodes()
        for dep in deps:
            entry = core.objects.entries.get(dep.id) if dep.core is core else None
            payload = entry.payload if entry is not None else None
            if type(payload) is InShm and payload.node_id in dead and dep.id in self.tasks:
                await self.rebuild(dep.id, cause)
        pending.retries_left -= 1
        for object_id in pending.return_ids:
            self._settle_again(object_id, None)
        again = dataclasses.replace(
            pending, spec=dataclasses.replace(pending.spec, resolved=()), lease=None,
            cancelled=False, waiting=0, follows=False, deps=list(deps))
        core.submitter.submit(again)

    def _settle_again(self, object_id: str, payload: Payload | None) -> None:
        """Forget the lost payload of ``object_id`` (None: it is being made again) or set its
        final one."""
        entry = self.core.objects.entries.get(object_id)
        if entry is None:
            return
        if payload is None:
            entry.payload = None
        else:
            entry.payload = None
            self.core.objects.resolve(object_id, payload)
