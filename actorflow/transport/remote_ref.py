"""References to actors in other processes, and the per-peer route their messages take.

A :class:`RemoteActorRef` is an :class:`~actorflow.runtime.ActorRef` whose slot lives in
another process: ``tell``, ``tell_nowait``, ``ask``, ``ask_nowait`` and watches go over a link
to it, and it pickles to the same ``(uid, address, slot id, path)`` as the ref it stands for.
Each remote system this process talks to has one :class:`Peer`: it dials on first use, reuses
the link, queues what is sent while dialing (in order), and redials with backoff after a loss.

Message kinds on a link (the ``kind`` field of the wire format)::

    TELL        target=slot id, value=message
    ASK         target=slot id, cid=call id, value=message           -> REPLY or ERROR
    REPLY       cid=call id, value=result
    ERROR       cid=call id, value=(pickled exception or None, type name, text, traceback)
    WATCH       target=slot id, cid=watch id                         -> TERMINATED, once
    UNWATCH     cid=watch id
    TERMINATED  cid=watch id, value=(reason, error payload or None, incarnation)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from actorflow._errors import (
    ActorDiedError,
    ActorflowError,
    AuthenticationError,
    GetTimeoutError,
    PeerUnreachableError,
    ProtocolError,
    RemoteException,
    SerializationError,
)
from actorflow.runtime import ActorRef, ExitReason, Reply, Terminated
from actorflow.runtime.ref import SlotState, WatchCallback
from actorflow.transport.codec import UndecodableValue, dumps

if TYPE_CHECKING:
    from actorflow.transport.base import Link
    from actorflow.transport.remote import Remoting

__all__ = [
    "ASK",
    "ERROR",
    "REPLY",
    "TELL",
    "TERMINATED",
    "UNWATCH",
    "WATCH",
    "Channel",
    "Peer",
    "RemoteActorRef",
    "error_payload",
    "rebuild_error",
    "undecodable_error",
]

log = logging.getLogger("actorflow.transport")

TELL: Final = 1
ASK: Final = 2
REPLY: Final = 3
ERROR: Final = 4
WATCH: Final = 5
UNWATCH: Final = 6
TERMINATED: Final = 7

ErrorPayload = tuple[bytes | None, str, str, str]


def error_payload(exc: BaseException) -> ErrorPayload:
    """An exception as it crosses a link: pickled when it can be, and always its type name,
    text and traceback, so the receiver can stand in a RemoteException for it."""
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    tb = "".join(traceback.format_exception(exc)) if exc.__traceback__ is not None else ""
    try:
        data, buffers = dumps(exc)
        if buffers:  # an exception holding an array: keep it simple, pickle in-band
            data = pickle.dumps(exc, protocol=5)
    except (SerializationError, pickle.PicklingError):
        data = None
    return (data, name, str(exc), tb)


def rebuild_error(payload: Any) -> BaseException:
    """The exception an ERROR or TERMINATED payload carries (see :func:`error_payload`)."""
    try:
        data, name, text, tb = payload
    except (TypeError, ValueError):
        return ProtocolError(f"malformed error payload {payload!r:.200}")
    if data is not None:
        try:
            exc = pickle.loads(data)
        except Exception:
            exc = None
        if isinstance(exc, BaseException):
            if tb and not isinstance(exc, ActorflowError):
                exc.add_note(f"Remote traceback:\n{tb.rstrip()}")
            return exc
    return RemoteException(str(name), str(text), str(tb))


def undecodable_error(value: UndecodableValue, what: str) -> SerializationError:
    """The error for a value that arrived but could not be unpickled here."""
    err = value.error
    return SerializationError(
        f"{what} could not be unpickled in this process: {type(err).__name__}: {err}. "
        "Make sure its classes are importable here."
    )


# ----------------------------------------------------------------------------- channel
class Channel:
    """One link in use by the remoting layer, and what rides on it: our asks waiting for
    replies, our watches waiting for termination notices, and the watches the peer set on
    our actors."""

    __slots__ = ("address", "ids", "link", "pending", "served", "uid", "watches")

    def __init__(self, link: Link) -> None:
        self.link = link
        hello = link.peer_hello
        self.uid: str | None = hello.get("uid") if isinstance(hello.get("uid"), str) else None
        address = hello.get("address")
        self.address: str | None = address if isinstance(address, str) else None
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.watches: dict[int, tuple[ActorRef, WatchCallback]] = {}
        self.served: dict[int, Callable[[], None]] = {}  # the peer's watches on our actors
        self.ids = itertools.count(1)  # call and watch ids

    def lost(self, error: BaseException) -> None:
        """The link is gone: fail our asks, tell our watchers, drop the peer's watches."""
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(
                    PeerUnreachableError(
                        f"the link to {self.address or self.link.peer} was lost before the "
                        f"actor answered: {error}"
                    )
                )
        watches, self.watches = self.watches, {}
        for ref, callback in watches.values():
            _fire(callback, Terminated(ref, ExitReason.PEER_LOST, error, 0))
        served, self.served = self.served, {}
        for remove in served.values():
            remove()


