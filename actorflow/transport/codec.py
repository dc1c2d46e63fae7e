"""The wire format and the sending half of it (``docs/protocol.md`` is the specification).

A link carries websocket binary messages of two sorts:

- a **batch frame**: an 8-byte prefix (magic ``AF``, version, flags, header length), an orjson
  header ``[entries, blobs, special, raw]`` and a body. ``entries`` is flat: five items per
  message, ``kind, target, sender, cid, value``. Values JSON carries exactly (a short ``str``,
  a 64-bit ``int``, ``bool``, ``None``, a finite ``float``) sit in ``entries`` itself; the
  others are ``null`` there and described in ``blobs`` (``bytes`` values: message index and
  length, the bytes in the body) or in ``special`` (a flat list of records: a cloudpickle
  protocol-5 stream with its out-of-band buffers in the body, or, for a message of
  ``stream_threshold`` bytes or more, a stream whose bytes follow as raw chunks).
- a **raw chunk**: bytes of one streamed message, announced by the ``raw`` field
  (``[stream id, offset, length]``) of the batch frame just before it. A raw chunk is a slice of
  the sender's own buffer, handed to the socket without a copy; batch frames go out between
  chunks, so a large message never holds up the small ones queued behind it.

Messages to the same non-empty target are delivered in the order they were sent (a streamed
message holds back later messages to its target until it is complete); a message with an
empty target (a reply) does not wait for any other.

The encoder and decoder are pure (no I/O, no clock), so they are fuzzed and property-tested
directly. Keeping ``entries`` flat means a message of JSON values costs no container of its
own on either side: no allocation, and nothing for the garbage collector to walk.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from collections import deque
from collections.abc import Iterator
from itertools import repeat
from typing import Any, Final

import cloudpickle
import orjson

from actorflow._errors import SerializationError

__all__ = [
    "BYTES_OVERHEAD",
    "ENC_PICKLE",
    "ENC_STREAM_BYTES",
    "ENC_STREAM_PICKLE",
    "FLAT_LIMIT",
    "INLINE_STR",
    "MAGIC",
    "PREFIX",
    "PROTOCOL_VERSION",
    "Batch",
    "Encoder",
    "Envelope",
    "UndecodableValue",
    "compact",
    "dumps",
    "frame",
]

#: Bumped on any change a peer of the previous version would misread.
PROTOCOL_VERSION: Final = 1
MAGIC: Final = b"AF"
#: magic, version, flags (0), header length.
PREFIX: Final = struct.Struct("<2sBBI")

# Special records: idx, enc, count, then `count` ints. (Bytes values are not special records:
# ``blobs`` lists them, two ints each: idx, n.)
ENC_PICKLE: Final = 2  # plen, b1..bk: pickle stream + k out-of-band buffers in the body
ENC_STREAM_BYTES: Final = 3  # sid, n: bytes that follow as raw chunks
ENC_STREAM_PICKLE: Final = 4  # sid, plen, b1..bk: a pickle and its buffers, as raw chunks

#: A received message: ``(kind, target, sender, cid, value)``.
Envelope = tuple[Any, Any, Any, Any, Any]

#: JSON carries a str inline up to this many characters; longer ones are pickled.
INLINE_STR: Final = 1024
#: Most messages in one batch frame, times five (the length of ``entries``).
FLAT_LIMIT: Final = 5 * 4096
_NOTHING: Final[list[int]] = []
_PREFIX_PACK: Final = PREFIX.pack
#: What a bytes message counts for in a batch's size beside its bytes: at most
#: ``batch_bytes / BYTES_OVERHEAD`` such messages share a frame.
BYTES_OVERHEAD: Final = 64
# Bytes an inline message is reckoned to take, for push-back.
_ENTRY_ESTIMATE: Final = 48


class UndecodableValue:
    """Stands in for a payload that arrived intact but could not be unpickled here (a class
    this process cannot import, a failing ``__setstate__``...). ``error`` says why."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"UndecodableValue({type(self.error).__name__}: {self.error})"


