"""Refs outside their owner's process: the owner's ledger (:class:`Borrows`) and the record of
the refs a serialized value carries (:func:`lending`, :class:`Lends`).

An object lives while its owner holds a ref to it, or any process **holds** one (a
borrower), or a serialized value that may still be read carries one (a **lend**). The three
reports that make this work, each sent to the object's owner:

- ``held`` / ``released``: a process's count of refs to the object left zero / came back to it;
- ``lent``: a ref was pickled into a value (a call's arguments, a ``put``, a task's result):
  one lend, which keeps the object until the value is discarded;
- ``kept`` / ``discarded``: the process that keeps that value (the caller of the call, the
  owner of the object the value is) took charge of the lend / let the value go.

A lend made in the owner's own process is counted at once, under a lock (pickling may run on
any thread); the rest arrive in batches. Their order is what makes the count safe: each
process sends a report that lets go of something (``released``, ``discarded``) only after its
earlier reports that hold something (``held``, ``lent``, ``kept``) were acknowledged, and a
process that ran a call answers it only after the same. So the owner always hears of a new
holder before the lend that brought it the ref is discarded, whatever the links' speeds.

A process that ends holds nothing: its holds go, and so do the lends it kept. A ref pickled
outside any value that someone keeps (a user's own ``cloudpickle.dumps(ref)``, an actor's
constructor arguments) is a lend nobody discards: the object stays until its owner ends.

The ledger is pure data (no asyncio), so its rules are tested without processes.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["HANDLE", "Borrows", "Lends", "collecting", "lending"]

#: The "owner" under which a value records an ActorHandle pickled into it: the lend is the
#: head's (its handle ledger, cluster/holds.py) and the "object id" is ``"<actor id> <token>"``.
HANDLE = "actor-handle"


class Borrows:
    """An owner's count, per object, of the refs to it outside this process's own: holder
    processes, and lends not yet discarded (with who keeps them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.holders: dict[str, set[Hashable]] = {}  # object id -> processes that hold it
        self.lends: dict[str, int] = {}  # object id -> lends not discarded
        self._held_by: dict[Hashable, set[str]] = {}  # holder -> the objects it holds
        self._kept: dict[Hashable, dict[str, int]] = {}  # keeper -> object id -> its lends

    def busy(self, object_id: str) -> bool:
        """Does anything outside the owner's own refs keep the object?"""
        return object_id in self.lends or object_id in self.holders

    def lend(self, object_id: str) -> None:
        """One lend made in this process (any thread)."""
        with self._lock:
            self.lends[object_id] = self.lends.get(object_id, 0) + 1

    def apply(self, holder: Hashable, held: Iterable[str] = (), released: Iterable[str] = (),
              lent: Iterable[str] = (), kept: Iterable[str] = (),
              discarded: Iterable[str] = ()) -> list[str]:
        """One report of ``holder`` (None: this process's own discards). What it adds counts
        before what it removes, so a report never passes through zero on the way. Returns
        the objects it left idle (nothing outside the owner keeps them any more)."""
        touched: list[str] = []
        with self._lock:
            lends = self.lends
            for object_id in lent:
                lends[object_id] = lends.get(object_id, 0) + 1
            if holder is not None:
                for object_id in kept:
                    mine = self._kept.setdefault(holder, {})
                    mine[object_id] = mine.get(object_id, 0) + 1
                for object_id in held:
                    self.holders.setdefault(object_id, set()).add(holder)
                    self._held_by.setdefault(holder, set()).add(object_id)
                for object_id in released:
                    self._unhold(holder, object_id)
                    touched.append(object_id)
            for object_id in discarded:
                if holder is not None:
                    self._unkeep(holder, object_id, 1)
                self._unlend(object_id, 1)
                touched.append(object_id)
        return [o for o in dict.fromkeys(touched) if not self.busy(o)]

    def holder_gone(self, holder: Hashable) -> list[str]:
        """``holder``'s process ended: it holds nothing, and the lends it kept are gone.
        Returns the objects left idle."""
        touched: list[str] = []
        with self._lock:
            for object_id in self._held_by.pop(holder, ()):
                holders = self.holders.get(object_id)
                if holders is not None:
                    holders.discard(holder)
                    if not holders:
                        del self.holders[object_id]
                touched.append(object_id)
            for object_id, n in self._kept.pop(holder, {}).items():
                self._unlend(object_id, n)
                touched.append(object_id)
        return [o for o in touched if not self.busy(o)]

    def clear(self) -> None:
        with self._lock:
            self.holders.clear()
            self.lends.clear()
            self._held_by.clear()
            self._kept.clear()

    def counts(self, object_id: str) -> tuple[int, int]:
        """``(holder processes, lends)`` of one object."""
        return len(self.holders.get(object_id, ())), self.lends.get(object_id, 0)

    def _unhold(self, holder: Hashable, object_id: str) -> None:
        holders = self.holders.get(object_id)
        if holders is not None:
            holders.discard(holder)
            if not holders:
                del self.holders[object_id]
        mine = self._held_by.get(holder)
        if mine is not None:
            mine.discard(object_id)
            if not mine:
                del self._held_by[holder]

    def _unkeep(self, holder: Hashable, object_id: str, n: int) -> None:
        mine = self._kept.get(holder)
        if mine is None or object_id not in mine:
            return
        left = mine[object_id] - n
        if left > 0:
            mine[object_id] = left
        else:
            del mine[object_id]
            if not mine:
                del self._kept[holder]

    def _unlend(self, object_id: str, n: int) -> None:
        left = self.lends.get(object_id, 0) - n
        if left > 0:
            self.lends[object_id] = left
        else:
            self.lends.pop(object_id, None)


# -- the refs a serialized value carries -----------------------------------------------------

_collect = threading.local()


@contextmanager
def lending() -> Iterator[list[tuple[Any, str]]]:
    """Collect ``(owner, object id)`` of every ref (and :data:`HANDLE` lend of every actor
    handle) pickled on this thread inside the block:
    the lends of the value being serialized, which its keeper discards when it lets the
    value go (see :class:`Lends`). Nests: an inner block collects for itself."""
    outer = getattr(_collect, "refs", None)
    refs: list[tuple[Any, str]] = []
    _collect.refs = refs
    try:
        yield refs
    finally:
        _collect.refs = outer


def collecting() -> list[tuple[Any, str]] | None:
    """The list that the ref being pickled now adds its lend to; None: no value being
    serialized here keeps it (a lend nobody discards)."""
    return getattr(_collect, "refs", None)


class Lends:
    """The lends one kept value carries; when this record is collected (the value's keeper let
    it go: the call is done, the object freed) they are discarded, through ``discard``, a
    callable taking the ``(owner, object id)`` pairs (safe from any thread: ``__del__`` may
    run anywhere)."""

    __slots__ = ("discard", "refs")

    def __init__(self, refs: list[tuple[Any, str]], discard: Any) -> None:
        self.refs = refs
        self.discard = discard

    def __del__(self) -> None:
        try:
            self.discard(self.refs)
        except Exception:  # interpreter shutdown: nothing left to tell
            pass
