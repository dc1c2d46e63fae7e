"""The in-memory transport: links between listeners and dialers of one process, through
bounded queues of whole messages. Frames still go through the codec and the handshake, so
it behaves like the websocket transport (values are copies, unpicklable messages fail at the
sender, a wrong token is refused), only without sockets. For tests and for systems that share
a process."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Any

from actorflow._errors import PeerUnreachableError, ProtocolError
from actorflow.runtime import OwnedTasks
from actorflow.transport.auth import HandshakeRefused, accept_handshake, dial_handshake
from actorflow.transport.base import (
    CLOSE_NORMAL,
    Carrier,
    Link,
    Listener,
    Transport,
)
from actorflow.transport.config import TransportConfig

__all__ = ["MemoryTransport"]

log = logging.getLogger("actorflow.transport")

_QUEUE_MESSAGES = 64  # messages in flight per direction before send() waits
_names = itertools.count(1)


class _Channel:
    """One direction of a pipe: a bounded FIFO that can be closed with a reason. Messages
    already queued are still delivered after the close, as a socket delivers data before
    its FIN."""

    def __init__(self) -> None:
        self._items: deque[bytes | str] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed: str | None = None

    def put_nowait(self, item: bytes | str) -> bool:
        """Append if there is room (True); False when full. Raises once closed."""
        if self.closed is not None:
            raise PeerUnreachableError(self.closed)
        if len(self._items) >= _QUEUE_MESSAGES:
            return False
        self._items.append(item)
        self._readable.set()
        return True

    async def put(self, item: bytes | str) -> None:
        while len(self._items) >= _QUEUE_MESSAGES and self.closed is None:
            self._writable.clear()
            await self._writable.wait()
        if self.closed is not None:
            raise PeerUnreachableError(self.closed)
        self._items.append(item)
        self._readable.set()

    async def get(self) -> bytes | str:
        while not self._items:
            if self.closed is not None:
                raise PeerUnreachableError(self.closed)
            self._readable.clear()
            await self._readable.wait()
        self._writable.set()
        return self._items.popleft()

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
        self._readable.set()
        self._writable.set()


class _MemoryCarrier(Carrier):
    def __init__(self, inbox: _Channel, outbox: _Channel, peer: str, max_frame: int) -> None:
        self._inbox, self._outbox = inbox, outbox
        self.peer = peer
        self._max_frame = max_frame

    async def send(self, data: bytes | memoryview) -> None:
        # A copy, as a socket makes: the sender may reuse its buffer afterwards.
        await self._outbox.put(bytes(data))

    def send_nowait(self, data: bytes | memoryview) -> Awaitable[None] | None:
        item = bytes(data)
        if self._outbox.put_nowait(item):
            return None
        return self._outbox.put(item)

    async def send_text(self, text: str) -> None:
        await self._outbox.put(text)

    async def receive(self) -> bytes | str:
        item = await self._inbox.get()
        if len(item) > self._max_frame:
            raise ProtocolError(
                f"{self.peer} sent a message of {len(item)} bytes; max_frame_size is "
                f"{self._max_frame}"
            )
        return item

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        self._outbox.close(f"{self.peer} closed the link (code {code})")
        self._inbox.close(f"link to {self.peer} was closed by this process")


class _MemoryListener(Listener):
    def __init__(
        self, transport: MemoryTransport, name: str, config: TransportConfig, hello: dict[str, Any]
    ) -> None:
        super().__init__()
        self._transport = transport
        self._name = name
        self._config = config
        self._hello = hello
        self.addresses = [f"mem://{name}"]
        self._handshakes = OwnedTasks(f"the listener {self.addresses[0]}", log)

    def _dial(self, server_side: _MemoryCarrier) -> None:
        self._handshakes.spawn(self._handshake(server_side),
                               f"actorflow handshake {self.addresses[0]}")

    async def _handshake(self, carrier: _MemoryCarrier) -> None:
        try:
            async with asyncio.timeout(self._config.handshake_timeout_s):
                peer = await accept_handshake(carrier, self._config, self._hello)
        except HandshakeRefused as exc:
            self._n_refused += 1
            log.warning("refused connection from %s: %s", carrier.peer, exc)
            return
        except (TimeoutError, PeerUnreachableError, ProtocolError) as exc:
            self._n_refused += 1
            log.warning("handshake with %s failed: %s", carrier.peer, exc or "timed out")
            await carrier.close()
            return
        link = Link(carrier, self._config, peer_hello=peer.hello, peer_max_frame=peer.max_frame)
        self._links = {known for known in self._links if not known.closed}
        self._arrived(link)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._transport._listeners.pop(self._name, None)
        await self._handshakes.close()
        await asyncio.gather(*(link.aclose() for link in self._links))
        self._stopped_accepting()


class MemoryTransport(Transport):
    """Listeners are named (``mem://NAME``) within one MemoryTransport instance."""

    def __init__(self) -> None:
        self._listeners: dict[str, _MemoryListener] = {}

    async def listen(self, config: TransportConfig, *, hello: dict[str, Any]) -> Listener:
        if config.token is None:
            raise ValueError("a listener needs a cluster token (TransportConfig.token)")
        name = f"listener-{next(_names)}"
        listener = _MemoryListener(self, name, config, hello)
        self._listeners[name] = listener
        return listener

    async def connect(
        self, address: str, config: TransportConfig, *, hello: dict[str, Any]
    ) -> Link:
        name = address.removeprefix("mem://")
        listener = self._listeners.get(name)
        if not address.startswith("mem://") or listener is None:
            raise PeerUnreachableError(f"nothing listens at {address}")
        up, down = _Channel(), _Channel()
        client = _MemoryCarrier(down, up, address, config.max_frame_size)
        server = _MemoryCarrier(
            up, down, f"mem-client-{next(_names)}", listener._config.max_frame_size
        )
        listener._dial(server)
        try:
            async with asyncio.timeout(config.handshake_timeout_s):
                peer = await dial_handshake(client, config, hello)
        except TimeoutError:
            await client.close()
            raise PeerUnreachableError(f"handshake with {address} timed out") from None
        except BaseException:
            await client.close()
            raise
        return Link(client, config, peer_hello=peer.hello, peer_max_frame=peer.max_frame)
