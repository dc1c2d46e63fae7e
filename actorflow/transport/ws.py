"""The websocket transport (aiohttp): one HTTP server per listener, on TCP (optionally TLS)
and optionally on a unix socket, serving websocket upgrades at ``/actorflow`` and the bulk
pulls of :mod:`actorflow.transport.bulk` at ``/actorflow/bulk/<ticket>``.

Every connection passes, in order: the per-peer connection cap, the HTTP upgrade (aiohttp
closes a connection that sends no request within ``handshake_timeout_s``), and the token
handshake of :mod:`actorflow.transport.auth` (bounded by the same timeout), before a
:class:`Link` exists for it. Messages are never compressed; the largest accepted websocket
message is ``max_frame_size``. A peer whose process dies is lost at once (its kernel closes
the connection); one whose machine is silent past ``peer_timeout_s`` is lost by TCP keepalive;
a peer whose event loop is merely busy is never lost (see :class:`_WSCarrier`).

Addresses: ``ws://HOST:PORT``, ``wss://HOST:PORT`` (TLS) and ``ws+unix:///PATH``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import socket
import stat
from collections import Counter
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType, web

from actorflow._errors import PeerUnreachableError, ProtocolError
from actorflow.transport.auth import HandshakeRefused, accept_handshake, dial_handshake
from actorflow.transport.base import (
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    Carrier,
    Link,
    Listener,
    ListenerStatistics,
    Transport,
)
from actorflow.transport.bulk import BULK_PATH, BulkOffers
from actorflow.transport.bulk import pull as bulk_pull
from actorflow.transport.config import TransportConfig
from actorflow.transport.liveness import SocketLock, lock_socket, socket_dir

__all__ = ["WebSocketTransport", "auto_unix_path", "parse_address", "same_host_unix"]

log = logging.getLogger("actorflow.transport")

PATH = "/actorflow"
_REFUSED_HEADER = "X-Actorflow-Refused"
_UNIX_PEER = "unix socket"


def parse_address(address: str) -> tuple[str, str, str | None]:
    """``(url, printable peer, unix path or None)`` for a websocket address."""
    if address.startswith("ws+unix://"):
        path = address.removeprefix("ws+unix://")
        if not path.startswith("/"):
            raise ValueError(f"unix socket address must be absolute: {address!r}")
        return f"http://localhost{PATH}", address, path
    if address.startswith(("ws://", "wss://")):
        base = address.rstrip("/")
        return base + PATH if not base.endswith(PATH) else base, address, None
    raise ValueError(
        f"not a websocket address: {address!r} (expected ws://HOST:PORT, wss://HOST:PORT or "
        "ws+unix:///PATH)"
    )


class _WSCarrier(Carrier):
    """A websocket as a carrier. Its liveness is the kernel's, not the event loop's.

    A peer's event loop may be busy for a long time (user code that blocks, a large copy): it
    must not be declared lost for that, so nothing here waits for the peer's loop to answer.
    What tells a dead peer from a busy one is the peer's kernel, which answers for the
    process whatever its loop does:

    - the peer's process died: its kernel closes the connection (FIN or RST), and the pending
      receive ends at once, on a unix socket or over the network;
    - the peer is silent (a partition, a frozen or powered-off machine): TCP keepalive probes
      an idle connection, and ``TCP_USER_TIMEOUT`` bounds how long sent data may go
      unacknowledged; both are set from ``peer_timeout_s``, so the kernel ends the
      connection about ``peer_timeout_s`` after the peer's machine last answered, and the
      receive raises :class:`PeerUnreachableError` saying so.

    A unix-socket peer shares this machine: only its death can end the link.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        peer: str,
        config: TransportConfig,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._ws = ws
        self.peer = peer
        self._config = config
        self._session = session
        sock = ws.get_extra_info("socket")
        if sock is not None:
            _keepalive(sock, config.peer_timeout_s)

    async def send(self, data: bytes | memoryview) -> None:
        try:
            await self._ws.send_bytes(data)  # type: ignore[arg-type]  # takes any buffer
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise PeerUnreachableError(f"link to {self.peer} is lost: {exc}") from None

    def send_nowait(self, data: bytes | memoryview) -> Awaitable[None] | None:
        # aiohttp's send_bytes completes without suspending unless the socket's buffer is
        # full; run its first step here, and hand back the rest only when it suspended.
        coro = self._ws.send_bytes(data)  # type: ignore[arg-type]  # takes any buffer
        try:
            yielded = coro.send(None)
        except StopIteration:
            return None
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise PeerUnreachableError(f"link to {self.peer} is lost: {exc}") from None
        return self._resume(coro, yielded)

    async def _resume(self, coro: Coroutine[Any, Any, None], yielded: Any) -> None:
        """Drive a suspended send to its end, as a task drives a coroutine: wait for what it
        waits on, then resume it (it reads the outcome itself)."""
        try:
            while True:
                if yielded is None:
                    await asyncio.sleep(0)
                else:
                    try:
                        await asyncio.shield(yielded)
                    except asyncio.CancelledError:
                        if not yielded.cancelled():
                            raise  # we were cancelled, not what it waits on
                    except Exception:
                        pass  # the coroutine sees the outcome when resumed
                yielded = coro.send(None)
        except StopIteration:
            return
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise PeerUnreachableError(f"link to {self.peer} is lost: {exc}") from None
        finally:
            coro.close()

    async def send_text(self, text: str) -> None:
        try:
            await self._ws.send_str(text)
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise PeerUnreachableError(f"link to {self.peer} is lost: {exc}") from None

    async def receive(self) -> bytes | str:
        ws = self._ws
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is WSMsgType.BINARY or kind is WSMsgType.TEXT:
                return msg.data  # type: ignore[no-any-return]
            if kind is WSMsgType.PING:
                try:
                    await ws.pong(msg.data)
                except (ConnectionError, aiohttp.ClientError, RuntimeError):
                    pass  # the connection is going: the next receive says so
                continue
            if kind is not WSMsgType.PONG:
                break
        if kind is WSMsgType.ERROR:
            exc = msg.data
            if isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT:
                raise PeerUnreachableError(
                    f"{self.peer} did not answer for {self._config.peer_timeout_s} s "
                    "(peer_timeout_s): it is lost")
            if isinstance(exc, aiohttp.WebSocketError) and exc.code == CLOSE_TOO_BIG:
                raise ProtocolError(
                    f"{self.peer} sent a message larger than max_frame_size "
                    f"({self._config.max_frame_size} bytes)"
                )
            raise PeerUnreachableError(f"link to {self.peer} is lost: {exc!r}")
        code = self._ws.close_code
        raise PeerUnreachableError(f"{self.peer} closed the link (code {code})")

    async def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        try:
            async with asyncio.timeout(self._config.close_timeout_s):
                await self._ws.close(code=code, message=reason.encode()[:120])
        except (TimeoutError, ConnectionError, aiohttp.ClientError, RuntimeError):
            pass
        finally:
            if self._session is not None:
                await self._session.close()


