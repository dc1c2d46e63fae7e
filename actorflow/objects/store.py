"""A process's shared-memory segments: the ones it wrote (and may reuse), and the ones it
reads.

Filling fresh tmpfs pages is the slow part of storing a large value: the kernel allocates and
zeroes every page, about 1 GB/s on a small VM, against 10 GB/s for copying into pages that are
already there. So a writer keeps a few freed segments, mapped, and copies the next large value
over one of them. A segment may be reused only when nobody can see its old value any more:

- it never left this process except to readers that report when they are done with it (the
  worker of a call whose arguments it holds answers with ``released``): ``shared`` marks one
  that went anywhere else (a value passed by ref, fetched by another process), and such a
  segment is unlinked when freed, as before;
- every reader that got it has reported (``readers`` counts those still out);
- no view of it is alive in this process (:meth:`Mapping.in_use`).

A segment that will not come back (a value passed by ref and freed, a task's result, which goes
to its caller) leaves the pool short. So when a large value is written, or a large segment
leaves for good, and nothing pooled (or being made) would fit the next value of its size, a
**spare** of that size is made in the background: a blank segment whose pages the kernel
allocates and maps up front (:func:`shm.blank_segment`, on a thread its owner runs), pooled
like a freed one. The next value of that size is then a copy (about 10 GB/s) instead of a fill
of fresh pages (0.3-1 GB/s on a small VM, where the host may fault the guest's fresh pages in
too). A spare is made only while the shm filesystem keeps a quarter of its room free, and
counts against the pool's bounds. A pooled segment unused for ``POOL_IDLE_S`` is unlinked.

Readers keep their last few mappings, so a segment read again (the same argument, or a reused
segment) costs no page faults. Each value carries a generation (in the segment's header and in
its ``InShm``), so a reference to a value whose segment has been reused fails with
ObjectLostError instead of reading the newer value.

The node may spill a segment to disk when its object store is past its limit
(``spill.py``): a process **pins** the segments it reads while it uses them (:class:`Pins`),
and a writer reuses a pooled segment only under its exclusive lock, so neither a reader nor a
rewrite ever meets a spill halfway.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from actorflow._errors import ObjectLostError
from actorflow.objects import shm
from actorflow.objects.serialization import Serialized

_POPULATE = getattr(mmap, "MAP_POPULATE", 0)

__all__ = ["POOL_BYTES", "POOL_SEGMENTS", "ReceiveBuffers", "SegmentStore"]

#: Freed segments a process keeps for reuse, and their total size at most.
POOL_SEGMENTS = 4
POOL_BYTES = 1 << 30
#: Segments of other processes a process keeps mapped.
MAPPED_SEGMENTS = 8
#: A pooled segment (freed, or a spare) unused for this long is unlinked: a process that has
#: gone quiet does not keep memory for values that may never come again.
POOL_IDLE_S = 30.0
#: A mapping pinned (see shm.Mapping) is left pinned at least this long, or while in use.
HOLD_S = 0.5
#: How often the unpinned mappings kept are checked for a file that went (spilled, freed).
IDLE_CHECK_S = 1.0
#: Values at least this large get a spare segment made for the next one of their size.
SPARE_MIN = 8 << 20
_MiB = 1 << 20


def _fits(need: int, capacity: int) -> bool:
    """Would a segment of ``capacity`` bytes take ``need`` bytes without wasting most of
    itself?"""
    return need <= capacity <= 2 * need + _MiB


class _Written:
    __slots__ = ("capacity", "mapping", "name", "pooled_at", "readers", "shared")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.mapping: shm.Mapping | None = None  # made when read here or kept for reuse
        self.readers = 0  # readers that will report release, still out
        self.shared = False  # went where no release will be reported
        self.pooled_at = 0.0  # when it was last put in the pool (time.monotonic())


class Pins:
    """The mappings of live objects that this process pins, and those it keeps unpinned.

    A mapping is pinned (``shm.Mapping.pin``: a shared ``flock``, so the node's spiller leaves
    its segment alone) when it is read, and unpinned once nothing here uses it and it has been
    pinned ``HOLD_S`` (or at once for the names a task's worker reports released). A kept
    unpinned mapping is closed once its file goes (spilled by the node, or freed), so that its
    pages go back to the machine. ``on_first()`` is called when there was nothing to look
    after: the owner should call :meth:`SegmentStore.relax` soon (and again when it says).
    (Not locked: its store calls it under the store's lock.)"""

    def __init__(self, on_first: Callable[[], None] | None = None) -> None:
        self.pinned: dict[str, shm.Mapping] = {}
        self.idle: dict[str, shm.Mapping] = {}
        self._on_first = on_first

    def pin(self, name: str, mapping: shm.Mapping) -> None:
        if not self.pinned and not self.idle and self._on_first is not None:
            self._on_first()
        self.idle.pop(name, None)
        self.pinned[name] = mapping

    def holds(self, name: str) -> bool:
        mapping = self.pinned.get(name)
        return mapping is not None and mapping.pinned

    def forget(self, name: str) -> None:
        self.pinned.pop(name, None)
        self.idle.pop(name, None)

    def relax(self, names: Iterable[str] | None = None, now: float | None = None) -> None:
        """Unpin the mappings that nothing here uses any more (all of them, pinned at least
        ``HOLD_S`` ago, or ``names``): the node may spill them now."""
        now = time.monotonic() if now is None else now
        for name in list(self.pinned) if names is None else names:
            mapping = self.pinned.get(name)
            if mapping is None or mapping.in_use():
                continue
            if names is None and now - mapping.pinned_at < HOLD_S:
                continue
            del self.pinned[name]
            mapping.unpin()
            self.idle[name] = mapping

    def gone_idle(self) -> list[tuple[str, shm.Mapping]]:
        """Close (and return) the kept mappings whose file went."""
        gone = [(n, m) for n, m in self.idle.items() if m.gone()]
        for name, mapping in gone:
            del self.idle[name]
            mapping.close()
        return gone

    def next_wait(self, now: float) -> float | None:
        if not self.pinned:
            return IDLE_CHECK_S if self.idle else None
        oldest = min(m.pinned_at for m in self.pinned.values())
        return max(0.05, min(oldest + HOLD_S - now, IDLE_CHECK_S))

    @staticmethod
    def repin(mapping: shm.Mapping) -> bool:
        """Pin a kept mapping again; False (and closed) when its file was unlinked (spilled,
        or freed): the name may hold a restored copy, to be mapped anew. (A pinned one is
        right as it is: the spiller cannot have taken it, nor a writer rewritten it.)"""
        if mapping.pinned:
            return True
        mapping.pin()  # (if the spiller holds it now, the bytes mapped are still right)
        if mapping.gone():
            mapping.close()
            return False
        return True

    def clear(self) -> None:
        self.pinned.clear()
        self.idle.clear()


class SegmentStore:
    """The segments of one process (see the module docstring). ``new_name()`` names a new
    segment (unique on the node). ``make_spare(name, capacity)``, when given, starts making a
    spare segment (:func:`shm.blank_segment`) off the caller's thread and reports the outcome
    with :meth:`add_spare` or :meth:`spare_failed`; without it no spares are made.
    ``on_pooled()`` is called when the pool stops being empty: the owner should call
    :meth:`trim_idle` in ``POOL_IDLE_S`` (and again when it says). ``on_pinned()`` is called
    when a mapping gets pinned with none pinned before: the owner should call :meth:`relax`
    in ``HOLD_S`` (and again when it says)."""

    def __init__(self, new_name: Callable[[], str],
                 make_spare: Callable[[str, int], None] | None = None,
                 on_pooled: Callable[[], None] | None = None,
                 on_pinned: Callable[[], None] | None = None) -> None:
        self._new_name = new_name
        self._make_spare = make_spare
        self._on_pooled = on_pooled
        self._written: dict[str, _Written] = {}
        self._pool: list[_Written] = []
        self._mapped: OrderedDict[str, shm.Mapping] = OrderedDict()
        self._generations = itertools.count(1)
        self._coming: list[int] = []  # capacities of the spares being made
        # a sync task's thread may put (write) while the loop frees: the bookkeeping is
        # guarded; copies and fills run outside the lock. (Re-entered: an owner may answer a
        # callback at once, as a closed Core refuses a spare.)
        self._lock = threading.RLock()
        self._closed = False
        self._pins = Pins(on_pinned)
        self.spares_made = 0
        self.spares_failed = 0

    # -- writing ----------------------------------------------------------------------------------

    def write(self, value: Serialized, *, keep: bool = True) -> tuple[str, int, int]:
        """Store ``value``; returns ``(segment name, bytes, generation)``. ``keep``: this
        process owns the object and will free it here (else the segment is its owner's from
        now on, and nothing of it is kept here)."""
        generation = next(self._generations)
        need = shm.segment_size(value)
        with self._lock:
            reuse = self._take(need)
        if reuse is not None:
            assert reuse.mapping is not None
            used = shm.rewrite(reuse.mapping, value, generation)
            name = reuse.name
            if not keep:
                reuse.mapping.close()
            else:
                reuse.mapping.pin()  # (exclusive since _take: shared again, as a reader's)
                with self._lock:
                    self._pins.pin(name, reuse.mapping)
        else:
            name = self._new_name()
            used = shm.write_segment(name, value, generation)
        with self._lock:
            if keep:
                self._written[name] = reuse if reuse is not None else _Written(name, used)
            if need >= SPARE_MIN:  # have the next value's segment ready, one step ahead
                self._plan_spare(need)
        return name, used, generation

    def _take(self, need: int) -> _Written | None:
        """The smallest pooled segment that fits ``need`` without wasting most of itself."""
        while True:
            best = None
            for seg in self._pool:
                if _fits(need, seg.capacity) and (best is None or seg.capacity < best.capacity):
                    best = seg
            if best is None:
                return None
            self._pool.remove(best)
            # nobody may map it while it is rewritten: not the node's spiller (which may have
            # taken it, freed, before its free reached the node), not a late reader
            assert best.mapping is not None
            if best.mapping.exclusive() and not best.mapping.gone():
                return best
            self._drop(best)

    # -- spares -----------------------------------------------------------------------------------

    def _plan_spare(self, need: int) -> None:
        """A value of ``need`` bytes was just written (its segment may never come back), or a
        segment of that size left for good: have one ready for the next value of that size,
        unless one is pooled or being made already. (Planned at the write, a step before the
        segment is lost: a put passed by ref loses its segment at its free, and a spare
        started only then is seldom ready for the next value.)"""
        if self._make_spare is None or self._closed:
            return
        if any(_fits(need, seg.capacity) for seg in self._pool) or any(
                _fits(need, capacity) for capacity in self._coming):
            return
        capacity = -(-need // _MiB) * _MiB
        if capacity > POOL_BYTES:
            return
        self._coming.append(capacity)
        self._make_spare(self._new_name(), capacity)

    def add_spare(self, name: str, capacity: int, mapping: shm.Mapping) -> None:
        """The spare segment ``name`` is ready (blank, mapped writable): pool it."""
        seg = _Written(name, capacity)
        seg.mapping = mapping
        with self._lock:
            with contextlib.suppress(ValueError):
                self._coming.remove(capacity)
            if self._closed:
                self._drop(seg)
                return
            self.spares_made += 1
            self._pool_add(seg)

    def spare_failed(self, capacity: int) -> None:
        """Making a spare of ``capacity`` bytes failed (no room, most likely)."""
        with self._lock:
            with contextlib.suppress(ValueError):
                self._coming.remove(capacity)
            self.spares_failed += 1

    def shared(self, name: str) -> None:
        """Segment ``name`` went to a reader that will not report: never reuse it."""
        with self._lock:
            seg = self._written.get(name)
            if seg is not None:
                seg.shared = True

    def lent(self, name: str) -> None:
        """Segment ``name`` went to a reader that reports when it is done (a call's worker)."""
        with self._lock:
            seg = self._written.get(name)
            if seg is not None:
                seg.readers += 1

    def returned(self, names: Iterable[str]) -> None:
        """Readers reported they are done with these segments."""
        with self._lock:
            for name in names:
                seg = self._written.get(name)
                if seg is not None and seg.readers > 0:
                    seg.readers -= 1

    def free(self, name: str) -> None:
        """The object in segment ``name`` (of this node) is freed: keep the segment for reuse
        when that is safe, else unlink it."""
        with self._lock:
            self._free(name)

    def _free(self, name: str) -> None:
        self._pins.forget(name)
        seg = self._written.pop(name, None)
        if seg is None:  # written by another process of this node
            shm.unlink_segment(name)
            return
        if seg.shared or seg.readers or (seg.mapping is not None and (
                seg.mapping.in_use() or seg.mapping.gone())):  # (gone: spilled to disk)
            self._drop(seg)
            if seg.capacity >= SPARE_MIN:
                self._plan_spare(seg.capacity)
            return
        try:
            if seg.mapping is None:
                seg.mapping = shm.Mapping(name, writable=True)
        except OSError:
            self._drop(seg)
            return
        self._pool_add(seg)

    def _pool_add(self, seg: _Written) -> None:
        assert seg.mapping is not None
        seg.mapping.pin()  # pooled: the spiller leaves it alone
        seg.pooled_at = time.monotonic()
        self._pool.append(seg)
        while len(self._pool) > POOL_SEGMENTS or sum(
                s.capacity for s in self._pool) > POOL_BYTES:
            self._drop(self._pool.pop(0))  # the oldest goes
        if len(self._pool) == 1 and self._on_pooled is not None:
            self._on_pooled()

    def trim_idle(self, now: float | None = None) -> float | None:
        """Unlink the pooled segments unused for ``POOL_IDLE_S``. Returns the seconds until
        the next one would be, or None when the pool is empty."""
        now = time.monotonic() if now is None else now
        with self._lock:
            keep = []
            for seg in self._pool:
                if now - seg.pooled_at >= POOL_IDLE_S:
                    self._drop(seg)
                else:
                    keep.append(seg)
            self._pool = keep
            if not keep:
                return None
            return max(0.0, min(seg.pooled_at for seg in keep) + POOL_IDLE_S - now)

    def _drop(self, seg: _Written) -> None:
        shm.unlink_segment(seg.name)
        if seg.mapping is not None:
            seg.mapping.close()

    # -- reading ----------------------------------------------------------------------------------

    def read(self, name: str, generation: int) -> tuple[memoryview, list[memoryview]]:
        """``(meta, buffers)`` of the value in segment ``name``, as views of its mapping."""
        try:
            with self._lock:
                self._pins.relax()
                mapping = self._mapping_locked(name)
        except FileNotFoundError:
            raise ObjectLostError(
                f"object segment {name} is gone (its owner freed it or exited)") from None
        # readers get read-only views, the writer's own mapping included
        found, meta, buffers = shm.parse(mapping.view().toreadonly(), name)
        if found != generation:
            raise ObjectLostError(
                f"the object in segment {name} was freed (its segment now holds another one)")
        return meta, buffers

    def hold(self, name: str) -> None:
        """Map segment ``name`` now and pin it (a reader is about to read it: the node's
        spiller leaves it alone meanwhile). FileNotFoundError: it is not in shared memory."""
        with self._lock:
            self._mapping_locked(name)

    def _mapping_locked(self, name: str) -> shm.Mapping:
        """The segment's mapping, pinned: a kept one when its file is still the one mapped
        (not spilled nor freed since), else a new one."""
        seg = self._written.get(name)
        if seg is not None:
            mapping = seg.mapping
            if mapping is not None and not Pins.repin(mapping):
                seg.mapping = mapping = None
            if mapping is None:
                mapping = seg.mapping = shm.Mapping(name, writable=True)
            self._pins.pin(name, mapping)
            return mapping
        mapping = self._mapped.get(name)
        if mapping is not None:
            if Pins.repin(mapping):
                self._mapped.move_to_end(name)
                self._pins.pin(name, mapping)
                return mapping
            del self._mapped[name]
        mapping = self._mapped[name] = shm.Mapping(name)
        self._pins.pin(name, mapping)
        if len(self._mapped) > MAPPED_SEGMENTS:
            old_name, old = self._mapped.popitem(last=False)
            self._pins.forget(old_name)
            old.close()  # arrays still using it keep it mapped
        return mapping

    def relax(self, now: float | None = None) -> float | None:
        """Unpin what nothing here uses any more, close what was spilled (see :class:`Pins`).
        Returns the seconds until the next look, or None when nothing is pinned or kept."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._pins.relax(now=now)
            for name, mapping in self._pins.gone_idle():
                seg = self._written.get(name)
                if seg is not None and seg.mapping is mapping:
                    seg.mapping = None
                if self._mapped.get(name) is mapping:
                    del self._mapped[name]
            return self._pins.next_wait(now)

    def holds(self, name: str) -> bool:
        """Is segment ``name`` pinned here (so surely in shared memory)? No system call."""
        return self._pins.holds(name)

    def released(self, names: Iterable[str]) -> tuple[str, ...]:
        """Which of these segments (read here) nothing in this process uses any more."""
        with self._lock:
            out = tuple(name for name in names
                        if (m := self._mapped.get(name)) is not None and not m.in_use())
            self._pins.relax(out)
            return out

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Unlink the pooled segments; let go of every mapping. (A spare that comes in later
        is unlinked at once.)"""
        with self._lock:
            self._closed = True
            for seg in self._pool:
                self._drop(seg)
            self._pool.clear()
            self._pins.clear()
            for seg in self._written.values():
                if seg.mapping is not None:
                    seg.mapping.close()
            for mapping in self._mapped.values():
                mapping.close()
            self._mapped.clear()

    def statistics(self) -> dict[str, int]:
        return {"written": len(self._written), "pooled": len(self._pool),
                "pooled_bytes": sum(s.capacity for s in self._pool),
                "mapped": len(self._mapped), "pinned": len(self._pins.pinned),
                "spares_made": self.spares_made,
                "spares_failed": self.spares_failed}


#: Receive buffers a process keeps for reuse, and their total size at most.
RECEIVE_BUFFERS = 4
RECEIVE_BYTES = 512 << 20


class _Buffer:
    __slots__ = ("mm",)

    def __init__(self, mm: mmap.mmap) -> None:
        self.mm = mm

    def idle(self) -> bool:
        return sys.getrefcount(self.mm) <= 2  # this record's reference and the argument's


class ReceiveBuffers:
    """Anonymous memory for the segments this process pulls from other nodes.

    Faulting fresh pages in is most of a pull's cost on a VM: 100 MiB over a unix socket
    took 96-220 ms into fresh pages, 58-72 ms into pages the kernel made up front
    (``MAP_POPULATE``) and 28-30 ms into pages already there (2 cores, 2026-12-02). So a
    process keeps its last few receive buffers and fills one again once nothing can see its
    old bytes: no view of it is alive (the refcount of its mmap), as :class:`SegmentStore`
    does for segments. A new one is made with its pages made up front."""

    def __init__(self) -> None:
        self._kept: list[_Buffer] = []
        self.reused = 0

    def take(self, size: int) -> memoryview:
        """A writable buffer of ``size`` bytes (> 0), for the caller to fill and hand out."""
        for i, buf in enumerate(self._kept):
            if size <= len(buf.mm) <= 2 * size and buf.idle():
                self._kept.append(self._kept.pop(i))  # most recently used last
                self.reused += 1
                return memoryview(buf.mm)[:size]
        mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _POPULATE)
        self._keep(_Buffer(mm))
        return memoryview(mm)

    def _keep(self, new: _Buffer) -> None:
        size = len(new.mm)
        if size > RECEIVE_BYTES:
            return
        kept = self._kept
        while kept and (len(kept) >= RECEIVE_BUFFERS
                        or sum(len(b.mm) for b in kept) + size > RECEIVE_BYTES):
            idle = next((b for b in kept if b.idle()), None)
            if idle is None:
                return  # all still in use: keep none more
            kept.remove(idle)  # the oldest idle one goes (its pages with it)
        kept.append(new)

    def close(self) -> None:
        self._kept.clear()

    def statistics(self) -> dict[str, int]:
        return {"kept": len(self._kept), "kept_bytes": sum(len(b.mm) for b in self._kept),
                "reused": self.reused}