def _fire(callback: WatchCallback, notice: Terminated) -> None:
    try:
        callback(notice)
    except Exception:  # a watcher's bug must not stop the others from hearing
        log.exception("watch callback for %s failed", notice.ref.path)


# ----------------------------------------------------------------------------- peer
class _Backlogged:
    """A message sent while its peer was being dialed."""

    __slots__ = ("fut", "kind", "ref", "target", "value", "watch")

    def __init__(
        self,
        kind: int,
        target: str,
        value: Any,
        ref: ActorRef,
        fut: asyncio.Future[Any] | None = None,
        watch: _PendingWatch | None = None,
    ) -> None:
        self.kind, self.target, self.value, self.ref = kind, target, value, ref
        self.fut = fut
        self.watch = watch


class _PendingWatch:
    """A watch set while its peer was being dialed: cancellable before and after it is sent."""

    __slots__ = ("callback", "cancelled", "channel", "target", "wid")

    def __init__(self, callback: WatchCallback) -> None:
        self.callback = callback
        self.cancelled = False
        self.channel: Channel | None = None
        self.target = ""
        self.wid = 0

    def registered(self, channel: Channel, target: str, wid: int) -> None:
        self.channel, self.target, self.wid = channel, target, wid

    def cancel(self) -> None:
        self.cancelled = True
        channel = self.channel
        if channel is not None:
            _unwatch(channel, self.target, self.wid)


def _unwatch(channel: Channel, target: str, wid: int) -> None:
    if channel.watches.pop(wid, None) is not None and not channel.link.closed:
        channel.link.send(UNWATCH, target, None, "", wid)


