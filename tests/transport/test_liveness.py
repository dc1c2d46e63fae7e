"""A peer whose process dies is noticed at once (the socket closes); one that is stopped or
busy is never declared lost; an idle healthy link stays up. (A silent machine: see
test_partition.py, across a real veth link.)"""

from __future__ import annotations

import asyncio
import signal

import pytest
from tp_support import PeerProcess, config, echo_round_trip, within

from actorflow import PeerUnreachableError
from actorflow.transport import TransportConfig, WebSocketTransport

PEER_TIMEOUT = 1.0


@pytest.fixture
def peer() -> PeerProcess:
    process = PeerProcess("listener", peer_timeout_s=PEER_TIMEOUT)
    yield process  # type: ignore[misc]
    process.close()


def test_the_default_peer_timeout_is_ten_seconds() -> None:
    # a silent machine costs its in-flight work this long; a busy loop costs nothing (the
    # kernel answers for it), so the default can be long enough to ride out TCP's
    # retransmissions (RTO 0.2, 0.4, ... 3.2 s) of a short loss burst
    assert TransportConfig().peer_timeout_s == 10.0


async def test_a_stopped_peer_on_loopback_is_busy_not_lost(peer: PeerProcess) -> None:
    link = await within(
        WebSocketTransport().connect(peer.address, config(peer_timeout_s=PEER_TIMEOUT), hello={})
    )
    try:
        assert await echo_round_trip(link, 1) == 1
        peer.signal(signal.SIGSTOP)  # alive, socket open, loop not running: as a busy loop
        receiving = asyncio.ensure_future(link.receive())
        done, _ = await asyncio.wait([receiving], timeout=3 * PEER_TIMEOUT)
        assert not done, "a stopped (busy) peer was declared lost"
        receiving.cancel()
        await asyncio.wait([receiving])
        peer.signal(signal.SIGCONT)
        assert await echo_round_trip(link, 2) == 2
    finally:
        peer.signal(signal.SIGCONT)
        await link.aclose()


async def test_a_killed_peer_is_lost_at_once(peer: PeerProcess) -> None:
    link = await within(WebSocketTransport().connect(peer.address, config(), hello={}))
    try:
        assert await echo_round_trip(link, 1) == 1
        loop = asyncio.get_running_loop()
        peer.signal(signal.SIGKILL)
        start = loop.time()
        with pytest.raises(PeerUnreachableError):
            await within(link.receive())
        assert loop.time() - start < 1.0
        with pytest.raises(PeerUnreachableError):
            link.send(2, "t", "into the void")
    finally:
        await link.aclose()


async def test_an_idle_healthy_link_stays_up(peer: PeerProcess) -> None:
    link = await within(
        WebSocketTransport().connect(peer.address, config(peer_timeout_s=PEER_TIMEOUT), hello={})
    )
    try:
        # Three timeouts of silence: heartbeats keep it up (a wait_for that must time out).
        receiving = asyncio.ensure_future(link.receive())
        done, _ = await asyncio.wait([receiving], timeout=3 * PEER_TIMEOUT)
        assert not done, "an idle link to a healthy peer was dropped"
        receiving.cancel()
        await asyncio.wait([receiving])
        assert not link.closed
    finally:
        await link.aclose()
