"""Secondary copies: a node keeps what it pulled from another node for its later readers.

A process that reads a large value lying in another node's shared memory asks its **own**
node (:class:`ReadCopy`). The first read of a value from a node is not copied: its reader
pulls the value straight into its own memory (most large values are read once where they go,
a task's argument or a result read by its caller, and for them a copy would cost a second hop
through the node and room in its store). From the second read on (the node remembers the last
:data:`SEEN_KEYS` values read), the node pulls the segment once, whole, into a segment of its own
(``af-<node id>-copy-<generation>-<primary's name>``: a byte-for-byte copy, header and
generation included) and answers an :class:`InShm` of that copy, which the reader maps and pins
like any segment of its node: no copy in the reader, and later readers on the node map the same
pages. Readers that ask while the pull runs wait for that one pull (deduplicated). When the node
cannot make a copy (no room, a failed pull, a node without a store or a listener) it answers
None and the reader fetches the value itself, as before (``Reads.localize``).

The primary's node offers the segment for the copy and tells the copies' nodes when the
primary goes (``copy_offers.py``: :class:`CopySegment`, :class:`DropCopies`); they unlink their
copies at once. A job's end (``FreeSegments``) reaches every node: each drops its copies of that
job's segments itself.

A copy is dropped too when the primary's node is gone (its link ended): a copy outliving its
primary would never be freed (frees go to the primary's node), and the owner decides what a
lost primary means (rebuilt by lineage, or ``ObjectLostError``), never a stale copy.

Copies count against the node's ``object_store_memory`` (``actorflow/objects/spill.py``): a copy
is made only when it fits beside the primaries (other copies are evicted to make room), and
under pressure the store evicts copies, least recently read first, before it spills any primary.
Evicting is deleting (the primary exists); a copy that a reader maps is pinned (its shared
``flock``) and stays, and one served in the last :data:`COPY_GRACE_S` stays too (its reader is
about to pin it; a reader that finds it gone asks again).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actorflow._errors import ActorDiedError, ObjectLostError, PeerUnreachableError
from actorflow.cluster.copy_offers import CopyOffers, CopySegment, DropCopies
from actorflow.cluster.copy_spares import Spares
from actorflow.cluster.protocol import Failed, GetClusterInfo, InShm, Offered, Payload
from actorflow.objects import shm
from actorflow.runtime import ActorRef, OwnedTasks

if TYPE_CHECKING:
    from actorflow.cluster.core import Core
    from actorflow.cluster.node import Node

__all__ = [
    "COPY_GRACE_S",
    "MESSAGES",
    "SEEN_KEYS",
    "NodeCopies",
    "ReadCopy",
    "copy_name",
    "evict_file",
    "read_copy",
]

log = logging.getLogger("actorflow.copies")

#: A copy served this recently is not evicted (its reader pins it on receipt).
COPY_GRACE_S = 0.5
#: How many values read once a node remembers (their second read makes a copy).
SEEN_KEYS = 8192


# -- messages ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadCopy:
    """Ask (a process -> its own node): a copy on this node of ``primary``, a segment of
    another node. Answers an ``InShm`` of this node (the asker pins it before reading), None
    (no copy this time: fetch it yourself) or False (never: this node makes no copies);
    raises ObjectLostError when the primary is gone."""

    primary: InShm


MESSAGES = frozenset({ReadCopy, CopySegment, DropCopies})


def copy_name(node_id: str, name: str, generation: int) -> str:
    """The segment of node ``node_id`` holding a copy of ``name`` (``generation``): named after
    the node, so its sweeper removes it when the node dies."""
    return f"af-{node_id}-copy-{generation:x}-{name}"


def evict_file(name: str) -> str:
    """(Blocking.) Delete copy ``name`` unless a reader pins it: "evicted", "busy" or
    "gone"."""
    with shm.exclusively(name) as fd:
        if isinstance(fd, str):
            return fd
        return "evicted" if shm.unlink_if_same(name, fd) else "gone"


def _unlink(name: str) -> None:
    shm.unlink_segment(name)


# -- the reader's side (in Reads.localize) -----------------------------------------------------

#: Processes whose node said it makes no copies (asked once).
_refused: weakref.WeakSet[Any] = weakref.WeakSet()


async def read_copy(core: Core, payload: InShm) -> Payload | None:
    """A copy of ``payload`` (another node's segment) on this process's node, mapped and
    pinned here; ``Failed`` when the primary is lost; None when the node made no copy (the
    caller fetches the value itself)."""
    if core in _refused:
        return None
    for _ in range(3):
        try:
            answer = await core.node.ask(ReadCopy(payload))
        except ObjectLostError as exc:
            return Failed(exc)
        except Exception as exc:  # (its node is going): fetch it here
            log.debug("no copy of %s from this node: %s", payload.name, exc)
            return None
        if answer is False:
            _refused.add(core)
            return None
        if type(answer) is not InShm:
            return None
        try:
            core.store.hold(answer.name)  # pinned: not evicted while this process reads it
        except OSError:
            continue  # evicted or dropped since the answer: ask again
        return answer
    return None


# -- the node's side ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Copy:
    name: str  # its segment on this node
    size: int
    source: str  # the primary's node
    payload: InShm  # what readers get
    served_at: float


class NodeCopies:
    """A node's secondary copies of other nodes' values (see the module docstring), and its
    :class:`CopyOffers` of its own primaries. Owned by the Node actor: every method runs on its
    loop. Its store (``objects/spill.py``) counts the copies' bytes and calls :meth:`evict`
    under pressure, :meth:`primaries_freed` when a job's segments go."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.node_id = node.node_id
        self.store = node.store
        self.copies: OrderedDict[tuple[str, int], _Copy] = OrderedDict()  # least recent first
        self.pulling: dict[tuple[str, int], asyncio.Future[Payload | None]] = {}
        self.dropped: set[tuple[str, int]] = set()  # freed while being pulled
        self.seen: OrderedDict[tuple[str, int], None] = OrderedDict()  # read once, not copied
        self.copy_bytes = 0  # bytes of copies in shared memory
        self.spares = Spares(self.node_id, self._spares_changed, self._spare_room)
        self.reserved = 0  # bytes of copies being pulled
        self.pulls = self.pulled_bytes = self.served = self.shared = self.first_reads = 0
        self.evictions = self.drops = 0
        self.segment_s = self.pull_s = 0.0  # making the copies' segments, pulling into them
        self.sources: dict[str, ActorRef] = {}  # node id -> its node (copies' primaries)
        self.offers = CopyOffers(node)  # this node's primaries that other nodes copy
        self._tasks = OwnedTasks(f"the copies of node {self.node_id}", log)
        self._closed = False
        if self.store is not None:
            self.store.secondary = self
            self.store.offers = self.offers

    def _spare_room(self) -> int:
        store = self.store
        return 0 if store is None else store.limit - store.total() - self.reserved

    def _spares_changed(self) -> None:
        if self.store is not None:
            self.store.secondary_changed()

    @property
    def used(self) -> int:
        """Bytes in shared memory (counted against the store's limit): copies and spares."""
        return self.copy_bytes + self.spares.bytes

    @property
    def _remoting(self) -> Any:
        return self.node.system.remoting

    async def handle(self, message: Any) -> Any:
        kind = type(message)
        if kind is ReadCopy:
            return await self.read(message.primary)
        if kind is CopySegment:
            return await self.offers.offer(message)
        if kind is DropCopies:
            for name, generation in message.segments:
                self.drop(name, generation)
            return None
        raise TypeError(f"copies got an unexpected {kind.__name__}")

    # -- a reader of this node asks ------------------------------------------------------------

    async def read(self, primary: InShm) -> Payload | bool | None:
        if self.store is None or self._remoting is None or self._closed:
            return False
        if primary.node_id == self.node_id:
            return None
        key = (primary.name, primary.generation)
        copy = self.copies.get(key)
        if copy is not None:
            copy.served_at = time.monotonic()
            self.copies.move_to_end(key)
            self.served += 1
            return copy.payload
        fut = self.pulling.get(key)
        if fut is None:
            if self._first_read(key):
                self.first_reads += 1
                return None  # its reader pulls it straight
            fut = self.pulling[key] = asyncio.get_running_loop().create_future()
            self._tasks.spawn(self._pull(primary, key, fut), f"copy of {primary.name}")
        else:
            self.shared += 1
        result = await asyncio.shield(fut)
        if type(result) is Failed:
            raise result.error
        if result is not None:
            self.served += 1
        return result

    def _first_read(self, key: tuple[str, int]) -> bool:
        """Is this the first read of ``key`` from this node (that it remembers)? It is
        remembered either way: a second read makes the copy."""
        seen = self.seen
        if key in seen:
            seen.move_to_end(key)
            return False
        seen[key] = None
        if len(seen) > SEEN_KEYS:
            seen.popitem(last=False)
        return True

    async def _pull(self, primary: InShm, key: tuple[str, int],
                    fut: asyncio.Future[Payload | None]) -> None:
        result: Payload | None = None
        try:
            result = await self._copy(primary, key)
        except ObjectLostError as exc:
            result = Failed(exc)
        except Exception as exc:  # no copy this time: its readers fetch it themselves
            log.warning("node %s: no copy of segment %s (%s)", self.node_id, primary.name, exc)
        finally:
            self.pulling.pop(key, None)
            self.dropped.discard(key)
            if not fut.done():
                fut.set_result(result)

    async def _copy(self, primary: InShm, key: tuple[str, int]) -> Payload | None:
        source = await self._source(primary.node_id)
        try:
            offer = await source.ask(CopySegment(primary.name, primary.generation, self.node_id,
                                                 self.node.ref))
        except (PeerUnreachableError, ActorDiedError) as exc:
            raise ObjectLostError(f"object segment {primary.name} could not be fetched from "
                                  f"node {primary.node_id}: {exc}") from exc
        if type(offer) is not Offered:
            return None
        size = offer.lengths[0]
        if not await self._room(size):
            return None
        name = copy_name(self.node_id, primary.name, primary.generation)
        self.reserved += size
        t0 = time.perf_counter()
        try:
            mapping = await self.spares.segment(name, size)
            t1 = time.perf_counter()
            self.segment_s += t1 - t0
            try:
                view = mapping.view()[:size]
                try:
                    await self._remoting.pull(offer.address, offer.ticket, view)
                    self.pull_s += time.perf_counter() - t1
                    generation = struct.unpack_from("<Q", view, 16)[0]
                finally:
                    view.release()
            finally:
                mapping.close()
        except BaseException:
            self._tasks.spawn(asyncio.to_thread(_unlink, name), f"unlink {name}")
            raise
        finally:
            self.reserved -= size
        if generation != primary.generation or key in self.dropped or self._closed:
            self._tasks.spawn(asyncio.to_thread(_unlink, name), f"unlink {name}")
            return None  # freed meanwhile: its readers hear it from the primary's node
        payload = InShm(name, self.node_id, primary.nbytes, primary.generation)
        self.copies[key] = _Copy(name, size, primary.node_id, payload, time.monotonic())
        self.copy_bytes += size
        self.pulls += 1
        self.pulled_bytes += size
        if self.store is not None:
            self.store.secondary_changed()
            self.spares.plan(size)
        return payload

    async def _room(self, size: int) -> bool:
        """Does a copy of ``size`` bytes fit beside the primaries (other copies evicted to
        make room)? A copy never makes a primary spill."""
        store = self.store
        if store is None:
            return False
        over = store.total() + self.reserved + size - store.limit
        if over > 0 and self.used:
            await self.evict(over)
            over = store.total() + self.reserved + size - store.limit
        return over <= 0

    async def _source(self, node_id: str) -> ActorRef:
        ref = self.sources.get(node_id)
        if ref is not None:
            return ref
        info = await self.node.head.ask(GetClusterInfo(), timeout=30.0)
        for row in info.nodes:
            if row["node_id"] == node_id and row.get("alive"):
                ref = row["ref"]
        if ref is None:
            raise ObjectLostError(f"node {node_id} is not part of this cluster any more")
        if node_id not in self.sources:  # (another read may have looked it up meanwhile)
            self.sources[node_id] = ref
            self.node.system.on_terminated(ref, functools.partial(self._source_gone, node_id,
                                                                  ref))
        return self.sources[node_id]

    def _source_gone(self, node_id: str, ref: ActorRef, _notice: Any = None) -> None:
        """The primaries' node is gone (or its link): its copies here go too."""
        if self.sources.get(node_id) is ref:
            del self.sources[node_id]
        for key, copy in list(self.copies.items()):
            if copy.source == node_id:
                self.drop(*key)
        for key in self.pulling:  # (a primary's name starts with its node's)
            if key[0].startswith(f"af-{node_id}-"):
                self.dropped.add(key)

    def primaries_freed(self, prefix: str) -> None:
        """A job ended (``FreeSegments``, which every node gets): its segments' copies here
        go."""
        for key in [k for k in (*self.copies, *self.pulling) if k[0].startswith(prefix)]:
            self.drop(*key)
        for key in [k for k in self.seen if k[0].startswith(prefix)]:
            del self.seen[key]

    # -- dropping and evicting -----------------------------------------------------------------

    def drop(self, name: str, generation: int | None) -> None:
        """The primary ``name`` (``generation``; None: any) was freed: delete its copy."""
        keys = ([(name, generation)] if generation is not None
                else [k for k in (*self.copies, *self.pulling) if k[0] == name])
        changed = False
        for key in keys:
            self.seen.pop(key, None)
            if key in self.pulling:
                self.dropped.add(key)
            copy = self.copies.pop(key, None)
            if copy is None:
                continue
            self.copy_bytes -= copy.size
            self.drops += 1
            changed = True
            self._tasks.spawn(asyncio.to_thread(_unlink, copy.name), f"unlink {copy.name}")
        if changed and self.store is not None:
            self.store.secondary_changed()

    async def evict(self, need: int) -> int:
        """Delete copies no reader pins, least recently read first, until ``need`` bytes are
        freed (or none is left to try); returns the bytes freed."""
        freed = self.spares.drop(lambda s: True)  # spares first: nobody reads them
        now = time.monotonic()
        for key, copy in list(self.copies.items()):
            if freed >= need or self._closed:
                break
            if now - copy.served_at < COPY_GRACE_S:
                continue
            try:
                outcome = await asyncio.to_thread(evict_file, copy.name)
            except OSError as exc:
                log.warning("node %s: evicting copy %s failed: %s", self.node_id, copy.name,
                            exc)
                continue
            if outcome == "busy":
                continue  # a reader pins it
            if outcome == "evicted":
                self.evictions += 1
            if self.copies.get(key) is copy:  # (not dropped meanwhile)
                del self.copies[key]
                self.copy_bytes -= copy.size
                freed += copy.size
        return freed

    # -- views and lifetime --------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """Secondary copies now (count, bytes) and so far (pulls, reads served from them,
        reads that waited for a pull in flight, first reads left to their readers, evictions,
        drops with their primary)."""
        return {
            "secondary_copies": len(self.copies),
            "secondary_bytes": self.copy_bytes,
            "copy_spare_bytes": self.spares.bytes,
            "copy_spare_hits": self.spares.hits,
            "copy_segment_s": round(self.segment_s, 6),
            "copy_pull_s": round(self.pull_s, 6),
            "copy_pulls": self.pulls,
            "copy_pulled_bytes": self.pulled_bytes,
            "copy_reads": self.served,
            "copy_shared_pulls": self.shared,
            "copy_first_reads": self.first_reads,
            "copy_evictions": self.evictions,
            "copy_drops": self.drops,
        }

    async def close(self) -> None:
        self._closed = True
        self.offers.close()
        await self._tasks.close()
        for fut in self.pulling.values():  # (a pull cancelled before it ran says nothing)
            if not fut.done():
                fut.set_result(None)
        await self.spares.close()
        self.copies.clear()
