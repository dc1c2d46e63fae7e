"""The receiving half of the wire format (see :mod:`actorflow.transport.codec`).

:meth:`Decoder.decode` takes one websocket message at a time and returns the messages now
complete, in delivery order. For any input it returns or raises :class:`ProtocolError`, and
nothing else; after an error the link is closed and the decoder is not used again. A payload
that is well framed but does not unpickle here (a class this process cannot import) becomes an
:class:`UndecodableValue` in its message, so one bad message never fails its neighbours.
"""

from __future__ import annotations

import pickle
import struct
from collections import deque
from itertools import accumulate, chain, pairwise
from typing import Any, Final, NoReturn

import orjson

from actorflow._errors import ProtocolError
from actorflow.transport.codec import (
    ENC_PICKLE,
    ENC_STREAM_BYTES,
    ENC_STREAM_PICKLE,
    MAGIC,
    PREFIX,
    PROTOCOL_VERSION,
    Batch,
    UndecodableValue,
)

__all__ = ["Decoder"]

_EMPTY: Final = Batch([])
_HEAD: Final = PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, 0)[:4]  # magic, version, no flags
_U32: Final = struct.Struct("<I")


class _Pending:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<streamed value still arriving>"


_PENDING: Final = _Pending()


class _InStream:
    __slots__ = ("chunks", "enc", "entry", "lengths", "received", "sid", "total")

    def __init__(self, sid: int, enc: int, lengths: list[int]) -> None:
        self.sid = sid
        self.enc = enc
        self.lengths = lengths
        self.total = sum(lengths)
        self.received = 0
        self.chunks: list[bytes] = []
        self.entry: list[Any] = []  # [kind, target, sender, cid, value], set by _order


# What malformed input can make the parsing below raise; all become ProtocolError.
_MALFORMED = (ValueError, TypeError, IndexError, KeyError, OverflowError, struct.error)


def _loads(data: memoryview, buffers: list[Any]) -> Any:
    try:
        return pickle.loads(data, buffers=buffers)
    except Exception as exc:  # the payload's own failure, reported in its message
        return UndecodableValue(exc)


def _columns(entries: Any) -> tuple[Any, Any, Any, list[Any], list[Any]]:
    """The compact form of entries (see ``codec.compact``), checked."""
    if type(entries) is not dict or len(entries) != 5:
        raise ProtocolError("the entries are neither a list nor the compact form")
    cids, values = entries["c"], entries["v"]
    if type(cids) is not list:
        raise ProtocolError("the compact entries' call ids are not a list")
    if values is None:
        values = [None] * len(cids)
    elif type(values) is not list or len(values) != len(cids):
        raise ProtocolError("the compact entries' values do not match their call ids")
    return entries["k"], entries["t"], entries["s"], cids, values


def _flatten(cols: tuple[Any, Any, Any, list[Any], list[Any]]) -> list[Any]:
    return list(chain.from_iterable(Batch([], cols)))


def _length(n: Any) -> int:
    if type(n) is not int or n < 0:
        raise ProtocolError(f"invalid length {n!r}")
    return n


