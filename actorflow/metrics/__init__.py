"""``af.metrics``: user metrics aggregated at the head, and the cluster's Prometheus text.

::

    requests = af.metrics.Counter("requests", description="requests served",
                                  tag_keys=("route",))
    requests.inc(1, tags={"route": "/a"})          # in the driver, a task or an actor
    af.metrics.Gauge("queue_depth", tag_keys=("queue",)).set(7, tags={"queue": "q1"})
    af.metrics.Histogram("latency_s", boundaries=[0.01, 0.1, 1]).observe(0.03)

    text = await af.metrics.exposition()           # what GET /metrics answers

Updates leave each process in batches (every ``FLUSH_S`` second and when it exits); the head's
``metrics`` actor sums counters and histogram buckets across processes and keeps each gauge's
newest value per tag set (:mod:`actorflow.metrics.user`). System metrics are named after
Ray's, with the ``actorflow_`` prefix (:mod:`actorflow.metrics.system`,
:mod:`actorflow.metrics.tasks`). Recording imports nothing heavy; ``exposition`` and
``CONTENT_TYPE`` import ``prometheus_client`` on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actorflow.metrics.user import FLUSH_S, Counter, Gauge, Histogram, Metric, flush

if TYPE_CHECKING:
    from actorflow.metrics.service import CONTENT_TYPE, exposition

__all__ = [
    "CONTENT_TYPE",
    "FLUSH_S",
    "Counter",
    "Gauge",
    "Histogram",
    "Metric",
    "exposition",
    "flush",
]


def __getattr__(name: str) -> object:
    if name in ("CONTENT_TYPE", "exposition"):
        from actorflow.metrics import service

        return getattr(service, name)
    raise AttributeError(f"module 'actorflow.metrics' has no attribute {name!r}")
