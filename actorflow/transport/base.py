"""The transport interface: a :class:`Transport` makes :class:`Listener` s and dials
:class:`Link` s; a link carries batches of messages both ways.

A link is the same object for every transport: it runs the codec over a :class:`Carrier`, the
small thing each transport implements (a websocket, or a pair of in-memory queues). So
batching, streaming, ordering and the handshake behave the same on all of them, and one
conformance suite (``tests/transport/test_conformance.py``) checks every transport.

Link lifecycle::

    OPEN     send() queues, receive() returns batches, drain() waits for room
    CLOSING  aclose() was called: send() raises, queued messages get close_timeout_s to leave
    CLOSED   the carrier is closed; send() and receive() raise PeerUnreachableError
             (or the ProtocolError that closed it), and so do they if the peer goes first
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from actorflow._errors import PeerUnreachableError, ProtocolError
from actorflow.transport.codec import BYTES_OVERHEAD, FLAT_LIMIT, INLINE_STR, Batch, Encoder
from actorflow.transport.config import TransportConfig
from actorflow.transport.decoder import Decoder

__all__ = [
    "Carrier",
    "Link",
    "LinkStatistics",
    "Listener",
    "ListenerStatistics",
    "Transport",
]

log = logging.getLogger("actorflow.transport")

#: Websocket close codes the transport uses.
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008  # authentication refused
CLOSE_TOO_BIG = 1009


class Carrier(abc.ABC):
    """A bidirectional pipe of whole messages, in order: what a transport must provide.

    ``receive`` returns ``bytes`` (binary) or ``str`` (text, used by the handshake only) and
    raises :class:`PeerUnreachableError` once the pipe is closed or lost, or
    :class:`ProtocolError` if the peer broke the framing (an oversized message). One task
    receives at a time; any task may send.
    """

    #: Who is at the other end, for logs and errors (an address, never a secret).
    peer: str = "?"

    @abc.abstractmethod
    async def send(self, data: bytes | memoryview) -> None: ...

    def send_nowait(self, data: bytes | memoryview) -> Awaitable[None] | None:
        """Send without awaiting when the pipe has room (return None); otherwise return an
        awaitable that completes the send. The default always returns ``send(data)``."""
        return self.send(data)

    @abc.abstractmethod
    async def send_text(self, text: str) -> None: ...

    @abc.abstractmethod
    async def receive(self) -> bytes | str: ...

    @abc.abstractmethod
    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close the pipe; never raises, never waits longer than the config's close timeout."""


@dataclass(frozen=True, slots=True)
class LinkStatistics:
    """A snapshot of one link's counters."""

    messages_sent: int
    messages_received: int
    frames_sent: int
    frames_received: int
    bytes_sent: int
    bytes_received: int
    queued_messages: int
    queued_bytes: int
    open_streams_in: int
    closed: bool


@dataclass(frozen=True, slots=True)
class ListenerStatistics:
    """A snapshot of one listener's counters."""

    accepted: int
    refused: int
    open_connections: int


