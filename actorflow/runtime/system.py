"""The ActorSystem: one per event loop; spawns, stops, watches and finds actors.

The system is the owner of every actor task it starts: ``shutdown`` stops the top-level actors
in reverse start order (a supervisor among them stops its own children the same way), kills
whatever is left once the timeout has passed, and returns only when no task of the system is
left.

The system's top level behaves as the root supervisor: ``one_for_one`` over *temporary*
children, so an actor spawned with :meth:`ActorSystem.spawn` that crashes is not restarted
(spawn an :class:`actorflow.supervision.Supervisor` for restarts) and its watchers hear why.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from actorflow._errors import ActorDiedError
from actorflow.runtime.actor import Actor, ExitReason, Terminated
from actorflow.runtime.cell import Cell
from actorflow.runtime.ref import _SYSTEMS, ActorRef, Slot, SlotState, WatchCallback

__all__ = ["ActorSystem", "RemoteResolver"]

RemoteResolver = Callable[[str, str | None, str, str], ActorRef]


def _never(reason: ExitReason) -> bool:
    return False


def _always(reason: ExitReason) -> bool:
    return True


class ActorSystem:
    """The actors of one event loop.

    Options:
    - ``restart_wait_s``: how long a send to a restarting actor waits for the new incarnation
      before failing with ActorUnavailableError.
    - ``stop_timeout_s``: the default grace period of a stop before the actor is killed.
    """

    def __init__(
        self,
        name: str = "actorflow",
        *,
        restart_wait_s: float = 10.0,
        stop_timeout_s: float = 5.0,
        uid: str | None = None,
    ) -> None:
        self.name = name
        #: Unique per process; a restarted head takes its predecessor's back (``uid``), so
        #: the refs that other processes hold to its actors reach the new ones.
        self.uid = uid or secrets.token_hex(8)
        #: ``ws://host:port`` once a transport listens for this system, else None.
        self.address: str | None = None
        #: Set by the transport: builds refs to actors of other processes.
        self.remote_resolver: RemoteResolver | None = None
        #: Set by the transport: the remoting layer serving this system (its bulk pulls:
        #: ``offer`` and ``pull``), else None.
        self.remoting: Any = None
        self.restart_wait_s = restart_wait_s
        self.stop_timeout_s = stop_timeout_s
        self._slots: dict[str, Slot] = {}
        self._names: dict[str, Slot] = {}
        self._top: dict[str, Slot] = {}  # top-level slots, in start order
        self._cells: set[Cell] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._dead_letters = 0
        self._closing = False
        self._log = logging.getLogger("actorflow.runtime")
        _SYSTEMS[self.uid] = self

    async def __aenter__(self) -> ActorSystem:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    def __repr__(self) -> str:
        return f"<ActorSystem {self.name} uid={self.uid} actors={len(self._cells)}>"

    # -- spawning ------------------------------------------------------------------------------

    async def spawn(
        self,
        factory: Callable[..., Actor],
        *args: Any,
        name: str | None = None,
        max_concurrency: int | None = None,
        mailbox_size: int | None = None,
        well_known: bool = False,
    ) -> ActorRef:
        """Start ``factory(*args)`` as a top-level actor and return its ref once its
        ``on_start`` has run. An exception from the factory or from ``on_start`` is raised here.
        ``name`` registers it for :meth:`lookup`; names are unique while the actor lives.
        ``well_known`` makes the name its id too, so another process that knows only this
        system's address can address it (the cluster's head and nodes)."""
        if self._closing:
            raise RuntimeError(f"{self!r} is shutting down; it starts no new actors")
        if well_known and not name:
            raise ValueError("a well-known actor needs a name")
        slot = self.new_slot(name, slot_id=name if well_known else None)
        self._top[slot.id] = slot
        try:
            await self.start_incarnation(
                slot, factory, args, max_concurrency=max_concurrency, mailbox_size=mailbox_size
            )
        except BaseException as exc:
            slot.mark_dead("it failed to start", exc if isinstance(exc, Exception) else None)
            raise
        return ActorRef(slot)

    def new_slot(self, path: str | None = None, *, slot_id: str | None = None) -> Slot:
        """A fresh identity (used by spawn and by supervisors for their children)."""
        if slot_id is None:
            slot_id = f"{next(self._ids)}"
        elif slot_id in self._slots or slot_id.isdigit():
            raise ValueError(f"slot id {slot_id!r} is taken or reserved")
        if path is None:
            path = f"${slot_id}"
        elif path in self._names:
            raise ValueError(f"an actor named {path!r} is already running in {self.name!r}")
        slot = Slot(self, slot_id, path)
        self._slots[slot_id] = slot
        self._names[path] = slot
        return slot

    async def start_incarnation(
        self,
        slot: Slot,
        factory: Callable[..., Actor],
        args: tuple[Any, ...],
        *,
        restartable: Callable[[ExitReason], bool] = _never,
        watch: WatchCallback | None = None,
        max_concurrency: int | None = None,
        mailbox_size: int | None = None,
    ) -> Cell:
        """Start a new incarnation in ``slot`` and return once its ``on_start`` has run.

        ``restartable(reason)`` tells the slot whether to wait for another incarnation when this
        one ends; ``watch`` is registered before the incarnation can run, so no ending is
        missed. Raises what the factory or ``on_start`` raised (``watch`` hears that too).
        """
        loop = asyncio.get_running_loop()
        actor = factory(*args)
        if not isinstance(actor, Actor):
            raise TypeError(
                f"actor factory {factory!r} returned {type(actor).__name__}, not an Actor"
            )
        actor.ref = ActorRef(slot)
        actor.system = self
        slot.incarnation += 1
        cell = Cell(
            self,
            slot,
            actor,
            incarnation=slot.incarnation,
            max_concurrency=max_concurrency or type(actor).max_concurrency,
            mailbox_size=mailbox_size or type(actor).mailbox_size,
            restartable=restartable,
        )
        if watch is not None:
            slot.add_watcher(watch)
        started: asyncio.Future[None] = loop.create_future()
        task = loop.create_task(cell.main(started), name=f"actor {slot.path}")
        cell.task = task
        self._cells.add(cell)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.shield(started)
        except asyncio.CancelledError:
            if not started.done():
                task.cancel()  # the caller gave up: the half-started actor must not linger
            started.add_done_callback(_retrieve)
            raise
        return cell

    # -- finding, watching, stopping -----------------------------------------------------------

    def lookup(self, path: str) -> ActorRef | None:
        """The actor registered under ``path`` (``name`` or ``supervisor/child``), if alive."""
        slot = self._names.get(path)
        return ActorRef(slot) if slot is not None else None

    def watch(self, watcher: ActorRef, target: ActorRef) -> Callable[[], None]:
        """Deliver ``Terminated(target, reason, cause)`` to ``watcher`` when ``target``'s
        current incarnation ends (at once, with reason ``noproc``, if it is already dead).
        Returns a function that removes the watch."""

        def deliver(notice: Terminated) -> None:
            cell = watcher._slot.cell if isinstance(watcher, ActorRef) else None
            if cell is not None and not cell.mailbox.closed:
                cell.mailbox.put_system((notice, None))

        return target._add_watcher(deliver)

    def on_terminated(self, target: ActorRef, callback: WatchCallback) -> Callable[[], None]:
        """Call ``callback(Terminated)`` when ``target``'s current incarnation ends."""
        return target._add_watcher(callback)

    async def stop(self, ref: ActorRef, timeout: float | None = None) -> None:
        """Stop the actor for good: after the message in hand it runs ``on_stop``; past
        ``timeout`` (default ``stop_timeout_s``) it is killed. No restart follows, and later
        sends fail with ActorDiedError. Returns when it has ended."""
        slot = ref._slot
        if slot.system is not self:
            raise ValueError(f"{ref!r} belongs to another ActorSystem")
        cell = slot.cell
        if cell is None:
            slot.mark_dead("it was stopped")
            return
        cell.restartable = _never
        cell.request_stop()
        await self._await_end(cell, self.stop_timeout_s if timeout is None else timeout)
        slot.mark_dead("it was stopped")

    def kill(self, ref: ActorRef, *, no_restart: bool = False) -> None:
        """End the actor now, without ``on_stop`` (reason ``killed``). Its supervisor restarts
        it as its restart kind says, unless ``no_restart``."""
        slot = ref._slot
        if slot.system is not self:
            raise ValueError(f"{ref!r} belongs to another ActorSystem")
        cell = slot.cell
        if no_restart:
            if cell is not None:
                cell.restartable = _never
            else:
                slot.mark_dead("it was killed")
        if cell is not None and cell.task is not None:
            cell.task.cancel()

    async def end_incarnation(
        self, cell: Cell, *, timeout: float | None, restartable: bool = False
    ) -> None:
        """End one incarnation on a supervisor's behalf: a graceful stop bounded by
        ``timeout`` (``None``: kill at once, without ``on_stop``). With ``restartable`` the slot
        waits for the next incarnation instead of dying."""
        cell.restartable = _always if restartable else _never
        if timeout is None:
            if cell.task is not None:
                cell.task.cancel()
            await asyncio.wait([cell.terminated])
        else:
            cell.request_stop()
            await self._await_end(cell, timeout)

    async def _await_end(self, cell: Cell, timeout: float) -> None:
        done, _ = await asyncio.wait([cell.terminated], timeout=timeout)
        if not done and cell.task is not None:
            self._log.warning("%s did not stop within %.1f s: killing it", cell.slot.path, timeout)
            cell.task.cancel()
            await asyncio.wait([cell.task])

    def _request_stop(self, ref: ActorRef) -> None:
        cell = ref._slot.cell
        if cell is not None:
            cell.request_stop()

    # -- shutdown ------------------------------------------------------------------------------

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop every actor (top-level ones in reverse start order), kill what is left after
        ``timeout`` seconds (default ``2 * stop_timeout_s``), and return when no task of this
        system remains."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (2 * self.stop_timeout_s if timeout is None else timeout)
        for slot in reversed(list(self._top.values())):
            remaining = deadline - loop.time()
            await self.stop(ActorRef(slot), timeout=max(0.0, min(self.stop_timeout_s, remaining)))
        for cell in list(self._cells):  # left over only if something misbehaved
            if cell.task is not None:
                cell.task.cancel()
        while self._tasks:
            await asyncio.wait(list(self._tasks))
        for slot in list(self._slots.values()):
            slot.mark_dead("its actor system shut down")
        _SYSTEMS.pop(self.uid, None)

    # -- bookkeeping used by cells and slots ---------------------------------------------------

    def _cell_ended(self, cell: Cell) -> None:
        self._cells.discard(cell)

    def _forget(self, slot: Slot) -> None:
        self._slots.pop(slot.id, None)
        self._top.pop(slot.id, None)
        if self._names.get(slot.path) is slot:
            del self._names[slot.path]

    # -- hooks for the layers above -------------------------------------------------------

    @property
    def slots(self) -> Mapping[str, Slot]:
        """The slots of this system's actors that may still run, by id (read it, never change
        it: the system keeps it). The transport reads it to deliver messages from a link."""
        return self._slots

    def dead_ref(self, slot_id: str, path: str, reason: str) -> ActorRef:
        """A ref to an actor of this system that will never run (one that ended, or an id no
        actor has): its sends fail with ``ActorDiedError(path, reason)``, a watch hears
        ``noproc`` at once."""
        slot = Slot(self, slot_id, path)
        slot.state = SlotState.DEAD
        slot.death = ActorDiedError(path, reason)
        return ActorRef(slot)

    def statistics(self) -> dict[str, int]:
        """Counts for monitoring: running actors, known slots, tells dropped at death."""
        return {
            "actors": len(self._cells),
            "slots": len(self._slots),
            "dead_letters": self._dead_letters,
        }


def _retrieve(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
