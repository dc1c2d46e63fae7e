"""``af.state``: the cluster's state as rows of plain dicts, and the timeline.

``StateClient(head)`` asks a given head; the module's functions ask the head of the current
runtime (``af.init``), in a driver or in a task::

    await af.state.list_actors(filters=[("state", "=", "ALIVE")], limit=100)
    await af.state.list_tasks(filters={"state": "FAILED"})
    await af.state.summary_tasks()
    await af.timeline("trace.json")

See :mod:`actorflow.state.client` for the rows and the filters, :mod:`actorflow.state.store`
for what the head keeps of tasks, :mod:`actorflow.state.timeline` for the trace.
"""

from __future__ import annotations

import os
from typing import Any

from actorflow.state.client import DEFAULT_LIMIT, Filters, StateClient
from actorflow.state.timeline import to_chrome_trace, write_trace

__all__ = [
    "StateClient",
    "list_actors",
    "list_jobs",
    "list_nodes",
    "list_objects",
    "list_placement_groups",
    "list_tasks",
    "summary_actors",
    "summary_objects",
    "summary_tasks",
    "timeline",
]


def _client() -> StateClient:
    from actorflow.objects.ref import current_core

    return StateClient(current_core().head)


async def list_nodes(filters: Filters = None, limit: int = DEFAULT_LIMIT
                     ) -> list[dict[str, Any]]:
    """The cluster's nodes (see :meth:`StateClient.list_nodes`)."""
    return await _client().list_nodes(filters, limit)


async def list_actors(filters: Filters = None, limit: int = DEFAULT_LIMIT
                      ) -> list[dict[str, Any]]:
    """The cluster's actors (see :meth:`StateClient.list_actors`)."""
    return await _client().list_actors(filters, limit)


async def list_tasks(filters: Filters = None, limit: int = DEFAULT_LIMIT, *,
                     detail: bool = False) -> list[dict[str, Any]]:
    """Tasks and actor calls, running and recent (see :meth:`StateClient.list_tasks`)."""
    return await _client().list_tasks(filters, limit, detail=detail)


async def list_objects(filters: Filters = None, limit: int = DEFAULT_LIMIT
                       ) -> list[dict[str, Any]]:
    """Objects in the nodes' shared memory (see :meth:`StateClient.list_objects`)."""
    return await _client().list_objects(filters, limit)


async def list_placement_groups(filters: Filters = None, limit: int = DEFAULT_LIMIT
                                ) -> list[dict[str, Any]]:
    """The cluster's placement groups (see :meth:`StateClient.list_placement_groups`)."""
    return await _client().list_placement_groups(filters, limit)


async def list_jobs(filters: Filters = None, limit: int = DEFAULT_LIMIT
                    ) -> list[dict[str, Any]]:
    """The cluster's jobs (see :meth:`StateClient.list_jobs`)."""
    return await _client().list_jobs(filters, limit)


async def summary_tasks() -> dict[str, Any]:
    """Task counts by name and state (see :meth:`StateClient.summary_tasks`)."""
    return await _client().summary_tasks()


async def summary_actors() -> dict[str, Any]:
    """Actor counts by class and state (see :meth:`StateClient.summary_actors`)."""
    return await _client().summary_actors()


async def summary_objects() -> dict[str, Any]:
    """Objects by node (see :meth:`StateClient.summary_objects`)."""
    return await _client().summary_objects()


async def timeline(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The cluster's timeline as a Chrome trace (open it in Perfetto or chrome://tracing):
    written to ``path`` when given, and returned. Off by default: the head keeps every call's
    span only with ``ACTORFLOW_TIMELINE=1`` (or ``actorflow start --head --timeline``);
    otherwise the trace shows the last 10,000 calls (see :mod:`actorflow.state.timeline`)."""
    trace = to_chrome_trace(await _client().timeline_spans())
    if path is not None:
        write_trace(trace, path)
    return trace