class Link:
    """An authenticated link to one peer. Made by :meth:`Transport.connect` or
    :meth:`Listener.accept`, never directly by users.

    ``send`` never awaits: it queues the message, and the link's writer (a callback at the
    next loop turn) sends everything queued in the turn as one frame. ``receive`` returns the
    next batch of messages (a :class:`Batch` of ``(kind, target, sender, cid, value)``). The
    owner must call :meth:`aclose`.
    """

    def __init__(
        self,
        carrier: Carrier,
        config: TransportConfig,
        *,
        peer_hello: dict[str, Any],
        peer_max_frame: int,
    ) -> None:
        self.peer = carrier.peer
        #: What the peer said about itself during the handshake.
        self.peer_hello = peer_hello
        self._carrier = carrier
        self._config = config
        self._enc = Encoder(
            batch_bytes=config.batch_bytes,
            stream_threshold=config.stream_threshold,
            chunk_size=config.chunk_size,
            max_frame_size=peer_max_frame,
            high_water=config.high_water_bytes,
        )
        self._dec = Decoder(max_message_size=config.max_message_size)
        self._error: BaseException | None = None  # why the link is closing or closed
        self._loop = asyncio.get_running_loop()
        # The writer is a loop callback, scheduled by the first send of a turn: it hands
        # everything queued to the carrier, synchronously while the carrier takes it. When
        # the carrier is full, a task owned by the link finishes that send and flushes on.
        self._scheduled = False  # a flush callback is pending
        self._out: deque[bytes | memoryview] = deque()  # cut into messages, not yet sent
        self._blocked: asyncio.Task[None] | None = None  # finishing a send the carrier held
        self._room_waiters: list[asyncio.Future[None]] = []  # drain() while over high water
        self._idle_waiters: list[asyncio.Future[None]] = []  # aclose() while flushing
        self._closed = asyncio.Event()
        self._frames_sent = self._bytes_sent = 0
        self._frames_received = self._bytes_received = self._messages_received = 0

    # ------------------------------------------------------------------ sending
    def send(self, kind: int, target: str, value: Any, sender: str = "", cid: int = 0) -> None:
        """Queue one message; never awaits.

        ``target`` and ``sender`` must be ``str``. Raises :class:`SerializationError` (the
        value cannot be pickled) or :class:`PeerUnreachableError` (the link is closed). A large
        out-of-band buffer (a numpy array) is read when it goes out, not copied now: do not
        mutate it until the receiver has it.
        """
        if not self._scheduled:  # the first send of this turn: schedule the writer
            if self._error is not None:
                raise self._closed_error()
            self._scheduled = True
            self._loop.call_soon(self._flush)
        enc = self._enc
        t = type(value)
        if t is bytes and (size := enc.size + len(value) + BYTES_OVERHEAD) < enc.fast_limit:
            enc.size = size
            flat = enc.flat
            flat += (kind, target, sender, cid, value)
        elif t is int or t is bool or value is None or (t is str and len(value) <= INLINE_STR):
            flat = enc.flat
            flat += (kind, target, sender, cid, value)
            if len(flat) >= FLAT_LIMIT:
                enc.seal()
        else:
            enc.add(kind, target, sender, cid, value)

    def flush_soon(self) -> None:
        """Schedule the writer now, behind the callbacks already queued: a reader that has
        just woken actors with asks calls this, so their replies leave in the same turn."""
        if not self._scheduled and self._error is None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    async def drain(self) -> None:
        """Wait until the link's backlog is under ``high_water_bytes`` (push-back for fast
        producers). Raises :class:`PeerUnreachableError` if the link closes meanwhile."""
        while self._enc.over and self._error is None:
            fut = self._loop.create_future()
            self._room_waiters.append(fut)
            await fut
        if self._error is not None:
            raise self._closed_error()

    def _flush(self) -> None:
        """Hand everything queued to the carrier (a loop callback; never raises)."""
        self._scheduled = False
        if self._blocked is not None or self._closed.is_set():
            return
        enc, out, carrier = self._enc, self._out, self._carrier
        try:
            while True:
                data: bytes | memoryview | None = None
                if out:
                    data = out.popleft()
                else:
                    data = enc.next_frame()
                    if data is None:
                        if not enc.has_output():
                            break
                        out.extend(enc.next_output())
                        data = out.popleft()
                waiter = carrier.send_nowait(data)
                self._frames_sent += 1
                self._bytes_sent += len(data)
                if waiter is not None:  # the carrier is full: a task finishes this send
                    self._blocked = self._loop.create_task(
                        self._finish_send(waiter), name=f"actorflow link writer to {self.peer}"
                    )
                    return
        except (PeerUnreachableError, ProtocolError) as exc:
            self._fail(exc)
            return
        except Exception as exc:  # a bug: say so, and close rather than hang the peer
            log.exception("link writer to %s failed", self.peer)
            self._fail(PeerUnreachableError(f"link to {self.peer} failed: {exc!r}"))
            return
        if self._room_waiters and not enc.over:
            _wake(self._room_waiters)
        if self._idle_waiters:
            _wake(self._idle_waiters)

    async def _finish_send(self, waiter: Awaitable[None]) -> None:
        try:
            await waiter
        except (PeerUnreachableError, ProtocolError) as exc:
            self._fail(exc)
            return
        except Exception as exc:
            log.exception("link writer to %s failed", self.peer)
            self._fail(PeerUnreachableError(f"link to {self.peer} failed: {exc!r}"))
            return
        finally:
            self._blocked = None
        self._flush()

    # ------------------------------------------------------------------ receiving
    async def receive(self) -> Batch:
        """The next batch of messages from the peer, in order.

        Raises :class:`PeerUnreachableError` when the link is closed or lost and
        :class:`ProtocolError` when the peer sent a malformed frame (the link is then closed).
        One task receives at a time."""
        dec, carrier = self._dec, self._carrier
        while True:
            if self._error is not None and self._closed.is_set():
                raise self._closed_error()
            try:
                data = await carrier.receive()
                if type(data) is not bytes:
                    raise ProtocolError("text message after the handshake")
                batch = dec.decode(data)
            except ProtocolError as exc:
                log.warning("closing link to %s: %s", self.peer, exc)
                self._fail(exc)
                await carrier.close(CLOSE_PROTOCOL_ERROR, "protocol error")
                raise
            except PeerUnreachableError as exc:
                self._fail(exc)
                raise
            self._frames_received += 1
            self._bytes_received += len(data)
            count = len(batch)
            if count:
                self._messages_received += count
                return batch

    # ------------------------------------------------------------------ closing
    @property
    def closed(self) -> bool:
        """True once the link is closing or closed."""
        return self._error is not None

    async def wait_closed(self) -> None:
        """Return once the link is closed (by either side)."""
        await self._closed.wait()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._scheduled = False  # so that the next send() sees the error
        if self._blocked is not None:
            self._blocked.cancel()
        _wake(self._room_waiters)  # drain() waiters raise
        _wake(self._idle_waiters)
        self._closed.set()

    def _closed_error(self) -> BaseException:
        exc = self._error
        if isinstance(exc, PeerUnreachableError | ProtocolError):
            return exc
        return PeerUnreachableError(f"link to {self.peer} is closed")

    def _flushing(self) -> bool:
        return bool(self._scheduled or self._blocked or self._out or self._enc.has_output())

    async def aclose(self) -> None:
        """Close the link: queued messages get ``close_timeout_s`` to leave, then the carrier
        is closed. Idempotent; safe to call after the peer went away."""
        if self._error is None:
            self._error = PeerUnreachableError(f"link to {self.peer} was closed by this process")
            self._scheduled = False  # so that the next send() sees the error
            try:
                async with asyncio.timeout(self._config.close_timeout_s):
                    while self._flushing() and not self._closed.is_set():
                        fut = self._loop.create_future()
                        self._idle_waiters.append(fut)
                        await fut
            except TimeoutError:
                log.warning("link to %s closed with messages still queued", self.peer)
        blocked = self._blocked
        self._fail(self._error)
        if blocked is not None:
            await asyncio.wait([blocked])
        await self._carrier.close(CLOSE_NORMAL, "closed")

    # ------------------------------------------------------------------ introspection
    def statistics(self) -> LinkStatistics:
        enc = self._enc
        return LinkStatistics(
            messages_sent=enc.sent_messages,
            messages_received=self._messages_received,
            frames_sent=self._frames_sent,
            frames_received=self._frames_received,
            bytes_sent=self._bytes_sent,
            bytes_received=self._bytes_received,
            queued_messages=enc.pending_messages(),
            queued_bytes=enc.queued_bytes,
            open_streams_in=self._dec.open_streams,
            closed=self._error is not None,
        )

    def __repr__(self) -> str:
        state = "closed" if self._error is not None else "open"
        return f"<Link to {self.peer} {state}>"


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_result(None)
    waiters.clear()


