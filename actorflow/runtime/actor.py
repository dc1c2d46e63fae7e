"""The Actor base class, its lifecycle states, and the termination notice.

An actor is an object whose ``receive`` is called with one message at a time (or up to
``max_concurrency`` at a time, for actors whose handlers await I/O), from a task that the
runtime owns. Subclass :class:`Actor`, override ``receive`` and, if needed, the hooks.

Lifecycle of one incarnation (one start of an actor; a supervisor's restart makes a new one)::

    STARTING --on_start ok--> RUNNING --stop requested--> STOPPING --> STOPPED
        |                        |                                        ^
        +--on_start raised-------+--handler raised / killed--> CRASHED ---+ (terminal)
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from actorflow.runtime.ref import ActorRef
    from actorflow.runtime.system import ActorSystem

__all__ = ["Actor", "ActorState", "ErrorReply", "ExitReason", "ServiceActor", "Terminated"]


class ActorState(enum.Enum):
    """The state of one incarnation."""

    STARTING = "starting"  # spawned; on_start is running
    RUNNING = "running"  # processing its mailbox
    STOPPING = "stopping"  # stop requested: finishing in-flight messages, then on_stop
    STOPPED = "stopped"  # ended normally (on_stop ran)
    CRASHED = "crashed"  # a handler or on_start raised, or it was killed


class ExitReason(enum.StrEnum):
    """Why an incarnation ended. ``abnormal`` reasons make transient children restart."""

    NORMAL = "normal"  # it stopped itself, or a supervisor/system stopped it
    CRASHED = "crashed"  # a handler or on_start raised
    KILLED = "killed"  # cancelled without on_stop (brutal kill, or shutdown timeout)
    NOPROC = "noproc"  # it was already gone when the watch was set up
    PEER_LOST = "peer lost"  # the process hosting it can no longer be reached

    @property
    def abnormal(self) -> bool:
        return self in (ExitReason.CRASHED, ExitReason.KILLED, ExitReason.PEER_LOST)


@dataclass(frozen=True, slots=True)
class Terminated:
    """Delivered to each watcher when the watched incarnation ends.

    ``cause`` is the exception for a crash, else None. ``incarnation`` counts restarts of the
    same ref (0 for the first start), so a supervisor can tell a stale notice from a fresh one.
    """

    ref: ActorRef
    reason: ExitReason
    cause: BaseException | None = None
    incarnation: int = 0


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """Return this from ``receive`` to fail the ask with ``error`` *without* crashing the actor
    (OTP's ``{error, Reason}`` reply): for requests the actor rejects but survives."""

    error: BaseException


class Actor:
    """Base class of every actor, system actors included.

    Class attributes (override in a subclass, or pass to ``spawn``):

    - ``max_concurrency``: how many messages may be handled at once (default 1: strictly one
      at a time, in mailbox order). With N > 1 each message is handled in its own task, so
      handlers that await I/O interleave; start order is still mailbox order.
    - ``mailbox_size``: the bound of the mailbox; a full mailbox makes ``tell`` wait.

    Attributes set by the runtime before ``on_start`` runs: ``ref`` (this actor's own
    :class:`ActorRef`, stable across restarts) and ``system`` (its :class:`ActorSystem`).
    """

    max_concurrency: ClassVar[int] = 1
    mailbox_size: ClassVar[int] = 1024
    #: With ``max_concurrency`` 1, True makes the runtime hand every message already queued to
    #: :meth:`receive_batch` at once (in order) instead of one by one to :meth:`receive`.
    batches: ClassVar[bool] = False

    ref: ActorRef
    system: ActorSystem

    async def on_start(self) -> None:
        """Runs once per incarnation, in the actor's task, before the first message.

        ``spawn`` returns only after it has finished. If it raises, the incarnation crashes:
        ``spawn`` re-raises the exception, and under a supervisor it counts as a crash.
        """

    def on_stop_requested(self) -> None:
        """Runs synchronously in the actor's task as soon as its loop takes a stop request,
        before in-flight handlers are waited for (they exist only with ``max_concurrency`` > 1).

        An actor whose handlers wait for something that will not come once it stops (a lease,
        a state change) releases those waits here, so the stop stays graceful.
        """

    async def on_stop(self) -> None:
        """Runs in the actor's task when the actor stops normally, after the last message.

        Not run after a crash or a kill. An exception here is logged; the actor still stops.
        """

    async def receive(self, message: Any) -> Any:
        """Handle one message. The return value answers an ``ask``; for a ``tell`` it is
        dropped. An exception fails that ask and crashes the actor (its supervisor decides
        what happens next); return :class:`ErrorReply` to fail the ask and carry on."""
        raise TypeError(f"{type(self).__name__} does not handle {type(message).__name__} messages")

    async def receive_batch(self, items: list[tuple[Any, Any]]) -> None:
        """Handle several queued messages at once (only when ``batches`` is True): ``items``
        are ``(message, reply)`` pairs in mailbox order, and this method answers each reply
        that is not None (``reply.set_result`` / ``set_exception``). An exception crashes the
        actor, and every reply it left unanswered gets that exception."""
        for message, reply in items:
            result = await self.receive(message)
            if reply is not None and not reply.done():
                reply.set_result(result)

    def stop(self) -> None:
        """Ask this actor to stop after the message in hand (a normal exit)."""
        self.system._request_stop(self.ref)


class ServiceActor(Actor):
    """An actor that serves many callers: a request that raises fails that request only (its
    ask gets the exception, as with :class:`ErrorReply`) and the actor carries on. Errors a
    caller can cause (``expected``) are quiet; anything else is logged as a bug.

    Subclasses implement :meth:`handle` instead of ``receive``.
    """

    expected: ClassVar[tuple[type[BaseException], ...]] = (ValueError, TypeError, KeyError)

    async def receive(self, message: Any) -> Any:
        try:
            return await self.handle(message)
        except Exception as exc:
            if not isinstance(exc, self.expected) and not _is_actorflow_error(exc):
                logging.getLogger("actorflow").exception(
                    "%s failed on a %s request", self.ref.path, type(message).__name__
                )
            return ErrorReply(exc)

    async def handle(self, message: Any) -> Any:
        """Serve one request; the return value answers it."""
        raise TypeError(f"{type(self).__name__} does not handle {type(message).__name__}")


def _is_actorflow_error(exc: BaseException) -> bool:
    from actorflow._errors import ActorflowError

    return isinstance(exc, ActorflowError)
