"""Reading the cluster's log files through its head: what ``actorflow logs`` and the
dashboard show.

Nodes started by ``actorflow start`` write their workers' output to files (see
:mod:`actorflow.cluster.node_logs`): one per worker process and one per job, on each node.
These functions find the right node(s) through the head and read the files there:

- ``job_id``: that job's lines, from every live node (each line says its node:
  ``(name pid=N node=ID) text``);
- ``actor_id`` (an id, or a name with ``namespace``): the lines of the actor's current process;
- ``pid`` (with ``node_id``, or searched on every node): the lines of one worker process;
- ``node_id`` alone: the node process's own output (its log file).

:func:`read_logs` returns the last ``tail`` lines; :func:`follow_logs` yields them, then every
line appended later, until the caller stops iterating. :func:`list_logs` names the files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from actorflow.cluster.node_logs import ReadLogs
from actorflow.cluster.protocol import ListState
from actorflow.runtime import ActorRef

__all__ = ["LogSource", "follow_logs", "list_logs", "read_logs", "sources"]

#: How long one node may take to answer.
ASK_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class LogSource:
    """One file to read: ``kind`` (worker, job, node) and ``key`` on node ``node_id``."""

    node_id: str
    node: ActorRef
    kind: str
    key: str


async def _nodes(head: ActorRef) -> list[dict[str, Any]]:
    views: list[dict[str, Any]] = await head.ask(ListState("nodes"), timeout=ASK_TIMEOUT_S)
    return [v for v in views if v.get("alive") and v.get("ref") is not None]


async def sources(head: ActorRef, *, job_id: str | None = None, actor_id: str | None = None,
                  namespace: str = "", node_id: str | None = None,
                  pid: int | None = None) -> list[LogSource]:
    """The files that hold what was asked for (see the module docstring). Raises ValueError
    when nothing was asked for, or the actor or node is unknown."""
    nodes = await _nodes(head)
    by_id = {n["node_id"]: n["ref"] for n in nodes}
    if node_id is not None and node_id not in by_id:
        raise ValueError(f"no live node {node_id!r}; `actorflow list nodes` shows them")
    if job_id is not None:
        return [LogSource(nid, ref, "job", job_id) for nid, ref in by_id.items()
                if node_id is None or nid == node_id]
    if actor_id is not None:
        rows = await head.ask(ListState("actors"), timeout=ASK_TIMEOUT_S)
        found = [r for r in rows if r["actor_id"] == actor_id] or [
            r for r in rows if r.get("name") == actor_id and r.get("namespace") == namespace
            and r.get("state") != "DEAD"]
        if not found:
            raise ValueError(f"no actor {actor_id!r} (an id, or a name in namespace "
                             f"{namespace!r}); `actorflow list actors` shows them")
        row = found[-1]
        if row.get("pid") is None or row.get("node_id") not in by_id:
            raise ValueError(f"actor {actor_id!r} has no process on a live node now "
                             f"(state {row.get('state')})")
        return [LogSource(row["node_id"], by_id[row["node_id"]], "worker", str(row["pid"]))]
    if pid is not None:
        return [LogSource(nid, ref, "worker", str(pid)) for nid, ref in by_id.items()
                if node_id is None or nid == node_id]
    if node_id is not None:
        return [LogSource(node_id, by_id[node_id], "node", "")]
    raise ValueError("say which logs: job_id, actor_id, pid or node_id")


async def _read(source: LogSource, tail: int, offset: int | None) -> tuple[list[str], int]:
    lines, new_offset = await source.node.ask(
        ReadLogs(source.kind, source.key, tail, offset), timeout=ASK_TIMEOUT_S)
    return list(lines), int(new_offset)


async def read_logs(head: ActorRef, *, job_id: str | None = None,
                    actor_id: str | None = None, namespace: str = "",
                    node_id: str | None = None, pid: int | None = None,
                    tail: int = 1000) -> list[str]:
    """The last ``tail`` lines (per node) of a job's, an actor's, a worker's or a node's
    logs; ``[]`` when there are none (or the nodes keep no files: an embedded cluster)."""
    out: list[str] = []
    found = await sources(head, job_id=job_id, actor_id=actor_id, namespace=namespace,
                          node_id=node_id, pid=pid)
    answers = await asyncio.gather(*(_read(s, tail, None) for s in found),
                                   return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException):
            if not isinstance(answer, Exception):
                raise answer
            continue  # a node that went away meanwhile has nothing to show
        out.extend(answer[0])
    return out


async def follow_logs(head: ActorRef, *, job_id: str | None = None,
                      actor_id: str | None = None, namespace: str = "",
                      node_id: str | None = None, pid: int | None = None,
                      tail: int = 100, poll_s: float = 0.5) -> AsyncIterator[str]:
    """The last ``tail`` lines, then each line as it is written (polled every ``poll_s``);
    for a job, nodes that join later are followed too."""
    offsets: dict[tuple[str, str, str], int] = {}
    first = True
    while True:
        found = await sources(head, job_id=job_id, actor_id=actor_id, namespace=namespace,
                              node_id=node_id, pid=pid)
        for source in found:
            key = (source.node_id, source.kind, source.key)
            try:
                lines, offsets[key] = await _read(
                    source, tail if first else 0, offsets.get(key, None if first else 0))
            except Exception:
                continue  # that node is gone (or slow): the others go on
            for line in lines:
                yield line
        first = False
        await asyncio.sleep(poll_s)


async def list_logs(head: ActorRef) -> dict[str, list[str]]:
    """Per live node: the names of its log files."""
    out: dict[str, list[str]] = {}
    for node in await _nodes(head):
        try:
            names, _ = await node["ref"].ask(ReadLogs("list"), timeout=ASK_TIMEOUT_S)
        except Exception:
            continue
        out[node["node_id"]] = list(names)
    return out