def _keepalive(sock: socket.socket, peer_timeout_s: float) -> None:
    """Have the kernel end a TCP connection whose peer's machine stays silent for about
    ``peer_timeout_s``: keepalive probes after half of it idle, then one a second or so, and
    sent data unacknowledged for ``peer_timeout_s`` (TCP_USER_TIMEOUT). Not for unix sockets
    (a peer on this machine cannot go silent while alive), nor for an infinite timeout."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not math.isfinite(
            peer_timeout_s):
        return
    idle = max(1, int(peer_timeout_s / 2))
    interval = max(1, int(peer_timeout_s / 8))
    count = max(1, math.ceil((peer_timeout_s - idle) / interval))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; macOS has only the idle time
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                            int(peer_timeout_s * 1000))
    except OSError as exc:  # a socket that does not take them: liveness by close only
        log.debug("keepalive not set on a link: %s", exc)


def _refusal(status: int, why: str) -> web.Response:
    return web.Response(status=status, text=why, headers={_REFUSED_HEADER: why})


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def auto_unix_path(host: str | None, port: int) -> str | None:
    """The unix socket a listener on loopback ``port`` also serves (``unix_path="auto"``):
    ``<tmp>/actorflow-<uid>/<port>.sock``, in a directory only this user may enter. None
    when ``host`` is not loopback or that directory cannot be made safely."""
    if host not in _LOOPBACK:
        return None
    directory = socket_dir()
    return os.path.join(directory, f"{port}.sock") if directory is not None else None


def same_host_unix(address: str) -> str | None:
    """The ``ws+unix://`` address a loopback ``ws://`` address's listener also serves, if
    it was started with ``unix_path="auto"`` by this user."""
    if not address.startswith("ws://"):
        return None
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        return None
    if port is None:
        return None
    path = auto_unix_path(parts.hostname, port)
    return f"ws+unix://{path}" if path is not None else None


def _remove_stale_socket(path: str) -> None:
    """Remove a unix socket left by a dead process (we hold its lock: no live listener of
    ours has it); refuse to touch anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"unix_path {path!r} exists and is not a socket")
    os.unlink(path)


