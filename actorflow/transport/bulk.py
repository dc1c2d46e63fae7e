"""Bulk pulls: large byte ranges moved between processes outside the links' frames.

A link carries a large message as 1 MiB websocket frames that the receiver's aiohttp reader
gathers, slices and joins: three copies in user space, on the receiving loop, before the
bytes are where they belong (measured on 2 cores: about 1.6 ms of the receiver's CPU per MiB;
the sender stays mostly idle). A bulk pull moves the bytes with the kernel's copy alone: the
receiver reads them straight into their destination buffer (an :class:`asyncio.BufferedProtocol`
whose buffer *is* the destination).

The protocol rides on the listener's HTTP server, so it needs no port, no TLS setup and no
authentication of its own:

1. The holder (say a node, asked over an authenticated link for a segment) calls
   :meth:`BulkOffers.offer` with the buffers to hand out and sends back the **ticket** (32
   random bytes, URL-safe) over that link. A ticket is good for one pull, within
   ``ttl_s`` (default :data:`TICKET_TTL_S`); the offer keeps the buffers alive until then.
2. The receiver calls :func:`pull` with the holder's address, the ticket and a writable buffer
   of the announced size: one HTTP/1.1 ``GET /actorflow/bulk/<ticket>`` on a connection of its
   own (the unix socket for a same-host listener, TLS for ``wss://``). The answer is ``200``
   with ``Content-Length`` = the size and the raw bytes, or ``404`` for an unknown, used or
   expired ticket (nothing is served twice).

Knowing a ticket is the authority to read its bytes, once: it only ever travels over an
authenticated link. A pull that makes no progress for ``peer_timeout_s`` fails, as a silent
link would.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import logging
import secrets
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from actorflow._errors import PeerUnreachableError, ProtocolError
from actorflow.transport.config import TransportConfig

__all__ = ["BULK_PATH", "TICKET_TTL_S", "BulkConnectError", "BulkOffers", "pull"]

log = logging.getLogger("actorflow.transport")

#: Where a listener serves bulk pulls: ``GET BULK_PATH/<ticket>``.
BULK_PATH = "/actorflow/bulk"
#: How long an offer waits for its pull by default.
TICKET_TTL_S = 60.0
#: Largest piece handed to the socket at once (the writer drains between pieces).
_WRITE_STEP = 4 * 1024 * 1024
#: Largest response head a puller reads before the bytes.
_HEAD_MAX = 16 * 1024
_REFUSED_HEADER = "X-Actorflow-Refused"


class BulkConnectError(PeerUnreachableError):
    """A bulk pull found nothing to connect to at its address (nothing was pulled)."""


class BulkOffers:
    """The offers of one listener: ticket -> the buffers it hands out, each until it is pulled
    or its time runs out (a timer of this object, cancelled by :meth:`close`)."""

    def __init__(self) -> None:
        self._offers: dict[str, tuple[list[memoryview], asyncio.TimerHandle]] = {}
        self._closed = False
        self.served = 0  # pulls answered in full
        self.bytes_served = 0
        self.abandoned = 0  # pulls whose puller left before the end

    def __len__(self) -> int:
        return len(self._offers)

    def offer(self, buffers: Sequence[Any], ttl_s: float = TICKET_TTL_S) -> str:
        """A one-time ticket for the bytes of ``buffers`` (buffer objects, read when pulled:
        do not change them meanwhile)."""
        if self._closed:
            raise PeerUnreachableError("the listener is closed: it offers nothing")
        views = [memoryview(b).cast("B") for b in buffers]
        ticket = secrets.token_urlsafe(32)
        timer = asyncio.get_running_loop().call_later(ttl_s, self._expire, ticket)
        self._offers[ticket] = (views, timer)
        return ticket

    def take(self, ticket: str) -> list[memoryview] | None:
        """The buffers of ``ticket``, which is then used up; None when there is no such offer."""
        entry = self._offers.pop(ticket, None)
        if entry is None:
            return None
        entry[1].cancel()
        return entry[0]

    def _expire(self, ticket: str) -> None:
        if self._offers.pop(ticket, None) is not None:
            log.debug("a bulk offer expired unpulled")

    def close(self) -> None:
        self._closed = True
        for _, timer in self._offers.values():
            timer.cancel()
        self._offers.clear()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The listener's ``GET BULK_PATH/{ticket}`` handler."""
        views = self.take(request.match_info["ticket"])
        if views is None:
            why = "unknown, used or expired bulk ticket"
            return web.Response(status=404, text=why, headers={_REFUSED_HEADER: why})
        size = sum(v.nbytes for v in views)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        sent = 0
        try:
            await response.prepare(request)
            for view in views:
                for start in range(0, view.nbytes, _WRITE_STEP):
                    piece = view[start : start + _WRITE_STEP]
                    await response.write(piece)
                    sent += piece.nbytes
            await response.write_eof()
        except ConnectionError:  # the puller went away (it failed or gave up): its business
            self.abandoned += 1
            log.debug("a bulk pull was abandoned after %d of %d bytes", sent, size)
            return response
        self.served += 1
        self.bytes_served += size
        return response