class Batch:
    """Received messages, in delivery order. Iterating yields
    ``(kind, target, sender, cid, value)`` tuples. Field types are as the (authenticated)
    peer sent them: a consumer checks what it relies on."""

    __slots__ = ("_cols", "_flat")

    def __init__(
        self, flat: list[Any], cols: tuple[Any, Any, Any, list[Any], list[Any]] | None = None
    ) -> None:
        self._flat = flat  # five items per message, or unused when cols is given
        self._cols = cols  # (kind, target, sender, cids, values): one kind/target/sender

    def __len__(self) -> int:
        if self._cols is None:
            return len(self._flat) // 5
        return len(self._cols[3])

    def __iter__(self) -> Iterator[Envelope]:
        if self._cols is None:
            it = iter(self._flat)
            return zip(it, it, it, it, it, strict=False)  # the decoder checked len % 5 == 0
        kind, target, sender, cids, values = self._cols
        n = len(cids)
        return zip(repeat(kind, n), repeat(target, n), repeat(sender, n), cids, values, strict=True)

    def __repr__(self) -> str:
        return f"<Batch of {len(self)} messages>"


def compact(flat: list[Any]) -> Any:
    """``entries`` as they go in a header: ``flat`` itself, or, when every message shares one
    kind, target and sender, ``{"k", "t", "s", "c": [cids], "v": [values] | null}`` (null:
    every value is null). The compact form costs the receiver a fifth of the parsing."""
    count = len(flat) // 5
    if count < 2:
        return flat
    kinds = flat[0::5]
    if kinds.count(kinds[0]) != count:
        return flat
    targets = flat[1::5]
    if targets.count(targets[0]) != count:
        return flat
    senders = flat[2::5]
    if senders.count(senders[0]) != count:
        return flat
    values = flat[4::5]
    return {
        "k": kinds[0],
        "t": targets[0],
        "s": senders[0],
        "c": flat[3::5],
        "v": None if values.count(None) == count else values,
    }


# ----------------------------------------------------------------------------- pickling
class _Dumper:
    """A reusable cloudpickle pickler: building one per message costs about a microsecond,
    more than pickling a small message does."""

    __slots__ = ("_buffers", "_busy", "_file", "_pickler")

    def __init__(self) -> None:
        self._busy = False
        self._reset()

    def _reset(self) -> None:
        self._file = io.BytesIO()
        self._buffers: list[pickle.PickleBuffer] = []
        self._pickler = cloudpickle.Pickler(
            self._file, protocol=5, buffer_callback=self._buffers.append
        )

    def dumps(self, value: Any) -> tuple[bytes, list[memoryview]]:
        if self._busy:  # re-entered from a __reduce__: use a fresh pickler
            return _Dumper().dumps(value)
        self._busy = True
        try:
            self._pickler.dump(value)
            data = self._file.getvalue()
            buffers = [b.raw() for b in self._buffers]  # flat views of the buffers: no copy
        except BaseException:
            self._reset()  # the pickler may be mid-frame
            raise
        else:
            file = self._file
            file.seek(0)
            file.truncate()
            self._pickler.clear_memo()
            self._pickler.globals_ref.clear()
            self._buffers.clear()
        finally:
            self._busy = False
        return data, buffers


_DUMPER = _Dumper()


def dumps(value: Any) -> tuple[bytes, list[memoryview]]:
    """Pickle ``value`` (cloudpickle, protocol 5): the stream and its out-of-band buffers.

    A class may define ``__af_plain__(self) -> bool``: True when the value holds only builtins
    and importable classes, so the C pickler writes it as cloudpickle would (the cluster's
    hot records do); such values skip cloudpickle.

    Raises :class:`SerializationError` naming the value's type and the cause.
    """
    plain = getattr(type(value), "__af_plain__", None)
    if plain is not None and plain(value):
        # the class vouches that the C pickler writes this value exactly as cloudpickle
        # would (only builtins and importable classes inside): several times cheaper
        return pickle.dumps(value, protocol=5), []
    try:
        return _DUMPER.dumps(value)
    except Exception as exc:
        raise SerializationError(
            f"cannot pickle a message of type {_type_name(value)}: {type(exc).__name__}: "
            f"{exc}. Messages must be picklable (no locks, sockets, open files or generators)."
        ) from exc


