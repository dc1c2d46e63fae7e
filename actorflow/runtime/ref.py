"""Actor references and the slots they point at.

A :class:`Slot` is the stable identity of an actor (an id and a path) across its
incarnations: each start or restart by a supervisor puts a new incarnation (a ``Cell``) into
the same slot. An :class:`ActorRef` points at the slot, so a ref taken before a restart
reaches the new incarnation after it.

Slot states::

    LIVE        an incarnation is running; sends go straight to its mailbox
    RESTARTING  the incarnation ended and its supervisor may start another; sends wait for it
                (bounded by the system's ``restart_wait_s``), then fail with
                ActorUnavailableError
    DEAD        no incarnation will come again; sends fail with ActorDiedError (with the cause)
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import itertools
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from actorflow._errors import (
    ActorDiedError,
    ActorUnavailableError,
    GetTimeoutError,
    MailboxFullError,
)
from actorflow.runtime.actor import ExitReason, Terminated
from actorflow.runtime.mailbox import MailboxClosed, MailboxStatistics

if TYPE_CHECKING:
    from actorflow.runtime.cell import Cell
    from actorflow.runtime.system import ActorSystem

__all__ = [
    "ActorRef",
    "CallbackReply",
    "Reply",
    "Slot",
    "SlotState",
    "WatchCallback",
    "current_system",
    "restore_ref",
]

WatchCallback = Callable[[Terminated], None]

_log = logging.getLogger("actorflow.runtime")

# Every live ActorSystem of this process, by uid, so an unpickled ref finds its local actor.
_SYSTEMS: weakref.WeakValueDictionary[str, ActorSystem] = weakref.WeakValueDictionary()

#: The system on whose behalf bytes are being unpickled (set by the transport while it decodes
#: a message), so refs to actors elsewhere resolve through that system's remote resolver.
current_system: contextvars.ContextVar[ActorSystem | None] = contextvars.ContextVar(
    "actorflow_current_system", default=None
)


def restore_ref(uid: str, address: str | None, slot_id: str, path: str) -> ActorRef:
    """Rebuild a pickled ActorRef: the local actor when its system lives in this process, else
    a remote ref through the current system's resolver, else a ref that says it is dead."""
    local = _SYSTEMS.get(uid)
    if local is not None:
        slot = local._slots.get(slot_id)
        if slot is not None:
            return ActorRef(slot)
        return local.dead_ref(slot_id, path, "it is no longer running")
    system = current_system.get()
    if system is None and len(_SYSTEMS) == 1:
        system = next(iter(_SYSTEMS.values()))
    if system is not None and system.remote_resolver is not None:
        return system.remote_resolver(uid, address, slot_id, path)
    if system is None:
        raise RuntimeError(
            f"cannot rebuild a reference to actor {path!r}: no ActorSystem runs in this process"
        )
    where = f"at {address}" if address else "in another process"
    return system.dead_ref(slot_id, path, f"it lives {where}, which is not reachable")


class Reply(Protocol):
    """What a message's reply slot must offer (``asyncio.Future`` does). The transport
    implements it for asks that came over a link."""

    def done(self) -> bool: ...

    def set_result(self, result: Any) -> None: ...

    def set_exception(self, exception: BaseException) -> None: ...


R = TypeVar("R", bound=Reply)


class CallbackReply:
    """A :class:`Reply` that hands the answer to ``fn(*args, value, error)`` the moment it is
    set (``error`` is None on success, ``value`` None on failure): no future, no loop turn.
    The callback runs wherever the answer is set (a link's reader, an actor's loop), so it must
    be quick; what it raises is logged, never passed to whoever answered."""

    __slots__ = ("_args", "_done", "_fn")

    def __init__(self, fn: Callable[..., None], *args: Any) -> None:
        self._fn = fn
        self._args = args
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any) -> None:
        if not self._done:
            self._done = True
            self._call(result, None)

    def set_exception(self, exception: BaseException) -> None:
        if not self._done:
            self._done = True
            self._call(None, exception)

    def _call(self, value: Any, error: BaseException | None) -> None:
        try:
            self._fn(*self._args, value, error)
        except Exception:
            _log.exception("the reply callback %r failed", self._fn)


class SlotState(enum.Enum):
    LIVE = "live"
    RESTARTING = "restarting"
    DEAD = "dead"


