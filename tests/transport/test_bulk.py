"""Bulk pulls (actorflow.transport.bulk): bytes offered by a listener under a one-time ticket
and pulled by a peer straight into its own buffer, over the listener's unix socket, TCP and
TLS; refused tickets, wrong sizes, a stalled and a killed holder. Real sockets, and a real
holder process where one must stop or die."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest
from tp_support import ROOT, TOKEN, WAIT, config, tls_contexts, within

from actorflow._errors import PeerUnreachableError, ProtocolError
from actorflow.transport import WebSocketTransport
from actorflow.transport.bulk import BulkOffers

MIB = 1024 * 1024


def _pieces() -> list[bytes]:
    # several buffers, one of an odd size, together larger than any socket buffer
    return [os.urandom(3 * MIB), os.urandom(12345), os.urandom(5 * MIB + 7)]


async def test_a_pull_fills_the_destination_exactly_over_unix_and_tcp() -> None:
    transport = WebSocketTransport()
    listener = await transport.listen(config(), hello={})
    try:
        tcp, unix = listener.addresses
        assert unix.startswith("ws+unix://")
        for address in (unix, tcp):
            pieces = _pieces()
            ticket = listener.offer([memoryview(p) for p in pieces])
            assert ticket is not None
            dest = memoryview(bytearray(sum(len(p) for p in pieces)))
            await within(transport.pull(address, ticket, dest, config()))
            assert dest.tobytes() == b"".join(pieces), address
    finally:
        await listener.aclose()


async def test_a_ticket_is_good_for_one_pull_and_unknown_ones_are_refused() -> None:
    transport = WebSocketTransport()
    listener = await transport.listen(config(), hello={})
    try:
        address = listener.addresses[0]
        data = os.urandom(2 * MIB)
        ticket = listener.offer([data])
        assert ticket is not None
        dest = memoryview(bytearray(len(data)))
        await within(transport.pull(address, ticket, dest, config()))
        again = memoryview(bytearray(len(data)))
        with pytest.raises(PeerUnreachableError, match="HTTP 404: unknown, used or expired"):
            await within(transport.pull(address, ticket, again, config()))
        assert not any(again), "a refused pull wrote into its destination"
        with pytest.raises(PeerUnreachableError, match="HTTP 404"):
            await within(transport.pull(address, "no-such-ticket", again, config()))
    finally:
        await listener.aclose()


async def test_an_offer_expires_unpulled_and_its_buffers_are_let_go() -> None:
    offers = BulkOffers()
    data = bytearray(MIB)
    offers.offer([data], ttl_s=0.05)
    with pytest.raises(BufferError):  # offered: the buffer is held (cannot be resized)
        data.extend(b"x")
    assert len(offers) == 1
    await asyncio.sleep(0.06)  # a timer due after the offer's: the offer's has run by then
    assert len(offers) == 0
    data.extend(b"x")  # let go
    offers.close()


async def test_a_destination_of_another_size_is_a_protocol_error() -> None:
    transport = WebSocketTransport()
    listener = await transport.listen(config(), hello={})
    try:
        ticket = listener.offer([os.urandom(MIB)])
        assert ticket is not None
        with pytest.raises(ProtocolError, match="announces '1048576' bytes; 1048575"):
            await within(transport.pull(listener.addresses[0], ticket,
                                        memoryview(bytearray(MIB - 1)), config()))
    finally:
        await listener.aclose()


async def test_a_pull_over_tls(tmp_path: Path) -> None:
    server_ctx, trusting = tls_contexts(tmp_path)
    transport = WebSocketTransport()
    listener = await transport.listen(config(host="localhost", server_ssl=server_ctx), hello={})
    try:
        (address,) = listener.addresses  # TLS: no unix socket
        assert address.startswith("wss://")
        data = os.urandom(4 * MIB + 3)
        ticket = listener.offer([data])
        assert ticket is not None
        dest = memoryview(bytearray(len(data)))
        await within(transport.pull(address, ticket, dest, config(client_ssl=trusting)))
        assert dest.tobytes() == data
        ticket = listener.offer([data])
        assert ticket is not None
        with pytest.raises(PeerUnreachableError):  # a puller that does not trust the cert
            await within(transport.pull(address, ticket, dest, config()))
    finally:
        await listener.aclose()


_HOLDER = textwrap.dedent("""
    import asyncio, sys
    from actorflow.transport import TransportConfig, WebSocketTransport

    async def main():
        listener = await WebSocketTransport().listen(TransportConfig(token=sys.argv[1]), hello={})
        ticket = listener.offer([bytes(range(256)) * (64 * 4096)])  # 64 MiB
        print(listener.addresses[0], ticket, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await listener.aclose()

    asyncio.run(main())
""")


def _holder() -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, TOKEN], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout is not None
    address, ticket = proc.stdout.readline().split()
    return proc, address, ticket


def _tcp_connections() -> list[Any]:
    me = psutil.Process()
    # (psutil 6 renamed connections() to net_connections())
    return list(getattr(me, "net_connections", me.connections)("tcp"))


def _end(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(WAIT)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


async def test_a_stalled_holder_fails_the_pull_after_peer_timeout() -> None:
    proc, address, ticket = await asyncio.to_thread(_holder)
    try:
        os.kill(proc.pid, signal.SIGSTOP)  # it accepts (the kernel does) but never answers
        dest = memoryview(bytearray(64 * MIB))
        with pytest.raises(PeerUnreachableError, match=r"made no progress for 0\.5 s"):
            await within(WebSocketTransport().pull(address, ticket, dest,
                                                   config(peer_timeout_s=0.5)))
    finally:
        _end(proc)


async def test_a_holder_that_dies_fails_the_pull_at_once() -> None:
    proc, address, ticket = await asyncio.to_thread(_holder)
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        dest = memoryview(bytearray(64 * MIB))
        pulling = asyncio.ensure_future(
            WebSocketTransport().pull(address, ticket, dest, config(peer_timeout_s=WAIT * 3)))
        # wait until it is connected (the kernel accepts for the stopped holder), so that the
        # holder dies mid-pull rather than before the pull could reach it
        port = int(address.rsplit(":", 1)[1])
        async with asyncio.timeout(WAIT):
            while not any(c.raddr and c.raddr.port == port and c.status == "ESTABLISHED"  # noqa: ASYNC110 - no event for another process's socket state
                          for c in _tcp_connections()):
                await asyncio.sleep(0.01)
        assert not pulling.done()
        _end(proc)
        with pytest.raises(PeerUnreachableError, match=r"lost|closed"):
            await within(pulling)
    finally:
        _end(proc)


async def test_a_puller_that_leaves_mid_pull_costs_the_holder_no_error(
        caplog: pytest.LogCaptureFixture) -> None:
    transport = WebSocketTransport()
    listener = await transport.listen(config(), hello={})
    try:
        offers = listener._bulk  # type: ignore[attr-defined]
        ticket = listener.offer([bytes(64 * MIB)])
        host_port = listener.addresses[0].removeprefix("ws://")
        host, port = host_port.rsplit(":", 1)
        reader, writer = await within(asyncio.open_connection(host, int(port)))
        writer.write(f"GET /actorflow/bulk/{ticket} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await within(reader.readexactly(1024 * 1024))  # the bytes flow ...
        writer.transport.abort()  # ... and the puller is gone
        async with asyncio.timeout(WAIT):  # the holder notices at its next write
            while offers.abandoned == 0:  # noqa: ASYNC110 - a counter, no event to await
                await asyncio.sleep(0.01)
        assert offers.served == 0
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert errors == [], [r.getMessage() for r in errors]
    finally:
        await listener.aclose()