class Peer:
    """The route to one remote system (``uid`` at ``address``). Owned by :class:`Remoting`."""

    __slots__ = (
        "_backlog",
        "_dialing",
        "_failures",
        "_remoting",
        "_retry_at",
        "address",
        "channel",
        "uid",
    )

    def __init__(self, remoting: Remoting, uid: str, address: str) -> None:
        self._remoting = remoting
        self.uid = uid
        self.address = address
        self.channel: Channel | None = None
        self._backlog: list[_Backlogged] = []
        self._dialing = False
        self._failures = 0
        self._retry_at = 0.0

    # -- sending
    def send(self, kind: int, target: str, value: Any, ref: ActorRef) -> None:
        channel = self.channel
        if channel is not None:
            try:
                channel.link.send(kind, target, value)
                return
            except PeerUnreachableError:
                self.detach(channel)
        self._later(_Backlogged(kind, target, _checked(value), ref))

    def ask(self, target: str, value: Any, ref: ActorRef, reply: Any = None) -> Any:
        """Send an ask; its answer settles ``reply`` (a :class:`Reply`), or a new future,
        which is returned."""
        fut = self._remoting.loop.create_future() if reply is None else reply
        channel = self.channel
        if channel is not None:
            cid = next(channel.ids)
            try:
                channel.link.send(ASK, target, value, "", cid)
            except PeerUnreachableError:
                self.detach(channel)
            else:
                channel.pending[cid] = fut
                return fut
        self._later(_Backlogged(ASK, target, _checked(value), ref, fut=fut))
        return fut

    def forget(self, fut: asyncio.Future[Any]) -> None:
        """Stop tracking an ask whose caller gave up."""
        channel = self.channel
        if channel is not None:
            for cid, pending in list(channel.pending.items()):
                if pending is fut:
                    del channel.pending[cid]
                    return
        self._backlog = [item for item in self._backlog if item.fut is not fut]

    def watch(self, ref: ActorRef, callback: WatchCallback) -> Callable[[], None]:
        channel = self.channel
        target = ref.id
        if channel is not None:
            wid = next(channel.ids)
            try:
                channel.link.send(WATCH, target, None, "", wid)
            except PeerUnreachableError:
                self.detach(channel)
            else:
                channel.watches[wid] = (ref, callback)
                return lambda: _unwatch(channel, target, wid)
        state = _PendingWatch(callback)
        self._later(_Backlogged(WATCH, target, None, ref, watch=state))
        return state.cancel

    def _later(self, item: _Backlogged) -> None:
        self._backlog.append(item)
        if not self._dialing:
            self._dialing = True
            self._remoting.spawn(self._dial(), f"actorflow dial {self.address}")

    # -- connecting
    async def _dial(self) -> None:
        remoting = self._remoting
        loop = asyncio.get_running_loop()
        # A peer that stays unreachable for peer_timeout_s is given up on.
        deadline = loop.time() + remoting.config.peer_timeout_s
        try:
            while True:
                wait = self._retry_at - loop.time()
                if wait > 0:
                    await asyncio.sleep(min(wait, max(0.0, deadline - loop.time())))
                try:
                    link = await remoting.dial(self.address)
                except (AuthenticationError, ProtocolError) as exc:
                    self._fail_backlog(exc)  # retrying cannot help
                    return
                except PeerUnreachableError as exc:
                    self._failures += 1
                    self._retry_at = loop.time() + min(1.0, 0.05 * 2 ** (self._failures - 1))
                    if self._retry_at >= deadline:
                        self._fail_backlog(exc)
                        return
                    continue
                self._failures = 0
                uid = link.peer_hello.get("uid")
                if uid != self.uid:
                    await link.aclose()
                    self._fail_backlog(None)
                    return
                self.attach(remoting.adopt(link))
                return
        finally:
            self._dialing = False

    def attach(self, channel: Channel) -> None:
        """Route through ``channel`` from now on; send what waited for it, in order."""
        if self.channel is not None and not self.channel.link.closed:
            return
        self.channel = channel
        backlog, self._backlog = self._backlog, []
        for item in backlog:
            self._flush(channel, item)

    def detach(self, channel: Channel) -> None:
        if self.channel is channel:
            self.channel = None

    def _flush(self, channel: Channel, item: _Backlogged) -> None:
        link = channel.link
        cid = 0
        try:
            if item.kind == ASK:
                assert item.fut is not None
                if item.fut.done():
                    return
                cid = next(channel.ids)
                channel.pending[cid] = item.fut
            elif item.kind == WATCH:
                assert item.watch is not None
                if item.watch.cancelled:
                    return
                cid = next(channel.ids)
                channel.watches[cid] = (item.ref, item.watch.callback)
                item.watch.registered(channel, item.target, cid)
            link.send(item.kind, item.target, item.value, "", cid)
        except PeerUnreachableError:
            pass  # the channel is being lost: its own cleanup answers what was registered

    def _fail_backlog(self, error: BaseException | None) -> None:
        backlog, self._backlog = self._backlog, []
        for item in backlog:
            if error is None:
                exc: BaseException = ActorDiedError(
                    item.ref.path, f"its process at {self.address} has been replaced"
                )
            else:
                exc = (
                    error
                    if not isinstance(error, PeerUnreachableError)
                    else (PeerUnreachableError(f"cannot reach actor {item.ref.path!r}: {error}"))
                )
                if isinstance(exc, PeerUnreachableError):
                    exc.delivered = False  # it was still in the backlog: it never left
            if item.fut is not None and not item.fut.done():
                item.fut.set_exception(exc)
            elif item.watch is not None and not item.watch.cancelled:
                reason = ExitReason.PEER_LOST if error is not None else ExitReason.NOPROC
                _fire(item.watch.callback, Terminated(item.ref, reason, exc, 0))
            elif item.kind == TELL:
                log.debug("dropped a tell to %s: %s", item.ref.path, exc)

    def close(self, error: BaseException) -> None:
        self._fail_backlog(error)
        self.channel = None


