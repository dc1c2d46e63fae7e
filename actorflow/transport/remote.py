"""Remoting: makes an :class:`~actorflow.runtime.ActorSystem` reachable from other processes,
and the actors of other processes reachable from it.

:func:`serve_system` starts one listener for the system (127.0.0.1 unless configured), sets
``system.address`` and ``system.remote_resolver``, and returns the :class:`Remoting` that owns
every link, reader and dialer task until :meth:`Remoting.aclose`. A ref to an actor elsewhere
(unpickled from a message, or rebuilt with ``restore_ref``) is a
:class:`~actorflow.transport.remote_ref.RemoteActorRef`; it behaves like a local one.

What a peer's loss means here: asks waiting on its link fail with PeerUnreachableError, and
watchers of its actors get a ``Terminated`` notice with reason ``peer lost``. A later send
dials again (with backoff); if the peer is really gone, that send's asks fail too.

Messages arriving for a local actor go straight into its mailbox when it has room. When it has
none (or the actor is restarting), they queue per actor, in order, and a task owned by the
link feeds them in as room appears: the link is never blocked, so replies and heartbeats keep
flowing. That queue is bounded (``_OVERFLOW_LIMIT`` messages per actor); past it, tells are
dropped and asks fail with MailboxFullError.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any, Final

from actorflow._errors import (
    ActorDiedError,
    ActorflowError,
    AuthenticationError,
    MailboxFullError,
    PeerUnreachableError,
    ProtocolError,
    SerializationError,
)
from actorflow.runtime import (
    ActorRef,
    ActorSystem,
    ExitReason,
    OwnedTasks,
    Reply,
    Terminated,
    current_system,
)
from actorflow.runtime.mailbox import MailboxClosed
from actorflow.runtime.ref import Slot
from actorflow.transport.base import Link, Listener, Transport
from actorflow.transport.bulk import BulkConnectError
from actorflow.transport.codec import UndecodableValue
from actorflow.transport.config import SecretStr, TransportConfig
from actorflow.transport.remote_ref import (
    ASK,
    ERROR,
    REPLY,
    TELL,
    TERMINATED,
    UNWATCH,
    WATCH,
    Channel,
    Peer,
    RemoteActorRef,
    error_payload,
    rebuild_error,
    undecodable_error,
)
from actorflow.transport.ws import WebSocketTransport, same_host_unix

__all__ = ["Remoting", "serve_system"]

log = logging.getLogger("actorflow.transport")

_OVERFLOW_LIMIT: Final = 100_000
_TO_ACTORS: Final = frozenset((ASK, TELL))


async def serve_system(
    system: ActorSystem,
    *,
    token: str | None = None,
    config: TransportConfig | None = None,
    transport: Transport | None = None,
) -> Remoting:
    """Listen for ``system`` and resolve refs to other processes through links.

    ``config`` defaults to loopback on a free port; ``token`` (if given) replaces its token.
    Call :meth:`Remoting.aclose` after ``system.shutdown()``.
    """
    config = config or TransportConfig()
    if token is not None:
        config = dataclasses.replace(config, token=SecretStr(token))
    remoting = Remoting(system, config, transport or WebSocketTransport())
    await remoting.start()
    return remoting


class _LinkReply(Reply):
    """The reply slot of an ask that came over a link: answering it sends the answer back on
    that link, in the same loop turn."""

    __slots__ = ("_cid", "_done", "_link")

    def __init__(self, link: Link, cid: int) -> None:
        self._link = link
        self._cid = cid
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Any) -> None:
        if self._done:
            raise asyncio.InvalidStateError("the ask was already answered")
        self._done = True
        try:
            self._link.send(REPLY, "", result, "", self._cid)
        except SerializationError as exc:
            self._send_error(exc)
        except PeerUnreachableError:
            pass  # the caller's process is gone: nobody to answer

    def set_exception(self, exception: BaseException) -> None:
        if self._done:
            raise asyncio.InvalidStateError("the ask was already answered")
        self._done = True
        self._send_error(exception)

    def _send_error(self, exception: BaseException) -> None:
        try:
            self._link.send(ERROR, "", error_payload(exception), "", self._cid)
        except PeerUnreachableError:
            pass


class _Overflow:
    """Messages for one local actor that found its mailbox full, waiting in order."""

    __slots__ = ("items", "task")

    def __init__(self) -> None:
        self.items: deque[tuple[Any, Any]] = deque()
        self.task: asyncio.Task[None] | None = None


class Remoting:
    """The remoting layer of one ActorSystem (see the module docstring)."""

    def __init__(self, system: ActorSystem, config: TransportConfig, transport: Transport) -> None:
        self.system = system
        self.config = config
        self._transport = transport
        self._listener: Listener | None = None
        self._hello: dict[str, Any] = {"uid": system.uid, "name": system.name}
        self._peers: dict[tuple[str, str], Peer] = {}
        self._channels: set[Channel] = set()
        self._overflow: dict[str, _Overflow] = {}
        self._tasks = OwnedTasks(f"the remoting of {system.name}", log)
        self._closed = False
        self.loop = asyncio.get_running_loop()

    # -- lifecycle
    async def start(self) -> None:
        if self.system.address is not None:
            raise RuntimeError(f"{self.system!r} is already served at {self.system.address}")
        self._listener = await self._transport.listen(self.config, hello=self._hello)
        address = self._listener.addresses[0]
        self._hello["address"] = address
        self.system.address = address
        self.system.remote_resolver = self._resolve
        self.system.remoting = self
        self.spawn(self._accept_loop(self._listener), f"actorflow accept {address}")

    @property
    def address(self) -> str:
        assert self.system.address is not None
        return self.system.address

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``coro`` as a task this object owns (cancelled and awaited by aclose)."""
        if self._closed:
            coro.close()
            return
        self._tasks.spawn(coro, name)

    async def aclose(self) -> None:
        """Close every link and the listener, fail what waits on them, end every task."""
        if self._closed:
            return
        self._closed = True
        error = PeerUnreachableError(f"the remoting of {self.system.name} was shut down")
        for peer in self._peers.values():
            peer.close(error)
        await asyncio.gather(*(channel.link.aclose() for channel in list(self._channels)))
        if self._listener is not None:
            await self._listener.aclose()
        await self._tasks.close()
        if self.system.remote_resolver == self._resolve:
            self.system.remote_resolver = None
            self.system.address = None
        if self.system.remoting is self:
            self.system.remoting = None

    # -- refs and peers
    def _resolve(self, uid: str, address: str | None, slot_id: str, path: str) -> ActorRef:
        if address is None or self._closed:
            where = "an unserved system" if address is None else address
            return self.system.dead_ref(slot_id, path, f"it lives in {where}")
        key = (uid, address)
        peer = self._peers.get(key)
        if peer is None:
            peer = self._peers[key] = Peer(self, uid, address)
            for channel in self._channels:
                if channel.uid == uid and channel.address == address and not channel.link.closed:
                    peer.attach(channel)
                    break
        return RemoteActorRef(peer, slot_id, path)

    async def dial(self, address: str) -> Link:
        """A new authenticated link to ``address`` (used by peers): through the listener's
        unix socket when it is on this host, else as addressed."""
        unix = same_host_unix(address) if self.config.unix_path == "auto" else None
        if unix is not None:
            try:
                link = await self._transport.connect(unix, self.config, hello=self._hello)
            except (PeerUnreachableError, AuthenticationError, ProtocolError):
                pass  # no such socket, or another cluster's: dial as addressed
            else:
                if link.peer_hello.get("address") == address:
                    return link
                await link.aclose()  # another listener took that path: not our peer
        return await self._transport.connect(address, self.config, hello=self._hello)

    # -- bulk pulls (actorflow.transport.bulk)
    def offer(self, buffers: Sequence[Any]) -> str | None:
        """A one-time ticket under which a peer may pull the bytes of ``buffers`` from this
        system's listener (send it over a link); None when the transport cannot."""
        if self._listener is None or self._closed:
            return None
        return self._listener.offer(buffers)

    async def pull(self, address: str, ticket: str, dest: memoryview) -> None:
        """Fill ``dest`` with what the listener of the system at ``address`` offered under
        ``ticket``: through its unix socket when it is on this host, else as addressed.
        Raises PeerUnreachableError or ProtocolError."""
        unix = same_host_unix(address) if self.config.unix_path == "auto" else None
        if unix is not None:
            try:
                await self._transport.pull(unix, ticket, dest, self.config)
                return
            except BulkConnectError:
                pass  # no such socket: pull as addressed
        await self._transport.pull(address, ticket, dest, self.config)

    def adopt(self, link: Link) -> Channel:
        """Start serving ``link``: its reader task runs until the link is lost."""
        channel = Channel(link)
        self._channels.add(channel)
        self.spawn(self._read(channel), f"actorflow link reader {link.peer}")
        return channel

    async def _accept_loop(self, listener: Listener) -> None:
        while True:
            try:
                link = await listener.accept()
            except PeerUnreachableError:
                return
            channel = self.adopt(link)
            if channel.uid is not None and channel.address is not None:
                peer = self._peers.get((channel.uid, channel.address))
                if peer is not None and peer.channel is None:
                    peer.attach(channel)

    # -- receiving
    async def _read(self, channel: Channel) -> None:
        current_system.set(self.system)  # refs unpickled on this task resolve through us
        link = channel.link
        error: BaseException = PeerUnreachableError(f"the link to {link.peer} was closed")
        slots = self.system.slots
        overflow = self._overflow
        pending = channel.pending
        try:
            while True:
                # what the last batch held must not live on in this frame while the link is
                # idle (a reply's callback keeps its call's arguments, and their refs)
                batch = value = fut = reply = slot = None
                batch = await link.receive()
                asked = False
                try:
                    for kind, target, _sender, cid, value in batch:
                        if kind in _TO_ACTORS:
                            reply = _LinkReply(link, cid) if kind == ASK else None
                            asked = asked or kind == ASK
                            # Straight into the mailbox when there is room and nothing of
                            # this link waits for the actor already (order per sender).
                            slot = slots.get(target)
                            if (
                                slot is not None
                                and slot.cell is not None
                                and target not in overflow
                                and type(value) is not UndecodableValue
                            ):
                                try:
                                    slot.cell.mailbox.put_nowait((value, reply))
                                    continue
                                except (MailboxFullError, MailboxClosed):
                                    pass
                            self._deliver(target, value, reply)
                        elif kind == REPLY:
                            fut = pending.pop(cid, None)
                            if fut is not None and not fut.done():
                                if type(value) is UndecodableValue:
                                    fut.set_exception(undecodable_error(value, "the answer"))
                                else:
                                    fut.set_result(value)
                        else:
                            self._control(channel, kind, target, cid, value)
                except (TypeError, ValueError, KeyError, AttributeError) as exc:
                    raise ProtocolError(f"malformed message from {link.peer}: {exc!r}") from exc
                if asked:
                    link.flush_soon()  # behind the actors just woken: their replies go at once
        except (PeerUnreachableError, ProtocolError) as exc:
            error = exc
        except Exception as exc:  # a bug: log it, and still fail what waits on this link
            log.exception("link reader for %s failed", link.peer)
            error = PeerUnreachableError(f"the link to {link.peer} failed: {exc!r}")
        finally:
            self._channels.discard(channel)
            for peer in self._peers.values():
                peer.detach(channel)
            channel.lost(error)
            await link.aclose()

    def _deliver(self, target: Any, value: Any, reply: _LinkReply | None) -> None:
        """The slow path of delivery: an undecodable message, an unknown actor, or one whose
        mailbox is full or that is restarting (queued in order, fed by a task)."""
        if type(value) is UndecodableValue:
            undecodable = undecodable_error(value, "the message")
            if reply is not None:
                reply.set_exception(undecodable)
            else:
                log.warning("dropped a tell to actor %s: %s", target, undecodable)
            return
        overflow = self._overflow.get(target)
        if overflow is None:
            if target not in self.system.slots:
                if reply is not None:
                    reply.set_exception(
                        ActorDiedError(f"#{target}", f"no such actor runs in {self.address}")
                    )
                return
            overflow = self._overflow[target] = _Overflow()
        if len(overflow.items) >= _OVERFLOW_LIMIT:
            error = MailboxFullError(
                f"actor {target} in {self.address} has {_OVERFLOW_LIMIT} messages waiting "
                "for room in its mailbox; slow down the senders"
            )
            if reply is not None:
                reply.set_exception(error)
            return
        overflow.items.append((value, reply))
        if overflow.task is None:
            overflow.task = self._tasks.spawn(self._feed(target, overflow),
                                              f"actorflow feed {target}")

    async def _feed(self, target: str, overflow: _Overflow) -> None:
        """Feed waiting messages to a local actor, in order, as its mailbox makes room."""
        try:
            while overflow.items:
                value, reply = overflow.items[0]
                slot = self.system.slots.get(target)
                try:
                    if slot is None:
                        raise ActorDiedError(f"#{target}", f"it no longer runs in {self.address}")
                    await ActorRef(slot).deliver(value, reply)
                except ActorflowError as exc:  # dead or unavailable
                    if reply is not None and not reply.done():
                        reply.set_exception(exc)
                overflow.items.popleft()
        finally:
            del self._overflow[target]

    def _control(self, channel: Channel, kind: int, target: Any, cid: int, value: Any) -> None:
        if kind == ERROR:
            fut = channel.pending.pop(cid, None)
            if fut is not None and not fut.done():
                if type(value) is UndecodableValue:
                    fut.set_exception(undecodable_error(value, "the error"))
                else:
                    fut.set_exception(rebuild_error(value))
        elif kind == WATCH:
            self._serve_watch(channel, target, cid)
        elif kind == UNWATCH:
            remove = channel.served.pop(cid, None)
            if remove is not None:
                remove()
        elif kind == TERMINATED:
            entry = channel.watches.pop(cid, None)
            if entry is not None:
                ref, callback = entry
                if type(value) is UndecodableValue:
                    raise ProtocolError("a termination notice could not be unpickled")
                reason, cause, incarnation = value
                notice = Terminated(
                    ref,
                    _exit_reason(reason),
                    rebuild_error(cause) if cause else None,
                    int(incarnation),
                )
                try:
                    callback(notice)
                except Exception:
                    log.exception("watch callback for %s failed", ref.path)
        else:
            raise ProtocolError(f"unknown message kind {kind!r}")

    def _serve_watch(self, channel: Channel, target: Any, wid: int) -> None:
        link = channel.link

        def notify(notice: Terminated) -> None:
            channel.served.pop(wid, None)
            cause = error_payload(notice.cause) if notice.cause is not None else None
            try:
                link.send(TERMINATED, "", (notice.reason.value, cause, notice.incarnation), "", wid)
            except PeerUnreachableError:
                pass

        slot: Slot | None = self.system.slots.get(target)
        if slot is None:
            dead = self.system.dead_ref(str(target), f"#{target}", "no such actor")
            notify(Terminated(dead, ExitReason.NOPROC, None, 0))
            return
        channel.served[wid] = _noop
        remove = slot.add_watcher(notify)
        if wid in channel.served:  # not fired at once (the actor is not dead yet)
            channel.served[wid] = remove


def _noop() -> None:
    return None


def _exit_reason(value: Any) -> ExitReason:
    try:
        return ExitReason(value)
    except ValueError:
        return ExitReason.CRASHED
