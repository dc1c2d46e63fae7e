"""The head's task table: the ``events`` actor (a head service, see
:mod:`actorflow.cluster.services`).

Workers tell it their task events in batches (:mod:`actorflow.cluster.events`). It keeps, in
bounded memory whatever the cluster has run:

- every task, actor call and actor creation that is running (taken by a worker, not answered;
  as of each worker's last report);
- the last ``task_events_max`` (default 10,000; ``ACTORFLOW_TASK_EVENTS_MAX``) that ended, in
  a ring, in the order the reports came (each worker's in the order they ended): every one
  while each worker ends fewer than 256 per report (0.25 s), else the last 256 of each
  report, a recent sample;
- counts by (name, state) and run-time totals by name, exact, never dropped (past 10,000
  names, later names are counted together as ``(other names)``);
- the last 1,000 failures with their errors and tracebacks, every one, past the ring;
- with the timeline on (``ACTORFLOW_TIMELINE=1``, ``actorflow start --timeline``,
  ``timeline=True`` in the head's start options), every ended call's span up to 500,000
  (about 100 bytes each), for ``af.timeline()``; off, the timeline shows what the ring holds.

When a worker's process ends, what it was running is marked FAILED (``WorkerCrashedError``):
its answers will never come.

Every query is answered from these structures (a filter is a scan of at most the ring), so
the cost of a query does not grow with the number of tasks the cluster has finished.
"""

from __future__ import annotations

import os
import pickle
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from actorflow.cluster.events import EVENTS_ID
from actorflow.cluster.protocol import CONTROL_ID
from actorflow.runtime import ActorRef, ServiceActor, Terminated, restore_ref

if TYPE_CHECKING:
    from actorflow.cluster.services import HeadContext

__all__ = [
    "COLUMNS",
    "DEFAULT_FAILURES",
    "DEFAULT_FINISHED",
    "DEFAULT_TIMELINE",
    "MAX_NAMES",
    "OTHER_NAMES",
    "EventStore",
    "ListTasks",
    "SummarizeTasks",
    "TimelineSpans",
    "start",
]

DEFAULT_FINISHED = 10_000
DEFAULT_FAILURES = 1_000
DEFAULT_TIMELINE = 500_000
#: The most names counted apart; calls of later names are counted under OTHER_NAMES.
MAX_NAMES = 10_000
OTHER_NAMES = "(other names)"

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


def _select(rows: Iterable[tuple[Any, ...]], filters: tuple[Filter, ...]
            ) -> list[tuple[Any, ...]]:
    """The rows that every filter holds for, in order (a comprehension over a key getter:
    about 10,000 rows a millisecond)."""
    equal: list[tuple[int, Any]] = []
    unequal: list[tuple[int, Any]] = []
    for key, op, value in filters:
        if key not in _INDEX:
            raise ValueError(f"no column {key!r} to filter on; columns: {', '.join(COLUMNS)}")
        if op not in ("=", "!="):
            raise ValueError(f"filter op {op!r}: use '=' or '!='")
        (equal if op == "=" else unequal).append((_INDEX[key], value))
    out = list(rows)
    if equal:
        get = itemgetter(*(i for i, _ in equal))
        wanted = equal[0][1] if len(equal) == 1 else tuple(v for _, v in equal)
        out = [row for row in out if get(row) == wanted]
    for i, value in unequal:
        out = [row for row in out if row[i] != value]
    return out


