"""User metrics: :class:`Counter`, :class:`Gauge`, :class:`Histogram` (``af.metrics``).

A metric is a name, a description and tag keys; it records in whichever process uses it (the
driver, a task, an actor: any thread). Recording never sends anything: it adds to this
process's pending updates under a lock (a couple of microseconds: about one locked dict
update). The first update after a flush arms one loop timer; :data:`FLUSH_S` later the pending
updates go to the head's ``metrics`` actor in one tell
(:class:`~actorflow.metrics.protocol.MetricUpdates`), and a process's last updates go when its
runtime closes (a worker's exit, ``af.shutdown()``: ``Core.on_close``). A process killed
outright (SIGKILL: ``af.kill``, a crash, an actor stopped by its node) loses what it recorded
since its last flush: metrics are an observation, never retried.

At the head counters add up across processes, a gauge keeps the newest value set for each set
of tag values (whichever process set it), and histograms add their bucket counts.

Nothing here imports ``prometheus_client``: only the head does (a worker that records metrics
pays for a dict and a lock).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from actorflow._errors import ActorflowError
from actorflow.metrics.protocol import (
    COUNTER,
    GAUGE,
    HISTOGRAM,
    METRICS_ID,
    MetricDef,
    MetricUpdates,
    SeriesKey,
    check_name,
)
from actorflow.objects.ref import current_core
from actorflow.runtime import ActorRef, restore_ref

if TYPE_CHECKING:
    from actorflow.cluster.core import Core

__all__ = ["FLUSH_S", "Counter", "Gauge", "Histogram", "Metric", "flush", "metrics_ref"]

log = logging.getLogger("actorflow.metrics")

#: Seconds between a process's first update and the flush that sends it to the head.
FLUSH_S = 1.0
#: How long a process's last flush (when its runtime closes) may wait for the head.
LAST_FLUSH_TIMEOUT_S = 2.0
#: Histogram buckets when none are given (prometheus_client's defaults), in seconds.
DEFAULT_BOUNDARIES: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def metrics_ref(head: ActorRef) -> ActorRef:
    """The ``metrics`` actor beside ``head`` (same process, well-known id)."""
    system = head.slot.system
    return restore_ref(system.uid, system.address, METRICS_ID, METRICS_ID)


class Metric:
    """What the three kinds share: a name, a description, tag keys and default tags.

    A metric registers its definition in this process when made (and when unpickled in
    another); making a second one of the same name that differs raises ``ValueError``."""

    kind: ClassVar[str] = ""

    def __init__(self, name: str, description: str = "",
                 tag_keys: Iterable[str] | None = None) -> None:
        keys = tuple(tag_keys or ())
        check_name(name, keys)
        self._name = name
        self._description = str(description)
        self._tag_keys = keys
        self._default_tags: dict[str, str] = {}
        # the series of a record without tags= ((name, tag values)), when the defaults
        # cover every key
        self._series: SeriesKey | None = (name, ()) if not keys else None
        if not isinstance(self, Histogram):  # (a histogram registers once it has buckets)
            _register(self.definition())

    def __reduce__(self) -> tuple[Any, ...]:
        """Unpickled (in a task, an actor), it registers its definition there too."""
        return (_rebuild, (type(self), self.definition(), dict(self._default_tags)))

    @property
    def info(self) -> dict[str, Any]:
        """The metric's name, description, tag keys and default tags."""
        return {"name": self._name, "description": self._description,
                "tag_keys": self._tag_keys, "default_tags": dict(self._default_tags)}

    def definition(self) -> MetricDef:
        """What the head is told of this metric."""
        return MetricDef(self._name, self.kind, self._description, self._tag_keys)

    def set_default_tags(self, default_tags: Mapping[str, str]) -> Metric:
        """Tag values used when a record does not give them (only declared tag keys)."""
        unknown = set(default_tags) - set(self._tag_keys)
        if unknown:
            raise ValueError(f"metric {self._name!r} has no tag keys {sorted(unknown)}; "
                             f"its tag keys are {list(self._tag_keys)}")
        self._default_tags = {k: str(v) for k, v in default_tags.items()}
        if all(k in self._default_tags for k in self._tag_keys):
            self._series = (self._name, tuple(self._default_tags[k] for k in self._tag_keys))
        else:
            self._series = None
        return self

    def _series_of(self, tags: Mapping[str, str] | None) -> SeriesKey:
        if not tags:
            if self._series is not None:
                return self._series
            tags = {}
        elif len(tags) == len(self._tag_keys):  # the usual case: every key given
            try:
                return (self._name, tuple([str(tags[k]) for k in self._tag_keys]))
            except KeyError:
                pass  # (an unknown key: said below)
        merged = {**self._default_tags, **{k: str(v) for k, v in tags.items()}}
        if len(merged) != len(self._tag_keys) or any(k not in merged for k in self._tag_keys):
            unknown = sorted(set(merged) - set(self._tag_keys))
            missing = sorted(set(self._tag_keys) - set(merged))
            raise ValueError(f"metric {self._name!r} takes tag keys {list(self._tag_keys)}: "
                             f"unknown {unknown}, missing {missing} (give them in tags= or "
                             "set_default_tags)")
        return (self._name, tuple(merged[k] for k in self._tag_keys))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name} tags={list(self._tag_keys)}>"


