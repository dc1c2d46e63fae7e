"""``await af.memory_summary()`` and ``actorflow memory``: what the cluster's object stores hold.

Each node's store (``actorflow/objects/spill.py``) answers a :class:`MemoryQuery` with its
figures (bytes used and the limit, bytes and objects spilled and restored so far, bytes on disk
now) and its largest objects: size, where they lie (shared memory or a spill file), the process
that wrote them and what made them. The reference counts live in each object's owner, so they
are filled in for the objects this process owns (``refs``: ObjectRefs alive here), and left
None for the others.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from actorflow.cluster.protocol import GetClusterInfo, InShm
from actorflow.objects.ref import current_core
from actorflow.objects.spill import MemoryQuery
from actorflow.runtime import ActorRef

__all__ = ["memory_summary", "summarize"]

_FIGURES = ("object_store_used", "object_store_limit", "spilled_bytes", "spilled_objects",
            "restored_bytes", "restored_objects", "spilled_now_bytes", "objects_in_store",
            "secondary_copies", "secondary_bytes", "copy_pulls", "copy_reads",
            "copy_evictions")


async def summarize(head: ActorRef, *, limit: int = 20,
                    owned: dict[str, tuple[str, int]] | None = None,
                    timeout: float = 10.0) -> dict[str, Any]:
    """The summary, asked of every live node of the cluster whose head is ``head``.
    ``owned``: segment name -> (object id, live refs) of the objects the asking process owns.
    """
    info = await head.ask(GetClusterInfo(), timeout=timeout)
    live = [n for n in info.nodes if n.get("alive")]

    async def ask(node: dict[str, Any]) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = await node["ref"].ask(MemoryQuery(limit), timeout=timeout)
        except Exception as exc:  # one node that does not answer does not hide the others
            return {"node_id": node["node_id"], "error": f"{type(exc).__name__}: {exc}"}
        return answer

    answers = await asyncio.gather(*(ask(n) for n in live))
    nodes: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    for node, answer in zip(live, answers, strict=True):
        row = {"node_id": node["node_id"], "address": node.get("address")}
        row.update({k: v for k, v in answer.items() if k != "objects"})
        nodes.append(row)
        for obj in answer.get("objects", ()):
            known = (owned or {}).get(obj["object"])
            objects.append({
                "object_id": known[0] if known else None,
                "segment": obj["object"],
                "size": obj["size"],
                "node_id": obj["node_id"],
                "where": obj["where"],
                "owner": (f"pid {os.getpid()} (this process)" if known
                          else f"pid {obj['pid']}" if obj["what"] == "put"
                          else "the caller of the task"),
                "written_by": f"pid {obj['pid']}",
                "what": obj["what"],
                "refs": known[1] if known else None,
            })
    objects.sort(key=lambda o: o["size"], reverse=True)
    totals = {k: sum(int(n.get(k, 0)) for n in nodes) for k in _FIGURES}
    return {"nodes": nodes, "objects": objects[:limit], "totals": totals}


def _owned(core: Any) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for object_id, entry in core.objects.entries.items():
        payload = entry.payload
        if type(payload) is InShm:
            out[payload.name] = (object_id, entry.refs)
    return out


async def memory_summary(limit: int = 20) -> dict[str, Any]:
    """Per node: ``object_store_used`` (primaries and secondary copies in shared memory),
    ``object_store_limit``, ``spilled_bytes`` / ``spilled_objects`` and ``restored_bytes`` /
    ``restored_objects`` (so far), ``spilled_now_bytes`` (on disk now); its secondary copies
    (values pulled from other nodes, kept for readers here: ``secondary_copies`` and
    ``secondary_bytes`` now; ``copy_pulls``, ``copy_pulled_bytes``, ``copy_reads`` served
    from them, ``copy_shared_pulls`` (reads that waited for a pull in flight),
    ``copy_first_reads`` (a value's first read from the node: its reader pulled it itself),
    ``copy_evictions`` and ``copy_drops`` (freed with their primary) so far); the ``limit``
    largest objects of the cluster with their size, node, where they lie, owner and refs
    (when this process owns them); and the cluster's totals. Keys: ``nodes``, ``objects``,
    ``totals``."""
    core = current_core()
    return await summarize(core.head, limit=limit, owned=_owned(core))
