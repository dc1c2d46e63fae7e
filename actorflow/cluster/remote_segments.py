"""Segments of other nodes, as one process sees them: read (asked of their node, the bytes
pulled in bulk straight into this process's memory, or through the link when a pull fails)
and freed (a task's result made on another node, owned here). One per
:class:`~actorflow.cluster.core.Core`; the node of each segment is looked up once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from actorflow._errors import ObjectLostError, PeerUnreachableError, ProtocolError
from actorflow.cluster.protocol import (
    Failed,
    Fetched,
    FreeSegment,
    GetClusterInfo,
    InShm,
    Offered,
    Payload,
    ReadSegment,
)
from actorflow.objects.store import ReceiveBuffers
from actorflow.runtime import ActorRef, OwnedTasks

if TYPE_CHECKING:
    from actorflow.cluster.core import Core

__all__ = ["RemoteSegments"]

log = logging.getLogger("actorflow.cluster")


class RemoteSegments:
    """Reads and frees of other nodes' segments for one Core (see the module docstring)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.receive_buffers = ReceiveBuffers()
        #: node id -> its Node actor, as the head said
        self._nodes: dict[str, ActorRef] = {}
        #: segments of other nodes freed here whose node's ref is being looked up
        self._unsent_frees: list[InShm] = []
        self._remote_frees = OwnedTasks("freeing segments on other nodes", log)
        #: Bytes of other nodes' segments pulled here in bulk, and pulls that failed (their
        #: segments then came through the link).
        self.pulled_bytes = 0
        self.pull_fallbacks = 0

    async def fetch(self, payload: InShm) -> Payload:
        """The value of another node's segment, from that node (a Failed when it is lost)."""
        node = await self.node_ref(payload.node_id)
        try:
            answer = await node.ask(ReadSegment(payload.name, bulk=self.can_pull))
            return answer if type(answer) is not Offered else await self.pull(
                payload, answer, node)
        except ObjectLostError as exc:
            return Failed(exc)
        except Exception as exc:
            return Failed(ObjectLostError(
                f"object segment {payload.name} could not be fetched from node "
                f"{payload.node_id}: {exc}"))

    @property
    def can_pull(self) -> bool:
        return self.core.system.remoting is not None

    async def pull(self, payload: InShm, offer: Offered, node: ActorRef) -> Payload:
        """The buffers a node offered, pulled straight into memory of this process (a receive
        buffer: see ReceiveBuffers; writable, as arrays expect). If the pull fails, the
        segment is asked for again, to come in the answer's frames."""
        total = sum(offer.lengths)
        whole = self.receive_buffers.take(total)
        remoting = self.core.system.remoting
        assert remoting is not None
        try:
            await remoting.pull(offer.address, offer.ticket, whole)
        except (PeerUnreachableError, ProtocolError) as exc:
            log.warning("bulk pull of segment %s from node %s failed (%s); fetching it through "
                        "the link instead", payload.name, payload.node_id, exc)
            self.pull_fallbacks += 1
            answer = await node.ask(ReadSegment(payload.name))
            assert type(answer) is Fetched
            return answer
        self.pulled_bytes += total
        buffers = []
        pos = 0
        for n in offer.lengths:
            buffers.append(whole[pos : pos + n])
            pos += n
        return Fetched(offer.meta, tuple(buffers))

    def free(self, payload: InShm) -> None:
        """Free a segment of another node (a task's result made there, owned here): told to
        that node at once when it is known here, else once the head said where it is."""
        node = self._nodes.get(payload.node_id)
        if node is not None:
            with contextlib.suppress(Exception):  # that node is gone, its segments with it
                node.tell_nowait(FreeSegment(payload.name))
            return
        self._unsent_frees.append(payload)
        if len(self._unsent_frees) == 1:
            self._remote_frees.spawn(self._send_frees())

    async def _send_frees(self) -> None:
        await asyncio.sleep(0)  # (the frees of this loop turn go together)
        frees, self._unsent_frees = self._unsent_frees, []
        for payload in frees:
            try:
                node = await self.node_ref(payload.node_id)
            except Exception:
                continue  # that node is gone (or the head is): its segments went with it
            with contextlib.suppress(Exception):
                node.tell_nowait(FreeSegment(payload.name))

    async def node_ref(self, node_id: str) -> ActorRef:
        ref = self._nodes.get(node_id)
        if ref is None:
            info = await self.core.head.ask(GetClusterInfo(), timeout=30.0)
            for node in info.nodes:
                self._nodes[node["node_id"]] = node["ref"]
            ref = self._nodes.get(node_id)
            if ref is None:
                raise ObjectLostError(f"node {node_id} is not part of this cluster any more")
        return ref

    async def close(self, wait: float) -> None:
        """What this process owned on other nodes goes too (bounded: the head may be gone)."""
        try:
            await asyncio.wait_for(self._remote_frees.close(cancel=False), wait)
        except TimeoutError:
            await self._remote_frees.close()
        self.receive_buffers.close()
