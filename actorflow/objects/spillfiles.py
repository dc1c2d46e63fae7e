"""The files of a node's object store (``spill.py``): the page every process of the node
reads (limit, bytes used, disk full), and moving a segment to a spill file and back (blocking:
the store runs these on its threads).

A segment is spilled only under its exclusive ``flock``: readers that map it hold a shared one
(``shm.Mapping``), so a pinned segment is reported "busy" and stays. The copy runs in the
kernel (``copy_file_range``); a restore writes a temporary segment and renames it into place,
so a reader never maps half a value.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Callable, Mapping
from typing import Any

from actorflow._errors import ObjectStoreFullError
from actorflow.objects import shm, sweep

__all__ = [
    "MEMORY_SHARE",
    "SHM_SHARE",
    "StorePage",
    "check_room",
    "default_limit",
    "restore_file",
    "spill_file",
    "spill_name",
    "spill_root",
    "unlink_value",
]

#: Default share of the machine's memory and of its shared-memory filesystem for one node's
#: store: the smaller of the two wins (see docs/guide.md, "Object store memory and spilling").
MEMORY_SHARE = 0.3
SHM_SHARE = 0.5
_COPY_CHUNK = 64 << 20


def spill_root(options: Mapping[str, Any]) -> str:
    """``--spill-dir`` (``spill_dir``), else ``<state directory>/spill``."""
    given = options.get("spill_dir")
    if given:
        return os.path.abspath(os.path.expanduser(str(given)))
    state = os.environ.get("ACTORFLOW_STATE_DIR") or os.path.join(
        os.path.expanduser("~"), ".actorflow")
    return os.path.join(state, "spill")


def spill_name(name: str, generation: int) -> str:
    """The spill file's name of value ``generation`` of segment ``name``. A writer reuses its
    segments' names, so each value has a file of its own: what deletes an older value's file
    late (its restore ending after a newer value was spilled) never meets a newer one's."""
    return f"{name}.g{generation}"


# -- the page every process of a node reads -------------------------------------------------------

_PAGE = struct.Struct("<8sQQQ")  # magic, limit, used, flags
_MAGIC = b"AFSTORE1"
_FULL = 1  # the last spill failed for want of room on disk


def _page_path(node_id: str, *, create: bool) -> str | None:
    directory = sweep.node_lock_dir(create=create)
    return None if directory is None else os.path.join(directory, f"node-{node_id}.store")


class StorePage:
    """The node's limit, bytes used and disk-full flag in a small shared file."""

    def __init__(self, path: str, mm: mmap.mmap) -> None:
        self.path = path
        self._mm = mm

    @classmethod
    def create(cls, node_id: str, limit: int) -> StorePage | None:
        path = _page_path(node_id, create=True)
        if path is None:
            return None
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, _PAGE.size)
            mm = mmap.mmap(fd, _PAGE.size)
        finally:
            os.close(fd)
        page = cls(path, mm)
        page.write(limit, 0, False)
        return page

    @classmethod
    def open(cls, node_id: str) -> StorePage | None:
        path = _page_path(node_id, create=False)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            mm = mmap.mmap(fd, _PAGE.size, prot=mmap.PROT_READ)
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        return cls(path, mm)

    def write(self, limit: int, used: int, full: bool) -> None:
        _PAGE.pack_into(self._mm, 0, _MAGIC, limit, used, _FULL if full else 0)

    def read(self) -> tuple[int, int, bool] | None:
        """``(limit, used, disk full)``, or None when the node has closed its page."""
        magic, limit, used, flags = _PAGE.unpack_from(self._mm, 0)
        if magic != _MAGIC:
            return None
        return limit, used, bool(flags & _FULL)

    def close(self, *, unlink: bool) -> None:
        if unlink:
            with contextlib.suppress(OSError):
                _PAGE.pack_into(self._mm, 0, b"\0" * 8, 0, 0, 0)
                os.unlink(self.path)
        with contextlib.suppress(BufferError):
            self._mm.close()


_pages: dict[str, StorePage | None] = {}


def check_room(node_id: str, size: int) -> None:
    """Raise ObjectStoreFullError when a value of ``size`` bytes can never go into node
    ``node_id``'s store: bigger than its limit, or past the limit while its spill directory is
    full. (No page: the node has no store limit, nothing to check.)"""
    page = _pages.get(node_id)
    if page is None:
        if node_id in _pages:
            return
        page = _pages[node_id] = StorePage.open(node_id)
        if page is None:
            return
    state = page.read()
    if state is None:  # the node closed it (or a new one will come): look again next time
        _pages.pop(node_id, None)
        return
    limit, used, full = state
    if size > limit:
        raise ObjectStoreFullError(size, limit, f"the object store of node {node_id} "
                                                "(object_store_memory)")
    if full and used + size > limit:
        raise ObjectStoreFullError(size, max(0, limit - used),
                                   f"the object store of node {node_id}, whose spill "
                                   "directory is full")