def _type_name(value: Any) -> str:
    cls = type(value)
    if cls.__module__ in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def frame(
    flat: list[Any],
    blobs: _Blobs | None,
    special: list[int],
    raw: list[int] | None,
    body: list[Any],
) -> bytes:
    """One batch frame: ``blobs`` (from :func:`_take_blobs`) are the bytes values taken out of
    ``flat``; their bytes go first in the body, then ``body``, the special records' pieces."""
    prefix = PREFIX.pack
    if blobs is None:
        header = orjson.dumps((compact(flat), None, None, special, raw))
        return b"".join((prefix(MAGIC, PROTOCOL_VERSION, 0, len(header)), header, *body))
    indices, lengths, values = blobs
    header = orjson.dumps((compact(flat), indices, lengths, special, raw))
    prefix_bytes = prefix(MAGIC, PROTOCOL_VERSION, 0, len(header))
    return b"".join((prefix_bytes, header, *values, *body))


# ----------------------------------------------------------------------------- encoder
#: The bytes values of a batch: (their indices, or None when every value is bytes; their
#: lengths; the values).
_Blobs = tuple[list[int] | None, list[int], list[bytes]]


class _Batch:
    """Messages that will leave in one batch frame. ``flat`` may hold ``bytes`` values: they
    move to the body when the frame is built."""

    __slots__ = ("body", "flat", "size", "special", "streams")

    def __init__(
        self,
        flat: list[Any],
        size: int,
        special: list[int],
        body: list[bytes | memoryview],
        streams: list[_OutStream],
    ) -> None:
        self.flat = flat
        self.size = size  # body bytes, plus an estimate for inline values once sealed
        self.special = special
        self.body = body  # the special records' pieces
        self.streams = streams  # streams this frame announces


class _OutStream:
    """A large message whose bytes go out as raw chunks after its announcement."""

    __slots__ = ("offset", "pieces", "sid", "total")

    def __init__(self, sid: int, pieces: list[memoryview]) -> None:
        self.sid = sid
        self.pieces = deque(p for p in pieces if len(p))
        self.offset = 0
        self.total = sum(len(p) for p in pieces)


