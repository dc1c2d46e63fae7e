"""The head's task table: the ``events`` actor (a head service, see
:mod:`actorflow.cluster.services`).

Workers tell it their task events in batches (:mod:`actorflow.cluster.events`). It keeps, in
bounded memory whatever the cluster has run:

- every task, actor call and actor creation that is running (taken by a worker, not answered);
- the last ``task_events_max`` (default 10,000) that ended, in a ring;
- counts by (name, state) and run-time totals by name, which never drop;
- the last ``task_failures_max`` (default 1,000) failures with their errors, past the ring;
- with the timeline on (``ACTORFLOW_TIMELINE=1``, ``actorflow start --timeline``,
  ``af.init(timeline=True)`` where the runtime passes it), every ended call's span up to
  ``timeline_max_events`` (default 1,000,000), for ``af.timeline()``; off, the timeline shows
  what the ring holds.

When a worker's process ends, what it was running is marked FAILED (``WorkerCrashedError``):
its answers will never come.

Every query is answered from these structures (a filter is a scan of at most the ring), so
the cost of a query does not grow with the number of tasks the cluster has finished.
"""

from __future__ import annotations

import os
import pickle
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actorflow.cluster.events import ENDED, EVENTS_ID, STARTED
from actorflow.cluster.protocol import CONTROL_ID
from actorflow.runtime import ActorRef, ServiceActor, Terminated, restore_ref

if TYPE_CHECKING:
    from actorflow.cluster.services import HeadContext

__all__ = [
    "COLUMNS",
    "DEFAULT_FAILURES",
    "DEFAULT_FINISHED",
    "DEFAULT_TIMELINE",
    "EventStore",
    "ListTasks",
    "SummarizeTasks",
    "TimelineSpans",
    "start",
]

DEFAULT_FINISHED = 10_000
DEFAULT_FAILURES = 1_000
DEFAULT_TIMELINE = 1_000_000

#: A row's fields, in the order of the tuples the store keeps.
COLUMNS = ("task_id", "name", "kind", "state", "job_id", "actor_id", "node_id", "worker_id",
           "pid", "start_time", "end_time", "duration_s", "error_type", "error_message")
_INDEX = {name: i for i, name in enumerate(COLUMNS)}
_STATE = _INDEX["state"]

#: A filter: (column, op, value); op is ``=`` or ``!=``.
Filter = tuple[str, str, Any]


@dataclass(frozen=True, slots=True)
class ListTasks:
    """Rows of the task table, running first (oldest first), then ended (newest first)."""

    filters: tuple[Filter, ...] = ()
    limit: int = 100
    detail: bool = False  # with each failure's traceback


@dataclass(frozen=True, slots=True)
class SummarizeTasks:
    """Counts by name and state (never dropped), with run-time figures."""


@dataclass(frozen=True, slots=True)
class TimelineSpans:
    """Every span kept for the timeline, and the running calls."""


@dataclass(slots=True)
class _Origin:
    """A reporting worker process."""

    node_id: str
    worker_id: str
    pid: int
    offset: float
    running: set[str] = field(default_factory=set)
    unwatch: Callable[[], None] | None = None


def _matcher(filters: tuple[Filter, ...]) -> Callable[[tuple[Any, ...]], bool]:
    checks: list[tuple[int, bool, Any]] = []
    for key, op, value in filters:
        if key not in _INDEX:
            raise ValueError(f"no column {key!r} to filter on; columns: {', '.join(COLUMNS)}")
        if op not in ("=", "!="):
            raise ValueError(f"filter op {op!r}: use '=' or '!='")
        checks.append((_INDEX[key], op == "=", value))

    def match(row: tuple[Any, ...]) -> bool:
        return all((row[i] == value) is equal for i, equal, value in checks)

    return match


