"""Bad input against a real listener in another process: each attempt is refused, the
listener keeps serving good clients, and what it logs holds no secret.

One server process serves the whole module (like a cluster head serves many peers); each test
ends with a good client being served.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web
from tp_support import (
    TOKEN,
    PeerProcess,
    assert_served,
    config,
    echo_round_trip,
    tls_contexts,
    within,
)

from actorflow import AuthenticationError, PeerUnreachableError, ProtocolError
from actorflow.transport import PROTOCOL_VERSION, TransportConfig, WebSocketTransport
from actorflow.transport.auth import dial_handshake
from actorflow.transport.codec import MAGIC, PREFIX
from actorflow.transport.ws import _WSCarrier

HANDSHAKE_TIMEOUT = 1.0
MAX_FRAME = 256 * 1024
CAP = 4
SERVER_OPTIONS: dict[str, Any] = {
    "handshake_timeout_s": HANDSHAKE_TIMEOUT,
    "max_frame_size": MAX_FRAME,
    "chunk_size": 64 * 1024,
    "batch_bytes": 64 * 1024,
    "max_connections_per_peer": CAP,
}


@pytest.fixture(scope="module")
def server() -> Iterator[PeerProcess]:
    peer = PeerProcess("listener", **SERVER_OPTIONS)
    try:
        yield peer
    finally:
        peer.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _hostport(address: str) -> tuple[str, int]:
    parts = urlsplit(address)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def _raw_ws(session: aiohttp.ClientSession, address: str) -> aiohttp.ClientWebSocketResponse:
    return await within(session.ws_connect(address + "/actorflow", max_msg_size=0))


async def _authenticated_ws(
    session: aiohttp.ClientSession, address: str
) -> aiohttp.ClientWebSocketResponse:
    """A websocket past the handshake, on which the test may then send anything."""
    ws = await _raw_ws(session, address)
    await within(dial_handshake(_WSCarrier(ws, address, config()), config(), {}))
    return ws


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes; its close code."""
    while True:
        msg = await within(ws.receive())
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
            return ws.close_code
        if msg.type is WSMsgType.ERROR:
            return ws.close_code


def test_listeners_bind_loopback_by_default(server: PeerProcess) -> None:
    assert server.address.startswith("ws://127.0.0.1:")


async def test_wrong_token(server: PeerProcess) -> None:
    with pytest.raises(AuthenticationError, match="refused the cluster token"):
        await within(WebSocketTransport().connect(server.address, config(token="nope"), hello={}))
    await assert_served(server.address)


async def test_no_token(server: PeerProcess) -> None:
    with pytest.raises(AuthenticationError, match="none was given"):
        await within(WebSocketTransport().connect(server.address, TransportConfig(), hello={}))
    await assert_served(server.address)


async def test_a_forged_mac_is_refused(server: PeerProcess, session: aiohttp.ClientSession) -> None:
    ws = await _raw_ws(session, server.address)
    challenge = orjson.loads((await within(ws.receive())).data)
    await ws.send_str(
        orjson.dumps(
            {
                "t": "auth",
                "v": PROTOCOL_VERSION,
                "nonce": challenge["nonce"],  # a replayed nonce
                "mac": "0" * 64,
                "max_frame": MAX_FRAME,
                "hello": {},
            }
        ).decode()
    )
    refusal = orjson.loads((await within(ws.receive())).data)
    assert refusal["reason"] == "auth"
    assert await _closed_with(ws) == 1008
    await assert_served(server.address)


async def test_garbage_bytes_on_the_socket(server: PeerProcess) -> None:
    host, port = _hostport(server.address)
    for garbage in (
        os.urandom(4096) + b"\r\n\r\n",
        b"\x16\x03\x01\x02\x00" + os.urandom(500),  # a TLS hello to a plain listener
        b"GET /actorflow HTTP/1.1\r\nHost: x\r\n\r\n",  # HTTP, but no websocket upgrade
        b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        reader, writer = await within(asyncio.open_connection(host, port))
        writer.write(garbage)
        await writer.drain()
        answer = await within(reader.read(65536))
        assert not answer or answer[:12] in (b"HTTP/1.0 400", b"HTTP/1.1 400", b"HTTP/1.1 404")
        writer.close()
        await within(writer.wait_closed())
    await assert_served(server.address)


@pytest.mark.parametrize(
    "junk",
    [
        b"junk",
        b"AF" + bytes([PROTOCOL_VERSION, 0]) + (2**31).to_bytes(4, "little"),
        PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, 5) + b"[1,2]",
        PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, 14) + b"[[1],0,0,0,0]x",
        "a text message",
    ],
    ids=["bytes", "huge-header-length", "short-header", "bad-entries", "text"],
)
async def test_junk_frames_after_auth(
    server: PeerProcess, session: aiohttp.ClientSession, junk: bytes | str
) -> None:
    ws = await _authenticated_ws(session, server.address)
    if isinstance(junk, str):
        await ws.send_str(junk)
    else:
        await ws.send_bytes(junk)
    assert await _closed_with(ws) == 1002
    await assert_served(server.address)


async def test_a_frame_of_another_version_after_auth(
    server: PeerProcess, session: aiohttp.ClientSession
) -> None:
    ws = await _authenticated_ws(session, server.address)
    header = orjson.dumps(([], None, None, [], None))
    await ws.send_bytes(PREFIX.pack(MAGIC, PROTOCOL_VERSION + 1, 0, len(header)) + header)
    assert await _closed_with(ws) == 1002
    await assert_served(server.address)