class _Puller(asyncio.BufferedProtocol):
    """Reads one bulk response: its head into a small buffer, then the bytes straight into
    the destination."""

    def __init__(self, request: bytes, dest: memoryview, done: asyncio.Future[None]) -> None:
        self._request = request
        self._dest = dest
        self._done = done
        self._head = bytearray(_HEAD_MAX)
        self._head_len = 0
        self._in_head = True
        self.received = 0
        self._transport: asyncio.BaseTransport | None = None
        self._scratch = bytearray(1)  # a buffer for bytes past the end (then a failure)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        transport.write(self._request)  # type: ignore[attr-defined]

    def get_buffer(self, sizehint: int) -> memoryview | bytearray:
        if self._in_head and self._head_len < _HEAD_MAX:
            return memoryview(self._head)[self._head_len :]
        if self.received < len(self._dest):
            return self._dest[self.received :]
        return self._scratch

    def buffer_updated(self, nbytes: int) -> None:
        if self._done.done():
            return
        if not self._in_head or self._head_len == _HEAD_MAX:
            if self._in_head or self.received >= len(self._dest):
                self._fail(ProtocolError("the bulk response runs past its Content-Length"))
                return
            self.received += nbytes
        else:
            self._head_len += nbytes
            end = self._head.find(b"\r\n\r\n", 0, self._head_len)
            if end < 0:
                if self._head_len == _HEAD_MAX:
                    self._fail(ProtocolError("the bulk response head is too large"))
                return
            try:
                self._check_head(bytes(self._head[:end]))
            except (PeerUnreachableError, ProtocolError) as exc:
                self._fail(exc)
                return
            self._in_head = False
            early = self._head[end + 4 : self._head_len]  # the first bytes came with the head
            if len(early) > len(self._dest):
                self._fail(ProtocolError("the bulk response runs past its Content-Length"))
                return
            self._dest[: len(early)] = early
            self.received = len(early)
            self._head = bytearray()
        if self.received == len(self._dest):
            self._done.set_result(None)
            assert self._transport is not None
            self._transport.close()

    def _check_head(self, head: bytes) -> None:
        status_line, _, rest = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP response: {status_line[:80]!r}")
        headers = http.client.parse_headers(io.BytesIO(rest + b"\r\n\r\n"))
        status = int(parts[1])
        if status != 200:
            why = headers.get(_REFUSED_HEADER) or parts[2].decode("latin-1", "replace")
            raise PeerUnreachableError(f"the bulk pull was refused (HTTP {status}: {why})")
        length = headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) != len(self._dest):
            raise ProtocolError(
                f"the bulk response announces {length!r} bytes; {len(self._dest)} were offered")

    def _fail(self, exc: BaseException) -> None:
        if not self._done.done():
            self._done.set_exception(exc)
        if self._transport is not None:
            self._transport.close()

    def eof_received(self) -> bool:
        self._fail(PeerUnreachableError(
            f"the holder closed the bulk pull after {self.received} of {len(self._dest)} bytes"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(PeerUnreachableError(
            f"the bulk pull's connection was lost after {self.received} of "
            f"{len(self._dest)} bytes" + (f": {exc}" if exc else "")))


async def pull(address: str, ticket: str, dest: memoryview, config: TransportConfig) -> None:
    """Fill ``dest`` (writable, exactly the offered size) with the bytes offered under
    ``ticket`` by the listener at ``address`` (``ws://``, ``wss://`` or ``ws+unix://``).

    Raises :class:`PeerUnreachableError` (cannot connect, refused: the ticket is unknown, used
    or expired; lost, or no progress for ``peer_timeout_s``) or :class:`ProtocolError` (the
    answer is not what was offered)."""
    dest = dest.cast("B") if dest.format != "B" or dest.ndim != 1 else dest
    if dest.readonly:
        raise ValueError("the destination of a bulk pull must be writable")
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    host, port = "localhost", 0
    if not address.startswith("ws+unix://"):
        parts = urlsplit(address)
        if parts.scheme not in ("ws", "wss") or parts.hostname is None or parts.port is None:
            raise ValueError(f"not a listener address: {address!r}")
        host, port = parts.hostname, parts.port
    request = (f"GET {BULK_PATH}/{ticket} HTTP/1.1\r\nHost: {host}\r\n"
               "Connection: close\r\n\r\n").encode()
    puller = _Puller(request, dest, done)
    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(config.connect_timeout_s):
            if address.startswith("ws+unix://"):
                transport, _ = await loop.create_unix_connection(
                    lambda: puller, address.removeprefix("ws+unix://"))
            else:
                context: ssl.SSLContext | None = None
                if address.startswith("wss://"):
                    context = config.client_ssl or ssl.create_default_context()
                transport, _ = await loop.create_connection(
                    lambda: puller, host, port, ssl=context,
                    server_hostname=host if context is not None else None)
    except (OSError, TimeoutError) as exc:
        raise BulkConnectError(
            f"cannot reach {address} for a bulk pull: {exc or 'connect_timeout_s passed'}"
        ) from None
    try:
        seen = -1
        while not done.done():
            # no progress for a whole peer_timeout_s: the holder is gone or stuck
            await asyncio.wait([done], timeout=config.peer_timeout_s)
            if not done.done():
                if puller.received == seen:
                    raise PeerUnreachableError(
                        f"the bulk pull from {address} made no progress for "
                        f"{config.peer_timeout_s} s ({puller.received} of {len(dest)} bytes)")
                seen = puller.received
        done.result()
    finally:
        if not done.done():
            done.cancel()  # (so that closing below fails nothing that is not awaited)
        transport.close()
