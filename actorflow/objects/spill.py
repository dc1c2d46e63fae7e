"""A node's object store: what its primary copies take, a limit, and when to spill.

Every process of a node writes its large values into shared memory itself (``store.py``) and
tells its node (:class:`Stored`); the owner tells it when the object is freed (:class:`Freed`).
So the node's :class:`NodeStore` knows every primary copy on its machine: its size, what made
it, and whether it lies in shared memory or on disk. Their sum in shared memory is the node's
``used``; ``object_store_memory`` is its limit.

Past the limit the store **spills**, least recently stored or restored first, into its spill
directory (``spilldir.py``: the files and the threads that move segments there and back). A
reader that finds a segment gone asks its node to **restore** it (:class:`Restore`; a reader on
another node asks the node that serves it, which restores before it answers).

A value that can never fit (bigger than the limit), or that would go past it while the spill
directory is full (the last spill failed for want of room), fails at once with
``ObjectStoreFullError``: every process of the node reads the limit, the bytes used and that
flag from a small page the node keeps beside its liveness lock (:class:`StorePage`), so the
check costs no message. Spilling runs behind the writers: a burst of puts may pass the limit
for as long as the spill thread takes to catch up (shared memory itself is the hard bound).

Secondary copies (``actorflow/cluster/copies.py``: what the node pulled from other nodes for its
readers) count against the limit too (:class:`Secondary`: the store sees only their bytes):
past the limit the store first evicts copies no reader pins (deleted: their primary exists),
then spills primaries. The page carries the primaries' bytes only, since a writer's check
matters only when the disk is full, and copies can always make room. When a primary goes, the
store tells who copied it (:class:`Offers`, ``actorflow/cluster/copy_offers.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from actorflow._errors import ObjectLostError
from actorflow.objects import shm
from actorflow.objects.spilldir import RESIDENT, RESTORING, SPILLING, Primary, SpillDir
from actorflow.objects.spillfiles import (
    StorePage,
    check_room,
    default_limit,
    restore_file,
    spill_file,
    spill_root,
)
from actorflow.runtime import OwnedTasks

__all__ = [
    "Freed",
    "MemoryQuery",
    "NodeStore",
    "Offers",
    "Restore",
    "Secondary",
    "StorePage",
    "Stored",
    "check_room",
    "default_limit",
    "open_store",
    "restore_file",
    "spill_file",
    "store_of",
]

log = logging.getLogger("actorflow.spill")

#: A restored segment is not spilled again for this long (its reader maps it meanwhile).
RESTORED_GRACE_S = 1.0
#: While over the limit with every candidate pinned, look again after this long, twice as
#: long each time nothing could move (up to RETRY_MAX_S), at once when something changes.
RETRY_S = 0.25
RETRY_MAX_S = 2.0
#: How often a store checks that the segments it counts still exist (a process killed hard,
#: or a job's end, may unlink them without a word).
AUDIT_S = 2.0


# -- messages (a process of the node -> its node) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    """Tell: a primary copy was written to segment ``name`` (``nbytes``, ``generation``) by
    process ``pid`` (``what`` made it: "put", "task result", "arguments")."""

    name: str
    nbytes: int
    generation: int
    pid: int
    what: str
    job: str = ""  # a task result: the job that submitted the task (freed when it ends)


@dataclass(frozen=True, slots=True)
class Freed:
    """Tell: the object in segment ``name`` (``generation``; None: whatever it holds) is
    freed."""

    name: str
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class Restore:
    """Ask: make segment ``name`` present in shared memory again (answers None, or raises
    ObjectLostError)."""

    name: str


@dataclass(frozen=True, slots=True)
class MemoryQuery:
    """Ask: the store's figures and its ``limit`` largest objects (a dict)."""

    limit: int = 20


# -- the node's store ------------------------------------------------------------------------------


