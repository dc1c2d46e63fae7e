"""The head's ledgers of processes: who holds an ActorHandle (holders and handles in flight,
per actor), and who waits in ``af.watch`` for an actor's death (:class:`Watches`).

Each process counts its live :class:`~actorflow.api.remote.ActorHandle` objects per actor and
tells the head (:class:`~actorflow.cluster.protocol.HandleHolds`, batched) when it starts or
stops holding one. A handle pickled to go elsewhere carries a token: the sender reports it
``lent``, the process that unpickles it reports it ``taken``. A token that one side has
reported and the other not yet is **open**, and an open token holds its actor as a holder
does: the handle is in flight. The two reports travel on different links, so either may come
first; a token reported twice by the same side (a value unpickled again, a second reader of
one object) changes nothing. A handle pickled into a value that someone keeps (a call's
arguments, a result, a ``put``: see :mod:`actorflow.objects.borrows`) is lent **kept**: its
token stays open, whoever unpickles it, until the keeper reports it ``discarded`` (the value
was let go), so a handle that was never unpickled (a call cancelled before it ran, a result
never read) does not hold its actor for ever, and one read from a stored value many times
holds it as long as the value lives. Tokens closed recently are remembered (:data:`CLOSED_TOKENS`),
so a late duplicate is ignored; one that comes after it was forgotten opens the token again
and keeps the actor alive (a leak, never an early stop).

This module decides nothing about lifetimes: the head asks :meth:`HoldLedger.unheld` and
applies the rules (only anonymous, non-detached, unsupervised actors are stopped). The
ledger is pure data, no asyncio, so its rules are tested without processes.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from actorflow._errors import ActorDiedError

__all__ = ["CLOSED_TOKENS", "HandleCounter", "HandleHolds", "HoldLedger", "Watches",
           "counter_for"]

#: How many closed tokens the ledger remembers (cluster-wide), to ignore late duplicates.
CLOSED_TOKENS = 1 << 16

#: the sides that report a token (a bit each)
_LENT, _TAKEN, _KEPT, _DISCARDED = 1, 2, 4, 8


def _closed(sides: int) -> bool:
    if sides & _KEPT:  # lent into a kept value: open until that value is discarded
        return bool(sides & _DISCARDED)
    return sides & (_LENT | _TAKEN) == (_LENT | _TAKEN)


@dataclass(frozen=True, slots=True)
class HandleHolds:
    """Tell the head: what changed in one process's handles since its last report.

    ``holder`` names the process (its Core's object owner: the head watches it, and a holder
    whose process ends holds nothing). ``held``/``released``: actors it started/stopped
    holding a handle of; ``lent``/``taken``: ``(actor id, token)`` of handles it pickled /
    unpickled; ``kept``: of handles it pickled into a kept value, ``discarded``: of those
    whose value it let go (see the module docstring)."""

    holder: Any
    held: tuple[str, ...] = ()
    released: tuple[str, ...] = ()
    lent: tuple[tuple[str, str], ...] = ()
    taken: tuple[tuple[str, str], ...] = ()
    kept: tuple[tuple[str, str], ...] = ()
    discarded: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class _Holds:
    holders: set[Hashable] = field(default_factory=set)
    #: token -> the sides that reported it so far (bits: it waits for the others)
    open: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.holders and not self.open


class HoldLedger:
    """Per actor: the processes that hold a handle, and the handles in flight."""

    def __init__(self) -> None:
        self._actors: dict[str, _Holds] = {}  # every actor some report named
        self._held_by: dict[Hashable, set[str]] = {}  # holder -> the actors it holds
        self._closed: OrderedDict[str, None] = OrderedDict()

    def heard(self, actor_id: str) -> bool:
        """Has any process reported a handle of this actor?"""
        return actor_id in self._actors

    def unheld(self, actor_id: str) -> bool:
        """Reported, and now no process holds a handle and none is in flight."""
        holds = self._actors.get(actor_id)
        return holds is not None and holds.empty

    def holders(self, actor_id: str) -> set[Hashable]:
        holds = self._actors.get(actor_id)
        return set(holds.holders) if holds is not None else set()

    def apply(self, holder: Hashable, held: Iterable[str] = (), released: Iterable[str] = (),
              lent: Iterable[tuple[str, str]] = (), taken: Iterable[tuple[str, str]] = (),
              kept: Iterable[tuple[str, str]] = (), discarded: Iterable[tuple[str, str]] = ()
              ) -> list[str]:
        """One report of ``holder``. What it adds (holds, tokens) counts before what it
        removes, so a report never passes through zero on the way. Returns the actors this
        report left unheld."""
        touched: list[str] = []
        for actor_id, token in lent:
            self._token(actor_id, token, _LENT)
            touched.append(actor_id)
        for actor_id, token in kept:
            self._token(actor_id, token, _KEPT)
            touched.append(actor_id)
        for actor_id in held:
            self._holds(actor_id).holders.add(holder)
            self._held_by.setdefault(holder, set()).add(actor_id)
        for actor_id, token in taken:
            self._token(actor_id, token, _TAKEN)
            touched.append(actor_id)
        for actor_id, token in discarded:
            self._token(actor_id, token, _DISCARDED)
            touched.append(actor_id)
        mine = self._held_by.get(holder)
        for actor_id in released:
            holds = self._actors.get(actor_id)
            if holds is not None:
                holds.holders.discard(holder)
                touched.append(actor_id)
            if mine is not None:
                mine.discard(actor_id)
        if mine is not None and not mine:
            del self._held_by[holder]
        return [a for a in dict.fromkeys(touched) if self.unheld(a)]

    def holder_gone(self, holder: Hashable) -> list[str]:
        """``holder``'s process ended: it holds nothing. Returns the actors left unheld.
        (Tokens it lent stay open: their handles may still be unpickled elsewhere.)"""
        out = []
        for actor_id in self._held_by.pop(holder, ()):
            holds = self._actors.get(actor_id)
            if holds is not None:
                holds.holders.discard(holder)
                if holds.empty:
                    out.append(actor_id)
        return out

    def forget(self, actor_id: str) -> None:
        """The actor is dead for good: drop what is known of it."""
        holds = self._actors.pop(actor_id, None)
        if holds is None:
            return
        for holder in holds.holders:
            mine = self._held_by.get(holder)
            if mine is not None:
                mine.discard(actor_id)
                if not mine:
                    del self._held_by[holder]

    def _holds(self, actor_id: str) -> _Holds:
        holds = self._actors.get(actor_id)
        if holds is None:
            holds = self._actors[actor_id] = _Holds()
        return holds

    def _token(self, actor_id: str, token: str, side: int) -> None:
        holds = self._holds(actor_id)
        if token in self._closed:
            return  # a late duplicate
        sides = holds.open.get(token, 0) | side
        if _closed(sides):
            holds.open.pop(token, None)
            self._closed[token] = None
            if len(self._closed) > CLOSED_TOKENS:
                self._closed.popitem(last=False)
        else:  # (the same side again changes nothing)
            holds.open[token] = sides


# -- af.watch waits ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Watch:
    actor_id: str
    answer: asyncio.Future[ActorDiedError | None]
    watcher: Any


class Watches:
    """The head's waiter table of ``af.watch``: each wait by its id, by actor and by the
    process that waits. A wait is settled (its future answered) by the actor's death, by its
    watcher giving up, or by its watcher's end; it leaves the table when its handler ends."""

    def __init__(self) -> None:
        self.waits: dict[str, _Watch] = {}
        self._by_actor: dict[str, set[str]] = {}

    def add(self, watch_id: str, actor_id: str, watcher: Any
            ) -> asyncio.Future[ActorDiedError | None]:
        answer: asyncio.Future[ActorDiedError | None] = (
            asyncio.get_running_loop().create_future())
        self.waits[watch_id] = _Watch(actor_id, answer, watcher)
        self._by_actor.setdefault(actor_id, set()).add(watch_id)
        return answer

    def remove(self, watch_id: str) -> None:
        watch = self.waits.pop(watch_id, None)
        if watch is None:
            return
        ids = self._by_actor.get(watch.actor_id)
        if ids is not None:
            ids.discard(watch_id)
            if not ids:
                del self._by_actor[watch.actor_id]

    def drop(self, watch_id: str) -> None:
        """The watcher gave up: its wait answers None (nobody reads it)."""
        watch = self.waits.get(watch_id)
        if watch is not None and not watch.answer.done():
            watch.answer.set_result(None)

    def drop_watcher(self, watcher: Any) -> None:
        for watch_id in [w for w, watch in self.waits.items() if watch.watcher == watcher]:
            self.drop(watch_id)

    def settle(self, actor_id: str, death: ActorDiedError) -> None:
        for watch_id in self._by_actor.get(actor_id, ()):
            answer = self.waits[watch_id].answer
            if not answer.done():
                answer.set_result(ActorDiedError(death.actor, death.reason, death.cause))

    def counts(self) -> dict[str, int]:
        """Waits per actor id."""
        return {actor_id: len(ids) for actor_id, ids in self._by_actor.items()}


