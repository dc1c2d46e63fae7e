"""The wire format on its own: round trips (property-based) and a fuzz of the decoder, where
nothing but ProtocolError may escape."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actorflow import ProtocolError
from actorflow.transport.codec import MAGIC, PREFIX, PROTOCOL_VERSION, Encoder
from actorflow.transport.decoder import Decoder

SMALL = {"batch_bytes": 4096, "stream_threshold": 2048, "chunk_size": 1500}


def encoder(max_frame_size: int = 64 * 1024, **options: Any) -> Encoder:
    opts = {**SMALL, **options}
    return Encoder(max_frame_size=max_frame_size, high_water=1 << 20, **opts)


def drain(enc: Encoder) -> list[bytes]:
    out: list[bytes] = []
    while enc.has_output():
        out.extend(bytes(m) for m in enc.next_output())
    return out


def decode_all(frames: list[bytes], dec: Decoder | None = None) -> list[tuple[Any, ...]]:
    dec = dec or Decoder(max_message_size=1 << 30)
    got: list[tuple[Any, ...]] = []
    for data in frames:
        got.extend(dec.decode(data))
    return got


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


leaves = (
    st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=3000)
    | st.booleans()
    | st.none()
)
values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner), max_leaves=8
) | st.builds(
    lambda n, dt: np.arange(n, dtype=dt), st.integers(0, 600), st.sampled_from(["i4", "f8", "u1"])
)
messages = st.lists(
    st.tuples(
        st.integers(0, 255),
        st.sampled_from(["", "a", "b", "c" * 50]),
        st.sampled_from(["", "s"]),
        st.integers(0, 2**53),
        values,
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.integers(1, 4))
def test_round_trip_keeps_values_and_per_target_order(
    sent: list[tuple[Any, ...]], turns: int
) -> None:
    enc = encoder()
    frames: list[bytes] = []
    for i, (kind, target, sender, cid, value) in enumerate(sent):
        enc.add(kind, target, sender, cid, value)
        if i % turns == 0:  # sometimes flush in between, as loop turns would
            frames.extend(bytes(m) for m in enc.next_output())
    frames.extend(drain(enc))
    got = decode_all(frames)
    assert len(got) == len(sent)
    remaining = list(sent)
    for message in got:  # every message exactly once, equal to what was sent
        for k, candidate in enumerate(remaining):
            if candidate[:4] == message[:4] and same(candidate[4], message[4]):
                del remaining[k]
                break
        else:
            raise AssertionError(f"unexpected {message!r}")
    for target in {m[1] for m in sent if m[1]}:  # per non-empty target: in send order
        want = [m[3] for m in sent if m[1] == target]
        assert [m[3] for m in got if m[1] == target] == want


def test_frames_stay_under_the_peer_limit() -> None:
    enc = encoder(max_frame_size=16 * 1024, batch_bytes=8192, chunk_size=8192)
    for i in range(2000):
        enc.add(1, "x" * 300, "", i, "v" * 200)  # long headers: batches must split
    enc.add(1, "t", "", 1, b"b" * 100_000)
    frames = drain(enc)
    assert max(map(len, frames)) <= 16 * 1024
    assert len(decode_all(frames)) == 2001


def test_an_empty_encoder_has_nothing_to_send() -> None:
    enc = encoder()
    assert not enc.has_output()
    assert enc.next_output() == []


# ----------------------------------------------------------------------------- fuzz
def _valid_frames() -> list[bytes]:
    enc = encoder()
    enc.add(1, "a", "s", 1, 5)
    enc.add(2, "b", "", 2, b"bytes")
    enc.add(3, "", "", 3, {"pickled": [1, 2]})
    enc.add(4, "a", "", 4, np.arange(10))
    enc.add(5, "a", "", 5, b"z" * 5000)  # streamed
    return drain(enc)


VALID = _valid_frames()


def _decode_only_protocol_errors(frames: list[bytes]) -> None:
    dec = Decoder(max_message_size=1 << 20)
    for data in frames:
        try:
            for message in dec.decode(data):
                assert len(message) == 5
        except ProtocolError:
            return  # the link would close here


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_fuzz_random_bytes(frames: list[bytes]) -> None:
    _decode_only_protocol_errors(frames)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fuzz_mutated_valid_frames(data: st.DataObject) -> None:
    frames = list(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frames) - 1))
        buf = bytearray(frames[i])
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "drop", "dup"]))
        if op == "flip" and buf:
            pos = data.draw(st.integers(0, len(buf) - 1))
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del buf[data.draw(st.integers(0, len(buf))) :]
        elif op == "insert":
            pos = data.draw(st.integers(0, len(buf)))
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=20))
        elif op == "drop":
            del frames[i]
            if not frames:
                return
            continue
        elif op == "dup":
            frames.insert(i, frames[i])
        frames[i] = bytes(buf)
    _decode_only_protocol_errors(frames)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(json_values, st.binary(max_size=100))
def test_fuzz_well_prefixed_random_headers(header: Any, body: bytes) -> None:
    encoded = orjson.dumps(header)
    data = PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, len(encoded)) + encoded + body
    _decode_only_protocol_errors([data])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.integers(-3, 300) | st.text(max_size=2) | st.none(), max_size=10),
    st.lists(st.integers(-3, 3000) | st.floats(allow_nan=False), max_size=6),
    st.lists(st.integers(-3, 3000) | st.text(max_size=2), max_size=12),
    st.none() | st.lists(st.integers(-3, 3000), max_size=4),
    st.binary(max_size=200),
)
def test_fuzz_plausible_headers(
    bidx: list[Any], blens: list[Any], special: list[Any], raw: Any, body: bytes
) -> None:
    flat = [1, "t", "", 0, None] * 3
    header = orjson.dumps((flat, bidx or None, blens, special, raw))
    data = PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, len(header)) + header + body
    _decode_only_protocol_errors([data, body])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "shorter than the prefix"),
        (b"XX" + bytes(6), "bad magic"),
        (PREFIX.pack(MAGIC, PROTOCOL_VERSION + 1, 0, 0), "version 2"),
        (PREFIX.pack(MAGIC, PROTOCOL_VERSION, 1, 0), "flags"),
        (PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, 99), "runs past"),
        (PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, 2) + b"{}", "not \\[entries"),
        (PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, 3) + b"[1,", "malformed frame"),
    ],
)
def test_each_malformation_says_what_is_wrong(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        Decoder(max_message_size=1 << 20).decode(data)


def test_a_stream_over_the_message_limit_is_refused() -> None:
    enc = encoder()
    enc.add(1, "t", "", 0, b"q" * 10_000)
    with pytest.raises(ProtocolError, match="max_message_size"):
        decode_all(drain(enc), Decoder(max_message_size=5000))


def test_prefix_layout_is_what_protocol_md_says() -> None:
    assert PREFIX.size == 8
    assert struct.unpack("<2sBBI", VALID[0][:8])[:3] == (b"AF", PROTOCOL_VERSION, 0)


@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=2, max_size=40), st.sampled_from(["", "t"]))
def test_compact_frames_round_trip(sent: list[Any], target: str) -> None:
    # One kind, target and sender for every message: the header takes the compact form.
    enc = encoder()
    for i, value in enumerate(sent):
        enc.add(9, target, "me", i, value)
    frames = drain(enc)
    assert b'{"k":9' in frames[0]
    got = decode_all(frames)
    assert sorted(m[3] for m in got) == list(range(len(sent)))
    for kind, got_target, sender, cid, value in got:
        assert (kind, got_target, sender) == (9, target, "me")
        assert same(sent[cid], value)
    if target:
        assert [m[3] for m in got] == list(range(len(sent)))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["k", "t", "s", "c", "v", "x"]),
        json_values | st.lists(st.integers(-2, 5) | st.none(), max_size=6),
        max_size=6,
    ),
    st.lists(st.integers(-3, 300), max_size=6),
    st.binary(max_size=100),
)
def test_fuzz_compact_entries(entries: dict[str, Any], blens: list[int], body: bytes) -> None:
    header = orjson.dumps((entries, None, blens, [], None))
    data = PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, len(header)) + header + body
    _decode_only_protocol_errors([data])
