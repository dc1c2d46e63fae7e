"""``StateClient``: the cluster's state, as rows of plain dicts (JSON-able).

Everything that shows the cluster (``actorflow list|summary|timeline``, the dashboard,
``af.state``) asks through this class, so they show the same thing. Where each view comes from:

- nodes and actors: the head's views (``ListState``);
- tasks: the head's ``events`` actor (:mod:`actorflow.state.store`), fed by the workers;
- objects: each live node's own figures (its shared-memory segments);
- placement groups: the placement actor beside the head.

Filters: a mapping ``{"state": "FAILED"}`` (each key equals its value) or a sequence of
``(key, op, value)`` with op ``=`` or ``!=`` (API.md: ``[("state", "=", "ALIVE")]``); every
filter must hold. ``limit`` caps the rows returned (default 100).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from actorflow.cluster.events import EVENTS_ID
from actorflow.cluster.protocol import ListState, NodeInfo
from actorflow.placement.messages import GroupTable
from actorflow.runtime import ActorRef, restore_ref
from actorflow.state.store import Filter, ListTasks, SummarizeTasks, TimelineSpans

__all__ = ["DEFAULT_LIMIT", "Filters", "StateClient", "normalize_filters"]

DEFAULT_LIMIT = 100

#: What the ``filters`` argument takes (see the module docstring).
Filters = Mapping[str, Any] | Sequence[tuple[str, str, Any]] | None


def normalize_filters(filters: Filters) -> tuple[Filter, ...]:
    """``filters`` as ``(key, op, value)`` triples; raises ValueError for a bad one."""
    if filters is None:
        return ()
    if isinstance(filters, Mapping):
        return tuple((str(k), "=", v) for k, v in filters.items())
    out = []
    for item in filters:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"a filter is (key, op, value), got {item!r}")
        key, op, value = item
        if op not in ("=", "!="):
            raise ValueError(f"filter op {op!r}: use '=' or '!='")
        out.append((str(key), str(op), value))
    return tuple(out)


def _select(rows: list[dict[str, Any]], filters: Filters, limit: int) -> list[dict[str, Any]]:
    checks = normalize_filters(filters)
    out = []
    for row in rows:
        if all((row.get(k) == v) is (op == "=") for k, op, v in checks):
            out.append(row)
            if len(out) >= limit:
                break
    return out


def _beside(head: ActorRef, slot_id: str) -> ActorRef:
    uid, address, _, _ = head.__reduce__()[1]
    return restore_ref(uid, address, slot_id, slot_id)


class StateClient:
    """The cluster's state through ``head`` (an ``ActorRef`` to the Head actor; see the module
    docstring). Every method is a coroutine; ``timeout`` bounds each ask."""

    def __init__(self, head: ActorRef, *, timeout: float = 10.0) -> None:
        self.head = head
        self.timeout = timeout
        self._events: ActorRef | None = None

    @property
    def events(self) -> ActorRef:
        """The head's event store."""
        if self._events is None:
            self._events = _beside(self.head, EVENTS_ID)
        return self._events

    # -- nodes, actors, placement groups ----------------------------------------------------------

    async def _nodes_raw(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = await self.head.ask(ListState("nodes"),
                                                          timeout=self.timeout)
        return nodes

    async def list_nodes(self, filters: Filters = None, limit: int = DEFAULT_LIMIT
                         ) -> list[dict[str, Any]]:
        """One row per node: node_id, address, alive, resources, available."""
        rows = [{k: v for k, v in node.items() if k != "ref"} for node in await self._nodes_raw()]
        for row in rows:
            row["state"] = "ALIVE" if row.get("alive") else "DEAD"
        return _select(rows, filters, limit)

    async def list_actors(self, filters: Filters = None, limit: int = DEFAULT_LIMIT
                          ) -> list[dict[str, Any]]:
        """One row per actor the head knows: actor_id, class_name, name, namespace, state
        (PENDING, ALIVE, RESTARTING, DEAD), node_id, pid, restarts, job_id."""
        actors: list[dict[str, Any]] = await self.head.ask(ListState("actors"),
                                                           timeout=self.timeout)
        rows = [dict(a) for a in actors]
        for row in rows:
            row.setdefault("job_id", None)
        return _select(rows, filters, limit)

    async def list_jobs(self, filters: Filters = None, limit: int = DEFAULT_LIMIT
                        ) -> list[dict[str, Any]]:
        """One row per job (every driver is one) the head knows: the head's ``jobs`` view."""
        jobs: list[dict[str, Any]] = await self.head.ask(ListState("jobs"), timeout=self.timeout)
        return _select([dict(j) for j in jobs], filters, limit)

    async def list_placement_groups(self, filters: Filters = None, limit: int = DEFAULT_LIMIT
                                    ) -> list[dict[str, Any]]:
        """One row per placement group (``af.placement_group_table()``'s entries)."""
        table: dict[Any, Any] = await _beside(self.head, "placement").ask(
            GroupTable(None), timeout=self.timeout)
        rows = [dict(entry) for entry in table.values()]
        return _select(rows, filters, limit)

    # -- per node: leases and objects ---------------------------------------------------------

    async def node_details(self) -> list[dict[str, Any]]:
        """Each live node's own figures (``NodeInfo``): leases, workers, objects..."""
        nodes = await self._nodes_raw()
        refs = [n["ref"] for n in nodes if n.get("alive") and n.get("ref") is not None]
        answers = await asyncio.gather(*(ref.ask(NodeInfo(), timeout=self.timeout)
                                         for ref in refs), return_exceptions=True)
        return [a for a in answers if isinstance(a, dict)]

    async def list_objects(self, filters: Filters = None, limit: int = DEFAULT_LIMIT
                           ) -> list[dict[str, Any]]:
        """One row per object in a node's shared memory: object, bytes, node_id."""
        rows = [dict(obj, node_id=d["node_id"]) for d in await self.node_details()
                for obj in d.get("object_list", [])]
        return _select(rows, filters, limit)

    async def list_leases(self, filters: Filters = None, limit: int = DEFAULT_LIMIT
                          ) -> list[dict[str, Any]]:
        """One row per worker lease held now: lease_id, demand, worker_pid, state, node_id."""
        rows = [dict(lease, node_id=d["node_id"]) for d in await self.node_details()
                for lease in d.get("lease_list", [])]
        return _select(rows, filters, limit)

    # -- tasks -------------------------------------------------------------------------------------

    async def list_tasks(self, filters: Filters = None, limit: int = DEFAULT_LIMIT, *,
                         detail: bool = False) -> list[dict[str, Any]]:
        """Tasks, actor calls and actor creations: those running (oldest first), then those
        that ended (newest first; the head keeps the last 10,000, and failures longer).
        Columns: task_id, name, kind (task, actor_call, actor_creation), state (RUNNING,
        FINISHED, FAILED), job_id, actor_id, node_id, worker_id, pid, start_time, end_time
        (wall clock, seconds), duration_s, error_type, error_message; ``detail`` adds each
        failure's traceback."""
        answer: dict[str, Any] = await self.events.ask(
            ListTasks(normalize_filters(filters), limit, detail), timeout=self.timeout)
        rows: list[dict[str, Any]] = answer["rows"]
        return rows

    async def summary_tasks(self) -> dict[str, Any]:
        """Counts by name and state since the cluster started (never dropped), with mean and
        max run time by name: ``{"by_name": [{"name", "kind", "state_counts", "mean_s",
        "max_s"}], "totals": {state: n}, ...}``."""
        summary: dict[str, Any] = await self.events.ask(SummarizeTasks(), timeout=self.timeout)
        return summary

    async def summary_actors(self) -> dict[str, Any]:
        """Actors by class and state: ``{"by_class": [{"class_name", "state_counts"}],
        "totals": {state: n}}``."""
        actors = await self.list_actors(limit=1 << 62)
        by_class: dict[str, dict[str, int]] = {}
        totals: dict[str, int] = {}
        for actor in actors:
            counts = by_class.setdefault(actor["class_name"], {})
            counts[actor["state"]] = counts.get(actor["state"], 0) + 1
            totals[actor["state"]] = totals.get(actor["state"], 0) + 1
        return {"by_class": [{"class_name": c, "state_counts": s}
                             for c, s in sorted(by_class.items())], "totals": totals}

    async def summary_objects(self) -> dict[str, Any]:
        """Objects in shared memory by node: ``{"by_node": [{"node_id", "objects", "bytes",
        "largest"}], "total_objects", "total_bytes"}``."""
        by_node = []
        for detail in await self.node_details():
            objects = detail.get("object_list", [])
            largest = sorted(objects, key=lambda o: -int(o.get("bytes", 0)))[:5]
            by_node.append({"node_id": detail["node_id"], "objects": len(objects),
                            "bytes": sum(int(o.get("bytes", 0)) for o in objects),
                            "largest": largest})
        return {"by_node": by_node, "total_objects": sum(n["objects"] for n in by_node),
                "total_bytes": sum(n["bytes"] for n in by_node)}

    async def timeline_spans(self) -> dict[str, Any]:
        """What the event store keeps for the timeline (see :mod:`actorflow.state.timeline`)."""
        spans: dict[str, Any] = await self.events.ask(TimelineSpans(), timeout=self.timeout)
        return spans