class EventStore(ServiceActor):
    """See the module docstring."""

    mailbox_size = 1 << 16

    def __init__(self, max_finished: int = DEFAULT_FINISHED,
                 max_failures: int = DEFAULT_FAILURES, timeline: bool = False,
                 max_timeline: int = DEFAULT_TIMELINE) -> None:
        self.running: dict[str, list[Any]] = {}  # rows of what runs, by id
        self.finished: deque[tuple[Any, ...]] = deque(maxlen=max(1, max_finished))
        self.failures: deque[tuple[Any, ...]] = deque(maxlen=max(1, max_failures))
        self.tracebacks: dict[str, str] = {}  # of the failures kept
        self.counts: dict[tuple[str, str], int] = {}
        self.kinds: dict[str, str] = {}  # name -> kind
        self.run_s: dict[str, list[float]] = {}  # name -> [total, max, per-bucket calls...]
        self.timeline = timeline
        self.max_timeline = max_timeline
        # the timeline: each report's spans as it came (rows are made when asked for)
        self.span_chunks: list[tuple[Any, ...]] = []
        self.span_count = 0
        self.spans_dropped = 0
        self.lost: deque[tuple[Any, ...]] = deque(maxlen=max(1, max_failures))  # (ended here)
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
            return self.timeline  # (a worker's first report asks: does it send spans?)
        if type(message) is ListTasks:
            return self.list_tasks(message)
        if type(message) is SummarizeTasks:
            return self.summary()
        if type(message) is TimelineSpans:
            return self.timeline_spans()
        raise TypeError(f"the event store got an unexpected {type(message).__name__}")

    # -- recording ------------------------------------------------------------------------------

    def ingest(self, data: bytes) -> None:
        """One worker's report (see :mod:`actorflow.cluster.events`)."""
        meta, dropped, keys, counts, running, recent, failures, spans = pickle.loads(data)
        origin_key, node_id, worker_id, pid, offset = meta
        self.dropped += dropped
        origin = self.origins.get(origin_key)
        if origin is None:
            origin = self.origins[origin_key] = _Origin(node_id, worker_id, pid, offset)
            origin.unwatch = self._watch(origin_key)
        # what runs there now replaces what ran there (what ended is counted below)
        table = self.running
        for task_id in origin.running:
            table.pop(task_id, None)
        origin.running = set()
        for task_id, k, t in running:
            name, kind, job_id, actor_id = keys[k]
            table[task_id] = [task_id, name, kind, "RUNNING", job_id, actor_id, node_id,
                              worker_id, pid, t + offset]
            origin.running.add(task_id)
        totals = self.counts
        for k, finished, failed, run_s, longest, *buckets in counts:
            name, kind = self._counted(keys[k][0], keys[k][1])
            if finished:
                totals[(name, "FINISHED")] = totals.get((name, "FINISHED"), 0) + int(finished)
            if failed:
                totals[(name, "FAILED")] = totals.get((name, "FAILED"), 0) + int(failed)
            figures = self.run_s.get(name)
            if figures is None:
                self.run_s[name] = [run_s, longest, *buckets]
            else:
                figures[0] += run_s
                if longest > figures[1]:
                    figures[1] = longest
                for i, n in enumerate(buckets, 2):  # calls per DURATION_BOUNDS bucket
                    figures[i] += n
        rows = []
        for task_id, k, start, end in recent:
            name, kind, job_id, actor_id = keys[k]
            rows.append((task_id, name, kind, "FINISHED", job_id, actor_id, node_id, worker_id,
                         pid, start + offset, end + offset, max(0.0, end - start), None, None))
        errors: dict[str, tuple[str, str]] = {}
        for task_id, k, start, end, error_type, message, tb in failures:
            name, kind, job_id, actor_id = keys[k]
            row = (task_id, name, kind, "FAILED", job_id, actor_id, node_id, worker_id, pid,
                   start + offset, end + offset, max(0.0, end - start), error_type, message)
            rows.append(row)
            self._failed(row, tb)
            errors[task_id] = (error_type, message)
        if failures:
            rows.sort(key=lambda r: r[10])
        self.finished.extend(rows)
        if spans is not None and self.timeline:
            n = len(spans[0])
            if self.span_count + n <= self.max_timeline:
                self.span_chunks.append((meta, keys, spans, errors))
                self.span_count += n
            else:
                self.spans_dropped += n

    def _counted(self, name: str, kind: str) -> tuple[str, str]:
        """The name a call is counted under: its own, or past MAX_NAMES names (names made per
        call, say), OTHER_NAMES, so the counts stay bounded."""
        if name not in self.kinds:
            if len(self.kinds) >= MAX_NAMES:
                name, kind = OTHER_NAMES, "?"
            self.kinds.setdefault(name, kind)
        return name, self.kinds[name]

    def _failed(self, row: tuple[Any, ...], tb: str | None) -> None:
        failures = self.failures
        if len(failures) == failures.maxlen:
            self.tracebacks.pop(failures[0][0], None)
        failures.append(row)
        if tb:
            self.tracebacks[row[0]] = tb

    def _ended(self, started: list[Any], state: str, end: float, error_type: str,
               message: str) -> None:
        """(A call the head ends itself: its worker is gone.)"""
        name, _ = self._counted(started[1], started[2])
        row = (*started[:3], state, *started[4:10], end, max(0.0, end - started[9]),
               error_type, message)
        self.finished.append(row)
        self.counts[(name, state)] = self.counts.get((name, state), 0) + 1
        self._failed(row, None)
        self.lost.append(row)

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
                self._ended(started, "FAILED", now, "WorkerCrashedError",
                            f"its worker process (pid {origin.pid}) on node {origin.node_id} "
                            "ended before it answered")

    # -- queries --------------------------------------------------------------------------------

    def _running_rows(self) -> list[tuple[Any, ...]]:
        return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], None, None, None,
                 None) for r in self.running.values()]

    def list_tasks(self, query: ListTasks) -> dict[str, Any]:
        limit = max(0, query.limit)
        only_failed = any(k == "state" and op == "=" and v == "FAILED"
                          for k, op, v in query.filters)
        # failures live longer than the ring: a FAILED filter reads them
        source = self.failures if only_failed else self.finished
        hits = _select(reversed(source), query.filters)
        if not only_failed:
            hits = _select(self._running_rows(), query.filters) + hits
        total = len(hits)
        out = hits[:limit]
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
            entry["duration_buckets"] = figures[2:] if figures else []  # DURATION_BOUNDS'
        totals: dict[str, int] = {}
        for entry in by_name.values():
            for state, n in entry["state_counts"].items():
                totals[state] = totals.get(state, 0) + n
        return {"by_name": sorted(by_name.values(), key=lambda e: e["name"]),
                "totals": totals, "events_dropped": self.dropped,
                "finished_kept": len(self.finished), "finished_max": self.finished.maxlen}

    def _span_rows(self) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for meta, keys, (ids, key_bytes, start_bytes, end_bytes), errors in self.span_chunks:
            _, node_id, worker_id, pid, offset = meta
            indexes, starts, ends = array("H"), array("d"), array("d")
            indexes.frombytes(key_bytes)
            starts.frombytes(start_bytes)
            ends.frombytes(end_bytes)
            for task_id, k, start, end in zip(ids, indexes, starts, ends, strict=True):
                name, kind, job_id, actor_id = keys[k]
                error = errors.get(task_id)
                out.append((task_id, name, kind, "FINISHED" if error is None else "FAILED",
                            job_id, actor_id, node_id, worker_id, pid, start + offset,
                            end + offset, max(0.0, end - start),
                            *(error if error is not None else (None, None))))
        out.extend(self.lost)
        return out

    def timeline_spans(self) -> dict[str, Any]:
        spans = self._span_rows() if self.timeline else list(self.finished)
        return {"columns": COLUMNS, "spans": spans, "running": self._running_rows(),
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