class Counter(Metric):
    """A value that only goes up: ``inc(value, tags=)``. Summed across processes at the head;
    exposed as ``<name>_total``."""

    kind = COUNTER

    def inc(self, value: float = 1.0, tags: Mapping[str, str] | None = None) -> None:
        """Add ``value`` (>= 0) to the series of these tags."""
        if not value >= 0:  # (NaN too)
            raise ValueError(f"counter {self._name!r}: inc() takes a value >= 0, got {value}")
        series = self._series if tags is None and self._series is not None else \
            self._series_of(tags)
        _RECORDER.count(series, value)


class Gauge(Metric):
    """A value that goes up and down: ``set(value, tags=)``. The head keeps the newest value
    set for each set of tag values, whichever process set it (add a tag of your own, such as
    a replica name, to keep one series per process)."""

    kind = GAUGE

    def set(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Set the series of these tags to ``value``."""
        series = self._series if tags is None and self._series is not None else \
            self._series_of(tags)
        _RECORDER.gauge(series, float(value))


class Histogram(Metric):
    """A distribution: ``observe(value, tags=)`` counts ``value`` in the first bucket whose
    upper bound (``boundaries``, ascending) is >= it, or in +Inf. Bucket counts and sums add
    up across processes at the head."""

    kind = HISTOGRAM

    def __init__(self, name: str, description: str = "",
                 boundaries: Iterable[float] | None = None,
                 tag_keys: Iterable[str] | None = None) -> None:
        super().__init__(name, description, tag_keys)
        bounds = tuple(float(b) for b in (DEFAULT_BOUNDARIES if boundaries is None
                                          else boundaries))
        if not bounds or any(not math.isfinite(b) for b in bounds) or any(
                b >= c for b, c in itertools.pairwise(bounds)):
            raise ValueError(f"histogram {name!r}: boundaries must be finite and strictly "
                             f"ascending, got {list(bounds)}")
        self._boundaries = bounds
        _register(self.definition())

    @property
    def boundaries(self) -> tuple[float, ...]:
        """The buckets' upper bounds (+Inf is implied)."""
        return self._boundaries

    def definition(self) -> MetricDef:
        """What the head is told of this metric."""
        return MetricDef(self._name, self.kind, self._description, self._tag_keys,
                         self._boundaries)

    def observe(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        """Count one observation of ``value`` in the series of these tags."""
        if value != value:  # NaN
            raise ValueError(f"histogram {self._name!r}: observe() of NaN")
        series = self._series if tags is None and self._series is not None else \
            self._series_of(tags)
        _RECORDER.observe(series, bisect.bisect_left(self._boundaries, value), value,
                          len(self._boundaries))


#: The definitions of the metrics made in this process, by name (the first of each name).
_DEFS: dict[str, MetricDef] = {}


def _register(definition: MetricDef) -> None:
    known = _DEFS.setdefault(definition.name, definition)
    if known != definition:
        raise ValueError(f"metric {definition.name!r} is already defined in this process as "
                         f"{known}, not {definition}")


def _rebuild(cls: type[Metric], definition: MetricDef, default_tags: dict[str, str]
             ) -> Metric:
    metric: Metric
    if cls is Histogram or issubclass(cls, Histogram):
        metric = cls(definition.name, definition.description, definition.boundaries,
                     definition.tag_keys)
    else:
        metric = cls(definition.name, definition.description, definition.tag_keys)
    if default_tags:
        metric.set_default_tags(default_tags)
    return metric


class _Recorder:
    """This process's pending updates (see the module docstring). One per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[SeriesKey, float] = {}
        self._gauges: dict[SeriesKey, tuple[float, float]] = {}
        self._hists: dict[SeriesKey, list[float]] = {}
        self._armed = False
        # loop-side state (touched on the core's loop thread only)
        self._core: Core | None = None
        self._ref: ActorRef | None = None
        self._timer: Any = None  # asyncio.TimerHandle

    def count(self, series: SeriesKey, value: float) -> None:
        with self._lock:
            counters = self._counters
            counters[series] = counters.get(series, 0.0) + value
            if self._armed:
                return
            self._armed = True
        self._arm_soon()

    def gauge(self, series: SeriesKey, value: float) -> None:
        with self._lock:
            self._gauges[series] = (value, time.time())
            if self._armed:
                return
            self._armed = True
        self._arm_soon()

    def observe(self, series: SeriesKey, bucket: int, value: float, bounds: int) -> None:
        with self._lock:
            counts = self._hists.get(series)
            if counts is None:
                counts = self._hists[series] = [0.0] * (bounds + 2)
            counts[bucket] += 1
            counts[-1] += value
            if self._armed:
                return
            self._armed = True
        self._arm_soon()

    def _arm_soon(self) -> None:
        """The first record since the last flush: see that a flush comes."""
        try:
            core = current_core()  # raises when this process runs no actorflow runtime
        except RuntimeError:
            with self._lock:
                self._armed = False  # (what was recorded goes with a later flush)
            raise
        if threading.get_ident() == core.loop_thread:
            self._arm(core)
        else:
            try:
                core.loop.call_soon_threadsafe(self._arm, core)
            except RuntimeError:  # the loop is closed: the process is ending
                pass

    def _arm(self, core: Core) -> None:
        if core is not self._core:
            if core.closed:
                return
            self._bind(core)
        if self._timer is None:
            self._timer = core.loop.call_later(FLUSH_S, self._flush_now)

    def _bind(self, core: Core) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._core = core
        self._ref = metrics_ref(core.head)
        core.on_close.append(lambda: self._last_flush(core))

    def take(self) -> MetricUpdates | None:
        """What is pending, as one message (None when nothing is); starts anew."""
        with self._lock:
            self._armed = False
            if not (self._counters or self._gauges or self._hists):
                return None
            counters, gauges, hists = self._counters, self._gauges, self._hists
            self._counters, self._gauges, self._hists = {}, {}, {}
        used = {key[0] for key in (*counters, *gauges, *hists)}
        return MetricUpdates(tuple(_DEFS[n] for n in sorted(used)), counters, gauges, hists)

    def _flush_now(self) -> None:
        self._timer = None
        batch = self.take()
        if batch is None or self._ref is None:
            return
        try:
            self._ref.tell_nowait(batch)
        except ActorflowError as exc:  # the head is gone: so are the figures it held
            log.debug("metrics flush dropped: %s", exc)

    async def _last_flush(self, core: Core) -> None:
        """The process's runtime closes: send what is pending and wait until it is taken."""
        if core is not self._core:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ref, self._ref, self._core = self._ref, None, None
        batch = self.take()
        if batch is None or ref is None:
            return
        try:
            await ref.ask(batch, timeout=LAST_FLUSH_TIMEOUT_S)
        except (ActorflowError, TimeoutError) as exc:
            log.debug("last metrics flush dropped: %s", exc)

    async def flush(self) -> None:
        """Send what is pending now and wait until the head has taken it."""
        core = current_core()
        if core is not self._core:
            self._bind(core)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self.take()
        if batch is not None and self._ref is not None:
            await self._ref.ask(batch, timeout=LAST_FLUSH_TIMEOUT_S)


_RECORDER = _Recorder()


async def flush() -> None:
    """Send this process's pending metric updates to the head now and wait until they are
    taken (they go on their own within ``FLUSH_S``; this is for a reading right after)."""
    await _RECORDER.flush()