async def test_oversized_frames(server: PeerProcess, session: aiohttp.ClientSession) -> None:
    ws = await _authenticated_ws(session, server.address)
    await ws.send_bytes(b"\0" * (MAX_FRAME + 1))
    assert await _closed_with(ws) == 1009
    ws = await _raw_ws(session, server.address)  # before authenticating, too
    await within(ws.receive())
    await ws.send_str("x" * (MAX_FRAME + 1))
    assert await _closed_with(ws) == 1009
    await assert_served(server.address)


async def test_a_handshake_that_never_finishes(
    server: PeerProcess, session: aiohttp.ClientSession
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    ws = await _raw_ws(session, server.address)
    challenge = await within(ws.receive())
    assert challenge.type is WSMsgType.TEXT  # ... and never answer it
    await _closed_with(ws)
    assert loop.time() - start < HANDSHAKE_TIMEOUT + 2.0
    # A TCP connection that never even sends its HTTP request is closed as well.
    host, port = _hostport(server.address)
    start = loop.time()
    reader, writer = await within(asyncio.open_connection(host, port))
    assert await within(reader.read()) == b""
    assert loop.time() - start < HANDSHAKE_TIMEOUT + 2.0
    writer.close()
    await within(writer.wait_closed())
    await assert_served(server.address)


async def test_a_client_of_another_version(
    server: PeerProcess, session: aiohttp.ClientSession
) -> None:
    ws = await _raw_ws(session, server.address)
    challenge = orjson.loads((await within(ws.receive())).data)
    assert challenge["v"] == PROTOCOL_VERSION
    await ws.send_str(
        orjson.dumps(
            {
                "t": "auth",
                "v": PROTOCOL_VERSION + 1,
                "nonce": "ab" * 32,
                "mac": "cd" * 32,
                "max_frame": MAX_FRAME,
                "hello": {},
            }
        ).decode()
    )
    refusal = orjson.loads((await within(ws.receive())).data)
    assert refusal["reason"] == "version"
    assert f"version {PROTOCOL_VERSION + 1}" in refusal["text"]
    assert await _closed_with(ws) == 1002
    await assert_served(server.address)


async def test_a_server_of_another_version() -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        challenge = {"t": "challenge", "proto": "actorflow", "v": 99, "nonce": "ab" * 32}
        await ws.send_str(orjson.dumps(challenge).decode())
        await ws.receive()  # the client closes
        return ws

    app = web.Application()
    app.router.add_get("/actorflow", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        with pytest.raises(ProtocolError, match="protocol version 99; this process speaks 1"):
            await within(WebSocketTransport().connect(f"ws://127.0.0.1:{port}", config(), hello={}))
    finally:
        await runner.cleanup()


async def test_the_per_peer_connection_cap(server: PeerProcess) -> None:
    transport = WebSocketTransport()
    links = [
        await within(transport.connect(server.address, config(), hello={})) for _ in range(CAP)
    ]
    try:
        with pytest.raises(PeerUnreachableError, match="too many connections"):
            await within(transport.connect(server.address, config(), hello={}))
        await links.pop().aclose()
        await assert_served(server.address)
    finally:
        for link in links:
            await link.aclose()


async def test_refusals_are_logged_without_secrets(server: PeerProcess) -> None:
    wrong = "a-wrong-token-that-must-not-be-logged"
    with pytest.raises(AuthenticationError):
        await within(WebSocketTransport().connect(server.address, config(token=wrong), hello={}))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while "wrong cluster token" not in server.stderr():  # the listener logs after closing
        assert loop.time() < deadline, server.stderr()
        await asyncio.sleep(0.05)
    logged = server.stderr()
    assert TOKEN not in logged and wrong not in logged
    assert "refused connection from 127.0.0.1" in logged
    await assert_served(server.address)


# ----------------------------------------------------------------------------- TLS
async def test_tls(tmp_path: Path) -> None:
    server_ctx, trusting = tls_contexts(tmp_path)
    transport = WebSocketTransport()
    listener = await transport.listen(config(host="localhost", server_ssl=server_ctx), hello={})
    try:
        address = listener.addresses[0]
        assert address.startswith("wss://")
        link = await within(transport.connect(address, config(client_ssl=trusting), hello={}))
        accepted = await within(listener.accept())
        link.send(2, "t", "over tls", "", 7)
        assert [m[4] for m in await within(accepted.receive())] == ["over tls"]
        await link.aclose()
        await accepted.aclose()
        with pytest.raises(PeerUnreachableError):  # a client that does not trust the cert
            await within(transport.connect(address, config(), hello={}))
        with pytest.raises(PeerUnreachableError):  # plain websocket to a TLS port
            await within(transport.connect(address.replace("wss", "ws"), config(), hello={}))
    finally:
        await listener.aclose()


async def test_echo_round_trip_helper_is_exact(server: PeerProcess) -> None:
    link = await within(WebSocketTransport().connect(server.address, config(), hello={}))
    try:
        assert await echo_round_trip(link, {"nested": [1, b"2"]}) == {"nested": [1, b"2"]}
    finally:
        await link.aclose()
