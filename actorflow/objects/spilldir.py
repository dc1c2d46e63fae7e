"""A node's spill directory: where its store (``spill.py``) moves primaries past the limit, and
the threads that move them there and back.

**Spilling** runs on a thread of its own: a segment is spilled only when the thread gets its
``flock`` exclusively: a reader that maps it holds a shared one (a *pin*,
:class:`actorflow.objects.shm.Mapping`), and so does a writer rewriting a segment it reuses.
Under the exclusive lock the header's generation must still be the registered one; then the
bytes are copied (``copy_file_range``: in the kernel) and the segment unlinked
(``spillfiles.py``).

**Restoring** runs on other threads: the file is copied into a new segment under a temporary
name and renamed into place, then the reader maps (and pins) it. The spill file is kept until
the object is freed, so a restored object that is spilled again costs an unlink, not a copy. A
freed object's spill file is deleted at once (on a thread).

Each value has a file of its own, ``<segment name>.g<generation>`` (``spill_name``): a writer
reuses its segments' names, so a late deletion of a freed value's file (its restore or spill
ending after the name was reused) never takes a newer value's. Likewise a restore that ends
after its object was freed unlinks the segment only while it still holds that value.

The directory is ``<spill root>/<session>-<node id>``; its path is recorded beside the node's
liveness lock, so when a node dies hard the sweeper (``sweep.py``) removes it with the node's
segments.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from actorflow._errors import ObjectLostError, ObjectStoreFullError
from actorflow.objects import shm, sweep
from actorflow.objects.spillfiles import restore_file, spill_file, spill_name, unlink_value
from actorflow.runtime import OwnedTasks

__all__ = ["RESIDENT", "RESTORING", "SPILLED", "SPILLING", "Primary", "SpillDir"]

log = logging.getLogger("actorflow.spill")

#: Where a primary's bytes are: in shared memory, moving to its file, in its file, moving back.
RESIDENT, SPILLING, SPILLED, RESTORING = "shm", "spilling", "disk", "restoring"


@dataclass(slots=True)
class Primary:
    """A primary copy the store counts: its size, what made it, where its bytes are
    (``state``), and whether a thread moves them now (``busy``: its waiters' future)."""

    nbytes: int
    generation: int
    pid: int
    what: str
    job: str = ""
    state: str = RESIDENT
    on_disk: bool = False  # a spill file holds it (kept after a restore)
    freed: bool = False  # freed while a thread moved it
    restored_at: float = 0.0
    busy: asyncio.Future[None] | None = None
    stored_at: float = field(default_factory=time.time)


class SpillDir:
    """The spill files of one node's primaries and the threads that move them (see the module
    docstring). Owned by the node's store, on the Node actor's loop; what it counts
    (``spilled_*``, ``restored_*``, ``on_disk_bytes``, ``full``) goes into the store's
    figures."""

    def __init__(self, node_id: str, path: str) -> None:
        self.node_id = node_id
        self.path = path
        self.full = False  # the last spill failed for want of room on disk
        self.spilled_bytes = self.spilled_objects = 0
        self.restored_bytes = self.restored_objects = 0
        self.on_disk_bytes = 0
        self._tasks = OwnedTasks(f"the spill files of node {node_id}", log)
        self._spill_pool = concurrent.futures.ThreadPoolExecutor(1, "actorflow-spill")
        self._restore_pool = concurrent.futures.ThreadPoolExecutor(2, "actorflow-restore")

    def make(self) -> None:
        """(Blocking.) Make the directory and record its path beside the node's lock."""
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        directory = sweep.node_lock_dir(create=True)
        if directory is not None:
            fd = os.open(os.path.join(directory, f"node-{self.node_id}.spill"),
                         os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
            try:
                os.write(fd, self.path.encode())
            finally:
                os.close(fd)

    def _file(self, name: str, obj: Primary) -> str:
        """The spill file of the value ``obj`` of segment ``name`` (its own: see
        :func:`spill_name`)."""
        return os.path.join(self.path, spill_name(name, obj.generation))

    async def spill(self, name: str, obj: Primary) -> str:
        """Move segment ``name`` to its file on the spill thread (copied only when no file
        holds it yet): "spilled", "busy" (pinned), "gone", "full" (no room on disk) or
        "error". Those waiting on ``obj.busy`` wait for the move; its file goes when the
        segment was gone, or ``obj`` was freed meanwhile (whatever the outcome: a file kept
        from an earlier spill must not outlive it). Anything but "spilled" leaves ``obj`` in
        shared memory."""
        loop = asyncio.get_running_loop()
        obj.state = SPILLING
        obj.busy = loop.create_future()
        try:
            outcome = await loop.run_in_executor(
                self._spill_pool, _spill_one, name, self._file(name, obj), obj.generation,
                not obj.on_disk)
        except OSError as exc:
            outcome = "full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "error"
            log.warning("node %s: spilling %s failed: %s", self.node_id, name, exc)
        if outcome == "spilled":
            if not obj.on_disk:
                obj.on_disk = True
                self.on_disk_bytes += obj.nbytes
            obj.state = SPILLED
            self.spilled_bytes += obj.nbytes
            self.spilled_objects += 1
        else:
            obj.state = RESIDENT
            if outcome == "full":
                self.full = True
        if outcome == "gone" or obj.freed:  # whatever the outcome: "busy" or "error" too,
            self.drop(name, obj)  # when its file was kept from an earlier spill
        _done(obj)
        return outcome

    async def restore(self, name: str, obj: Primary) -> OSError | None:
        """Copy segment ``name`` back from its file on a restore thread; the error, if any
        (:meth:`restore_error` says what it means). Those waiting on ``obj.busy`` wait for the
        move; the segment and its file go when ``obj`` was freed meanwhile (the segment
        only while it still holds ``obj``: its writer may have reused the name)."""
        loop = asyncio.get_running_loop()
        obj.state = RESTORING
        obj.busy = loop.create_future()
        error: OSError | None = None
        try:
            await loop.run_in_executor(self._restore_pool, restore_file, name,
                                       self._file(name, obj))
        except OSError as exc:
            error = exc
        obj.state = SPILLED if error is not None else RESIDENT
        if error is None:
            self.restored_bytes += obj.nbytes
            self.restored_objects += 1
            obj.restored_at = time.monotonic()
            if obj.freed:  # (unless its writer reused the name for a newer value meanwhile)
                self._tasks.spawn(asyncio.to_thread(unlink_value, name, obj.generation),
                                  "unlink")
        if obj.freed:
            self.drop(name, obj)
        _done(obj)
        return error

    def drop(self, name: str, obj: Primary) -> None:
        """``obj`` was freed: its spill file, if it has one, is deleted (on a thread)."""
        if not obj.on_disk:
            return
        obj.on_disk = False
        self.on_disk_bytes -= obj.nbytes
        self.full = False  # room again: try spilling again
        self._tasks.spawn(asyncio.to_thread(_unlink, self._file(name, obj)),
                          f"unlink spill {name}")

    def restore_error(self, name: str, obj: Primary, error: OSError) -> Exception:
        """What a failed restore of ``name`` means to its reader (a typed error)."""
        if isinstance(error, FileNotFoundError) or obj.freed:
            return ObjectLostError(f"object segment {name} is gone from node {self.node_id} "
                                   "(freed while it was spilled)")
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return ObjectStoreFullError(obj.nbytes, shm.free_bytes(),
                                        f"the shared memory of node {self.node_id} "
                                        f"({shm.SHM_DIR}), to restore a spilled object")
        return ObjectLostError(f"object segment {name} of node {self.node_id} could not be "
                               f"restored from {self.path}: {error}")

    def figures(self) -> dict[str, Any]:
        """What moved so far (bytes, objects) and what lies on disk now."""
        return {
            "spilled_bytes": self.spilled_bytes,
            "spilled_objects": self.spilled_objects,
            "restored_bytes": self.restored_bytes,
            "restored_objects": self.restored_objects,
            "spilled_now_bytes": self.on_disk_bytes,
        }

    async def close(self) -> None:
        """Wait for the deletions under way, stop the threads, delete the directory and the
        record of its path."""
        await self._tasks.close(cancel=False)
        self._spill_pool.shutdown(wait=False)
        self._restore_pool.shutdown(wait=False)
        await asyncio.to_thread(_remove_dir, self.path, self.node_id)


def _done(obj: Primary) -> None:
    """A thread's move of ``obj`` ended: its waiters go on."""
    busy, obj.busy = obj.busy, None
    if busy is not None and not busy.done():
        busy.set_result(None)


def _spill_one(name: str, path: str, generation: int, copy: bool) -> str:
    return spill_file(name, path, generation, copy=copy)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _remove_dir(path: str, node_id: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    directory = sweep.node_lock_dir(create=False)
    if directory is not None:
        _unlink(os.path.join(directory, f"node-{node_id}.spill"))
