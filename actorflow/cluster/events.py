"""Task events: what each worker records about the tasks and actor calls it runs.

A worker notes each task, actor call and actor creation when it is taken
(:meth:`EventRecorder.started`: one dict entry) and when it is answered
(:meth:`EventRecorder.ended`: counters by (name, kind, job, actor) and one tuple in a bounded
deque): no lock, no message, no timer per call. :data:`FLUSH_S` seconds after the first call
that started or ended since the last flush, a loop callback tells the head's ``events`` actor
(:mod:`actorflow.state.store`) one ``bytes`` message (the C pickler: tuples of strings and
floats) holding

- the counts, failures and total and longest run time by (name, kind, job, actor);
- every call that failed, with its error type, message and traceback (cut);
- the last :data:`RECENT_PER_FLUSH` calls that finished, with their ids and times;
- what is running now (id, name, start);
- when the head keeps a timeline: every call's span, as columns (ids, key indexes, start and
  end times as ``array('d')``), which cost little to pickle.

So the head's counts are exact, its list of finished calls is a recent sample under heavy load
(every call when there is less than :data:`RECENT_PER_FLUSH` per worker per flush), and its
failures are all there. The worker learns from the head's answer to its first message whether
the timeline is on (until then it sends spans).

``ACTORFLOW_TASK_EVENTS=0`` in a worker's environment (a node passes its own on) turns its
recording off: the head then knows nothing of that worker's calls.

Events are an observation, not part of the work: a message that cannot be sent (the head is
unreachable) is dropped and counted (``dropped`` rides in the next one), never retried.

Times are ``time.perf_counter()`` values, the clock the worker times its calls with; each
message carries this process's offset from it to the wall clock (taken once), so the store
turns them into wall times that are monotonic within a worker and comparable across the
workers of a machine.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import time
from array import array
from bisect import bisect_left
from collections import deque
from typing import Any

from actorflow._errors import RemoteException
from actorflow.cluster.protocol import Failed
from actorflow.runtime import ActorRef

__all__ = [
    "ACTOR_CALL",
    "ACTOR_CREATION",
    "DURATION_BOUNDS",
    "EVENTS_ID",
    "FLUSH_S",
    "RECENT_PER_FLUSH",
    "TASK",
    "EventRecorder",
    "Key",
    "error_of",
    "recorder",
]

#: The well-known id of the head's event store.
EVENTS_ID = "events"
#: Seconds between a call's end and the flush that reports it.
FLUSH_S = 0.25
#: The most finished calls a flush reports one by one (the counts cover them all).
RECENT_PER_FLUSH = 256
#: The most failures a flush reports one by one (the counts cover them all).
FAILURES_PER_FLUSH = 1000
#: The most spans a worker keeps for the next flush (past it, they are counted as dropped).
SPANS_PER_FLUSH = 200_000
#: Upper bounds (s) of the run-time buckets counted per key (the last bucket: longer), for the
#: ``actorflow_task_duration_seconds`` histogram (actorflow/metrics/tasks.py).
DURATION_BOUNDS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
                   300.0)
#: What a failure's message and traceback are cut to.
MESSAGE_CHARS = 1000
TRACEBACK_CHARS = 4000

# the kinds of work
TASK = "task"
ACTOR_CALL = "actor_call"
ACTOR_CREATION = "actor_creation"

#: (name, kind, job_id, actor_id): what calls are counted by.
Key = tuple[str, str, str | None, str | None]


def error_of(returns: Any) -> tuple[str, str, str | None]:
    """``(error type, message, traceback)`` of a call that failed with ``returns``."""
    error = returns[0].error
    cause = getattr(error, "cause", None)
    shown = cause if isinstance(cause, BaseException) else error
    if isinstance(shown, RemoteException):  # a cause that could not cross as itself
        kind, text = shown.type_name, shown.text
    else:
        kind, text = type(shown).__name__, str(shown)
    tb = getattr(error, "traceback_str", None)
    return kind, text[:MESSAGE_CHARS], tb[-TRACEBACK_CHARS:] if isinstance(tb, str) else None


_NO_BUCKETS = (0,) * (len(DURATION_BOUNDS) + 1)
_FIRST_BOUND = DURATION_BOUNDS[0]


class EventRecorder:
    """One per worker process (see the module docstring)."""

    __slots__ = ("_figures", "_handle", "_key", "_loop", "_meta", "_target", "counts",
                 "dropped", "failures", "head", "recent", "running", "seq", "span_ends",
                 "span_ids", "span_keys", "span_starts", "spans", "timeline_known")

    def __init__(self, head: ActorRef | None, node_id: str, worker_id: str,
                 origin: tuple[str, str | None]) -> None:
        """``head``: the Head actor (its store is beside it); None: reports are only made
        (:meth:`report`), never sent."""
        self.head = head
        self.running: dict[str, tuple[Key, float]] = {}
        # [finished, failed, run s, longest run s, calls per DURATION_BOUNDS bucket...]
        self.counts: dict[Key, list[float]] = {}
        self.recent: deque[tuple[str, Key, float, float]] = deque(maxlen=RECENT_PER_FLUSH)
        self.failures: list[tuple[Any, ...]] = []
        self.spans = True  # until the head says whether it keeps a timeline
        self.timeline_known = False
        self.span_ids: list[str] = []
        self.span_keys: list[Key] = []
        self.span_starts = array("d")
        self.span_ends = array("d")
        self.dropped = 0
        self.seq = 0  # for actor calls that carry no id
        self._target: ActorRef | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # the last key counted and its figures: calls in a row mostly share one (a caller that
        # passes the same key object, as the Worker and UserActor do, skips the dict)
        self._key: Key | None = None
        self._figures: list[float] = []
        offset = time.time() - time.perf_counter()
        self._meta = (origin, node_id, worker_id, os.getpid(), offset)

    def started(self, task_id: str, key: Key, t: float) -> None:
        self.running[task_id] = (key, t)
        if self._handle is None:  # (the head hears of it at the next flush, if still running)
            self._arm()

    def ended(self, task_id: str, t: float, run_s: float, returns: Any) -> None:
        """``returns``: the call's payloads (or None for a quick reply), read for a failure."""
        entry = self.running.pop(task_id, None)
        if entry is None:
            return
        key, t0 = entry
        if key is self._key:
            figures = self._figures
        else:
            got = self.counts.get(key)
            if got is None:
                got = self.counts[key] = [0, 0, 0.0, 0.0, *_NO_BUCKETS]
            self._key, self._figures = key, got
            figures = got
        start = t - run_s if run_s else t0
        if returns and type(returns[0]) is Failed:
            figures[1] += 1
            if len(self.failures) < FAILURES_PER_FLUSH:
                self.failures.append((task_id, key, start, t, *error_of(returns)))
        else:
            figures[0] += 1
            self.recent.append((task_id, key, start, t))
        figures[2] += run_s
        # (most calls are short: the first bucket without a bisect)
        figures[4 if run_s <= _FIRST_BOUND else 4 + bisect_left(DURATION_BOUNDS, run_s)] += 1
        if run_s > figures[3]:
            figures[3] = run_s
        if self.spans:
            self._span(task_id, key, start, t)
        if self._handle is None:
            self._arm()

    def _span(self, task_id: str, key: Key, start: float, end: float) -> None:
        if len(self.span_ids) < SPANS_PER_FLUSH:
            self.span_ids.append(task_id)
            self.span_keys.append(key)
            self.span_starts.append(start)
            self.span_ends.append(end)

    def next_id(self, actor_id: str | None) -> str:
        """An id for an actor call that came without one."""
        self.seq += 1
        return f"{actor_id}#{self.seq}"

    def _arm(self) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._handle = loop.call_later(FLUSH_S, self.flush)

    def report(self) -> bytes:
        """What was recorded since the last report, as the message the head's store takes;
        starts anew (the running calls are in every report)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        keys: dict[Key, int] = {}

        def index(key: Key) -> int:
            i = keys.get(key)
            if i is None:
                i = keys[key] = len(keys)
            return i

        counts = [(index(k), *v) for k, v in self.counts.items()]
        running = [(tid, index(k), t) for tid, (k, t) in self.running.items()]
        recent = [(tid, index(k), s, e) for tid, k, s, e in self.recent]
        failures = [(f[0], index(f[1]), *f[2:]) for f in self.failures]
        spans = None
        if self.span_ids:
            spans = (self.span_ids, array("H", [index(k) for k in self.span_keys]).tobytes(),
                     self.span_starts.tobytes(), self.span_ends.tobytes())
        data = pickle.dumps((self._meta, self.dropped, list(keys), counts, running, recent,
                             failures, spans), 5)
        self.counts = {}
        self._key, self._figures = None, []
        self.recent.clear()
        self.failures = []
        self.span_ids, self.span_keys = [], []
        self.span_starts, self.span_ends = array("d"), array("d")
        return data

    def flush(self) -> None:
        """Send a report to the head's store (now, on the loop's thread)."""
        if not self.counts and not self.running:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            return
        n = sum(int(v[0] + v[1]) for v in self.counts.values())
        data = self.report()
        try:
            target = self._target
            if target is None:
                if self.head is None:
                    return
                target = self._target = _beside(self.head, EVENTS_ID)
            if self.timeline_known:
                target.tell_nowait(data)
            else:  # the answer says whether the head keeps a timeline
                target.ask_nowait(data).add_done_callback(self._told)
            self.dropped = 0
        except Exception:  # the head is gone or its link is full: these are lost, counted
            self.dropped += n

    def _told(self, answer: asyncio.Future[Any]) -> None:
        if answer.cancelled() or answer.exception() is not None:
            return  # asked again at the next flush
        self.timeline_known = True
        self.spans = bool(answer.result())

    def close(self) -> None:
        """Report what is left and stop the timer."""
        self.flush()


class _Off(EventRecorder):
    """A recorder that records nothing (``ACTORFLOW_TASK_EVENTS=0``)."""

    __slots__ = ()

    def started(self, task_id: str, key: Key, t: float) -> None:
        return

    def ended(self, task_id: str, t: float, run_s: float, returns: Any) -> None:
        return


def recorder(head: ActorRef | None, node_id: str, worker_id: str,
             origin: tuple[str, str | None]) -> EventRecorder:
    """This worker process's recorder: one that records nothing when
    ``ACTORFLOW_TASK_EVENTS=0``."""
    off = os.environ.get("ACTORFLOW_TASK_EVENTS", "").strip() in ("0", "false", "no", "off")
    return (_Off if off else EventRecorder)(head, node_id, worker_id, origin)


def _beside(head: ActorRef, slot_id: str) -> ActorRef:
    """The well-known actor ``slot_id`` in the head's process."""
    from actorflow.runtime import restore_ref

    uid, address, _, _ = head.__reduce__()[1]
    return restore_ref(uid, address, slot_id, slot_id)
