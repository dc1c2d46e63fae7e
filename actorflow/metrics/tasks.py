"""Task metrics, from the head's task event store (:mod:`actorflow.state.store`, through
:class:`~actorflow.state.client.StateClient`).

- ``actorflow_tasks{Name,State}`` (gauge): tasks, actor calls and actor creations by name and
  state: RUNNING now, FINISHED and FAILED since the cluster started (those two only grow).
- ``actorflow_task_duration_seconds{Name}`` (histogram): how long the calls that ended ran,
  as their workers timed them, in the buckets of
  :data:`~actorflow.cluster.events.DURATION_BOUNDS` (each worker counts its calls per bucket;
  the store adds them up, exactly).
- ``actorflow_task_duration_seconds_max{Name}`` (gauge): the longest so far.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from actorflow.cluster.events import DURATION_BOUNDS
from actorflow.runtime import ActorRef
from actorflow.state.client import StateClient

__all__ = ["families_of", "task_families"]

log = logging.getLogger("actorflow.metrics")

#: How long a scrape waits for the event store.
ASK_TIMEOUT_S = 5.0


def families_of(summary: dict[str, Any]) -> list[Metric]:
    """The task families of an event store's summary (``StateClient.summary_tasks()``)."""
    tasks = GaugeMetricFamily("actorflow_tasks", "Tasks, actor calls and actor creations by "
                              "name and state (RUNNING now; FINISHED and FAILED since the "
                              "cluster started)", labels=["Name", "State"])
    duration = HistogramMetricFamily("actorflow_task_duration_seconds",
                                     "Run time of the calls that ended, by name",
                                     labels=["Name"])
    longest = GaugeMetricFamily("actorflow_task_duration_seconds_max",
                                "Longest run time of a call that ended, by name",
                                labels=["Name"])
    bounds = [floatToGoString(b) for b in (*DURATION_BOUNDS, float("inf"))]  # type: ignore[no-untyped-call]
    for entry in summary.get("by_name", ()):
        name = str(entry.get("name"))
        counts: dict[str, int] = entry.get("state_counts") or {}
        for state, n in sorted(counts.items()):
            tasks.add_metric([name, str(state)], float(n))
        per_bucket = entry.get("duration_buckets") or []
        if len(per_bucket) == len(bounds):
            cumulative: list[tuple[str, float]] = []
            total = 0.0
            for le, n in zip(bounds, per_bucket, strict=True):
                total += n
                cumulative.append((le, total))
            mean = entry.get("mean_s")
            ended = sum(n for state, n in counts.items() if state != "RUNNING")
            duration.add_metric([name], cumulative,
                                sum_value=float(mean) * ended if mean is not None else 0.0)
        if entry.get("max_s") is not None:
            longest.add_metric([name], float(entry["max_s"]))
    return [tasks, duration, longest]


async def task_families(head: ActorRef) -> list[Metric]:
    """The task families, or none when the event store does not answer (it is off, or
    busy past ASK_TIMEOUT_S): a scrape never fails for want of them."""
    try:
        summary = await StateClient(head, timeout=ASK_TIMEOUT_S).summary_tasks()
    except Exception as exc:
        log.debug("no task figures for this scrape: %s", exc)
        return []
    return families_of(summary)
