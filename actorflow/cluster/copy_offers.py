"""The primary's side of secondary copies (``copies.py``): a node offers its segments to the
nodes that copy them, and tells those nodes when the primaries go.

A node making a copy asks the primary's node :class:`CopySegment`; that node maps the segment
and offers it whole (:class:`CopyOffers`: the value's bytes under one bulk ticket), and
remembers which nodes copied which ``(segment, generation)``. Every way a primary goes passes
through its node's store: the owner's ``FreeSegment`` (a cross-node owner) or ``Freed`` (an
owner on that node), and the store's audit of segments unlinked without a word. So that node
tells the copies' nodes (:class:`DropCopies`, batched per loop turn), and they unlink their
copies at once. A job's end (``FreeSegments``) reaches every node: each forgets who copied its
segments of that job (the copiers drop their copies of them themselves). Why the primary's node
and not the owner: the owner never sees the reads (a reader gets the payload from the owner,
then reads through its node), while every pull for a copy passes through the primary's node,
which also hears of every free.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actorflow._errors import ObjectLostError
from actorflow.cluster.protocol import Offered
from actorflow.objects import shm
from actorflow.runtime import ActorRef

if TYPE_CHECKING:
    from actorflow.cluster.node import Node

__all__ = ["CopyOffers", "CopySegment", "DropCopies"]


@dataclass(frozen=True, slots=True)
class CopySegment:
    """Ask (a node -> the primary's node): offer segment ``name`` (holding ``generation``)
    whole, for node ``node_id`` (its ref ``node``) to keep a copy of. Answers ``Offered`` (one
    buffer: the segment's file) or None (no bulk offer possible); raises ObjectLostError when
    the segment is gone or holds another value."""

    name: str
    generation: int
    node_id: str
    node: Any  # ActorRef


@dataclass(frozen=True, slots=True)
class DropCopies:
    """Tell (the primary's node -> a node holding copies): these primaries were freed;
    ``(segment, generation)``, None: whatever generation."""

    segments: tuple[tuple[str, int | None], ...]


def _used_bytes(view: memoryview) -> int:
    """The bytes a segment's value takes (its file may be larger: a writer reuses segments
    of a larger capacity), by the layout in ``objects/shm.py``: header, meta, then each buffer,
    each 64-byte aligned."""
    nbuf, meta_len = struct.unpack_from("<IQ", view, 4)
    sizes = struct.unpack_from(f"<{nbuf}Q", view, 24)
    end = _align64(_align64(24 + 8 * nbuf) + meta_len)
    for size in sizes:
        end = _align64(end + size)
    return min(len(view), max(end, 1))


def _align64(n: int) -> int:
    return (n + 63) & ~63


class CopyOffers:
    """Which other nodes copied this node's primaries (see the module docstring). Owned by the
    node's copies (``NodeCopies``), on the Node actor's loop. Its store (``objects/spill.py``)
    calls :meth:`primary_freed` and :meth:`primaries_freed` when primaries go."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.node_id = node.node_id
        self.store = node.store
        #: this node's primaries copied elsewhere: segment -> generation -> node id -> node
        self.copiers: dict[str, dict[int, dict[str, ActorRef]]] = {}
        self._notices: dict[str, tuple[ActorRef, list[tuple[str, int | None]]]] = {}
        self._flush: asyncio.Handle | None = None
        self._closed = False

    async def offer(self, msg: CopySegment) -> Offered | None:
        """Another node copies a primary of this node: its bytes under one bulk ticket."""
        remoting = self.node.system.remoting
        if self.store is None or remoting is None or self._closed:
            return None
        name = msg.name
        if not name.startswith(f"af-{self.node_id}-"):
            raise ValueError(f"segment {name!r} does not belong to node {self.node_id}")
        await self.store.ensure(name)  # restored first when spilled
        try:
            mapping = shm.Mapping(name, populate=False, pin=False)
        except FileNotFoundError:
            raise ObjectLostError(f"object segment {name} is gone from node {self.node_id} "
                                  "(its owner freed it or exited)") from None
        view = mapping.view()  # (keeps the pages mapped until the ticket is used or expires)
        if len(view) < 24 or struct.unpack_from("<Q", view, 16)[0] != msg.generation:
            raise ObjectLostError(f"the object in segment {name} was freed (its segment now "
                                  "holds another one)")
        view = view[:_used_bytes(view)]  # (a reused segment may be larger than its value)
        ticket = remoting.offer([view])
        address = self.node.system.address
        if ticket is None or address is None:
            return None
        nodes = self.copiers.setdefault(name, {}).setdefault(msg.generation, {})
        nodes[msg.node_id] = msg.node
        return Offered(b"", (len(view),), address, ticket)

    def primary_freed(self, name: str, generation: int | None) -> None:
        """A primary of this node was freed: the nodes holding copies of it hear of it."""
        gens = self.copiers.get(name)
        if not gens:
            return
        if generation is None:
            freed = list(gens.items())
            del self.copiers[name]
        else:
            nodes = gens.pop(generation, None)
            if not gens:
                del self.copiers[name]
            if nodes is None:
                return
            freed = [(generation, nodes)]
        for gen, nodes in freed:
            for node_id, ref in nodes.items():
                entry = self._notices.setdefault(node_id, (ref, []))
                entry[1].append((name, gen))
        if self._flush is None and not self._closed:
            self._flush = asyncio.get_running_loop().call_soon(self._send_notices)

    def _send_notices(self) -> None:
        self._flush = None
        notices, self._notices = self._notices, {}
        for ref, segments in notices.values():
            with contextlib.suppress(Exception):  # a node that is gone took its copies along
                ref.tell_nowait(DropCopies(tuple(segments)))

    def primaries_freed(self, prefix: str) -> None:
        """A job ended (``FreeSegments``, which every node gets): this node forgets who copied
        its segments of that job (each copier drops its copies itself)."""
        for name in [n for n in self.copiers if n.startswith(prefix)]:
            del self.copiers[name]

    def close(self) -> None:
        """No more offers; the notices not sent yet go now."""
        self._closed = True
        if self._flush is not None:
            self._flush.cancel()
            self._send_notices()
