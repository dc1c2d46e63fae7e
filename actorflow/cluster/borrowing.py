"""A process's refs to objects that other processes own, and its reports to their owners.

:class:`BorrowCounter` counts this process's live refs per borrowed object and tells each
owner, in batches (:class:`BorrowReport`), what changed: ``held`` when the count left zero,
``released`` when it came back, the lends it made (``lent``: a borrowed ref pickled into a
value) and the lends it keeps and discards (see :mod:`actorflow.objects.borrows` for the rules
the owner keeps). Reports that hold something are asked (acknowledged) and those that let go
are sent only after every earlier one was acknowledged; :meth:`BorrowCounter.settled` lets a
call's answer wait for the same, so the owner hears of a new holder before its caller lets the
arguments go.

Refs count themselves in and out from any thread (``__del__`` runs where the last reference
goes): both only append to a queue and make sure one flush runs on the loop.

The counter watches each owner it reports to. When that owner's process ends (the link to it
is lost; the owner, which watches its holders, forgets this process's holds then), the owner is
*gone* here (:meth:`BorrowCounter.owner_gone`): reports to it are no longer sent and a read of
its objects fails at once with :class:`~actorflow.OwnerDiedError`, instead of waiting in the
transport's backlog while it redials a process that is gone (``peer_timeout_s``), which would
also hold back every call's answer in :meth:`BorrowCounter.settled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actorflow.cluster.holds import counter_for
from actorflow.objects.borrows import HANDLE
from actorflow.runtime import OwnedTasks

if TYPE_CHECKING:
    from actorflow.cluster.core import Core

__all__ = ["BorrowCounter", "BorrowReport"]

log = logging.getLogger("actorflow.cluster")

#: How long a flush waits for an owner to acknowledge what it holds (a busy owner answers
#: late; one that is gone fails at once).
ACK_TIMEOUT_S = 30.0
#: How long a call's answer waits for its process's holds to be acknowledged.
SETTLE_TIMEOUT_S = 10.0
#: How many owners known to be gone are remembered (the oldest are forgotten first).
GONE_KEPT = 4096


@dataclass(frozen=True, slots=True)
class BorrowReport:
    """Tell an owner what changed in one process's refs to its objects since the last report
    (``holder``: that process's object owner, which the owner watches)."""

    holder: Any
    held: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    lent: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    discarded: tuple[str, ...] = ()


_ADD, _DROP, _LEND, _KEEP, _DISCARD = range(5)


class _Batch:
    __slots__ = ("discarded", "held", "kept", "lent", "released")

    def __init__(self) -> None:
        self.held: list[str] = []
        self.released: list[str] = []
        self.lent: list[str] = []
        self.kept: list[str] = []
        self.discarded: list[str] = []


class BorrowCounter:
    """This process's borrowed refs and lends, reported to their owners (module docstring)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._events: deque[tuple[int, Any, str]] = deque()
        self._counts: dict[tuple[Any, str], int] = {}
        self._flushing = False
        self._round: asyncio.Future[None] | None = None  # the holds in flight now
        self._next: asyncio.Future[None] | None = None  # the next round (someone waits)
        self._tasks = OwnedTasks("reporting borrowed refs to their owners", log)
        self._handle_counter: Any = None  # this Core's HandleCounter (holds.py), once asked
        self._watched: set[Any] = set()  # the owners reported to, watched until they end
        self._gone: dict[Any, None] = {}  # owners whose process ended, oldest first
        self._acks: dict[Any, asyncio.Future[Any]] = {}  # the holds asked now, by owner

    # -- from any thread ----------------------------------------------------------------------

    def add(self, owner: Any, object_id: str) -> None:
        self._push((_ADD, owner, object_id))

    def drop(self, owner: Any, object_id: str) -> None:
        self._push((_DROP, owner, object_id))

    def lend(self, owner: Any, object_id: str) -> None:
        self._push((_LEND, owner, object_id))

    def keep(self, refs: Iterable[tuple[Any, str]]) -> None:
        """This process keeps a value carrying these lends (a call's result, say)."""
        mine = self.core.owner_ref
        for owner, object_id in refs:
            if owner != mine and owner != HANDLE:  # (handles: the head has no keepers)
                self._push((_KEEP, owner, object_id))

    def discard(self, refs: list[tuple[Any, str]]) -> None:
        """A value carrying these lends was let go (see objects.borrows.Lends)."""
        self._push((_DISCARD, refs, ""))

    def _push(self, event: tuple[int, Any, str]) -> None:
        self._events.append(event)
        if not self._flushing:
            self._flushing = True
            try:
                self.core.loop.call_soon_threadsafe(self._start)
            except RuntimeError:
                pass  # the loop is closed: this process's cluster is gone

    # -- on the loop ----------------------------------------------------------------------------

    def owner_gone(self, owner: Any) -> bool:
        """Has ``owner``'s process ended? (Known once this process reported to it.)"""
        return owner in self._gone

    def _watch(self, owner: Any) -> None:
        if owner in self._watched or owner in self._gone:
            return
        self._watched.add(owner)
        try:
            self.core.system.on_terminated(owner, functools.partial(self._owner_ended, owner))
        except Exception:  # (no watch: reports to it fail or wait, as they did)
            self._watched.discard(owner)

    def _owner_ended(self, owner: Any, _notice: Any) -> None:
        self._watched.discard(owner)
        ack = self._acks.get(owner)
        if ack is not None:  # (asked while its link was closing: it waits for a redial)
            ack.cancel()  # it holds nothing now: nothing to wait for
        gone = self._gone
        gone[owner] = None
        if len(gone) > GONE_KEPT:
            del gone[next(iter(gone))]

    @property
    def unsettled(self) -> bool:
        """Is anything this process holds not yet acknowledged? (Asked before every call's
        answer: kept cheap.)"""
        if self._events or self._round is not None:
            return True
        handles = self._handle_counter
        if handles is None:
            handles = self._handle_counter = counter_for(self.core)
        return bool(handles.unsettled)

    @property
    def _handles(self) -> Any:
        handles = self._handle_counter
        if handles is None:
            handles = self._handle_counter = counter_for(self.core)
        return handles

    async def settled(self) -> None:
        """Return once what this process holds now (refs and actor handles) is acknowledged
        by the owners (and the head)."""
        if self._handles.unsettled:
            await self._handles.settled()
        if self._events:
            if self._next is None:
                self._next = self.core.loop.create_future()
            fut = self._next
        elif self._round is not None:
            fut = self._round
        else:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), SETTLE_TIMEOUT_S)

    def _start(self) -> None:
        if self._tasks.spawn(self._flush(), "actorflow borrow reports") is None:
            self._flushing = False  # closing: what is left is told by close()

    async def _flush(self) -> None:
        try:
            while self._events:
                done = self._next or self.core.loop.create_future()
                self._next = None
                self._round = done
                try:
                    holds, lets = self._fold()
                    if holds:
                        await self._send_holds(holds)
                    if lets and self._handles.unsettled:  # (handles held here count too)
                        await self._handles.settled()
                finally:
                    self._round = None
                    if not done.done():
                        done.set_result(None)
                self._send_lets(lets)
        finally:
            self._flushing = False
            if self._events:  # pushed after the loop's last look
                self._flushing = True
                self.core.loop.call_soon(self._start)

    def _fold(self) -> tuple[dict[Any, _Batch], dict[Any, _Batch]]:
        """Everything queued, as per-owner reports: what holds, and what lets go."""
        events, counts = self._events, self._counts
        holds: dict[Any, _Batch] = {}
        lets: dict[Any, _Batch] = {}
        before: dict[tuple[Any, str], int] = {}
        while events:
            op, owner, object_id = events.popleft()
            if op in (_ADD, _DROP):
                key = (owner, object_id)
                n = counts.get(key, 0)
                if key not in before:
                    before[key] = n
                counts[key] = n + 1 if op == _ADD else n - 1
            elif op == _LEND:
                _batch(holds, owner).lent.append(object_id)
            elif op == _KEEP:
                _batch(holds, owner).kept.append(object_id)
            else:  # (owner is the list of a value's lends)
                for whose, oid in owner:
                    _batch(lets, whose).discarded.append(oid)
        for key, was in before.items():
            now = counts.get(key, 0)
            if now <= 0:
                del counts[key]
            if was <= 0 < now:
                _batch(holds, key[0]).held.append(key[1])
            elif now <= 0 < was:
                _batch(lets, key[0]).released.append(key[1])
        return holds, lets

    async def _send_holds(self, holds: dict[Any, _Batch]) -> None:
        me = self.core.owner_ref
        acks = self._acks
        for owner, b in holds.items():
            self._watch(owner)
            if owner in self._gone:
                continue  # it holds nothing: it is not asked
            with contextlib.suppress(Exception):  # (its link is gone: nothing to hold)
                acks[owner] = owner.ask_nowait(
                    BorrowReport(me, tuple(b.held), (), tuple(b.lent), tuple(b.kept)))
        if not acks:
            return
        try:
            # an owner that is gone fails its ask, or is found gone by its watch (then its
            # ask is not waited for while the transport redials it): it has nothing to hold
            await asyncio.wait(list(acks.values()), timeout=ACK_TIMEOUT_S)
        finally:
            for ack in acks.values():
                if not ack.done():
                    ack.cancel()  # (a busy owner's late answer is not waited for)
                elif not ack.cancelled():
                    ack.exception()  # (retrieved: a failed ask is not an error here)
            acks.clear()

    def _send_lets(self, lets: dict[Any, _Batch]) -> None:
        core = self.core
        me = core.owner_ref
        for owner, b in lets.items():
            if owner == HANDLE:  # handles lent into the values let go: the head's
                handles = self._handles
                for lend in b.discarded:
                    actor_id, _, token = lend.partition(" ")
                    handles.discard(actor_id, token)
                continue
            if owner == me:  # lends of this process's own objects
                core.objects.borrows_changed(None, discarded=b.discarded)
                continue
            if owner in self._gone:
                continue  # nothing to let go: it holds nothing of this process's any more
            with contextlib.suppress(Exception):  # its owner is gone: nothing to let go
                owner.tell_nowait(BorrowReport(me, (), tuple(b.released), (), (),
                                               tuple(b.discarded)))

    async def close(self) -> None:
        """Tell the owners what is left (bounded: they may be gone), then stop."""
        try:
            await asyncio.wait_for(self._tasks.close(cancel=False), 2.0)
        except TimeoutError:
            await self._tasks.close()
        if self._events:  # (holds no longer matter: this process is ending)
            self._send_lets(self._fold()[1])

    def describe(self) -> dict[str, int]:
        return {"borrowed": len(self._counts)}


def _batch(batches: dict[Any, _Batch], owner: Any) -> _Batch:
    b = batches.get(owner)
    if b is None:
        b = batches[owner] = _Batch()
    return b