def _peer_name(request: web.Request) -> str:
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return request.remote or _UNIX_PEER


class _WebSocketListener(Listener):
    def __init__(self, config: TransportConfig, hello: dict[str, Any]) -> None:
        super().__init__()
        self._config = config
        self._hello = hello
        self.addresses = []
        self._runner: web.AppRunner | None = None
        self._unix_path: str | None = None
        self._unix_lock: SocketLock | None = None
        self._per_peer: Counter[str] = Counter()
        self._bulk = BulkOffers()

    def offer(self, buffers: Sequence[Any]) -> str | None:
        return self._bulk.offer(buffers)

    async def _start(self) -> None:
        config = self._config
        app = web.Application()
        app.router.add_get(PATH, self._handle)
        app.router.add_get(BULK_PATH + "/{ticket}", self._bulk.handle)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            # Also closes connections that never send their HTTP request.
            keepalive_timeout=config.handshake_timeout_s,
            shutdown_timeout=config.close_timeout_s,
        )
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, config.host, config.port, ssl_context=config.server_ssl)
            await site.start()
            host, port = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
            if config.host not in ("", "0.0.0.0", "::"):
                host = config.host  # the name peers dial (and a TLS certificate names)
            scheme = "wss" if config.server_ssl is not None else "ws"
            shown = f"[{host}]" if ":" in host else host
            self.addresses.append(f"{scheme}://{shown}:{port}")
            path = config.unix_path
            if path == "auto":
                path = auto_unix_path(config.host, port) if config.server_ssl is None else None
            if path is not None and await self._lock_unix(path, auto=config.unix_path == "auto"):
                _remove_stale_socket(path)
                unix = web.UnixSite(runner, path)
                await unix.start()
                self._unix_path = path
                if self._unix_lock is not None:
                    self._unix_lock.bound = True
                os.chmod(path, 0o600)
                self.addresses.append(f"ws+unix://{path}")
        except BaseException:
            await runner.cleanup()
            self._release_unix()
            raise

    async def _lock_unix(self, path: str, *, auto: bool) -> bool:
        """Take the liveness lock of the unix socket about to be bound at ``path``
        (``actorflow/transport/liveness.py``: held while we listen, so no sweeper removes it).
        False, for ``"auto"``, when a live listener holds it (serve TCP only); for a path
        given, that raises. Where no lock file can be made, the socket is served unguarded."""
        for _ in range(20):  # a sweeper holds it for microseconds
            try:
                self._unix_lock = lock_socket(path)
            except OSError as exc:
                log.debug("no liveness lock for %s (%s): serving it unguarded", path, exc)
                return True
            if self._unix_lock is not None:
                return True
            await asyncio.sleep(0.01)
        if not auto:
            raise FileExistsError(errno.EADDRINUSE, "a live process listens on unix_path", path)
        log.warning("a live process listens on %s: serving TCP only", path)
        return False

    def _release_unix(self) -> None:
        """Unlink our unix socket (if we bound it) and let its lock go."""
        lock, self._unix_lock = self._unix_lock, None
        if lock is not None:
            lock.release()
        elif self._unix_path is not None:
            try:
                os.unlink(self._unix_path)
            except FileNotFoundError:
                pass

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        config = self._config
        peer_key = request.remote or _UNIX_PEER
        peer = _peer_name(request)
        if self._closed:
            return _refusal(503, "the listener is shutting down")
        if peer_key != _UNIX_PEER and self._per_peer[peer_key] >= config.max_connections_per_peer:
            self._n_refused += 1
            log.warning(
                "refused connection from %s: it already holds %d connections "
                "(max_connections_per_peer)",
                peer_key,
                config.max_connections_per_peer,
            )
            return _refusal(503, "too many connections from this host (max_connections_per_peer)")
        ws = web.WebSocketResponse(
            max_msg_size=config.max_frame_size,
            compress=False,
            autoping=False,  # the carrier answers pings and keeps its own liveness check
            timeout=config.close_timeout_s,
        )
        if not ws.can_prepare(request).ok:
            self._n_refused += 1
            log.warning("refused request from %s: not a websocket upgrade", peer_key)
            return _refusal(400, "expected a websocket upgrade")
        self._per_peer[peer_key] += 1
        try:
            try:
                await ws.prepare(request)
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                # the dialer went away before the upgrade was answered (it exited, or gave up)
                log.debug("connection from %s closed before its upgrade", peer)
                return ws
            carrier = _WSCarrier(ws, peer, config)
            try:
                async with asyncio.timeout(config.handshake_timeout_s):
                    hello = await accept_handshake(carrier, config, self._hello)
            except HandshakeRefused as exc:
                self._n_refused += 1
                log.warning("refused connection from %s: %s", peer, exc)
                return ws
            except (TimeoutError, PeerUnreachableError, ProtocolError) as exc:
                self._n_refused += 1
                log.warning(
                    "handshake with %s failed: %s", peer, exc or "handshake_timeout_s passed"
                )
                await carrier.close()
                return ws
            link = Link(carrier, config, peer_hello=hello.hello, peer_max_frame=hello.max_frame)
            self._arrived(link)
            try:
                await link.wait_closed()  # the connection lives while this handler runs
            finally:
                self._links.discard(link)
            return ws
        finally:
            self._per_peer[peer_key] -= 1
            if not self._per_peer[peer_key]:
                del self._per_peer[peer_key]

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._bulk.close()
        await asyncio.gather(*(link.aclose() for link in list(self._links)))
        while not self._accepted.empty():
            left = self._accepted.get_nowait()
            if left is not None:
                await left.aclose()
        self._stopped_accepting()
        if self._runner is not None:
            await self._runner.cleanup()
        self._release_unix()

    def statistics(self) -> ListenerStatistics:  # (connections in their handshake count too)
        return ListenerStatistics(self._n_accepted, self._n_refused, sum(self._per_peer.values()))


