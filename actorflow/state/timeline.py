"""The timeline: the cluster's tasks and actor calls as a Chrome trace (Perfetto opens it too).

One process per node (``pid``: the node's number, named ``node <id>``), one thread per worker
process (``tid``: the worker's pid, named ``worker <pid>``); one complete event (``"ph": "X"``)
per task, actor call and actor creation that ended, with its ids, state and error in ``args``;
calls still running end at the time of the trace, marked ``RUNNING``. Times are microseconds of
the wall clock (``ts``), so the rows of one machine line up.

What it holds depends on the head's setting: with the timeline on (``ACTORFLOW_TIMELINE=1``
where the head starts, ``actorflow start --head --timeline``), every call since the head started
(up to 1,000,000); off (the default), the last 10,000 that ended, which the head keeps anyway.
``otherData.complete`` says which.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

__all__ = ["to_chrome_trace", "write_trace"]


def to_chrome_trace(spans: dict[str, Any]) -> dict[str, Any]:
    """The trace (a JSON-able dict) for what ``StateClient.timeline_spans()`` returned."""
    columns: Sequence[str] = spans["columns"]
    at = {name: i for i, name in enumerate(columns)}
    i_node, i_pid, i_start, i_end = at["node_id"], at["pid"], at["start_time"], at["end_time"]
    now = float(spans["now"])
    rows = list(spans["spans"]) + list(spans["running"])
    nodes: dict[str, int] = {}
    threads: dict[tuple[int, int], str] = {}
    events: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: r[i_start]):
        node_id = row[i_node] or "?"
        pid = nodes.setdefault(node_id, len(nodes) + 1)
        tid = int(row[i_pid] or 0)
        if (pid, tid) not in threads:
            threads[(pid, tid)] = f"worker {tid}"
        end = row[i_end] if row[i_end] is not None else now
        args = {k: row[at[k]] for k in ("task_id", "kind", "state", "job_id", "actor_id",
                                        "worker_id", "error_type", "error_message")
                if row[at[k]] is not None}
        events.append({
            "name": row[at["name"]], "cat": row[at["kind"]], "ph": "X", "pid": pid,
            "tid": tid, "ts": round(row[i_start] * 1e6, 3),
            "dur": round(max(0.0, end - row[i_start]) * 1e6, 3), "args": args,
        })
    meta: list[dict[str, Any]] = []
    for node_id, pid in nodes.items():
        meta.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                     "args": {"name": f"node {node_id}"}})
        meta.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0,
                     "args": {"sort_index": pid}})
    for (pid, tid), name in threads.items():
        meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                     "args": {"name": name}})
    return {
        "traceEvents": meta + events,
        "displayTimeUnit": "ms",
        "otherData": {"complete": bool(spans["complete"]), "timeline": bool(spans["timeline"]),
                      "spans_dropped": spans["spans_dropped"], "version": "actorflow"},
    }


def write_trace(trace: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``trace`` to ``path`` as JSON (through a temporary file: a reader never sees half
    of it)."""
    target = os.fspath(path)
    tmp = f"{target}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(trace, f, separators=(",", ":"))
    os.replace(tmp, target)