def default_limit() -> int:
    """``MEMORY_SHARE`` of the machine's memory or ``SHM_SHARE`` of its shared-memory
    filesystem, whichever is smaller."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 8 << 30
    try:
        fs = os.statvfs(shm.SHM_DIR)
        shm_size = fs.f_blocks * fs.f_frsize
    except OSError:
        shm_size = memory
    return int(min(MEMORY_SHARE * memory, SHM_SHARE * shm_size))


# -- moving bytes (blocking: on a thread) ----------------------------------------------------------


_buffers = threading.local()


def _copy(src: int, dst: int, size: int) -> None:
    """Copy ``size`` bytes from the start of ``src`` to the start of ``dst`` in the kernel:
    ``copy_file_range`` within one filesystem, ``sendfile`` across two (shared memory and a
    disk are two; a fallback through a buffer of this thread where neither works)."""
    done = _kernel_copy(lambda n, at: os.copy_file_range(src, dst, n, at, at), 0, size)
    if done < size:
        os.lseek(dst, done, os.SEEK_SET)  # sendfile writes at dst's offset
        done = _kernel_copy(lambda n, at: os.sendfile(dst, src, at, n), done, size)
    if done < size:
        _buffered(src, dst, done, size)


_NOT_HERE = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)


def _kernel_copy(step: Callable[[int, int], int], done: int, size: int) -> int:
    """Copy from offset ``done`` to ``size`` with ``step(n, at)``, a system call that copies
    up to ``n`` bytes at offset ``at`` and says how many it did. Returns how far it got:
    ``size``, or less where that call does not work for these files (:data:`_NOT_HERE`)."""
    while done < size:
        try:
            got = step(min(_COPY_CHUNK, size - done), done)
        except OSError as exc:
            if exc.errno not in _NOT_HERE:
                raise
            return done
        if got <= 0:
            raise OSError(errno.EIO, f"short copy at {done} of {size} bytes")
        done += got
    return done


def _buffered(src: int, dst: int, done: int, size: int) -> None:
    buf = getattr(_buffers, "buf", None)
    if buf is None:
        buf = _buffers.buf = memoryview(bytearray(8 << 20))
    while done < size:
        got = os.preadv(src, [buf[: min(len(buf), size - done)]], done)
        if got <= 0:
            raise OSError(errno.EIO, f"short read at {done} of {size} bytes")
        written = 0
        while written < got:
            written += os.pwrite(dst, buf[written:got], done + written)
        done += got


def spill_file(name: str, path: str, generation: int, *, copy: bool = True) -> str:
    """Move segment ``name`` (holding ``generation``) to the file ``path``. Returns "spilled",
    "busy" (pinned: a reader maps it, or its writer rewrites it) or "gone" (freed, or holding
    another value). ``copy=False``: ``path`` holds it already (spilled before and restored):
    only unlink. Raises OSError (ENOSPC: the disk is full; the partial file is removed)."""
    with shm.exclusively(name) as fd:
        if isinstance(fd, str):
            return fd
        info = os.fstat(fd)
        if info.st_nlink == 0 or _generation(fd) != generation:
            return "gone"
        if copy:
            tmp = path + ".tmp"
            out = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
            try:
                _copy(fd, out, info.st_size)
            except BaseException:
                os.close(out)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            os.close(out)
            os.rename(tmp, path)
        shm.unlink_if_same(name, fd)
        return "spilled"


def _generation(fd: int) -> int | None:
    """The generation in the header of the segment open as ``fd`` (None: no header)."""
    head = os.pread(fd, 24, 0)
    return None if len(head) < 24 else int(struct.unpack_from("<Q", head, 16)[0])


def unlink_value(name: str, generation: int) -> bool:
    """Unlink segment ``name`` only while it holds value ``generation``: not once its writer
    reused the name for a newer value (rewritten in the same file, or a new file). Whether it
    did."""
    try:
        fd = os.open(shm.path_of(name), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:  # (readers pin it with this lock too; a writer rewriting it holds it exclusively)
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # rewritten now: a newer value
        if _generation(fd) != generation:
            return False
        return shm.unlink_if_same(name, fd)
    finally:
        os.close(fd)


def restore_file(name: str, path: str) -> int:
    """Copy the spill file ``path`` back into segment ``name``; returns its size. Raises
    FileNotFoundError when the file is gone, OSError when shared memory has no room."""
    src = os.open(path, os.O_RDONLY)
    tmp = f"{name}.r"
    try:
        size = os.fstat(src).st_size
        if shm.free_bytes() < size:
            raise OSError(errno.ENOSPC, f"no room in {shm.SHM_DIR} to restore {name}")
        dst = os.open(shm.path_of(tmp), os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o600)
        try:
            os.ftruncate(dst, size)
            _copy(src, dst, size)
        except BaseException:
            os.close(dst)
            shm.unlink_segment(tmp)
            raise
        os.close(dst)
        os.rename(shm.path_of(tmp), shm.path_of(name))
        return size
    finally:
        os.close(src)