class WebSocketTransport(Transport):
    """Links over aiohttp websockets."""

    async def listen(self, config: TransportConfig, *, hello: dict[str, Any]) -> Listener:
        if config.token is None:
            raise ValueError("a listener needs a cluster token (TransportConfig.token)")
        listener = _WebSocketListener(config, hello)
        await listener._start()
        return listener

    async def connect(
        self, address: str, config: TransportConfig, *, hello: dict[str, Any]
    ) -> Link:
        url, peer, unix_path = parse_address(address)
        connector: aiohttp.BaseConnector
        if unix_path is not None:
            connector = aiohttp.UnixConnector(path=unix_path)
        else:
            connector = aiohttp.TCPConnector()
        session = aiohttp.ClientSession(connector=connector)
        try:
            async with asyncio.timeout(config.connect_timeout_s):
                ws = await session.ws_connect(
                    url,
                    max_msg_size=config.max_frame_size,
                    compress=0,
                    autoping=False,  # the carrier answers pings and checks liveness
                    timeout=aiohttp.ClientWSTimeout(
                        ws_receive=None, ws_close=config.close_timeout_s
                    ),
                    ssl=config.client_ssl if config.client_ssl is not None else True,
                )
        except aiohttp.WSServerHandshakeError as exc:
            await session.close()
            why = (exc.headers.get(_REFUSED_HEADER) if exc.headers else None) or exc.message
            raise PeerUnreachableError(
                f"{address} refused the connection (HTTP {exc.status}: {why})"
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await session.close()
            why = str(exc) or "connect_timeout_s passed"
            raise PeerUnreachableError(f"cannot reach {address}: {why}") from None
        except BaseException:
            await session.close()
            raise
        carrier = _WSCarrier(ws, peer, config, session)
        try:
            async with asyncio.timeout(config.handshake_timeout_s):
                hello_back = await dial_handshake(carrier, config, hello)
        except TimeoutError:
            await carrier.close()
            raise PeerUnreachableError(
                f"{address} did not finish the handshake within {config.handshake_timeout_s} s"
            ) from None
        except BaseException:
            await carrier.close()
            raise
        return Link(
            carrier, config, peer_hello=hello_back.hello, peer_max_frame=hello_back.max_frame
        )

    async def pull(
        self, address: str, ticket: str, dest: memoryview, config: TransportConfig
    ) -> None:
        await bulk_pull(address, ticket, dest, config)