# -- the process's side -------------------------------------------------------------------------

_ADD, _DROP, _CREATED, _LENT_EV, _TAKEN_EV, _KEPT_EV, _DISCARDED_EV = range(7)


class HandleCounter:
    """This process's live ActorHandles, counted per actor, and its reports to the head.

    A handle counts itself in when it is made and out when it is collected (``__del__``, on
    whatever thread that happens). Both only append to a queue (thread-safe, no lock, nothing
    that may block or re-enter the loop's state) and make sure one flush is scheduled on the
    loop; the flush, on the loop thread, folds everything queued since into one
    :class:`HandleHolds`: an actor whose count left zero is ``held``, one whose count came
    back to zero ``released`` (an actor dropped and picked up again in one batch sends
    nothing). The creator's handle always reports ``held`` first, so an actor whose only
    handle is dropped at once is still heard of, and stopped.

    Reports go as tells; :meth:`settled` has the head acknowledge them (an ask behind them
    on the same link), for a call's answer and for borrow reports that let go of something,
    which must not overtake what this process holds (see objects/borrows.py)."""

    __slots__ = ("_counts", "_events", "_registered", "_scheduled", "_told", "core")

    def __init__(self, core: Any) -> None:
        self.core = core
        self._events: deque[tuple[int, str, str]] = deque()
        self._counts: dict[str, int] = {}
        self._registered: set[str] = set()  # the head counts this process as their holder
        self._scheduled = False
        self._told = False  # holds were told to the head since its last acknowledgement

    def add(self, actor_id: str) -> None:
        self._push((_ADD, actor_id, ""))

    def drop(self, actor_id: str) -> None:
        self._push((_DROP, actor_id, ""))

    def created(self, actor_id: str) -> None:
        self._push((_CREATED, actor_id, ""))

    def lend(self, actor_id: str, *, kept: bool = False) -> str:
        """A handle is being pickled: its token (the head counts it until it is taken, or,
        ``kept`` in a value someone keeps, until that value is discarded)."""
        token: str = self.core.new_id()
        self._push((_KEPT_EV if kept else _LENT_EV, actor_id, token))
        return token

    def take(self, actor_id: str, token: str) -> None:
        self._push((_TAKEN_EV, actor_id, token))

    def discard(self, actor_id: str, token: str) -> None:
        """The value a handle was lent into (kept) was let go."""
        self._push((_DISCARDED_EV, actor_id, token))

    @property
    def unsettled(self) -> bool:
        return self._told or bool(self._events)

    async def settled(self) -> None:
        """Return once the head has applied every report of this process so far."""
        report = self._fold()
        self._told = False
        if report is None:
            report = HandleHolds(self.core.owner_ref)  # (only to be answered after the rest)
        try:
            await self.core.head.ask(report, timeout=10.0)
        except Exception:  # the head is gone, or away: the reports wait with the link
            pass

    def _push(self, event: tuple[int, str, str]) -> None:
        self._events.append(event)
        if not self._scheduled:
            self._scheduled = True
            try:
                self.core.loop.call_soon_threadsafe(self._flush)
            except RuntimeError:
                pass  # the loop is closed: this process's cluster is gone

    def _flush(self) -> None:
        self._scheduled = False
        report = self._fold()
        if report is None:
            return
        try:
            self.core.head.tell_nowait(report)
        except Exception:  # the head is gone (the cluster stopped): nothing to tell
            return
        if report.held:  # (what must reach the head before anything here lets go)
            self._told = True

    def _fold(self) -> HandleHolds | None:
        """What is queued, as one report (None: nothing to tell)."""
        events, counts, registered = self._events, self._counts, self._registered
        touched: dict[str, None] = {}
        held: list[str] = []
        tokens: tuple[list[tuple[str, str]], ...] = ([], [], [], [])
        while events:
            op, actor_id, token = events.popleft()
            if op == _ADD:
                counts[actor_id] = counts.get(actor_id, 0) + 1
            elif op == _DROP:
                counts[actor_id] = counts.get(actor_id, 0) - 1
            elif op == _CREATED:
                if actor_id not in registered:
                    registered.add(actor_id)
                    held.append(actor_id)
            else:  # lent, taken, kept, discarded
                tokens[op - _LENT_EV].append((actor_id, token))
            touched[actor_id] = None
        released: list[str] = []
        for actor_id in touched:
            if counts.get(actor_id, 0) > 0:
                if actor_id not in registered:
                    registered.add(actor_id)
                    held.append(actor_id)
            else:
                counts.pop(actor_id, None)
                if actor_id in registered:
                    registered.discard(actor_id)
                    released.append(actor_id)
        lent, taken, kept, discarded = tokens
        if not (held or released or lent or taken or kept or discarded):
            return None
        return HandleHolds(self.core.owner_ref, tuple(held), tuple(released), tuple(lent),
                           tuple(taken), tuple(kept), tuple(discarded))


_COUNTER: HandleCounter | None = None
_COUNTER_LOCK = threading.Lock()


def counter_for(core: Any) -> HandleCounter:
    """The handle counter of ``core`` (one per Core: its reports name one holder)."""
    counter = _COUNTER
    if counter is not None and counter.core is core:
        return counter
    return _new_counter(core)


def _new_counter(core: Any) -> HandleCounter:
    global _COUNTER
    with _COUNTER_LOCK:
        if _COUNTER is None or _COUNTER.core is not core:
            _COUNTER = HandleCounter(core)
        return _COUNTER