class Decoder:
    """Turns received websocket messages back into batches of envelopes."""

    __slots__ = ("_expect", "_held", "_max_message", "_streams")

    def __init__(self, *, max_message_size: int) -> None:
        self._max_message = max_message_size
        self._streams: dict[int, _InStream] = {}  # announced, not complete
        self._expect: tuple[_InStream, int] | None = None  # the next message is a raw chunk
        # target -> entries held behind an incomplete streamed message to that target
        self._held: dict[Any, deque[list[Any]]] = {}

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def decode(self, data: bytes) -> Batch:
        try:
            if self._expect is not None:
                return self._chunk(data)
            return self._frame(data)
        except ProtocolError:
            raise
        except _MALFORMED as exc:
            raise ProtocolError(f"malformed frame: {type(exc).__name__}: {exc}") from None

    def _frame(self, data: bytes) -> Batch:
        size = len(data)
        if data[:4] != _HEAD:  # magic, version, flags: say which is wrong
            self._bad_prefix(data)
        off = 8 + _U32.unpack_from(data, 4)[0]
        if off > size:
            raise ProtocolError("the frame header runs past the end of the frame")
        header = orjson.loads(data[8:off])
        if type(header) is not list or len(header) != 5:
            raise ProtocolError("the frame header is not [entries, bidx, blens, special, raw]")
        entries, bidx, blens, special, raw = header
        if type(special) is not list:
            raise ProtocolError("the frame header is not [entries, bidx, blens, special, raw]")
        flat: list[Any] | None = None
        cols: tuple[Any, Any, Any, list[Any], list[Any]] | None = None
        if type(entries) is list:
            if len(entries) % 5:
                raise ProtocolError("the entries are not five items per message")
            flat = entries
            count = len(entries) // 5
        else:
            cols = _columns(entries)
            count = len(cols[3])
        values = cols[4] if cols is not None else None
        if blens:
            off = self._blobs(data, off, flat, values, count, bidx, blens)
        elif bidx is not None:
            raise ProtocolError("bytes indices without lengths")
        if not special and raw is None and not self._held:  # the common frame
            if off != size:
                raise ProtocolError(f"{size - off} stray bytes after the frame body")
            return Batch(flat or [], cols)
        if flat is None:
            assert cols is not None
            flat = _flatten(cols)
        view = memoryview(data)
        opened: dict[int, _InStream] | None = None
        i, end = 0, len(special)
        while i < end:
            idx, enc, n = special[i], special[i + 1], special[i + 2]
            if type(idx) is not int or not 0 <= idx < count or type(n) is not int or n < 1:
                raise ProtocolError("malformed special record")
            j = i + 3 + n
            if j > end:
                raise ProtocolError("a special record runs past the header")
            slot = 5 * idx + 4
            if enc == ENC_PICKLE:
                lengths = [_length(x) for x in special[i + 3 : j]]
                stop = off + sum(lengths)
                if stop > size:
                    raise ProtocolError("a pickle record runs past the frame")
                pos = off + lengths[0]
                buffers: list[Any] = []
                for length in lengths[1:]:
                    buffers.append(bytearray(view[pos : pos + length]))  # writable, as sent
                    pos += length
                flat[slot] = _loads(view[off : off + lengths[0]], buffers)
                off = stop
            elif enc in (ENC_STREAM_BYTES, ENC_STREAM_PICKLE):
                stream = self._open(enc, special[i + 3 : j])
                opened = opened or {}
                opened[idx] = stream
                flat[slot] = _PENDING
            else:
                raise ProtocolError(f"unknown value encoding {enc!r}")
            i = j
        if off != size:
            raise ProtocolError(f"{size - off} stray bytes after the frame body")
        if raw is not None:
            self._announce(raw)
        if opened is None and not self._held:
            return Batch(flat)
        return self._order(flat, opened or {})

    @staticmethod
    def _blobs(
        data: bytes,
        off: int,
        flat: list[Any] | None,
        values: list[Any] | None,
        count: int,
        bidx: Any,
        blens: Any,
    ) -> int:
        """Put the bytes values into the entries; return the offset after them."""
        if type(blens) is not list or min(blens) < 0:
            raise ProtocolError("malformed bytes lengths")
        ends = list(accumulate(blens, initial=off))
        if ends[-1] > len(data):
            raise ProtocolError("bytes values run past the frame")
        blobs = [data[a:b] for a, b in pairwise(ends)]
        if bidx is None:
            if len(blobs) != count:
                raise ProtocolError("bytes lengths do not match the messages")
            if flat is not None:
                flat[4::5] = blobs
            else:
                assert values is not None
                values[:] = blobs
        else:
            if type(bidx) is not list or len(bidx) != len(blobs):
                raise ProtocolError("bytes indices do not match their lengths")
            if min(bidx) < 0 or max(bidx) >= count:
                raise ProtocolError("a bytes index is out of range")
            for i, value in zip(bidx, blobs, strict=True):
                if flat is not None:
                    flat[5 * i + 4] = value
                else:
                    assert values is not None
                    values[i] = value
        return ends[-1]  # type: ignore[no-any-return]

    @staticmethod
    def _bad_prefix(data: bytes) -> NoReturn:
        if len(data) < PREFIX.size:
            raise ProtocolError(f"a frame of {len(data)} bytes is shorter than the prefix")
        magic, version, flags, _ = PREFIX.unpack_from(data, 0)
        if magic != MAGIC:
            raise ProtocolError("not an actorflow frame (bad magic bytes)")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"a frame of protocol version {version}; this process speaks {PROTOCOL_VERSION}"
            )
        raise ProtocolError(f"unknown frame flags {flags:#x}")

    def _open(self, enc: int, values: list[Any]) -> _InStream:
        if len(values) < 2 or (enc == ENC_STREAM_BYTES and len(values) != 2):
            raise ProtocolError("malformed stream record")
        sid = values[0]
        if type(sid) is not int or sid in self._streams:
            raise ProtocolError(f"stream id {sid!r} is invalid or already open")
        stream = _InStream(sid, enc, [_length(x) for x in values[1:]])
        if stream.total > self._max_message:
            raise ProtocolError(
                f"the peer announced a {stream.total}-byte message; the limit is "
                f"{self._max_message} (max_message_size)"
            )
        if stream.total == 0:
            raise ProtocolError("an empty streamed message")
        self._streams[sid] = stream
        return stream

    def _announce(self, raw: Any) -> None:
        if type(raw) is not list or len(raw) != 3:
            raise ProtocolError("malformed raw chunk announcement")
        sid, offset, length = raw
        stream = self._streams.get(sid) if type(sid) is int else None
        if stream is None:
            raise ProtocolError(f"a raw chunk for unknown stream {sid!r}")
        if offset != stream.received or _length(length) == 0:
            raise ProtocolError("a raw chunk out of order, or empty")
        if stream.received + length > stream.total:
            raise ProtocolError("a raw chunk runs past its stream")
        self._expect = (stream, length)

    def _chunk(self, data: bytes) -> Batch:
        assert self._expect is not None
        stream, length = self._expect
        self._expect = None
        if len(data) != length:
            raise ProtocolError(f"a raw chunk of {len(data)} bytes; {length} were announced")
        stream.chunks.append(data)
        stream.received += length
        if stream.received < stream.total:
            return _EMPTY
        del self._streams[stream.sid]
        entry = stream.entry
        if stream.enc == ENC_STREAM_BYTES:
            entry[4] = b"".join(stream.chunks)
        else:
            whole = memoryview(bytearray().join(stream.chunks))  # writable buffers, one copy
            lengths = stream.lengths
            pos = lengths[0]
            buffers = []
            for n in lengths[1:]:
                buffers.append(whole[pos : pos + n])
                pos += n
            entry[4] = _loads(whole[: lengths[0]], buffers)
        stream.chunks = []
        target = entry[1]
        if not target:
            return Batch(entry)
        queue = self._held[target]
        out: list[Any] = []
        while queue and queue[0][4] is not _PENDING:
            out += queue.popleft()
        if not queue:
            del self._held[target]
        return Batch(out)

    def _order(self, flat: list[Any], opened: dict[int, _InStream]) -> Batch:
        """Hold back what must wait for an incomplete stream; return the rest."""
        out: list[Any] = []
        held = self._held
        for idx in range(len(flat) // 5):
            entry = flat[5 * idx : 5 * idx + 5]
            target = entry[1]
            queue = held.get(target) if target else None
            stream = opened.get(idx)
            if stream is not None:
                stream.entry = entry
                if queue is not None:
                    queue.append(entry)
                elif target:
                    held[target] = deque((entry,))
            elif queue is not None:
                queue.append(entry)
            else:
                out += entry
        return Batch(out)
