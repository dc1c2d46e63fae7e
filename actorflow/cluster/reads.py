"""Reading objects in one process: from a ref to its payload, and the payload made readable here.

A process's :class:`Reads` (``core.reads``) answers "what is the value of this ref, and where
can this process read it?": from the object table when the process owns the ref, else asked of
its owner (``Fetch``); a large value on another node through a copy its node keeps or pulled
straight here (``Reads.localize`` goes through ``cluster/copies.py`` and
``cluster/remote_segments.py``); one of this node spilled to disk restored first; one whose
every copy is lost rebuilt by lineage (its owner's, for a borrowed ref). A task that waits
here inside a worker lends its CPU to the node meanwhile (``WorkerBlocked``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from actorflow._errors import (
    ActorDiedError,
    ObjectLostError,
    ObjectStoreFullError,
    OwnerDiedError,
    PeerUnreachableError,
)
from actorflow.cluster import copies
from actorflow.cluster.object_table import Fetch, PayloadCallback, Rebuild, settle
from actorflow.cluster.protocol import Failed, InShm, Payload, WorkerBlocked
from actorflow.cluster.task_context import task_context
from actorflow.objects import shm, spill

if TYPE_CHECKING:
    from actorflow.cluster.core import Core
    from actorflow.objects.ref import ObjectRef

__all__ = ["Reads"]

T = TypeVar("T")


class Reads:
    """The reads of one process's :class:`Core` (see the module docstring)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def is_local(self, payload: Payload) -> bool:
        """Can it be read here now? (A segment of this node spilled to disk is not: it is
        restored by :meth:`localize` first.)"""
        return type(payload) is not InShm or (payload.node_id == self.core.node_id and (
            self.core.store.holds(payload.name) or shm.exists(payload.name)))

    async def localize(self, payloads: tuple[Payload, ...] | list[Payload]
                       ) -> tuple[Payload, ...]:
        """Fetch the large values that live on other nodes: through a copy that this
        process's node keeps (``cluster/copies.py``), else each once, from its node."""
        out: list[Payload] = []
        for payload in payloads:
            if type(payload) is InShm and payload.node_id == self.core.node_id:
                out.append(await self._restored(payload))
            elif type(payload) is InShm:
                copy = await copies.read_copy(self.core, payload)
                if copy is not None:
                    out.append(copy)
                    continue
                out.append(await self.core.remote.fetch(payload))
            else:
                out.append(payload)
        return tuple(out)

    async def _restored(self, payload: InShm) -> Payload:
        """A segment of this node, spilled to disk: the node restores it, and it is pinned
        here (mapped) until read."""
        for _ in range(4):
            try:
                self.core.store.hold(payload.name)
                return payload
            except FileNotFoundError:
                pass
            try:
                await self.core.node.ask(spill.Restore(payload.name))
            except Exception as exc:
                return Failed(exc if isinstance(exc, ObjectLostError | ObjectStoreFullError)
                              else ObjectLostError(f"object segment {payload.name} could not "
                                                   f"be restored: {exc}"))
        return Failed(ObjectLostError(f"object segment {payload.name} could not be restored: "
                                      "it was spilled again each time"))

    def when_ready(self, ref: ObjectRef, callback: PayloadCallback) -> None:
        """``callback(payload)`` once the ref's payload is known here (now, if it is): from the
        object table when this process owns it, else fetched from its owner."""
        if ref.core is self.core:
            self.core.objects.when_ready(ref.id, callback)
            return
        fut = self._fetch(ref)
        fut.add_done_callback(lambda f: callback(
            f.result() if not f.cancelled() else Failed(ObjectLostError(
                f"the fetch of object {ref.id} was cancelled"))))

    def payload_future(self, ref: ObjectRef) -> asyncio.Future[Payload]:
        """A future of the ref's payload (for ``wait`` and ``as_completed``)."""
        if ref.core is not self.core:
            return self._fetch(ref)
        fut: asyncio.Future[Payload] = self.core.loop.create_future()
        self.core.objects.when_ready(ref.id, functools.partial(settle, fut))
        return fut

    def _fetch(self, ref: ObjectRef) -> asyncio.Future[Payload]:
        out: asyncio.Future[Payload] = self.core.loop.create_future()
        if self.core.borrowing.owner_gone(ref.owner):  # (not asked: it would redial for long)
            out.set_result(Failed(OwnerDiedError(
                ref.id, f"{ref.owner.path}: its process ended (the link to it was lost)")))
            return out
        try:
            asked = ref.owner.ask_nowait(Fetch(ref.id))
        except Exception as exc:
            out.set_result(Failed(self._lost(ref, exc)))
            return out

        def done(f: asyncio.Future[Any]) -> None:
            if out.done():
                return
            if f.cancelled():
                out.cancel()
            elif f.exception() is not None:
                exc = f.exception()
                assert exc is not None
                out.set_result(Failed(self._lost(ref, exc)))
            else:
                out.set_result(f.result())

        asked.add_done_callback(done)
        return out

    def _lost(self, ref: ObjectRef, exc: BaseException) -> BaseException:
        if isinstance(exc, ObjectLostError):
            return exc
        if isinstance(exc, (PeerUnreachableError, ActorDiedError)):
            # the owner's process (or its object-owner actor) is gone: so is its table
            error = OwnerDiedError(ref.id, f"{ref.owner.path}: {exc}")
            error.__cause__ = exc
            return error
        return exc

    async def get_one(self, ref: ObjectRef) -> Any:
        """The value of one ref (``await ref``): no list, no counter, for the commonest wait."""
        core = self.core
        entry = core.objects.entries.get(ref.id) if ref.core is core else None
        payload = entry.payload if entry is not None else None
        if payload is None:
            fut: asyncio.Future[Payload] = core.loop.create_future()
            self.when_ready(ref, functools.partial(settle, fut))
            payload = fut.result() if fut.done() else await self._lending(fut)
        if type(payload) is InShm and not self.is_local(payload):
            (payload,) = await self.localize_refs((ref,), (payload,))
        return core.materialize(payload)

    async def localize_refs(self, refs: Sequence[ObjectRef], payloads: Sequence[Payload]
                            ) -> list[Payload]:
        """:meth:`localize` for the values of ``refs``: one whose every copy is lost (its node
        died) is rebuilt by running its task again, when this process made that task (see
        :mod:`actorflow.cluster.lineage`)."""
        out = list(await self.localize(list(payloads)))
        for i, payload in enumerate(out):
            if type(payload) is not Failed or not isinstance(payload.error, ObjectLostError):
                continue
            ref = refs[i]
            if ref.id in self.core.lineage.tasks:
                rebuilt = await self.core.lineage.rebuild(ref.id, payload.error)
            elif ref.core is not self.core:  # borrowed: its owner may know the task
                try:
                    rebuilt = await ref.owner.ask(Rebuild(ref.id), timeout=None)
                except Exception as exc:
                    rebuilt = Failed(self._lost(ref, exc))
            else:
                continue
            if type(rebuilt) is InShm and not self.is_local(rebuilt):
                (rebuilt,) = await self.localize((rebuilt,))
            out[i] = rebuilt
        return out

    async def _lending(self, fut: asyncio.Future[T]) -> T:
        """Await ``fut``; a task waiting inside a worker lends its CPU to the node meanwhile,
        so parents waiting on their children cannot deadlock the node."""
        if self.core.worker_id is None or task_context.get().task_id is None:
            return await fut
        self.core.node.tell_nowait(WorkerBlocked(self.core.worker_id, True))
        try:
            return await fut
        finally:
            self.core.node.tell_nowait(WorkerBlocked(self.core.worker_id, False))

    def when_all_ready(self, refs: Sequence[ObjectRef],
                       callback: Callable[[list[Payload]], None]) -> None:
        """``callback(payloads)``, in the order of ``refs``, once every one is known (now, if
        they all are)."""
        out: list[Any] = [None] * len(refs)
        left = len(refs)
        if not left:
            callback(out)
            return

        def arrived(i: int, payload: Payload) -> None:
            nonlocal left
            out[i] = payload
            left -= 1
            if not left:
                callback(out)

        for i, ref in enumerate(refs):
            self.when_ready(ref, functools.partial(arrived, i))

    async def payloads(self, refs: Sequence[ObjectRef]) -> list[Payload]:
        """The payloads of ``refs``, in order, once every one is known (see _lending)."""
        core = self.core
        entries = core.objects.entries
        out: list[Any] = [None] * len(refs)
        missing = []
        for i, ref in enumerate(refs):
            entry = entries.get(ref.id) if ref.core is core else None
            if entry is None or entry.payload is None:
                missing.append(i)
            else:
                out[i] = entry.payload
        if not missing:
            return out
        done: asyncio.Future[list[Payload]] = self.core.loop.create_future()
        left = len(missing)

        def arrived(i: int, payload: Payload) -> None:
            nonlocal left
            out[i] = payload
            left -= 1
            if not left and not done.done():
                done.set_result(out)

        for i in missing:
            self.when_ready(refs[i], functools.partial(arrived, i))
        if done.done():
            return out
        return await self._lending(done)