class Listener(abc.ABC):
    """Accepts authenticated links. Every connection passes the handshake of
    :mod:`actorflow.transport.auth` before :meth:`accept` sees it."""

    #: Where peers can dial this listener (``ws://...``, ``ws+unix://...``, ``mem://...``).
    addresses: list[str]

    def __init__(self) -> None:
        self._accepted: asyncio.Queue[Link | None] = asyncio.Queue()  # None: closed
        self._links: set[Link] = set()  # those accepted (the closed ones pruned now and then)
        self._closed = False
        self._n_accepted = self._n_refused = 0

    def _arrived(self, link: Link) -> None:
        """``link`` passed the handshake: :meth:`accept` hands it out."""
        self._links.add(link)
        self._n_accepted += 1
        self._accepted.put_nowait(link)

    def _stopped_accepting(self) -> None:
        """Closed: whoever waits in :meth:`accept`, and whoever calls it later, hears so."""
        self._accepted.put_nowait(None)

    async def accept(self) -> Link:
        """The next authenticated link. The caller owns it (and must ``aclose`` it).
        Raises :class:`PeerUnreachableError` once the listener is closed."""
        link = None if self._closed else await self._accepted.get()
        if link is None:
            self._accepted.put_nowait(None)  # for the next waiter
            raise PeerUnreachableError(f"listener {self.addresses[0]} is closed")
        return link

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop listening and close every link this listener accepted."""

    def statistics(self) -> ListenerStatistics:
        open_links = sum(1 for link in self._links if not link.closed)
        return ListenerStatistics(self._n_accepted, self._n_refused, open_links)

    def offer(self, buffers: Sequence[Any]) -> str | None:
        """A one-time ticket under which a peer that got it over a link may pull the bytes of
        ``buffers`` outside the link (see :mod:`actorflow.transport.bulk`); None when this
        transport has no bulk pulls (the bytes must then travel in a message)."""
        return None

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Transport(abc.ABC):
    """Makes listeners and dials links. ``hello`` is a small JSON-able dict each side gives
    the other during the handshake (``Link.peer_hello``), e.g. its node id."""

    @abc.abstractmethod
    async def listen(self, config: TransportConfig, *, hello: dict[str, Any]) -> Listener: ...

    @abc.abstractmethod
    async def connect(
        self, address: str, config: TransportConfig, *, hello: dict[str, Any]
    ) -> Link:
        """Dial ``address`` and authenticate. Raises :class:`AuthenticationError` (token
        refused, or the server does not know it), :class:`ProtocolError` (another protocol
        version, or not an actorflow server) or :class:`PeerUnreachableError`."""

    async def pull(
        self, address: str, ticket: str, dest: memoryview, config: TransportConfig
    ) -> None:
        """Fill ``dest`` with the bytes a listener at ``address`` offered under ``ticket``
        (:meth:`Listener.offer`). Raises :class:`PeerUnreachableError` or
        :class:`ProtocolError`; this default, for transports without bulk pulls, always
        raises the former."""
        raise PeerUnreachableError(f"{type(self).__name__} cannot pull from {address}")
