"""Shared-memory segments holding one serialized value each.

A segment is a file in ``/dev/shm`` (a tmpfs: memory, not disk), named after the session and
the object, written once by its producer and mapped read-only by every reader on the node.
Readers unpickle with the segment's buffers as protocol-5 out-of-band buffers, so a numpy array
comes back as a read-only view of the shared pages: one copy on ``put``, none on ``get``.
Unlinking a segment frees it once the last reader's mapping is gone.

A process may reuse a segment it wrote once the object in it is freed and nothing reads it any
more (see ``Core`` in ``actorflow/cluster/core.py``): the new value is copied over the old one in
pages that are already allocated and mapped, ten times faster than filling fresh pages. The
header's generation tells a reader which value a segment holds, so a stale reference fails
loudly instead of reading the newer value.

A process holds the liveness lock of the node a segment is named after before it creates the
segment (``actorflow/objects/sweep.py``), so what a process killed hard leaves here is swept by
the next node that starts on this machine, and a live process's segments never are.

Layout (little-endian)::

    magic "AFS2" | u32 nbuf | u64 meta_len | u64 generation | nbuf x u64 buf_len | pad to 64
    meta | pad to 64 | buf 0 | pad to 64 | buf 1 | ...
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import struct
import sys
import time
from collections.abc import Iterator
from typing import Any

from actorflow.objects import sweep
from actorflow.objects.serialization import Serialized

__all__ = [
    "SHM_DIR",
    "Mapping",
    "blank_segment",
    "cleanup_session",
    "exclusively",
    "exists",
    "list_segments",
    "parse",
    "read_segment",
    "rewrite",
    "segment_size",
    "unlink_if_same",
    "unlink_segment",
    "write_segment",
]

SHM_DIR = sweep.SHM_DIR
_MAGIC = b"AFS2"
_ALIGN = 64
_HEAD = struct.Struct("<4sIQQ")  # magic, nbuf, meta_len, generation
_WRITE_CHUNK = 64 << 20  # pwrite at most this much at once


def _align(n: int) -> int:
    return (n + _ALIGN - 1) & ~(_ALIGN - 1)


def _path(name: str) -> str:
    if "/" in name or name.startswith("."):
        raise ValueError(f"invalid segment name {name!r}")
    return os.path.join(SHM_DIR, name)


def _claim(name: str) -> None:
    """Before this process creates segment ``name``: hold the liveness lock of the node it
    is named after, so that no sweeper takes it for a dead process's (``sweep.py``)."""
    owner = sweep.owner_of(name)
    if owner is not None:
        sweep.claim_node(owner)


def _layout(value: Serialized, generation: int) -> tuple[bytes, list[int], int]:
    """The header, the offsets of meta and of each buffer, and the total size."""
    sizes = [b.nbytes for b in value.buffers]
    header = _HEAD.pack(_MAGIC, len(sizes), len(value.meta), generation) + struct.pack(
        f"<{len(sizes)}Q", *sizes)
    offsets = [_align(len(header))]
    end = _align(offsets[0] + len(value.meta))
    for size in sizes:
        offsets.append(end)
        end = _align(end + size)
    return header, offsets, max(end, 1)


def exists(name: str) -> bool:
    """Is segment ``name`` in shared memory now (not freed, not spilled to disk)?"""
    return os.path.exists(_path(name))


def path_of(name: str) -> str:
    """The file of segment ``name``."""
    return _path(name)


def free_bytes() -> int:
    """Bytes free for new segments in this machine's shared memory (``SHM_DIR``)."""
    fs = os.statvfs(SHM_DIR)
    return fs.f_bavail * fs.f_frsize


def segment_size(value: Serialized) -> int:
    """The bytes a segment holding ``value`` takes."""
    return _layout(value, 0)[2]


def _flat(buf: memoryview) -> memoryview:
    return buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf


