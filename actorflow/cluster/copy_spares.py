"""The segments of secondary copies (``copies.py``): a spare, a blank segment the node made
ahead, so that the next copy of a size it has seen is pulled into pages that exist; else fresh
pages.

Fresh tmpfs pages are slow on a VM: a 100 MiB copy's segment took 108-600 ms to make here
(``shm.blank_segment``: allocated and mapped), while a pull into pages that exist is a plain
copy. So after a copy of :data:`SPARE_MIN` bytes or more, the node makes blank segments of that
size on a thread, one at a time, up to :data:`SPARES`, while its store's limit has room (they
count against it, and go first when it needs room), and unlinks those unused for
:data:`SPARE_IDLE_S`. A spare becomes a copy by a rename (:func:`adopt`). Nobody but the node
maps a spare before that, so filling it is safe; a copy itself is never filled again (a reader
may hold views of it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from actorflow.objects import shm
from actorflow.runtime import OwnedTasks

__all__ = ["KEEP_FREE", "SPARES", "SPARE_IDLE_S", "SPARE_MIN", "Spare", "Spares", "adopt"]

log = logging.getLogger("actorflow.copies")

#: After a copy of this size or more, a blank segment of its size is made ahead (a *spare*) for
#: the next copy of that size: fresh tmpfs pages cost 1-6 ms per MiB on this VM (a 100 MiB
#: copy's segment took 108-600 ms to make), pages that exist a plain copy. At most SPARES of
#: them, dropped when unused for SPARE_IDLE_S or when the store needs room.
SPARE_MIN = 8 << 20
SPARES = 2
SPARE_IDLE_S = 30.0
#: A copy in fresh pages leaves at least this share of the shared-memory filesystem free.
KEEP_FREE = 0.1


def adopt(spare: str, name: str, size: int) -> None:
    """(Blocking.) Spare segment ``spare`` becomes ``name`` (never over an existing one), cut
    to ``size`` bytes."""
    os.link(shm.path_of(spare), shm.path_of(name))
    os.unlink(shm.path_of(spare))
    if os.stat(shm.path_of(name)).st_size > size:
        os.truncate(shm.path_of(name), size)


@dataclass(slots=True)
class Spare:
    name: str
    capacity: int
    mapping: shm.Mapping  # writable, its pages there
    made_at: float


class Spares:
    """The copies' segments: blank ones made ahead for the next copies (see SPARE_MIN), else
    fresh ones. Nobody but this node ever maps a spare before it becomes a copy, so filling it
    is safe."""

    def __init__(self, node_id: str, on_change: Callable[[], None],
                 room: Callable[[], int]) -> None:
        self.node_id = node_id
        self.on_change = on_change  # (a spare came or went: the store looks at its limit)
        self.room = room  # bytes free under the store's limit
        self.kept: list[Spare] = []
        self.bytes = 0  # kept and being made
        self.hits = 0  # copies made in spares
        self._making: set[int] = set()
        self._ids = itertools.count(1)
        self._tasks = OwnedTasks(f"the spare copies of node {node_id}", log)
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def take(self, size: int) -> Spare | None:
        """The smallest spare that holds ``size`` bytes (at most twice as large)."""
        fits = [s for s in self.kept if size <= s.capacity <= 2 * size]
        if not fits:
            return None
        spare = min(fits, key=lambda s: s.capacity)
        self.kept.remove(spare)
        self.bytes -= spare.capacity
        return spare

    async def segment(self, name: str, size: int) -> shm.Mapping:
        """A writable segment ``name`` of ``size`` bytes for a copy: a spare renamed (its pages
        are there: the pull is a plain copy), else a blank one (fresh pages)."""
        spare = self.take(size)
        if spare is None:
            return await asyncio.to_thread(shm.blank_segment, name, size, keep_free=KEEP_FREE)
        self.hits += 1
        try:
            await asyncio.to_thread(adopt, spare.name, name, size)
        except BaseException:
            spare.mapping.close()
            self._tasks.spawn(asyncio.to_thread(shm.unlink_segment, spare.name), "unlink spare")
            raise
        return spare.mapping

    def plan(self, size: int) -> None:
        """A copy of ``size`` bytes was made: make a spare of that size (one at a time, up to
        SPARES) while the store's limit has room (copies of one size often come in a row)."""
        if (size < SPARE_MIN or size > self.room() or self._closed or size in self._making
                or len(self.kept) + len(self._making) >= SPARES):
            return
        self._making.add(size)
        self.bytes += size
        self._tasks.spawn(self._make(size), f"spare copy of {size} bytes")

    async def _make(self, size: int) -> None:
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="actorflow-copy-spares")
        name = f"af-{self.node_id}-copyspare-{next(self._ids)}"
        try:
            mapping = await asyncio.get_running_loop().run_in_executor(
                self._thread, shm.blank_segment, name, size)
        except BaseException as exc:
            self.bytes -= size
            if not isinstance(exc, OSError):
                raise
            # no room: copies go into fresh pages, as before
            log.debug("node %s: no spare copy of %d bytes: %s", self.node_id, size, exc)
            return
        finally:
            self._making.discard(size)
        self.kept.append(Spare(name, size, mapping, time.monotonic()))
        if self._closed:  # (its unlink is refused now: the node's stop removes its segments)
            self.drop(lambda s: True)
            return
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(SPARE_IDLE_S, self._trim)
        self.on_change()
        self.plan(size)

    def _trim(self) -> None:
        self._timer = None
        now = time.monotonic()
        if self.drop(lambda s: now - s.made_at >= SPARE_IDLE_S):
            self.on_change()
        if self.kept and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(SPARE_IDLE_S, self._trim)

    def drop(self, which: Callable[[Spare], bool]) -> int:
        """Unlink the kept spares ``which`` picks; returns their bytes."""
        freed = 0
        for spare in [s for s in self.kept if which(s)]:
            self.kept.remove(spare)
            self.bytes -= spare.capacity
            freed += spare.capacity
            spare.mapping.close()
            self._tasks.spawn(asyncio.to_thread(shm.unlink_segment, spare.name),
                              f"unlink {spare.name}")
        return freed

    async def close(self) -> None:
        """Wait for a spare in the making (a thread cannot be stopped), unlink them all."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.drop(lambda s: True)
        await self._tasks.close(cancel=False)
        if self._thread is not None:
            self._thread.shutdown(wait=False)
