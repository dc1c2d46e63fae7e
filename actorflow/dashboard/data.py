"""What the dashboard shows, aggregated on the server so that a page gets a small answer.

Every row comes from the cluster's shared state layer, the same one the command line uses:
``actorflow.state.StateClient`` (nodes, actors, tasks, objects, placement groups, drivers),
the head's ``jobs`` actor (``actorflow.jobs``: submitted jobs and their output), the log
reader (``actorflow.cluster.logs``) and the metrics' exposition (``actorflow.metrics``).

Reads are shared: a view asked for again within :data:`TTL_S` gets the answer already made,
and requests that arrive while one is being made wait for it (one query for any number of
browsers). An answer up to :data:`MAX_STALE_S` old is given at once while a fresh one is made
behind it, so a page that refreshes every second never waits on a slow query (a cluster of
1,000 actors takes tens of ms to describe itself) and sees figures at most about a second
old. Lists are filtered, searched and cut into pages here, never in the page.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from actorflow.cluster.logs import list_logs, read_logs
from actorflow.jobs.messages import JobLogs, ListJobs
from actorflow.jobs.messages import ReadLogs as ReadJobLogs
from actorflow.metrics import exposition
from actorflow.runtime import ActorRef, OwnedTasks, restore_ref
from actorflow.state import StateClient

__all__ = ["MAX_STALE_S", "TTL_S", "Views", "page_of"]

log = logging.getLogger("actorflow.dashboard")

#: How long an answer is shared between requests (the page refreshes once a second).
TTL_S = 0.5
#: How old an answer may be given while a fresh one is made behind it.
MAX_STALE_S = 10.0
#: How many rows of a list the state layer is asked for at most.
LIST_LIMIT = 100_000
#: How long a view waits for an actor of the head's process.
ASK_TIMEOUT_S = 10.0
#: How many recent failures the tasks view shows.
FAILURES = 50
#: How many bytes of a job's output its view reads at most (the end of it).
JOB_LOG_BYTES = 256 * 1024
#: How many lines of a log a view shows at most (the last ones).
LOG_LINES = 500


def page_of(rows: list[dict[str, Any]], page: int, size: int) -> dict[str, Any]:
    """Page ``page`` (from 0) of ``size`` rows, with the total."""
    size = max(1, min(size, 500))
    pages = max(1, -(-len(rows) // size))
    page = max(0, min(page, pages - 1))
    return {"total": len(rows), "page": page, "pages": pages, "size": size,
            "rows": rows[page * size:(page + 1) * size]}


def _matches(row: Mapping[str, Any], query: str, keys: Iterable[str]) -> bool:
    return any(query in str(row.get(key, "")).lower() for key in keys)


class _Shared:
    """One answer per key, shared by every request (see the module doc).

    Fresh (younger than ``ttl``): given as is. Stale (younger than ``max_stale``): given as
    is while one refresh runs behind it, so a request never waits on a slow query once the
    view has been asked for. Older, or never made: the request waits for the query, which
    concurrent requests share."""

    def __init__(self, ttl: float, max_stale: float, log: logging.Logger) -> None:
        self.ttl = ttl
        self.max_stale = max_stale
        self._done: dict[str, tuple[float, Any]] = {}
        self._making: dict[str, asyncio.Future[Any]] = {}
        self._refreshes = OwnedTasks("dashboard views", log)

    async def get(self, key: str, make: Callable[[], Awaitable[Any]]) -> Any:
        hit = self._done.get(key)
        if hit is not None:
            age = time.monotonic() - hit[0]
            if age < self.ttl:
                return hit[1]
            if age < self.max_stale:
                if key not in self._making:
                    self._refreshes.spawn(self._make(key, make), name=f"dashboard:{key}")
                return hit[1]
        making = self._making.get(key)
        if making is not None:
            return await asyncio.shield(making)
        return await self._make(key, make)

    async def _make(self, key: str, make: Callable[[], Awaitable[Any]]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._making[key] = future
        try:
            value = await make()
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)
            else:
                future.cancel()
            raise
        else:
            self._done[key] = (time.monotonic(), value)
            future.set_result(value)
            return value
        finally:
            del self._making[key]

    async def close(self) -> None:
        await self._refreshes.close()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # the askers got it; never "exception was never retrieved"


class Views:
    """The dashboard's views of the cluster whose head is ``head``."""

    def __init__(self, head: ActorRef, *, ttl: float = TTL_S,
                 max_stale: float = MAX_STALE_S) -> None:
        self.head = head
        self._shared = _Shared(ttl, max_stale, log)
        self.state = StateClient(head)

    async def close(self) -> None:
        """Cancel the refreshes running behind stale answers."""
        await self._shared.close()

    # -- shared lists ----------------------------------------------------------------------------

    async def _nodes(self) -> list[dict[str, Any]]:
        return list(await self._shared.get("nodes", self.state.list_nodes))

    async def _actors(self) -> list[dict[str, Any]]:
        return list(await self._shared.get(
            "actors", lambda: self.state.list_actors(limit=LIST_LIMIT)))

    async def _details(self) -> list[dict[str, Any]]:
        return list(await self._shared.get("details", self.state.node_details))

    async def _task_summary(self) -> Any:
        return await self._shared.get("task_summary", self.state.summary_tasks)

    # -- views -----------------------------------------------------------------------------------

    async def summary(self) -> dict[str, Any]:
        """The header's counts, pushed to every page once a second."""
        nodes = await self._nodes()
        actors = await self._actors()
        tasks = _task_states(await self._task_summary())
        actor_states: dict[str, int] = {}
        for actor in actors:
            state = str(actor.get("state", "?"))
            actor_states[state] = actor_states.get(state, 0) + 1
        return {
            "nodes": {"alive": sum(1 for n in nodes if n.get("alive")),
                      "dead": sum(1 for n in nodes if not n.get("alive"))},
            "actors": actor_states,
            "tasks": tasks,
        }

    async def cluster(self) -> dict[str, Any]:
        nodes, details = await asyncio.gather(self._nodes(), self._details())
        host = {d.get("node_id"): d.get("host") or {} for d in details}
        rows = []
        for node in nodes:
            total = dict(node.get("resources") or {})
            available = dict(node.get("available") or {})
            used = {k: round(v - available.get(k, 0.0), 6) for k, v in total.items()}
            figures = host.get(node.get("node_id"), {})
            rows.append({**{k: v for k, v in node.items() if k != "ref"}, "used": used,
                         "cpu_percent": figures.get("cpu_percent"),
                         "mem_used": figures.get("mem_used"),
                         "mem_total": figures.get("mem_total")})
        return {"nodes": rows}

    async def actors(self, *, state: str = "", query: str = "", page: int = 0,
                     size: int = 50) -> dict[str, Any]:
        rows = await self._actors()
        if state:
            rows = [r for r in rows if str(r.get("state", "")) == state]
        if query:
            q = query.lower()
            rows = [r for r in rows if _matches(
                r, q, ("actor_id", "name", "class_name", "node_id", "job_id", "pid", "state"))]
        return page_of(rows, page, size)

    async def actor(self, actor_id: str) -> dict[str, Any] | None:
        for row in await self._actors():
            if str(row.get("actor_id")) == actor_id:
                return row
        return None

    async def tasks(self, *, query: str = "", page: int = 0, size: int = 50) -> dict[str, Any]:
        summary = await self._task_summary()
        by_name = _by_name(summary)
        if query:
            q = query.lower()
            by_name = [r for r in by_name if q in str(r["name"]).lower()]
        failures = await self._shared.get("failures", lambda: self.state.list_tasks(
            filters=[("state", "=", "FAILED")], limit=FAILURES))
        return {"states": _task_states(summary), "by_name": page_of(by_name, page, size),
                "failures": list(failures)}

    async def objects(self, *, page: int = 0, size: int = 50) -> dict[str, Any]:
        """Per live node: its shared-memory objects and the figures of its object store (used,
        limit, spilled now and in all, restored); the largest objects of all, paged."""
        details = await self._details()
        rows = [dict(obj, node_id=d.get("node_id")) for d in details
                for obj in d.get("object_list", [])]
        per_node = []
        for detail in sorted(details, key=lambda d: str(d.get("node_id"))):
            objects = detail.get("object_list", [])
            per_node.append({
                "node_id": detail.get("node_id"), "objects": len(objects),
                "bytes": sum(_size(o) for o in objects),
                **{key: detail.get(key) for key in _STORE_FIGURES},
            })
        largest = sorted(rows, key=lambda r: -_size(r))
        return {"per_node": per_node, "largest": page_of(largest, page, size)}

    async def placement_groups(self) -> dict[str, Any]:
        rows = await self._shared.get(
            "pgs", lambda: self.state.list_placement_groups(limit=LIST_LIMIT))
        return {"rows": list(rows)}

    async def jobs(self) -> dict[str, Any]:
        """Submitted jobs (the head's ``jobs`` actor) and every driver (the state layer)."""
        jobs = _beside(self.head, "jobs")
        rows = await self._shared.get(
            "jobs", lambda: jobs.ask(ListJobs(), timeout=ASK_TIMEOUT_S))
        drivers = await self._shared.get(
            "drivers", lambda: self.state.list_jobs(limit=LIST_LIMIT))
        return {"rows": list(reversed(rows)), "drivers": list(drivers)}

    async def job_logs(self, job_id: str) -> dict[str, Any]:
        """The last :data:`LOG_LINES` lines of a submitted job's output."""
        jobs = _beside(self.head, "jobs")
        chunks: list[bytes] = []
        offset = 0
        while True:  # the job's actor answers its output a piece at a time
            piece: JobLogs = await jobs.ask(ReadJobLogs(job_id, offset), timeout=ASK_TIMEOUT_S)
            if not piece.data:
                break
            chunks.append(piece.data)
            offset = piece.offset
            while sum(len(c) for c in chunks) > JOB_LOG_BYTES and len(chunks) > 1:
                chunks.pop(0)
        text = b"".join(chunks)[-JOB_LOG_BYTES:].decode("utf-8", errors="replace")
        return {"job_id": job_id, "lines": text.splitlines()[-LOG_LINES:]}

    async def workers(self) -> dict[str, Any]:
        """Every worker process with a log file, per live node, with the actor it hosts."""
        files = await self._shared.get("log_files", lambda: list_logs(self.head))
        hosts: dict[tuple[str, int], dict[str, Any]] = {}
        for actor in await self._actors():
            if actor.get("pid") is not None and actor.get("state") != "DEAD":
                hosts[(str(actor.get("node_id")), int(actor["pid"]))] = actor
        rows = []
        for node_id, names in sorted(files.items()):
            for name in names:
                m = _WORKER_FILE.fullmatch(name)
                if m is None:
                    continue
                pid = int(m.group(1))
                actor = hosts.get((node_id, pid), {})
                rows.append({"node_id": node_id, "pid": pid, "file": name,
                             "actor_id": actor.get("actor_id"),
                             "actor": actor.get("name") or actor.get("class_name")})
        return {"rows": rows}

    async def logs(self, *, actor_id: str | None = None, node_id: str | None = None,
                   pid: int | None = None, job_id: str | None = None) -> dict[str, Any]:
        """The last :data:`LOG_LINES` lines of an actor's, a worker's or a job's log files.
        Raises ValueError (from the log reader) when it does not know what was asked for."""
        lines = await read_logs(self.head, actor_id=actor_id, node_id=node_id,
                                               pid=pid, job_id=job_id, tail=LOG_LINES)
        return {"lines": list(lines)[-LOG_LINES:]}

    async def metrics(self) -> bytes:
        """The Prometheus text of the cluster's metrics."""
        return await exposition(self.head)


