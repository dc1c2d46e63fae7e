"""One incarnation of an actor: its mailbox and the task that runs it.

The cell's task is owned by the :class:`ActorSystem` (which awaits or cancels it at shutdown);
handler tasks of a concurrent actor are owned by the cell. When the incarnation ends, for any
reason, ``_terminate`` runs exactly once and, in this order: detaches the cell from its slot (so
new sends wait for a restart or fail), answers every queued ask with an error, and notifies the
watchers (its supervisor among them).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from actorflow._errors import ActorDiedError, ActorUnavailableError
from actorflow.runtime.actor import Actor, ActorState, ErrorReply, ExitReason, Terminated
from actorflow.runtime.mailbox import Mailbox
from actorflow.runtime.ref import ActorRef, Slot, SlotState

if TYPE_CHECKING:
    from actorflow.runtime.system import ActorSystem

__all__ = ["Cell"]


class _Control:
    """A runtime instruction travelling through a mailbox (never seen by ``receive``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_STOP = _Control("stop")
BATCH = 64  # most messages handed to one receive_batch call
_WAKE = _Control("wake")  # a concurrent handler crashed: wake the loop to notice


class Cell:
    """Runs one incarnation. Created by ``ActorSystem.start_incarnation``."""

    __slots__ = (
        "_crash",
        "_inflight",
        "_room",
        "actor",
        "cause",
        "incarnation",
        "mailbox",
        "max_concurrency",
        "reason",
        "restartable",
        "slot",
        "state",
        "system",
        "task",
        "terminated",
    )

    def __init__(
        self,
        system: ActorSystem,
        slot: Slot,
        actor: Actor,
        *,
        incarnation: int,
        max_concurrency: int,
        mailbox_size: int,
        restartable: Any,
    ) -> None:
        self.system = system
        self.slot = slot
        self.actor = actor
        self.incarnation = incarnation
        self.max_concurrency = max_concurrency
        self.mailbox = Mailbox(mailbox_size)
        self.state = ActorState.STARTING
        self.reason: ExitReason | None = None
        self.cause: BaseException | None = None
        # restartable(reason) -> may a supervisor start another incarnation after this one?
        self.restartable = restartable
        self.task: asyncio.Task[None] | None = None
        self.terminated: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight: set[asyncio.Task[None]] = set()
        self._room: asyncio.Future[None] | None = None
        self._crash: BaseException | None = None

    # -- the incarnation's task ----------------------------------------------------------------

    async def main(self, started: asyncio.Future[None]) -> None:
        actor = self.actor
        # Attached before on_start: messages sent meanwhile queue and are handled after it
        # (a supervisor must hear a child die even while its own on_start is still running).
        try:
            self.slot.attach(self)
        except RuntimeError as exc:  # the slot died meanwhile (stopped for good)
            self._terminate(ExitReason.NOPROC, None)
            started.set_exception(exc)
            return
        try:
            try:
                await actor.on_start()
            except Exception as exc:
                self._terminate(ExitReason.CRASHED, exc)
                if not started.done():
                    started.set_exception(exc)
                return
            self.state = ActorState.RUNNING
            started.set_result(None)
            if self.max_concurrency == 1:
                crash = await self._serial_loop()
            else:
                crash = await self._concurrent_loop()
            if crash is not None:
                self._terminate(ExitReason.CRASHED, crash)
                return
            self.state = ActorState.STOPPING
            try:
                await actor.on_stop()
            except Exception:
                self.system._log.exception("on_stop of %s raised; it stops anyway", self.slot.path)
            self._terminate(ExitReason.NORMAL, None)
        except asyncio.CancelledError:
            # killed (brutal kill, shutdown timeout, or the loop is closing)
            for task in self._inflight:
                task.cancel()
            if self._inflight:
                await asyncio.wait(list(self._inflight), timeout=self.system.stop_timeout_s)
            self._terminate(ExitReason.KILLED, None)
            if not started.done():
                started.set_exception(
                    ActorDiedError(self.slot.path, "it was killed while starting")
                )

    async def _serial_loop(self) -> BaseException | None:
        """One message at a time, in mailbox order. Returns the crash cause, or None on stop."""
        mailbox = self.mailbox
        receive = self.actor.receive
        batch = self.actor.receive_batch if self.actor.batches else None
        while True:
            if mailbox._items:
                item = mailbox.get_nowait()
            else:
                item = await mailbox.get()
            if batch is not None and mailbox._items:
                crash = await self._batch(item, batch)
                if crash is not None:
                    return crash if crash is not _STOP else None
                continue
            message, reply = item
            if message is _STOP:
                self._stop_requested()
                return None
            try:
                result = await receive(message)
            except asyncio.CancelledError:
                # killed mid-message: the caller hears it, it does not wait forever
                _fail(reply, self._lost_error(ExitReason.KILLED))
                raise
            except Exception as exc:
                _fail(reply, exc)
                return exc
            _answer(reply, result)

    async def _batch(self, first: Any, batch: Any) -> Any:
        """Hand ``first`` and every message queued behind it (up to BATCH) to receive_batch.
        Returns the crash cause, _STOP when a stop request was met, or None."""
        mailbox = self.mailbox
        items = [first]
        stop = None
        while mailbox._items and len(items) < BATCH:
            item = mailbox.get_nowait()
            if item[0] is _STOP:
                stop = item
                break
            items.append(item)
        if items[0][0] is _STOP:
            self._stop_requested()
            return _STOP
        try:
            await batch(items)
        except asyncio.CancelledError:
            killed = self._lost_error(ExitReason.KILLED)
            for _, reply in items:
                _fail(reply, killed)
            raise
        except Exception as exc:
            for _, reply in items:
                _fail(reply, exc)
            return exc
        if stop is not None:
            self._stop_requested()
            return _STOP
        return None

    def _stop_requested(self) -> None:
        try:
            self.actor.on_stop_requested()
        except Exception:
            self.system._log.exception("on_stop_requested of %s raised", self.slot.path)

    async def _concurrent_loop(self) -> BaseException | None:
        """Up to ``max_concurrency`` handlers at once, each in a task owned by this cell."""
        mailbox = self.mailbox
        loop = asyncio.get_running_loop()
        inflight = self._inflight
        limit = self.max_concurrency
        while self._crash is None:
            item = mailbox.get_nowait() if mailbox._items else await mailbox.get()
            message, reply = item
            if message is _STOP:
                self._stop_requested()
                break
            if message is _WAKE:
                continue
            while len(inflight) >= limit and not self._crashed():
                self._room = loop.create_future()
                await self._room
            if self._crashed():
                _fail(reply, self._lost_error())
                break
            task = loop.create_task(self._handle(message, reply))
            inflight.add(task)
        # graceful stop: let in-flight handlers finish (the stop timeout bounds this); after a
        # crash they were cancelled, and we wait for them to unwind so none outlives the cell
        while inflight:
            await asyncio.wait(list(inflight))
        return self._crash

    def _crashed(self) -> bool:
        # a method, not an inline test: handlers set _crash while the loop awaits
        return self._crash is not None

    async def _handle(self, message: Any, reply: Any) -> None:
        task = asyncio.current_task()
        try:
            result = await self.actor.receive(message)
        except asyncio.CancelledError:
            _fail(reply, self._lost_error(ExitReason.KILLED))
            raise
        except Exception as exc:
            _fail(reply, exc)
            if self._crash is None:
                self._crash = exc
                for other in self._inflight:
                    if other is not task:
                        other.cancel()
                if not self.mailbox.closed:
                    self.mailbox.put_system((_WAKE, None), front=True)
        else:
            _answer(reply, result)
        finally:
            if task is not None:
                self._inflight.discard(task)
            room = self._room
            if room is not None and not room.done():
                room.set_result(None)

    # -- ending --------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop after the message in hand; queued messages are answered with an error."""
        if self.state in (ActorState.STARTING, ActorState.RUNNING) and not self.mailbox.closed:
            self.mailbox.put_system((_STOP, None), front=True)

    def _lost_error(self, default: ExitReason = ExitReason.CRASHED) -> Exception:
        reason = self.reason or default
        if self.slot.state is SlotState.DEAD or not self.restartable(reason):
            return ActorDiedError(self.slot.path, f"it ended ({reason.value})",
                                  self.cause or self._crash)
        return ActorUnavailableError(self.slot.path, "it died while handling the call")

    def _terminate(self, reason: ExitReason, cause: BaseException | None) -> None:
        if self.terminated.done():
            return
        self.reason = reason
        self.cause = cause
        self.state = ActorState.STOPPED if reason is ExitReason.NORMAL else ActorState.CRASHED
        slot = self.slot
        if slot.cell is self or slot.cell is None:
            slot.detach(may_restart=bool(self.restartable(reason)), reason=reason, cause=cause)
        left = self.mailbox.close()
        if left:
            error = self._queued_error(reason, cause)
            dropped = 0
            for message, reply in left:
                if isinstance(message, (_Control, Terminated)):
                    continue  # runtime notices, not letters anyone sent
                if reply is None:
                    dropped += 1
                elif not reply.done():
                    reply.set_exception(error)
            if dropped:
                self.system._dead_letters += dropped
                self.system._log.debug("%s ended with %d tells unhandled", slot.path, dropped)
        if reason is ExitReason.CRASHED and cause is not None:
            self.system._log.debug("%s crashed: %r", slot.path, cause)
        self.system._cell_ended(self)
        self.terminated.set_result(None)  # before the notices: a notice means it has ended
        slot.notify(Terminated(ActorRef(slot), reason, cause, self.incarnation))

    def _queued_error(self, reason: ExitReason, cause: BaseException | None) -> Exception:
        if self.slot.state is SlotState.RESTARTING:
            return ActorUnavailableError(
                self.slot.path, f"it {reason.value} before handling the call"
            )
        what = "it stopped" if reason is ExitReason.NORMAL else f"it {reason.value}"
        return ActorDiedError(self.slot.path, f"{what} before handling the call", cause)


def _answer(reply: Any, result: Any) -> None:
    """Answer an ask (``reply``: None for a tell) with what its handler returned."""
    if reply is not None and not reply.done():
        if type(result) is ErrorReply:
            reply.set_exception(result.error)
        else:
            reply.set_result(result)


def _fail(reply: Any, error: BaseException) -> None:
    """Fail an ask (``reply``: None for a tell) with ``error``, unless it was answered."""
    if reply is not None and not reply.done():
        reply.set_exception(error)
