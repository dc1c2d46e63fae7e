"""Shared-memory segments holding one serialized value each.

A segment is a file in ``/dev/shm`` (a tmpfs: memory, not disk), named after the session and
the object, written once by its producer and mapped read-only by every reader on the node.
Readers unpickle with the segment's buffers as protocol-5 out-of-band buffers, so a numpy array
comes back as a read-only view of the shared pages: one copy on ``put``, none on ``get``.
Unlinking a segment frees it once the last reader's mapping is gone.

Layout (little-endian)::

    magic "AFS1" | u32 nbuf | u64 meta_len | nbuf x u64 buf_len | pad to 64
    meta | pad to 64 | buf 0 | pad to 64 | buf 1 | ...
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
from typing import Any

from actorflow.objects.serialization import Serialized

__all__ = [
    "SHM_DIR",
    "cleanup_session",
    "list_segments",
    "read_segment",
    "unlink_segment",
    "write_segment",
]

SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
_MAGIC = b"AFS1"
_ALIGN = 64


def _align(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


def _path(name: str) -> str:
    if "/" in name or name.startswith("."):
        raise ValueError(f"invalid segment name {name!r}")
    return os.path.join(SHM_DIR, name)


def write_segment(name: str, value: Serialized) -> int:
    """Create segment ``name`` holding ``value``; returns its size in bytes."""
    sizes = [b.nbytes for b in value.buffers]
    header = struct.pack(f"<4sIQ{len(sizes)}Q", _MAGIC, len(sizes), len(value.meta), *sizes)
    offset = _align(len(header))
    layout = []
    layout.append(offset)
    offset = _align(offset + len(value.meta))
    for size in sizes:
        layout.append(offset)
        offset = _align(offset + size)
    total = max(offset, 1)
    fd = os.open(_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, total)
        with mmap.mmap(fd, total) as mm:
            mm[: len(header)] = header
            mm[layout[0] : layout[0] + len(value.meta)] = value.meta
            for start, buf, size in zip(layout[1:], value.buffers, sizes, strict=True):
                mm[start : start + size] = buf.cast("B") if buf.format != "B" else buf
    except BaseException:
        os.close(fd)
        unlink_segment(name)
        raise
    os.close(fd)
    return total


def read_segment(name: str) -> tuple[memoryview, list[memoryview]]:
    """Map segment ``name`` read-only; returns (meta, buffers) as views into the mapping."""
    fd = os.open(_path(name), os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    view = memoryview(mm)
    magic, nbuf, meta_len = struct.unpack_from("<4sIQ", view, 0)
    if magic != _MAGIC:
        raise ValueError(f"segment {name!r} is not an actorflow object")
    sizes = struct.unpack_from(f"<{nbuf}Q", view, 16)
    offset = _align(16 + 8 * nbuf)
    meta = view[offset : offset + meta_len]
    offset = _align(offset + meta_len)
    buffers = []
    for size in sizes:
        buffers.append(view[offset : offset + size])
        offset = _align(offset + size)
    return meta, buffers


def unlink_segment(name: str) -> None:
    """Remove the segment's name; readers' mappings stay valid until they are dropped."""
    try:
        os.unlink(_path(name))
    except FileNotFoundError:
        pass


def cleanup_session(prefix: str) -> int:
    """Unlink every segment whose name starts with ``prefix``; returns how many."""
    count = 0
    try:
        names: list[Any] = os.listdir(SHM_DIR)
    except OSError:
        return 0
    for entry in names:
        if entry.startswith(prefix):
            unlink_segment(entry)
            count += 1
    return count


def list_segments(prefix: str) -> list[dict[str, Any]]:
    """The segments whose name starts with ``prefix``: name and size in bytes."""
    out: list[dict[str, Any]] = []
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return out
    for entry in names:
        if entry.startswith(prefix):
            try:
                out.append({"object": entry, "bytes": os.stat(_path(entry)).st_size})
            except OSError:
                continue
    return out