class EventStore(ServiceActor):
    """See the module docstring."""

    mailbox_size = 1 << 16

    def __init__(self, max_finished: int = DEFAULT_FINISHED,
                 max_failures: int = DEFAULT_FAILURES, timeline: bool = False,
                 max_timeline: int = DEFAULT_TIMELINE) -> None:
        self.running: dict[str, list[Any]] = {}
        self.finished: deque[tuple[Any, ...]] = deque(maxlen=max(1, max_finished))
        self.failures: deque[tuple[Any, ...]] = deque(maxlen=max(1, max_failures))
        self.tracebacks: dict[str, str] = {}  # of the failures kept
        self.counts: dict[tuple[str, str], int] = {}
        self.kinds: dict[str, str] = {}  # name -> kind
        self.run_s: dict[str, list[float]] = {}  # name -> [total, max]
        self.timeline = timeline
        self.max_timeline = max_timeline
        self.spans: list[tuple[Any, ...]] = []
        self.spans_dropped = 0
        self.dropped = 0  # events workers could not send
        self.origins: dict[tuple[str, str | None], _Origin] = {}
        self.started_at = time.time()

    async def on_stop(self) -> None:
        for origin in self.origins.values():
            if origin.unwatch is not None:
                origin.unwatch()

    async def handle(self, message: Any) -> Any:
        if type(message) is bytes:
            self.ingest(message)
            return None
        if type(message) is ListTasks:
            return self.list_tasks(message)
        if type(message) is SummarizeTasks:
            return self.summary()
        if type(message) is TimelineSpans:
            return self.timeline_spans()
        raise TypeError(f"the event store got an unexpected {type(message).__name__}")

    # -- recording ------------------------------------------------------------------------------

    def ingest(self, data: bytes) -> None:
        meta, dropped, events = pickle.loads(data)
        key, node_id, worker_id, pid, offset = meta
        self.dropped += dropped
        origin = self.origins.get(key)
        if origin is None:
            origin = self.origins[key] = _Origin(node_id, worker_id, pid, offset)
            origin.unwatch = self._watch(key)
        running = self.running
        for event in events:
            if event[0] == STARTED:
                _, task_id, name, kind, job_id, actor_id, t = event
                running[task_id] = [task_id, name, kind, "RUNNING", job_id or None, actor_id,
                                    node_id, worker_id, pid, t + offset, key]
                origin.running.add(task_id)
            elif event[0] == ENDED:
                _, task_id, t, run_s, error_type, message, tb = event
                started = running.pop(task_id, None)
                origin.running.discard(task_id)
                if started is None:  # its start was lost: what the end says
                    started = [task_id, "?", "?", "", None, None, node_id, worker_id, pid,
                               t + offset - run_s, key]
                end = t + offset
                self._ended(started, "FINISHED" if error_type is None else "FAILED",
                            end - run_s if run_s else started[9], end, error_type, message, tb)

    def _ended(self, started: list[Any], state: str, start: float, end: float,
               error_type: str | None, message: str | None, tb: str | None) -> None:
        task_id, name, kind = started[0], started[1], started[2]
        row = (task_id, name, kind, state, started[4], started[5], started[6], started[7],
               started[8], start, end, max(0.0, end - start), error_type, message)
        self.finished.append(row)
        counts = self.counts
        counts[(name, state)] = counts.get((name, state), 0) + 1
        if name not in self.kinds:
            self.kinds[name] = kind
        figures = self.run_s.get(name)
        if figures is None:
            self.run_s[name] = [row[11], row[11]]
        else:
            figures[0] += row[11]
            if row[11] > figures[1]:
                figures[1] = row[11]
        if state == "FAILED":
            failures = self.failures
            if len(failures) == failures.maxlen:
                self.tracebacks.pop(failures[0][0], None)
            failures.append(row)
            if tb:
                self.tracebacks[task_id] = tb
        if self.timeline:
            if len(self.spans) < self.max_timeline:
                self.spans.append(row)
            else:
                self.spans_dropped += 1

    def _watch(self, key: tuple[str, str | None]) -> Callable[[], None] | None:
        """Mark what a worker runs FAILED when its process ends."""
        uid, address = key
        try:
            resolver = self.system.remote_resolver
            control: ActorRef = (resolver(uid, address, CONTROL_ID, CONTROL_ID)
                                 if resolver is not None
                                 else restore_ref(uid, address, CONTROL_ID, CONTROL_ID))

            def gone(_notice: Terminated) -> None:
                self._worker_gone(key)

            return self.system.on_terminated(control, gone)
        except Exception:  # not reachable: its running calls stay until they end
            return None

    def _worker_gone(self, key: tuple[str, str | None]) -> None:
        origin = self.origins.pop(key, None)
        if origin is None:
            return
        now = time.time()
        for task_id in sorted(origin.running):
            started = self.running.pop(task_id, None)
            if started is not None:
                self._ended(started, "FAILED", started[9], now, "WorkerCrashedError",
                            f"its worker process (pid {origin.pid}) on node {origin.node_id} "
                            "ended before it answered", None)

    # -- queries --------------------------------------------------------------------------------

    def _running_rows(self) -> list[tuple[Any, ...]]:
        return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], None, None, None,
                 None) for r in self.running.values()]

    def list_tasks(self, query: ListTasks) -> dict[str, Any]:
        match = _matcher(query.filters)
        limit = max(0, query.limit)
        only_failed = any(k == "state" and op == "=" and v == "FAILED"
                          for k, op, v in query.filters)
        out: list[tuple[Any, ...]] = []
        total = 0
        if not only_failed:
            for row in self._running_rows():
                if match(row):
                    total += 1
                    if len(out) < limit:
                        out.append(row)
        # failures live longer than the ring: a FAILED filter reads them
        source = self.failures if only_failed else self.finished
        for row in reversed(source):
            if match(row):
                total += 1
                if len(out) < limit:
                    out.append(row)
        rows = [dict(zip(COLUMNS, row, strict=True)) for row in out]
        if query.detail:
            for entry in rows:
                if entry["state"] == "FAILED":
                    entry["traceback"] = self.tracebacks.get(entry["task_id"])
        return {"rows": rows, "total": total, "truncated": total > len(rows)}

    def summary(self) -> dict[str, Any]:
        by_name: dict[str, dict[str, Any]] = {}
        for (name, state), n in self.counts.items():
            entry = by_name.setdefault(name, {"name": name, "kind": self.kinds.get(name, "?"),
                                              "state_counts": {}})
            entry["state_counts"][state] = n
        for started in self.running.values():
            name = started[1]
            entry = by_name.setdefault(name, {"name": name, "kind": started[2],
                                              "state_counts": {}})
            counts = entry["state_counts"]
            counts["RUNNING"] = counts.get("RUNNING", 0) + 1
        for name, entry in by_name.items():
            figures = self.run_s.get(name)
            ended = sum(n for s, n in entry["state_counts"].items() if s != "RUNNING")
            entry["mean_s"] = figures[0] / ended if figures and ended else None
            entry["max_s"] = figures[1] if figures else None
        totals: dict[str, int] = {}
        for entry in by_name.values():
            for state, n in entry["state_counts"].items():
                totals[state] = totals.get(state, 0) + n
        return {"by_name": sorted(by_name.values(), key=lambda e: e["name"]),
                "totals": totals, "events_dropped": self.dropped,
                "finished_kept": len(self.finished), "finished_max": self.finished.maxlen}

    def timeline_spans(self) -> dict[str, Any]:
        spans = self.spans if self.timeline else list(self.finished)
        return {"columns": COLUMNS, "spans": list(spans), "running": self._running_rows(),
                "complete": self.timeline and not self.spans_dropped,
                "timeline": self.timeline, "spans_dropped": self.spans_dropped,
                "now": time.time()}


def _flag(options: Mapping[str, Any], key: str, env: str) -> bool:
    value = options.get(key)
    if not value:  # not given (or off): the environment may turn it on
        value = os.environ.get(env, "")
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _number(options: Mapping[str, Any], key: str, env: str, default: int) -> int:
    value = options.get(key)
    if value is None:
        value = os.environ.get(env) or default
    return int(value)


async def start(ctx: HeadContext) -> None:
    """Start the ``events`` actor in the head's system (see :mod:`actorflow.cluster.services`)."""
    options = ctx.options
    timeline = _flag(options, "timeline", "ACTORFLOW_TIMELINE")
    finished = _number(options, "task_events_max", "ACTORFLOW_TASK_EVENTS_MAX",
                       DEFAULT_FINISHED)
    await ctx.system.spawn(
        lambda: EventStore(max_finished=finished, timeline=timeline),
        name=EVENTS_ID, well_known=True,
    )
    if timeline:
        ctx.info["timeline"] = "on (every task's span is kept for `actorflow timeline`)"
