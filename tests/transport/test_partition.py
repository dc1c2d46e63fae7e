"""Liveness across a real network link (Linux network namespaces joined by a veth pair): a
peer whose machine goes silent is declared lost about ``peer_timeout_s`` later, by the
kernel's TCP keepalive; a cut shorter than that loses nothing; and a peer whose process is
stopped (SIGSTOP: alive, its loop not running, as a busy loop) is never declared lost."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from tp_support import NetNs, PeerProcess, config, echo_round_trip, netns, netns_unavailable, within

from actorflow import PeerUnreachableError
from actorflow.transport import Link, WebSocketTransport

PEER_TIMEOUT = 2.0
why_not = netns_unavailable()
pytestmark = pytest.mark.skipif(why_not is not None, reason=why_not or "")


@pytest.fixture
def host() -> NetNs:
    with netns() as ns:
        yield ns  # type: ignore[misc]


@pytest.fixture
def peer(host: NetNs) -> PeerProcess:
    process = PeerProcess("listener", prefix=host.prefix, host=host.there_ip,
                          peer_timeout_s=PEER_TIMEOUT)
    yield process  # type: ignore[misc]
    process.close()


async def _connect(peer: PeerProcess) -> Link:
    link = await within(WebSocketTransport().connect(
        peer.address, config(peer_timeout_s=PEER_TIMEOUT), hello={}))
    assert await echo_round_trip(link, 1) == 1
    return link


async def test_a_silent_host_is_lost_after_the_peer_timeout(host: NetNs, peer: PeerProcess
                                                            ) -> None:
    assert host.there_ip in peer.address
    link = await _connect(peer)
    try:
        host.cut()
        start = time.monotonic()
        with pytest.raises(PeerUnreachableError):
            await within(link.receive(), 4 * PEER_TIMEOUT + 5)
        took = time.monotonic() - start
        assert PEER_TIMEOUT * 0.5 <= took <= PEER_TIMEOUT + 3.0, took
    finally:
        host.heal()
        await link.aclose()


async def test_a_blip_shorter_than_the_timeout_loses_nothing(host: NetNs, peer: PeerProcess
                                                             ) -> None:
    link = await _connect(peer)
    try:
        host.cut()
        link.send(2, "t", "sent during the cut", "", 8)  # retransmitted once healed
        await asyncio.sleep(PEER_TIMEOUT / 4)
        host.heal()
        batch = await within(link.receive())
        assert list(batch) == [(3, "t", "", 8, "sent during the cut")]
        assert await echo_round_trip(link, 2) == 2
        assert not link.closed
    finally:
        await link.aclose()


async def test_a_stopped_peer_is_busy_not_lost(host: NetNs, peer: PeerProcess) -> None:
    link = await _connect(peer)
    try:
        peer.signal(signal.SIGSTOP)  # its kernel still answers for it
        receiving = asyncio.ensure_future(link.receive())
        done, _ = await asyncio.wait([receiving], timeout=3 * PEER_TIMEOUT)
        assert not done, "a stopped (busy) peer was declared lost"
        receiving.cancel()
        await asyncio.wait([receiving])
        peer.signal(signal.SIGCONT)
        assert await echo_round_trip(link, 3) == 3
    finally:
        peer.signal(signal.SIGCONT)
        await link.aclose()