#: What the objects view shows of each node's object store (None where a node has no store).
_STORE_FIGURES = ("object_store_used", "object_store_limit", "spilled_now_bytes",
                  "spilled_bytes", "restored_bytes")
_WORKER_FILE = re.compile(r"worker-(\d+)\.log")


def _beside(head: ActorRef, slot_id: str) -> ActorRef:
    """The well-known actor ``slot_id`` in the head's process (where the dashboard runs)."""
    system = head.slot.system
    assert system.address is not None
    return restore_ref(system.uid, system.address, slot_id, slot_id)


def _size(row: Mapping[str, Any]) -> int:
    return int(row.get("bytes") or row.get("size") or 0)


def _task_states(summary: Any) -> dict[str, int]:
    """Counts by state over every name, from the state layer's task summary."""
    totals = summary.get("totals") if isinstance(summary, Mapping) else None
    if isinstance(totals, Mapping):
        return {str(k): int(v) for k, v in totals.items()}
    out: dict[str, int] = {}
    for row in _by_name(summary):
        for state, count in row["states"].items():
            out[state] = out.get(state, 0) + count
    return out


def _by_name(summary: Any) -> list[dict[str, Any]]:
    """``[{"name", "kind", "states": {state: count}, "total", "mean_s", "max_s"}]``, the
    busiest first."""
    rows: list[dict[str, Any]] = []
    entries = summary.get("by_name", ()) if isinstance(summary, Mapping) else ()
    for entry in entries:
        counts = {str(k): int(v) for k, v in dict(entry.get("state_counts") or {}).items()}
        rows.append({"name": str(entry.get("name")), "kind": entry.get("kind"),
                     "states": counts, "total": sum(counts.values()),
                     "mean_s": entry.get("mean_s"), "max_s": entry.get("max_s")})
    rows.sort(key=lambda r: (-r["total"], r["name"]))
    return rows