class Secondary(Protocol):
    """What the store needs of the node's secondary copies of other nodes' values
    (``cluster/copies.py``)."""

    @property
    def used(self) -> int:
        """Bytes of copies in shared memory."""

    def primaries_freed(self, prefix: str) -> None:
        """A job's segments went (``prefix``): their copies here go."""

    async def evict(self, need: int) -> int: ...

    def figures(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class Offers(Protocol):
    """What the store tells of its primaries' going to the bookkeeping of which other nodes
    copied them (``cluster/copy_offers.py``), so that their copies go too."""

    def primary_freed(self, name: str, generation: int | None) -> None: ...

    def primaries_freed(self, prefix: str) -> None: ...


class NodeStore:
    """The primary copies of one node (see the module docstring). Owned by the Node actor:
    every method runs on its loop; file work runs on its spill directory's threads
    (:class:`SpillDir`)."""

    def __init__(self, node_id: str, session: str, *, limit: int | None = None,
                 spill_root: str) -> None:
        self.node_id = node_id
        self.limit = int(limit) if limit else default_limit()
        self.dir = os.path.join(spill_root, f"{session}-{node_id}")
        self.disk = SpillDir(node_id, self.dir)  # the files of spilled primaries
        self.objects: OrderedDict[str, Primary] = OrderedDict()
        self.used = 0
        self._tombs: OrderedDict[tuple[str, int | None], None] = OrderedDict()
        self._tasks = OwnedTasks(f"the object store of node {node_id}", log)
        self._spilling = False
        self._timer: asyncio.TimerHandle | None = None
        self._retry_s = RETRY_S
        self._audit: asyncio.TimerHandle | None = None
        self._page: StorePage | None = None
        self._closed = False
        #: the node's secondary copies, when it keeps them (counted against the limit)
        self.secondary: Secondary | None = None
        #: who copied the node's primaries (told when they go), when it keeps copies
        self.offers: Offers | None = None

    def start(self) -> None:
        """Make the spill directory and the page (blocking but small: at the node's start)."""
        self.disk.make()
        try:
            self._page = StorePage.create(self.node_id, self.limit)
        except OSError as exc:
            log.warning("node %s: no store page (%s): puts are not checked against the limit",
                        self.node_id, exc)

    def _publish(self) -> None:
        if self._page is not None:
            self._page.write(self.limit, self.used, self.disk.full)

    # -- messages ------------------------------------------------------------------------------

    async def handle(self, message: Any) -> Any:
        kind = type(message)
        if kind is Stored:
            self.stored(message)
        elif kind is Freed:
            self.freed(message.name, message.generation)
        elif kind is Restore:
            await self.ensure(message.name)
        elif kind is MemoryQuery:
            return self.summary(message.limit)
        return None

    def stored(self, msg: Stored) -> None:
        if self._closed or (msg.name, msg.generation) in self._tombs or (
                msg.name, None) in self._tombs:
            return
        old = self.objects.pop(msg.name, None)
        if old is not None:  # (its Freed was lost): the new value replaces it
            self._forget(msg.name, old)
        self.objects[msg.name] = Primary(msg.nbytes, msg.generation, msg.pid, msg.what, msg.job)
        self.used += msg.nbytes
        self._changed()
        self._arm_audit()

    def freed(self, name: str, generation: int | None = None) -> None:
        if self.offers is not None:  # its copies on other nodes go too
            self.offers.primary_freed(name, generation)
        obj = self.objects.get(name)
        if obj is None or (generation is not None and obj.generation != generation):
            self._tombs[(name, generation)] = None
            while len(self._tombs) > 4096:
                self._tombs.popitem(last=False)
            return
        del self.objects[name]
        self._forget(name, obj)
        self._changed()

    def freed_prefix(self, prefix: str) -> None:
        """Every segment whose name starts with ``prefix`` went (a job's end)."""
        if self.offers is not None:
            self.offers.primaries_freed(prefix)
        if self.secondary is not None:
            self.secondary.primaries_freed(prefix)
        for name in [n for n in self.objects if n.startswith(prefix)]:
            self.freed(name)

    def freed_job(self, job_id: str) -> list[str]:
        """A job ended: the task results made for it go (their owner, its driver, is gone).
        Returns their segments' names, for the caller to unlink."""
        names = [n for n, obj in self.objects.items() if obj.job == job_id]
        for name in names:
            self.freed(name)
        return names

    def _forget(self, name: str, obj: Primary) -> None:
        obj.freed = True
        if obj.state == RESIDENT:
            self.used -= obj.nbytes
        if obj.state in (SPILLING, RESTORING):
            return  # the thread's end cleans up (see _spilled, _restore)
        self.disk.drop(name, obj)

    # -- spilling ------------------------------------------------------------------------------

    def total(self) -> int:
        """Bytes in shared memory: primaries and secondary copies."""
        return self.used + (self.secondary.used if self.secondary is not None else 0)

    def secondary_changed(self) -> None:
        """A copy came or went (``cluster/copies.py``)."""
        self._changed()

    def _changed(self) -> None:
        self._publish()
        if self.total() > self.limit and not self._spilling and not self._closed:
            self._spilling = True
            self._tasks.spawn(self._spill_round(), "spill round")

    async def _spill_round(self) -> None:
        stuck = False
        tried: set[str] = set()  # a pinned one is tried once a round
        evicted = False
        try:
            while self.total() > self.limit and not self._closed:
                if not evicted and self.secondary is not None and self.secondary.used:
                    evicted = True  # copies first: deleted, not spilled (primaries exist)
                    await self.secondary.evict(self.total() - self.limit)
                    continue
                if self.disk.full:
                    break
                name, obj = self._candidate(tried)
                if obj is None:
                    stuck = True
                    break
                tried.add(name)
                self.used -= obj.nbytes
                self._spilled(name, obj, await self.disk.spill(name, obj))
        finally:
            self._spilling = False
            self._publish()
        if (stuck or self.disk.full) and self.total() > self.limit and not self._closed:
            self._arm_retry()

    def _candidate(self, tried: set[str]) -> tuple[str, Primary | None]:
        now = time.monotonic()
        for name, obj in self.objects.items():  # least recently stored or restored first
            if (obj.state == RESIDENT and name not in tried
                    and now - obj.restored_at >= RESTORED_GRACE_S):
                return name, obj
        return "", None

    def _spilled(self, name: str, obj: Primary, outcome: str) -> None:
        if outcome == "spilled":
            self._retry_s = RETRY_S
        elif outcome == "gone":  # freed meanwhile (or unlinked without a word)
            if not obj.freed:
                del self.objects[name]
                obj.freed = True
        elif not obj.freed:  # busy (pinned), no room on disk, or an error: it stays in memory
            self.used += obj.nbytes
            self.objects.move_to_end(name)  # try the others first
        self._publish()

    def _arm_retry(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._retry_s, self._retry)
            self._retry_s = min(2 * self._retry_s, RETRY_MAX_S)

    def _retry(self) -> None:
        self._timer = None
        self._changed()

    # -- restoring -----------------------------------------------------------------------------

    async def ensure(self, name: str) -> None:
        """Segment ``name`` is in shared memory when this returns (restored if it was
        spilled); ObjectLostError when it is freed or unknown and gone."""
        for _ in range(8):
            obj = self.objects.get(name)
            if obj is None:
                if await asyncio.to_thread(shm.exists, name):
                    return
                raise ObjectLostError(f"object segment {name} is gone from node "
                                      f"{self.node_id} (its owner freed it or exited)")
            if obj.busy is not None:  # a thread moves it now: wait for that, then look
                await asyncio.shield(obj.busy)
                continue
            if obj.state == RESIDENT:
                obj.restored_at = time.monotonic()  # (a reader maps it now: let it)
                self.objects.move_to_end(name)
                return
            await self._restore(name, obj)
        raise ObjectLostError(f"object segment {name} of node {self.node_id} could not be "
                              "restored: it was spilled again each time")

    async def _restore(self, name: str, obj: Primary) -> None:
        error = await self.disk.restore(name, obj)
        if error is None and not obj.freed:
            self.used += obj.nbytes
            self.objects.move_to_end(name)
        self._changed()
        if error is not None:
            raise self.disk.restore_error(name, obj, error) from error

    # -- auditing ------------------------------------------------------------------------------

    def _arm_audit(self) -> None:
        if self._audit is None and not self._closed:
            self._audit = asyncio.get_running_loop().call_later(AUDIT_S, self._start_audit)

    def _start_audit(self) -> None:
        self._audit = None
        names = [n for n, o in self.objects.items() if o.state == RESIDENT]
        self._tasks.spawn(self._audit_round(names), "audit")

    async def _audit_round(self, names: list[str]) -> None:
        missing = await asyncio.to_thread(lambda: [n for n in names if not shm.exists(n)])
        for name in missing:
            obj = self.objects.get(name)
            if obj is not None and obj.state == RESIDENT and obj.busy is None:
                del self.objects[name]
                self._forget(name, obj)
                if self.offers is not None:
                    self.offers.primary_freed(name, None)
        if missing:
            self._changed()
        if self.objects:
            self._arm_audit()

    # -- views ---------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """The figures NodeInfo carries (and the state API, the dashboard, metrics read)."""
        return {
            "object_store_used": self.total(),
            "object_store_limit": self.limit,
            **self.disk.figures(),
            "objects_in_store": len(self.objects),
            "spill_dir": self.dir,
            "spill_dir_full": self.disk.full,
            **(self.secondary.figures() if self.secondary is not None else {}),
        }

    def summary(self, limit: int = 20) -> dict[str, Any]:
        """The figures and the ``limit`` largest objects (answers MemoryQuery)."""
        return _summary(self, limit)

    # -- lifetime ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop; delete the spill directory and the page (the segments go with the node)."""
        self._closed = True
        if self.secondary is not None:
            await self.secondary.close()
        for timer in (self._timer, self._audit):
            if timer is not None:
                timer.cancel()
        await self._tasks.close(cancel=False)
        if self._page is not None:
            self._page.close(unlink=True)
        await self.disk.close()
        self.objects.clear()


# -- the stores of this process's nodes -------------------------------------------------------

_stores: dict[str, NodeStore] = {}


def open_store(node_id: str, session: str, options: Mapping[str, Any] | None) -> NodeStore:
    """Make node ``node_id``'s store from its start options (``object_store_memory``,
    ``spill_dir``) before the node starts, which takes it (:func:`store_of`). Blocking (it
    makes the spill directory): run it off the loop."""
    options = options or {}
    limit = options.get("object_store_memory")
    if limit is not None and int(limit) <= 0:
        raise ValueError(f"object_store_memory must be a positive number of bytes, "
                         f"got {limit!r}")
    store = NodeStore(node_id, session, limit=int(limit) if limit else None,
                      spill_root=spill_root(options))
    store.start()
    _stores[node_id] = store
    return store


def store_of(node_id: str) -> NodeStore | None:
    """The store :func:`open_store` made for node ``node_id`` (once: the node takes it)."""
    return _stores.pop(node_id, None)


def _summary(store: NodeStore, limit: int) -> dict[str, Any]:
    largest = sorted(store.objects.items(), key=lambda kv: kv[1].nbytes, reverse=True)
    return dict(store.figures(), node_id=store.node_id, objects=[
        {"object": name, "size": obj.nbytes, "node_id": store.node_id,
         "where": ("shared memory" if obj.state in (RESIDENT, SPILLING)
                   else "spill file"), "pid": obj.pid, "what": obj.what,
         "stored_at": obj.stored_at}
        for name, obj in largest[:limit]])
