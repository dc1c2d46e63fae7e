"""What a process tells the head's ``metrics`` actor, and what the actor is asked.

Plain slotted dataclasses of strings, floats and tuples: they pickle small and need nothing but
this module at the head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "COUNTER",
    "GAUGE",
    "HISTOGRAM",
    "METRICS_ID",
    "Exposition",
    "MetricDef",
    "MetricUpdates",
    "check_name",
]

#: The well-known id of the head's metrics actor.
METRICS_ID = "metrics"

COUNTER: Literal["counter"] = "counter"
GAUGE: Literal["gauge"] = "gauge"
HISTOGRAM: Literal["histogram"] = "histogram"

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_TAG = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
#: System metrics' prefix: user metrics may not take it.
SYSTEM_PREFIX = "actorflow_"


def check_name(name: str, tag_keys: tuple[str, ...]) -> None:
    """Raise ValueError unless ``name`` and ``tag_keys`` are valid Prometheus names that a
    user metric may take."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"metric name {name!r} is not a Prometheus name "
                         "([a-zA-Z_:][a-zA-Z0-9_:]*)")
    if name.startswith(SYSTEM_PREFIX):
        raise ValueError(f"metric name {name!r}: the prefix {SYSTEM_PREFIX!r} is kept for "
                         "actorflow's own metrics")
    for key in tag_keys:
        if not isinstance(key, str) or not _TAG.match(key) or key.startswith("__"):
            raise ValueError(f"tag key {key!r} of metric {name!r} is not a Prometheus label "
                             "name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with '__')")
    if len(set(tag_keys)) != len(tag_keys):
        raise ValueError(f"metric {name!r} names a tag key twice: {tag_keys}")


@dataclass(frozen=True, slots=True)
class MetricDef:
    """A user metric's definition: the head keeps the first one it hears of each name."""

    name: str
    kind: str  # COUNTER | GAUGE | HISTOGRAM
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] = ()  # histograms: the buckets' upper bounds, ascending


#: (metric name, tag values in the order of its tag_keys)
SeriesKey = tuple[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class MetricUpdates:
    """Tell: what one process recorded since its last flush.

    ``counters``: the increments; ``gauges``: the last value set and when (wall clock: the
    newest set wins across processes); ``histograms``: per bucket (``len(boundaries) + 1``,
    the last one +Inf) the number of observations, then their sum.
    """

    defs: tuple[MetricDef, ...]
    counters: dict[SeriesKey, float] = field(default_factory=dict)
    gauges: dict[SeriesKey, tuple[float, float]] = field(default_factory=dict)
    histograms: dict[SeriesKey, list[float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Exposition:
    """Ask: answers the Prometheus text exposition (``bytes``) of every metric."""
