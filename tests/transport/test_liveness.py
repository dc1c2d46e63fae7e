"""A dead or frozen peer is noticed within peer_timeout_s, on an idle link (heartbeats) and
at once when its process dies (the socket closes)."""

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


def test_the_default_peer_timeout_is_at_most_three_seconds() -> None:
    assert TransportConfig().peer_timeout_s <= 3.0


async def test_a_frozen_peer_is_lost_within_the_timeout(peer: PeerProcess) -> None:
    link = await within(
        WebSocketTransport().connect(peer.address, config(peer_timeout_s=PEER_TIMEOUT), hello={})
    )
    try:
        assert await echo_round_trip(link, 1) == 1
        loop = asyncio.get_running_loop()
        peer.signal(signal.SIGSTOP)  # alive, socket open, but silent: only heartbeats tell
        start = loop.time()
        with pytest.raises(PeerUnreachableError, match="did not answer"):
            await within(link.receive())
        assert loop.time() - start <= PEER_TIMEOUT + 0.5
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
