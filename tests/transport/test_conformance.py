"""One suite, every transport: what a Link promises, checked on memory and websocket alike."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import numpy as np
import pytest
from tp_support import TOKEN, Pair, config, within

from actorflow import AuthenticationError, PeerUnreachableError, SerializationError
from actorflow.transport import (
    Batch,
    LinkStatistics,
    Transport,
    TransportConfig,
    UndecodableValue,
)

SMALL = {"batch_bytes": 16 * 1024, "stream_threshold": 8 * 1024, "chunk_size": 16 * 1024}


async def collect(link: Any, count: int) -> list[tuple[Any, ...]]:
    got: list[tuple[Any, ...]] = []
    while len(got) < count:
        batch = await within(link.receive())
        assert isinstance(batch, Batch)
        got.extend(batch)
    assert len(got) == count
    return got


class Lock:
    """Unpicklable: holds a thread lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


class FailsToLoad:
    """Pickles fine; raises when unpickled on the other side."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, ())


def _explode() -> None:
    raise RuntimeError("cannot be rebuilt here")


VALUES: list[Any] = [
    0,
    -1,
    2**63 - 1,
    2**64 - 1,
    2**70,  # past orjson's range: pickled
    -(2**70),
    1.5,
    float("inf"),
    float("nan"),
    True,
    False,
    None,
    "",
    "text",
    "é🙂",
    "\ud800",  # a lone surrogate: orjson refuses it, pickle does not
    "x" * 5000,
    b"",
    b"\x00\xff" * 10,
    bytearray(b"mutable"),
    (1, "a", (2.0,)),
    [1, [2, [3]]],
    {"k": [1, 2], 3: {"n": None}},
    {1, 2, 3},
    frozenset({"a"}),
]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


async def test_values_arrive_equal_and_of_the_same_type(make_pair: Any) -> None:
    pair: Pair = await make_pair()
    for i, value in enumerate(VALUES):
        pair.client.send(1, "t", value, "s", i)
    got = await collect(pair.server, len(VALUES))
    for (kind, target, sender, cid, value), sent in zip(got, VALUES, strict=True):
        assert (kind, target, sender) == (1, "t", "s")
        assert same(value, sent), (cid, value, sent)


async def test_both_directions_and_header_fields(make_pair: Any) -> None:
    pair: Pair = await make_pair()
    pair.client.send(7, "target-a", "ping", "sender-b", 2**40)
    [(kind, target, sender, cid, value)] = await collect(pair.server, 1)
    assert (kind, target, sender, cid, value) == (7, "target-a", "sender-b", 2**40, "ping")
    pair.server.send(8, "", "pong", "", 9)
    assert await collect(pair.client, 1) == [(8, "", "", 9, "pong")]
    assert pair.client.peer_hello == {"side": "server"}
    assert pair.server.peer_hello == {"side": "client"}


async def test_values_are_copies(make_pair: Any) -> None:
    pair: Pair = await make_pair()
    sent = {"list": [1, 2]}
    pair.client.send(1, "t", sent)
    sent["list"].append(3)  # after send: the receiver has the value as it was when sent
    [(*_, value)] = await collect(pair.server, 1)
    assert value == {"list": [1, 2]}


async def test_one_loop_turn_leaves_as_one_frame(make_pair: Any) -> None:
    pair: Pair = await make_pair()
    before = pair.client.statistics().frames_sent
    for i in range(500):
        pair.client.send(1, "t", i, "", i)  # no await between sends: one loop turn
    pair.client.send(1, "t", b"x" * 100)
    pair.client.send(1, "t", {"a": 1})
    got = await collect(pair.server, 502)
    assert [m[3] for m in got[:500]] == list(range(500))
    assert pair.client.statistics().frames_sent - before == 1
    assert pair.server.statistics().frames_received >= 1


async def test_send_never_awaits_and_order_is_kept_across_turns(make_pair: Any) -> None:
    pair: Pair = await make_pair()
    for turn in range(20):
        for i in range(50):
            assert pair.client.send(1, "t", turn * 50 + i) is None
        await asyncio.sleep(0)  # a new loop turn: the writer may flush in between
    got = await collect(pair.server, 1000)
    assert [m[4] for m in got] == list(range(1000))


async def test_numpy_arrays_arrive_writable_and_intact(make_pair: Any) -> None:
    pair: Pair = await make_pair()
    small = np.arange(100, dtype=np.int32)
    large = np.random.default_rng(0).random(1_000_000)  # 8 MB: streamed in chunks
    pair.client.send(1, "t", small)
    pair.client.send(1, "t", large)
    (_, _, _, _, a), (_, _, _, _, b) = await collect(pair.server, 2)
    assert np.array_equal(a, small) and a.dtype == small.dtype
    assert np.array_equal(b, large)
    assert a.flags.writeable and b.flags.writeable
    b[0] = 1.0  # the receiver owns its copy


async def test_large_bytes_are_streamed(make_pair: Any) -> None:
    pair: Pair = await make_pair(**SMALL)
    blob = bytes(range(256)) * 1000  # 256 kB against an 8 kB threshold
    pair.client.send(1, "t", blob)
    [(*_, value)] = await collect(pair.server, 1)
    assert value == blob
    stats = pair.client.statistics()
    assert stats.frames_sent > 2 * (len(blob) // SMALL["chunk_size"])  # announcements + chunks


async def test_large_messages_do_not_hold_up_small_ones(make_pair: Any) -> None:
    pair: Pair = await make_pair(**SMALL)
    big = np.zeros(2_000_000)  # 16 MB, ~1000 chunks of 16 kB
    pair.client.send(1, "bulk", big)
    pair.client.send(1, "bulk", "after the big one")  # same target: waits for it
    for i in range(10):
        pair.client.send(1, "fast", i)  # other target: overtakes it
    order: list[tuple[str, Any]] = []
    while len(order) < 12:
        for _, target, _, _, value in await within(pair.server.receive()):
            order.append((target, "array" if isinstance(value, np.ndarray) else value))
    fast_done = max(i for i, (t, _) in enumerate(order) if t == "fast")
    big_done = order.index(("bulk", "array"))
    assert fast_done < big_done, order
    assert order[big_done + 1] == ("bulk", "after the big one")
    assert [v for t, v in order if t == "fast"] == list(range(10))


async def test_order_per_target_survives_streams(make_pair: Any) -> None:
    pair: Pair = await make_pair(**SMALL)
    expected: list[Any] = []
    for i in range(30):
        value: Any = b"s" * 20_000 if i % 7 == 3 else i  # some streamed, some inline
        pair.client.send(1, "one", value, "", i)
        expected.append(i)
    got = await collect(pair.server, 30)
    assert [m[3] for m in got] == expected


async def test_unpicklable_message_fails_at_the_sender(make_pair: Any) -> None:
    pair: Pair = await make_pair()
    with pytest.raises(SerializationError) as info:
        pair.client.send(1, "t", (1, Lock()))
    assert "tuple" in str(info.value)
    assert "lock" in str(info.value)
    with pytest.raises(SerializationError, match="Lock"):
        pair.client.send(1, "t", Lock())
    pair.client.send(1, "t", "the link still works")
    assert await collect(pair.server, 1) == [(1, "t", "", 0, "the link still works")]


async def test_payload_that_cannot_be_unpickled_fails_alone(make_pair: Any) -> None:
    pair: Pair = await make_pair()
    pair.client.send(1, "t", "before")
    pair.client.send(1, "t", FailsToLoad())
    pair.client.send(1, "t", "after")
    got = await collect(pair.server, 3)
    assert got[0][4] == "before" and got[2][4] == "after"
    bad = got[1][4]
    assert isinstance(bad, UndecodableValue)
    assert "cannot be rebuilt here" in str(bad.error)


async def test_wrong_or_missing_token_is_refused(transport: Transport) -> None:
    listener = await transport.listen(config(), hello={})
    try:
        with pytest.raises(AuthenticationError, match="refused the cluster token"):
            await within(transport.connect(listener.addresses[0], config(token="wrong"), hello={}))
        with pytest.raises(AuthenticationError, match="none was given"):
            await within(transport.connect(listener.addresses[0], TransportConfig(), hello={}))
        assert listener.statistics().refused == 2
        link = await within(transport.connect(listener.addresses[0], config(), hello={}))
        accepted = await within(listener.accept())
        assert listener.statistics().accepted == 1
        await link.aclose()
        await accepted.aclose()
    finally:
        await listener.aclose()


async def test_a_listener_needs_a_token(transport: Transport) -> None:
    with pytest.raises(ValueError, match="token"):
        await transport.listen(TransportConfig(), hello={})


async def test_nothing_listening_is_unreachable(transport: Transport) -> None:
    listener = await transport.listen(config(), hello={})
    address = listener.addresses[0]
    await listener.aclose()
    with pytest.raises(PeerUnreachableError):
        await within(transport.connect(address, config(), hello={}))


async def test_peer_close_ends_receive_and_send(make_pair: Any) -> None:
    pair: Pair = await make_pair()
    pair.client.send(1, "t", "last words")
    await pair.client.aclose()  # flushes first
    assert await collect(pair.server, 1) == [(1, "t", "", 0, "last words")]
    with pytest.raises(PeerUnreachableError):
        await within(pair.server.receive())
    with pytest.raises(PeerUnreachableError):
        pair.server.send(1, "t", "too late")
    with pytest.raises(PeerUnreachableError):
        pair.client.send(1, "t", "too late")
    assert pair.server.statistics().closed and pair.client.closed


async def test_aclose_flushes_what_is_queued(make_pair: Any) -> None:
    pair: Pair = await make_pair()
    for i in range(3000):
        pair.client.send(1, "t", i)
    await pair.client.aclose()
    got = await collect(pair.server, 3000)
    assert [m[4] for m in got] == list(range(3000))


async def test_drain_pushes_back(make_pair: Any) -> None:
    pair: Pair = await make_pair(high_water_bytes=256 * 1024)
    payload = b"p" * 50_000
    for _ in range(40):  # 2 MB queued without a loop turn: over the high-water mark
        pair.client.send(1, "t", payload)
    assert pair.client.statistics().queued_bytes > 256 * 1024
    drained = asyncio.ensure_future(pair.client.drain())
    got = await collect(pair.server, 40)  # the reader makes room
    await within(drained)
    assert len(got) == 40
    assert pair.client.statistics().queued_bytes <= 256 * 1024


async def test_statistics_is_a_frozen_snapshot(make_pair: Any) -> None:
    pair: Pair = await make_pair()
    pair.client.send(1, "t", "x")
    await collect(pair.server, 1)
    stats = pair.client.statistics()
    assert isinstance(stats, LinkStatistics)
    assert stats.messages_sent == 1 and stats.frames_sent >= 1 and stats.bytes_sent > 0
    assert pair.server.statistics().messages_received == 1
    with pytest.raises(AttributeError):
        stats.messages_sent = 5  # type: ignore[misc]


async def test_frames_respect_the_peers_smaller_limit(make_pair: Any) -> None:
    # The server accepts frames of at most 128 KiB; the client's own limit is larger, so it
    # must cut its batches (and stream chunks) to the server's size.
    server = {
        "token": TOKEN,
        "max_frame_size": 128 * 1024,
        "batch_bytes": 32 * 1024,
        "chunk_size": 32 * 1024,
    }
    pair: Pair = await make_pair(server_options=server)
    for i in range(200):
        pair.client.send(1, "t", b"z" * 3000, "", i)  # 600 kB of small messages
    pair.client.send(1, "t", b"y" * 1_000_000, "", 200)
    got = await collect(pair.server, 201)
    assert [m[3] for m in got] == list(range(201))
    assert got[-1][4] == b"y" * 1_000_000


async def test_long_headers_are_split_to_fit(make_pair: Any) -> None:
    server = {
        "token": TOKEN,
        "max_frame_size": 128 * 1024,
        "batch_bytes": 32 * 1024,
        "chunk_size": 32 * 1024,
    }
    pair: Pair = await make_pair(server_options=server)
    target = "t" * 900  # 4096 messages of ~1 kB headers would be a 4 MB frame
    for i in range(1000):
        pair.client.send(1, target, i)
    got = await collect(pair.server, 1000)
    assert [m[4] for m in got] == list(range(1000))


async def test_closing_a_listener_wakes_accept(transport: Transport) -> None:
    listener = await transport.listen(config(), hello={})
    waiting = asyncio.ensure_future(listener.accept())
    await asyncio.sleep(0)  # a loop turn: accept() is waiting
    await listener.aclose()
    with pytest.raises(PeerUnreachableError, match="closed"):
        await within(waiting)
    with pytest.raises(PeerUnreachableError, match="closed"):
        await within(listener.accept())