class Slot:
    """Stable identity of one actor across its incarnations (see the module docstring)."""

    __slots__ = (
        "_watch_ids",
        "cell",
        "death",
        "id",
        "incarnation",
        "path",
        "state",
        "system",
        "waiters",
        "watchers",
    )

    def __init__(self, system: ActorSystem, slot_id: str, path: str) -> None:
        self.system = system
        self.id = slot_id
        self.path = path
        self.cell: Cell | None = None
        self.state = SlotState.RESTARTING  # until the first incarnation is running
        self.incarnation = -1
        self.death: ActorDiedError | None = None
        self.waiters: list[asyncio.Future[None]] = []
        self.watchers: dict[int, WatchCallback] = {}
        self._watch_ids = itertools.count()

    # -- transitions (called by the cell and by supervisors) -----------------------------------

    def attach(self, cell: Cell) -> None:
        """A new incarnation is running: release everyone waiting for it."""
        if self.state is SlotState.DEAD:
            raise RuntimeError(f"slot {self.path!r} is dead; it cannot take a new incarnation")
        self.cell = cell
        self.state = SlotState.LIVE
        self._release_waiters()

    def detach(
        self, *, may_restart: bool, reason: ExitReason, cause: BaseException | None
    ) -> None:
        """The incarnation ended; the slot waits for a restart or is dead."""
        self.cell = None
        if self.state is SlotState.DEAD:
            return
        if may_restart:
            self.state = SlotState.RESTARTING
        else:
            self.mark_dead("it stopped" if reason is ExitReason.NORMAL else f"it {reason.value}",
                           cause)

    def mark_dead(
        self, reason: str, cause: BaseException | None = None, *, notify: bool = False
    ) -> None:
        """No incarnation will come again. Waiting senders fail with ActorDiedError.

        With ``notify``, watchers still registered (set up while it was restarting) hear a
        termination notice too.
        """
        if self.state is SlotState.DEAD:
            return
        self.state = SlotState.DEAD
        self.death = ActorDiedError(self.path, reason, cause)
        self._release_waiters()
        self.system._forget(self)
        if notify and self.watchers:
            self.notify(
                Terminated(ActorRef(self), ExitReason.CRASHED if cause else ExitReason.NORMAL,
                           cause, max(self.incarnation, 0))
            )

    def notify(self, notice: Terminated) -> None:
        """Fire and clear the watchers (a watch is one-shot, like an OTP monitor)."""
        watchers, self.watchers = self.watchers, {}
        for callback in watchers.values():
            try:
                callback(notice)
            except Exception:  # a watcher's bug must not stop the others from hearing
                self.system._log.exception("watch callback for %s failed", self.path)

    def _release_waiters(self) -> None:
        waiters, self.waiters = self.waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -- senders -------------------------------------------------------------------------------

    def error(self) -> Exception:
        """The error a sender gets now that no incarnation is running."""
        if self.state is SlotState.DEAD:
            d = self.death
            assert d is not None
            # a fresh instance per raise: re-raising one instance would grow its traceback
            return ActorDiedError(d.actor, d.reason, d.cause)
        return ActorUnavailableError(self.path, "it is restarting")

    async def wait_cell(self) -> Cell:
        """The running incarnation, waiting (bounded) while the slot is restarting."""
        deadline = asyncio.get_running_loop().time() + self.system.restart_wait_s
        while True:
            cell = self.cell
            if cell is not None:
                return cell
            if self.state is SlotState.DEAD:
                raise self.error()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise ActorUnavailableError(
                    self.path,
                    f"no new incarnation within restart_wait_s={self.system.restart_wait_s}",
                )
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiters.append(fut)
            try:
                await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                pass
            finally:
                if fut in self.waiters:
                    self.waiters.remove(fut)

    def add_watcher(self, callback: WatchCallback) -> Callable[[], None]:
        """Call ``callback(Terminated)`` when the current (or next) incarnation ends.
        Returns a function that removes the watch."""
        if self.state is SlotState.DEAD:
            cause = self.death.cause if self.death else None
            callback(Terminated(ActorRef(self), ExitReason.NOPROC, cause, max(self.incarnation, 0)))
            return _noop
        key = next(self._watch_ids)
        self.watchers[key] = callback

        def remove() -> None:
            self.watchers.pop(key, None)

        return remove


def _noop() -> None:
    return None