class Mapping:
    """A segment mapped in this process.

    ``views()`` hands out a fresh view of the whole mapping; ``in_use()`` says whether any view
    handed out (or anything made from one: a numpy array, its slices) is still alive. That
    rests on CPython's reference counts: every live view keeps one managed buffer, which keeps
    one reference to the mmap object, and nothing else refers to it but this record.

    While it is **pinned** the mapping holds its file open with a shared ``flock``: the node's
    spiller (``actorflow/objects/spill.py``) takes a segment only when it gets the lock
    exclusively, so a segment is never spilled while a pinned reader maps it. Unpinned, it
    holds no descriptor (a process may keep thousands of mappings). A pin that cannot be had
    (no descriptor left, the file replaced) is simply not taken: the mapped bytes stay right,
    only the spiller may then move the segment (its pages stay until the mapping goes).
    """

    __slots__ = ("_fd", "_ino", "_mm", "name", "pinned_at", "size", "writable")

    def __init__(self, name: str, *, writable: bool = False, populate: bool = True,
                 pin: bool = True) -> None:
        fd = os.open(_path(name), os.O_RDWR if writable else os.O_RDONLY)
        try:
            info = os.fstat(fd)
            size = info.st_size
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            # the pages already exist (written by their producer): map them all at once
            flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
            self._mm = mmap.mmap(fd, size, flags=flags, prot=prot)
        finally:
            # (Python's mmap keeps a duplicate of the descriptor: the same open file, so a
            # lock taken on it would last as long as the mapping. Pins open the file anew.)
            os.close(fd)
        self._fd = -1
        self._ino = info.st_ino
        self.name = name
        self.size = size
        self.writable = writable
        self.pinned_at = 0.0
        if pin:
            self.pin()

    @property
    def pinned(self) -> bool:
        return self._fd >= 0

    def view(self) -> memoryview:
        return memoryview(self._mm)

    def in_use(self) -> bool:
        return sys.getrefcount(self._mm) > 2  # this record's reference and the argument's

    def _open(self) -> bool:
        """Open the file again (when it is still the one mapped)."""
        if self._fd >= 0:
            return True
        try:
            fd = os.open(_path(self.name), os.O_RDONLY)
        except OSError:  # gone (spilled, freed), or no descriptor left
            return False
        try:
            if os.fstat(fd).st_ino != self._ino:
                os.close(fd)
                return False
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def _lock(self, kind: int) -> bool:
        if not self._open():
            return False
        try:
            fcntl.flock(self._fd, kind | fcntl.LOCK_NB)
        except OSError:
            return False
        self.pinned_at = time.monotonic()
        return True

    def pin(self) -> bool:
        """Hold the shared lock (False: the spiller holds it now, or the file is gone)."""
        if self._lock(fcntl.LOCK_SH):
            return True
        self.unpin()
        return False

    def unpin(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # (the lock goes with it)

    def exclusive(self) -> bool:
        """Take the lock exclusively (no reader pins it, no spiller has it), for a rewrite;
        False when that cannot be had now. :meth:`pin` turns it back into a shared one."""
        if self._lock(fcntl.LOCK_EX):
            return True
        self.unpin()
        return False

    def gone(self) -> bool:
        """Was the file unlinked (freed, or spilled to disk) since it was mapped?"""
        try:
            if self._fd >= 0:
                return os.fstat(self._fd).st_nlink == 0
            return os.stat(_path(self.name)).st_ino != self._ino
        except OSError:
            return True

    def close(self) -> None:
        try:
            self._mm.close()
        except BufferError:  # a view is still alive: the mapping goes with the last of them
            pass
        self.unpin()


_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def parse(view: memoryview, name: str) -> tuple[int, memoryview, list[memoryview]]:
    """``(generation, meta, buffers)`` of the value in a mapped segment (views, no copy)."""
    magic, nbuf, meta_len, generation = _HEAD.unpack_from(view, 0)
    if magic != _MAGIC:
        raise ValueError(f"segment {name!r} is not an actorflow object")
    sizes = struct.unpack_from(f"<{nbuf}Q", view, _HEAD.size)
    offset = _align(_HEAD.size + 8 * nbuf)
    meta = view[offset : offset + meta_len]
    offset = _align(offset + meta_len)
    buffers = []
    for size in sizes:
        buffers.append(view[offset : offset + size])
        offset = _align(offset + size)
    return generation, meta, buffers


def write_segment(name: str, value: Serialized, generation: int = 0) -> int:
    """Create segment ``name`` holding ``value``; returns its size in bytes.

    The bytes go in with ``pwrite``: the kernel fills fresh tmpfs pages directly, about twice
    as fast as faulting them in one by one through a mapping."""
    header, offsets, total = _layout(value, generation)
    _claim(name)
    fd = os.open(_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, total)
        _pwrite_all(fd, memoryview(header), 0)
        _pwrite_all(fd, memoryview(value.meta), offsets[0])
        for start, buf in zip(offsets[1:], value.buffers, strict=True):
            _pwrite_all(fd, _flat(buf), start)
    except BaseException:
        os.close(fd)
        unlink_segment(name)
        raise
    os.close(fd)
    return total


def blank_segment(name: str, size: int, *, keep_free: float = 0.25) -> Mapping:
    """Create segment ``name`` of ``size`` zero bytes with its pages allocated and mapped
    writable, for a later :func:`rewrite` (a spare: see ``actorflow/objects/store.py``).
    Blocking (the kernel zeroes every page): run it off the event loop. Raises OSError
    (``ENOSPC``) rather than leave less than ``keep_free`` of the filesystem free."""
    _claim(name)
    fd = os.open(_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    mapping: Mapping | None = None
    try:
        fs = os.fstatvfs(fd)
        if fs.f_bavail * fs.f_frsize - size < keep_free * fs.f_blocks * fs.f_frsize:
            raise OSError(errno.ENOSPC, f"no room for a spare segment of {size} bytes in "
                                        f"{SHM_DIR}")
        os.ftruncate(fd, size)
        if hasattr(os, "posix_fallocate"):  # no room: an error now, not a SIGBUS later
            os.posix_fallocate(fd, 0, size)
        mapping = Mapping(name, writable=True, populate=False)
        # map every page now, with the GIL released (mmap's MAP_POPULATE holds it: 40+ ms of
        # a stalled event loop per 100 MiB): the kernel writes zeros into the mapping
        zero = os.open("/dev/zero", os.O_RDONLY)
        view = mapping.view()
        try:
            done = 0
            while done < size:
                done += os.readv(zero, [view[done : done + _WRITE_CHUNK]])
        finally:
            view.release()
            os.close(zero)
        return mapping
    except BaseException:
        if mapping is not None:
            mapping.close()
        unlink_segment(name)
        raise
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    n = data.nbytes
    while done < n:
        done += os.pwrite(fd, data[done : done + _WRITE_CHUNK], offset + done)


def rewrite(mapping: Mapping, value: Serialized, generation: int) -> int:
    """Write ``value`` over a segment this process owns and no one reads any more (its pages
    are mapped and faulted in already: a plain copy). Returns the bytes used."""
    header, offsets, total = _layout(value, generation)
    if total > mapping.size or not mapping.writable:
        raise ValueError(f"segment {mapping.name} cannot take {total} bytes")
    view = mapping.view()
    try:
        view[: len(header)] = header
        view[offsets[0] : offsets[0] + len(value.meta)] = value.meta
        for start, buf in zip(offsets[1:], value.buffers, strict=True):
            flat = _flat(buf)
            view[start : start + flat.nbytes] = flat
    finally:
        view.release()
    return total


def read_segment(name: str) -> tuple[memoryview, list[memoryview]]:
    """Map segment ``name`` read-only; returns (meta, buffers) as views into the mapping."""
    fd = os.open(_path(name), os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    _, meta, buffers = parse(memoryview(mm), name)
    return meta, buffers


@contextlib.contextmanager
def exclusively(name: str) -> Iterator[int | str]:
    """(Blocking.) Segment ``name`` opened with its exclusive lock taken without waiting: the
    block gets the file descriptor, or "gone" (no such segment) or "busy" (a reader pins it,
    or its writer rewrites it). The lock goes with the descriptor at the block's end."""
    try:
        fd = os.open(path_of(name), os.O_RDONLY)
    except FileNotFoundError:
        yield "gone"
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield "busy"
            return
        yield fd
    finally:
        os.close(fd)


def unlink_if_same(name: str, fd: int) -> bool:
    """Unlink segment ``name`` if the name still leads to the file open as ``fd`` (not a
    newer segment of the same name)."""
    path = path_of(name)
    try:
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            return False
    except FileNotFoundError:
        return False
    os.unlink(path)
    return True


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