class Encoder:
    """Queues outgoing messages and cuts them into frames. One event loop owns it.

    The hot path is the caller's (``Link.send``), on the current batch's fields:

    - a value :func:`inline` accepts: append ``kind, target, sender, cid, value`` to
      :attr:`flat`;
    - a ``bytes`` value, when ``size + len(value) + BYTES_OVERHEAD < fast_limit``: set
      :attr:`size` to that sum and append the same five items (the overhead bounds the
      number of such messages in a batch);
    - anything else: :meth:`add`.

    and then, once ``len(flat) >= FLAT_LIMIT`` after an inline append, :meth:`seal`.
    :attr:`over` says whether the backlog passed the high-water mark. :meth:`next_output`
    gives what to send next.
    """

    __slots__ = (
        "_chunk_size",
        "_high_water",
        "_max_frame",
        "_next_sid",
        "_sealed",
        "_sealed_bytes",
        "_stream_bytes",
        "_streams",
        "batch_bytes",
        "body",
        "fast_limit",
        "flat",
        "over",
        "sent_messages",
        "size",
        "special",
        "stream_threshold",
        "streams",
    )

    def __init__(
        self,
        *,
        batch_bytes: int,
        stream_threshold: int,
        chunk_size: int,
        max_frame_size: int,
        high_water: int,
    ) -> None:
        room = max_frame_size - max_frame_size // 8  # an eighth for prefix and header
        self._max_frame = max_frame_size
        self.batch_bytes = min(batch_bytes, room)
        self._chunk_size = min(chunk_size, room)
        self._high_water = high_water
        self.stream_threshold = min(stream_threshold, self.batch_bytes)
        #: Below this, a bytes message fits the current batch and is not streamed.
        self.fast_limit = self.stream_threshold
        self._sealed: deque[_Batch] = deque()
        self._sealed_bytes = 0
        self._streams: deque[_OutStream] = deque()  # announced, chunks still to send
        self._stream_bytes = 0  # queued in streams, announced or not
        self._next_sid = 1
        #: The backlog is over the high-water mark (updated as batches are sealed and sent).
        self.over = False
        self.sent_messages = 0
        self._fresh()

    def _fresh(self) -> None:
        #: The current batch: five entries per message, body bytes, records, pieces, streams.
        self.flat: list[Any] = []
        self.size = 0
        self.special: list[int] = []
        self.body: list[bytes | memoryview] = []
        self.streams: list[_OutStream] = []

    @property
    def queued_bytes(self) -> int:
        """Bytes queued and not yet handed to the carrier (inline values estimated)."""
        return self._sealed_bytes + self.size + self._stream_bytes

    # -- queueing
    def add(self, kind: int, target: str, sender: str, cid: int, value: Any) -> None:
        """Queue one message. Raises :class:`SerializationError` if it cannot be pickled."""
        if inline(value):
            self.flat += (kind, target, sender, cid, value)
        elif type(value) is bytes:
            n = len(value)
            if n >= self.stream_threshold:
                self._add_stream(kind, target, sender, cid, ENC_STREAM_BYTES, [memoryview(value)])
                return
            if self.size + n + BYTES_OVERHEAD > self.batch_bytes:
                self.seal()
            self.size += n + BYTES_OVERHEAD
            self.flat += (kind, target, sender, cid, value)
        else:
            data, buffers = dumps(value)
            total = len(data) + sum(len(b) for b in buffers)
            if total >= self.stream_threshold:
                pieces = [memoryview(data), *buffers]
                self._add_stream(kind, target, sender, cid, ENC_STREAM_PICKLE, pieces)
                return
            if self.size + total > self.batch_bytes:
                self.seal()
            flat = self.flat
            self.special += (len(flat) // 5, ENC_PICKLE, 1 + len(buffers), len(data))
            self.special += (len(b) for b in buffers)
            flat += (kind, target, sender, cid, None)
            self.body.append(data)
            self.body += buffers
            self.size += total
        if len(self.flat) >= FLAT_LIMIT or self.size >= self.batch_bytes:
            self.seal()

    def _add_stream(
        self, kind: int, target: str, sender: str, cid: int, enc: int, pieces: list[memoryview]
    ) -> None:
        stream = _OutStream(self._next_sid, pieces)
        self._next_sid += 1
        flat = self.flat
        self.special += (len(flat) // 5, enc, 1 + len(pieces), stream.sid)
        self.special += (len(p) for p in pieces)
        flat += (kind, target, sender, cid, None)
        self.streams.append(stream)
        self._stream_bytes += stream.total
        self.over = self.queued_bytes > self._high_water
        if len(flat) >= FLAT_LIMIT:
            self.seal()

    def seal(self) -> None:
        """Close the current batch; later messages go in the next."""
        if not self.flat:
            return
        size = self.size + _ENTRY_ESTIMATE * (len(self.flat) // 5)
        self._sealed.append(_Batch(self.flat, size, self.special, self.body, self.streams))
        self._sealed_bytes += size
        self._fresh()
        self.over = self.queued_bytes > self._high_water

    # -- output
    def has_output(self) -> bool:
        return bool(self.flat or self._sealed or self._streams)

    def pending_messages(self) -> int:
        return (len(self.flat) + sum(len(b.flat) for b in self._sealed)) // 5

    def next_frame(self) -> bytes | None:
        """The fast path of :meth:`next_output`: the current batch as one frame, when it holds
        inline values only and nothing else waits; else None (use :meth:`next_output`)."""
        flat = self.flat
        if not flat or self.size or self.special or self._sealed or self._streams:
            return None
        try:
            header = orjson.dumps((compact(flat), None, None, _NOTHING, None))
        except orjson.JSONEncodeError:
            return None  # next_output repairs what orjson refused
        if len(header) + PREFIX.size > self._max_frame:
            return None  # next_output splits it
        self.flat = []
        self.sent_messages += len(flat) // 5
        return _PREFIX_PACK(MAGIC, PROTOCOL_VERSION, 0, len(header)) + header

    def next_output(self) -> list[bytes | memoryview]:
        """The next websocket messages to send, in order: a batch frame of queued messages
        (if any), then, while a stream is in flight, a frame announcing its next chunk and
        the chunk itself. At most one chunk per call, so batch frames queued meanwhile go out
        between chunks."""
        out: list[bytes | memoryview] = []
        if not self._sealed and self.flat:
            self.seal()
        if self._sealed:
            batch = self._sealed.popleft()
            self._sealed_bytes -= batch.size
            out.append(self._encode(batch))
        if self._streams:
            stream = self._streams[0]
            piece = stream.pieces[0]
            chunk = piece[: self._chunk_size]
            out.append(frame([], None, [], [stream.sid, stream.offset, len(chunk)], []))
            out.append(chunk)
            stream.offset += len(chunk)
            self._stream_bytes -= len(chunk)
            if len(chunk) == len(piece):
                stream.pieces.popleft()
                if not stream.pieces:
                    self._streams.popleft()
            else:
                stream.pieces[0] = piece[len(chunk) :]
        if self.over:
            self.over = self.queued_bytes > self._high_water // 2
        return out

    def _encode(self, batch: _Batch) -> bytes:
        flat = batch.flat
        blobs = _take_blobs(flat) if batch.size else None
        try:
            data = frame(flat, blobs, batch.special, None, batch.body)
        except orjson.JSONEncodeError:
            _repair(batch)
            data = frame(flat, blobs, batch.special, None, batch.body)
        if len(data) > self._max_frame and len(flat) > 5:
            # The header outgrew the peer's limit (long strings): half now, half next.
            if blobs is not None:
                _restore_blobs(flat, blobs)
            first, second = _split(batch)
            self._sealed.appendleft(second)
            self._sealed_bytes += second.size
            return self._encode(first)
        self.sent_messages += len(flat) // 5
        self._streams.extend(batch.streams)  # announced: their chunks may follow
        return data


def _take_blobs(flat: list[Any]) -> _Blobs | None:
    """Move the ``bytes`` values out of ``flat``: ``(indices or None if every value was
    bytes, lengths, the values)``, or None if there were none."""
    values = flat[4::5]
    types = set(map(type, values))
    if bytes not in types:
        return None
    if len(types) == 1:
        flat[4::5] = [None] * len(values)
        return None, list(map(len, values)), values
    indices = [i for i, v in enumerate(values) if type(v) is bytes]
    blobs = [values[i] for i in indices]
    for i in indices:
        flat[5 * i + 4] = None
    return indices, list(map(len, blobs)), blobs


def _restore_blobs(flat: list[Any], blobs: _Blobs) -> None:
    indices, _, values = blobs
    for i, value in zip(indices or range(len(values)), values, strict=True):
        flat[5 * i + 4] = value


def inline(value: Any) -> bool:
    """Whether ``value`` travels inside its entry as JSON (read back exactly as it was)."""
    t = type(value)
    if t is int or t is bool or value is None:
        return True
    if t is str:
        return len(value) <= INLINE_STR
    if t is float:
        return math.isfinite(value)
    return False


def _records(special: list[int]) -> Iterator[tuple[int, int, list[int]]]:
    """``(idx, enc, values)`` of each special record (of a batch we built)."""
    i = 0
    while i < len(special):
        count = special[i + 2]
        yield special[i], special[i + 1], special[i + 3 : i + 3 + count]
        i += 3 + count


def _repair(batch: _Batch) -> None:
    """Pickle the inline values orjson refused (an int past 64 bits, a str with lone
    surrogates). A target or sender that is not a str is a caller's bug: TypeError."""
    flat = batch.flat
    for i in range(0, len(flat), 5):
        try:
            orjson.dumps(flat[i : i + 4])
        except orjson.JSONEncodeError:
            raise TypeError(f"message header {flat[i : i + 4]!r} is not JSON") from None
        if flat[i + 4] is None:
            continue
        try:
            orjson.dumps(flat[i + 4])
        except orjson.JSONEncodeError:
            data = pickle.dumps(flat[i + 4], protocol=5)  # an int or a str: always picklable
            batch.special += (i // 5, ENC_PICKLE, 1, len(data))
            batch.body.append(data)
            flat[i + 4] = None


def _split(batch: _Batch) -> tuple[_Batch, _Batch]:
    """Cut a batch in two halves by message; each keeps its records, pieces and streams."""
    half = len(batch.flat) // 10
    first = _Batch(batch.flat[: 5 * half], 0, [], [], [])
    second = _Batch(batch.flat[5 * half :], 0, [], [], [])
    first_sids = set()
    pos = 0
    for idx, enc, values in _records(batch.special):
        dest, shift = (first, 0) if idx < half else (second, half)
        dest.special += (idx - shift, enc, len(values), *values)
        count = len(values) if enc == ENC_PICKLE else 0  # streams have nothing in the body
        pieces = batch.body[pos : pos + count]
        pos += count
        dest.body += pieces
        first.size += sum(len(p) for p in pieces) if dest is first else 0
        if dest is first and enc in (ENC_STREAM_BYTES, ENC_STREAM_PICKLE):
            first_sids.add(values[0])
    first.size += sum(len(v) for v in first.flat[4::5] if type(v) is bytes)
    for stream in batch.streams:
        (first if stream.sid in first_sids else second).streams.append(stream)
    second.size = batch.size - first.size  # keeps the estimate for inline values
    return first, second