class ActorRef:
    """A handle to an actor: send it messages with ``tell``, ``tell_nowait`` and ``ask``.

    Refs are cheap, hashable, compare equal when they name the same actor, and stay valid
    across the actor's restarts. Calls from one sender to one actor are delivered in the order
    they were made.
    """

    __slots__ = ("_slot",)

    def __init__(self, slot: Slot) -> None:
        self._slot = slot

    @property
    def slot(self) -> Slot:
        """The actor's :class:`Slot`: its system, its running incarnation (``cell``) and its
        incarnation count, for the layers built on the kernel (supervision, transport,
        cluster)."""
        return self._slot

    @property
    def path(self) -> str:
        """The actor's name within its system (``parent/child`` for supervised children)."""
        return self._slot.path

    @property
    def id(self) -> str:
        return self._slot.id

    @property
    def alive(self) -> bool:
        """True while the actor runs or may still be restarted."""
        return self._slot.state is not SlotState.DEAD

    def __repr__(self) -> str:
        return f"<ActorRef {self._slot.path} ({self._slot.state.value})>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[str, str]:
        return (self._slot.system.uid, self._slot.id)

    def __reduce__(self) -> tuple[Any, ...]:
        system = self._slot.system
        return (restore_ref, (system.uid, system.address, self._slot.id, self._slot.path))

    # -- sending -------------------------------------------------------------------------------

    async def tell(self, message: Any) -> None:
        """Send without waiting for an answer. Waits only while the mailbox is full
        (backpressure) or the actor is restarting (bounded)."""
        await self.deliver(message, None)

    def tell_nowait(self, message: Any) -> None:
        """Send now or raise: MailboxFullError when the mailbox is full, ActorUnavailableError
        while restarting, ActorDiedError when dead."""
        cell = self._slot.cell
        if cell is None:
            raise self._slot.error()
        try:
            cell.mailbox.put_nowait((message, None))
        except MailboxClosed:
            raise self._slot.error() from None
        except MailboxFullError:
            raise self._full(cell.mailbox.statistics().capacity) from None

    @overload
    def ask_nowait(self, message: Any) -> asyncio.Future[Any]: ...

    @overload
    def ask_nowait(self, message: Any, reply: R) -> R: ...

    def ask_nowait(self, message: Any, reply: Any = None) -> Any:
        """Send now, without awaiting, and return a future of the answer, or ``reply`` (any
        :class:`Reply`) when given: it is then answered in place of a future, synchronously
        where the answer arrives, with no loop turn in between.

        Raises like :meth:`tell_nowait` when the message cannot be queued at once. This is the
        submission path of tasks and actor calls (``.remote()`` never awaits); a remote ref
        implements it over its link, failing the reply with PeerUnreachableError if the peer
        is lost.
        """
        fut = asyncio.get_running_loop().create_future() if reply is None else reply
        cell = self._slot.cell
        if cell is None:
            raise self._slot.error()
        try:
            cell.mailbox.put_nowait((message, fut))
        except MailboxClosed:
            raise self._slot.error() from None
        except MailboxFullError:
            raise self._full(cell.mailbox.statistics().capacity) from None
        return fut

    def _full(self, capacity: int) -> MailboxFullError:
        return MailboxFullError(
            f"the mailbox of actor {self.path!r} is full ({capacity} messages queued); "
            "await tell()/ask() to wait for room, or give it a larger mailbox_size"
        )

    async def ask(self, message: Any, timeout: float | None = None) -> Any:
        """Send and wait for the answer (the handler's return value, or its exception).

        With ``timeout`` (seconds) the whole call, any wait for room included, is bounded and
        raises GetTimeoutError past it; the message may still be handled later.
        """
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if timeout is None:
            await self.deliver(message, fut)
            return await fut
        try:
            async with asyncio.timeout(timeout):
                await self.deliver(message, fut)
                return await fut
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                fut.exception()  # the reply raced the timeout: mark it retrieved
            raise GetTimeoutError(
                f"ask({type(message).__name__}) to actor {self.path!r} got no answer within "
                f"{timeout} s; raise the timeout or check that the actor is not stuck"
            ) from None

    async def deliver(self, message: Any, reply: Reply | None) -> None:
        """Put ``(message, reply)`` into the actor's mailbox: ``reply`` settles with the
        answer (an ask) or is None (a tell). Waits while the mailbox is full and, while the
        actor restarts, for its next incarnation (bounded by ``restart_wait_s``); raises
        ActorDiedError or ActorUnavailableError as ``tell`` does. The transport delivers the
        messages that came over a link with it."""
        slot = self._slot
        while True:
            cell = slot.cell
            if cell is None:
                cell = await slot.wait_cell()
            mailbox = cell.mailbox
            try:
                if mailbox.full() or mailbox._putters:
                    await mailbox.put((message, reply))
                else:
                    mailbox.put_nowait((message, reply))
                return
            except MailboxClosed:
                continue  # that incarnation ended while we waited: go through the slot again

    def _add_watcher(self, callback: WatchCallback) -> Callable[[], None]:
        return self._slot.add_watcher(callback)

    def statistics(self) -> MailboxStatistics | None:
        """The running incarnation's mailbox statistics (None while none runs)."""
        cell = self._slot.cell
        return cell.mailbox.statistics() if cell is not None else None
