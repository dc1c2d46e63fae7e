"""An owner's objects: :class:`ObjectTable` (the payloads this process owns, or the callbacks
waiting for them, with local reference counts and the refs outside this process: see
:mod:`actorflow.objects.borrows`) and :class:`ObjectOwner` (the actor that answers other
processes' fetches of them, and what they send their owner: borrow reports, streamed values,
memory guard notices). Used by :class:`~actorflow.cluster.core.Core`, which holds one of each.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actorflow._errors import ObjectLostError
from actorflow.cluster import streaming
from actorflow.cluster.borrowing import BorrowReport
from actorflow.cluster.memory_guard import MemoryKilled
from actorflow.cluster.protocol import Failed, InShm, Payload
from actorflow.cluster.streaming import StreamItem, StreamWait
from actorflow.objects import spill
from actorflow.objects.borrows import Borrows, Lends
from actorflow.runtime import Actor, ActorRef

if TYPE_CHECKING:
    from actorflow.cluster.core import Core

__all__ = ["Fetch", "ObjectOwner", "ObjectTable", "PayloadCallback", "Rebuild", "settle"]

log = logging.getLogger("actorflow.cluster")


@dataclass(frozen=True, slots=True)
class Fetch:
    """Ask an owner for the payload of one of its objects (waits until it is ready)."""

    object_id: str


@dataclass(frozen=True, slots=True)
class Rebuild:
    """A borrower found every copy of one of this owner's objects lost: rebuild it if its
    task is known here (lineage), and answer the new payload (or why it cannot be)."""

    object_id: str


#: Called with an object's payload once it is known (see :meth:`ObjectTable.when_ready`).
PayloadCallback = Callable[[Payload], None]


class _Entry:
    __slots__ = ("lends", "payload", "pinned", "refs", "waiters")

    def __init__(self) -> None:
        self.payload: Payload | None = None  # None until the value (or its failure) is known
        self.waiters: list[PayloadCallback] | None = None
        self.refs = 0
        self.pinned = False
        #: the lends of the refs inside the value: discarded when the entry goes
        self.lends: Lends | None = None


class ObjectTable:
    """The owner's objects: payloads (or the callbacks waiting for them) with local reference
    counts.

    A payload is handed to its waiters synchronously when it is resolved: no future per object,
    no loop turn between a reply and the code waiting for it. Callbacks that resolve further
    objects (a failed dependency fails its dependents) are queued and run by the outermost
    :meth:`resolve`, so a long chain never deepens the stack.
    """

    def __init__(self, core: Core) -> None:
        self.core = core
        self.entries: dict[str, _Entry] = {}
        self.borrows = Borrows()
        self._watched: set[Hashable] = set()  # holders whose end is listened for
        self._settling: deque[tuple[list[PayloadCallback], Payload]] | None = None

    def create(self, object_id: str) -> _Entry:
        entry = self.entries[object_id] = _Entry()
        return entry

    def resolve(self, object_id: str, payload: Payload, lends: Lends | None = None) -> None:
        """The object's value (or failure) is known; ``lends``: those of the refs inside it
        (kept while the object lives)."""
        entry = self.entries.get(object_id)
        if entry is None:  # every ref was dropped before the value came
            self._discard(payload)
            return
        if entry.payload is not None:
            return
        entry.payload = payload
        if lends is not None:
            entry.lends = lends
        waiters = entry.waiters
        if waiters is None:
            return
        entry.waiters = None
        if self._settling is not None:  # inside another resolve: it runs these next
            self._settling.append((waiters, payload))
            return
        self._settling = queue = deque(((waiters, payload),))
        try:
            while queue:
                callbacks, value = queue.popleft()
                for callback in callbacks:
                    try:
                        callback(value)
                    except Exception:  # one waiter's bug must not starve the others
                        log.exception("a waiter of an object failed")
        finally:
            self._settling = None

    def when_ready(self, object_id: str, callback: PayloadCallback) -> None:
        """``callback(payload)`` once the object's payload is known: now, if it is."""
        entry = self.entries.get(object_id)
        if entry is None:
            callback(Failed(ObjectLostError(
                f"object {object_id} was freed: every reference to it had been dropped")))
        elif entry.payload is not None:
            callback(entry.payload)
        elif entry.waiters is None:
            entry.waiters = [callback]
        else:
            entry.waiters.append(callback)

    def incref(self, object_id: str) -> None:
        entry = self.entries.get(object_id)
        if entry is not None:
            entry.refs += 1

    def decref(self, object_id: str) -> None:
        entry = self.entries.get(object_id)
        if entry is None:
            return
        entry.refs -= 1
        if entry.refs <= 0 and not entry.pinned:
            borrows = self.borrows  # (Borrows.busy, inline: this runs for every ref dropped)
            if object_id in borrows.lends or object_id in borrows.holders:
                return
            del self.entries[object_id]
            self.core.lineage.forget(object_id)
            if entry.payload is not None:
                self._discard(entry.payload)
            entry.lends = None  # (the refs it carried are let go)

    def _free(self, object_id: str, entry: _Entry) -> None:
        del self.entries[object_id]
        self.core.lineage.forget(object_id)
        if entry.payload is not None:
            self._discard(entry.payload)
        entry.lends = None  # (the refs it carried are let go)

    def borrows_changed(self, holder: Hashable | None, held: Iterable[str] = (),
                        released: Iterable[str] = (), lent: Iterable[str] = (),
                        kept: Iterable[str] = (), discarded: Iterable[str] = ()) -> None:
        """A borrow report (see objects/borrows.py); ``holder`` None: this process's own
        discards. Objects nothing keeps any more are freed."""
        entries = self.entries
        if holder is not None and (held or kept):
            self._watch(holder)
        idle = self.borrows.apply(
            holder, [o for o in held if o in entries], released,
            [o for o in lent if o in entries], [o for o in kept if o in entries], discarded)
        for object_id in idle:
            self._maybe_free(object_id)

    def _maybe_free(self, object_id: str) -> None:
        entry = self.entries.get(object_id)
        if (entry is not None and entry.refs <= 0 and not entry.pinned
                and not self.borrows.busy(object_id)):
            self._free(object_id, entry)

    def _watch(self, holder: Hashable) -> None:
        """Listen for the end of a holder's process: it then holds nothing."""
        if holder in self._watched or not isinstance(holder, ActorRef):
            return
        self._watched.add(holder)

        def gone(_notice: Any) -> None:
            self._watched.discard(holder)
            for object_id in self.borrows.holder_gone(holder):
                self._maybe_free(object_id)

        self.core.system.on_terminated(holder, gone)

    def pin(self, object_id: str) -> None:
        entry = self.entries.get(object_id)
        if entry is not None:
            entry.pinned = True

    def _discard(self, payload: Payload) -> None:
        if type(payload) is not InShm:
            return
        if payload.node_id == self.core.node_id:
            self.core.store.free(payload.name)
            self.core.tell_node(spill.Freed(payload.name, payload.generation))
            return
        self.core.free_remote(payload)

    async def payload(self, object_id: str) -> Payload:
        entry = self.entries.get(object_id)
        if entry is not None and entry.payload is not None:
            return entry.payload
        fut: asyncio.Future[Payload] = self.core.loop.create_future()
        self.when_ready(object_id, functools.partial(settle, fut))
        return await fut

    def clear(self) -> None:
        """The owner is closing: free every segment, and fail what still waits."""
        for object_id, entry in list(self.entries.items()):
            if entry.payload is not None:
                self._discard(entry.payload)
            elif entry.waiters:
                self.resolve(object_id, Failed(ObjectLostError(
                    f"object {object_id} is lost: its owner shut down before it was ready")))
        self.entries.clear()
        self.borrows.clear()
        self.core.lineage.tasks.clear()


def settle(fut: asyncio.Future[Any], payload: Any) -> None:
    if not fut.done():  # its waiter may have been cancelled
        fut.set_result(payload)


class ObjectOwner(Actor):
    """Answers other processes' fetches of this process's objects."""

    max_concurrency = 100_000  # a fetch waits for its object; waits must not queue

    def __init__(self, core: Core) -> None:
        self.core = core

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Fetch):
            payload = await self.core.objects.payload(message.object_id)
            self.core.sending((payload,))
            return payload
        if type(message) is Rebuild:
            return await self.core.lineage.rebuild_lost(message.object_id)
        if type(message) is BorrowReport:
            self.core.objects.borrows_changed(message.holder, message.held, message.released,
                                              message.lent, message.kept, message.discarded)
            return None
        if type(message) is StreamItem:
            return streaming.accept(self.core, message)
        if type(message) is StreamWait:
            return await streaming.wait(self.core, message)
        if type(message) is MemoryKilled:
            self.core.submitter.leasing.memory_killed(message)
            return None
        raise TypeError(f"ObjectOwner got an unexpected {type(message).__name__}")