def _checked(value: Any) -> Any:
    """Fail now, at the sender, if ``value`` cannot be pickled (it waits for a dial)."""
    dumps(value)
    return value


# ----------------------------------------------------------------------------- refs
class _RemoteSystem:
    __slots__ = ("address", "uid")

    def __init__(self, uid: str, address: str) -> None:
        self.uid = uid
        self.address = address


class _RemoteSlot:
    """What an ActorRef reads of its slot, for an actor in another process."""

    __slots__ = ("cell", "id", "path", "state", "system")

    def __init__(self, uid: str, address: str, slot_id: str, path: str) -> None:
        self.system = _RemoteSystem(uid, address)
        self.id = slot_id
        self.path = path
        self.state = SlotState.LIVE
        self.cell = None


class RemoteActorRef(ActorRef):
    """An ActorRef to an actor in another process (see the module docstring)."""

    __slots__ = ("_peer", "_target")

    def __init__(self, peer: Peer, slot_id: str, path: str) -> None:
        super().__init__(_RemoteSlot(peer.uid, peer.address, slot_id, path))  # type: ignore[arg-type]
        self._peer = peer
        self._target = slot_id

    def __repr__(self) -> str:
        return f"<RemoteActorRef {self.path} at {self._peer.address}>"

    @property
    def address(self) -> str:
        """Where the actor's system listens."""
        return self._peer.address

    async def tell(self, message: Any) -> None:
        """Send without waiting for an answer; waits only while the link's backlog is over
        its high-water mark."""
        self._peer.send(TELL, self._target, message, self)
        channel = self._peer.channel
        if channel is not None:
            try:
                await channel.link.drain()
            except PeerUnreachableError:
                pass  # the tell is lost with the link, as a tell to a dying actor is

    def tell_nowait(self, message: Any) -> None:
        """Send now; never waits. Raises SerializationError if it cannot be pickled."""
        self._peer.send(TELL, self._target, message, self)

    def ask_nowait(self, message: Any, reply: Any = None) -> Any:
        """Send now and return a future of the answer (or ``reply``, settled in its place); it
        fails with PeerUnreachableError if the peer is lost first."""
        return self._peer.ask(self._target, message, self, reply)

    async def deliver(self, message: Any, reply: Reply | None) -> None:
        """Send ``message``: a tell when ``reply`` is None, else an ask whose answer settles
        ``reply``."""
        if reply is None:
            await self.tell(message)
        else:
            self._peer.ask(self._target, message, self, reply)

    async def ask(self, message: Any, timeout: float | None = None) -> Any:
        fut = self._peer.ask(self._target, message, self)
        if timeout is None:
            return await fut
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            self._peer.forget(fut)
            if fut.done() and not fut.cancelled():
                fut.exception()
            raise GetTimeoutError(
                f"ask({type(message).__name__}) to actor {self.path!r} at {self.address} got no "
                f"answer within {timeout} s; raise the timeout or check that the actor is not "
                "stuck"
            ) from None

    def _add_watcher(self, callback: WatchCallback) -> Callable[[], None]:
        return self._peer.watch(self, callback)

    def statistics(self) -> None:
        """Mailbox statistics are not fetched over links: always None."""
        return None
