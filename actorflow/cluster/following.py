"""Following: a task whose arguments are still being made, pushed right behind the tasks that
make them.

When every ObjectRef argument of a task is made by tasks that went (or go) to one leased worker,
the owner pushes the task to that worker at once, its arguments given as ``Local`` (the
worker's own results): the worker runs it after its producers with no round trip to this owner
between the two, so a chain of short tasks runs at the worker's pace. A task that may be re-run
after its worker answered (a retried exception), or made elsewhere, waits for its arguments at
the owner instead (``TaskSubmitter``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from actorflow.cluster.leasing import HeldLease, shape_key
from actorflow.cluster.protocol import Local, Payload

if TYPE_CHECKING:
    from actorflow.cluster.submitter import PendingTask, TaskSubmitter

__all__ = ["FOLLOW_LIMIT", "Following"]

FOLLOW_LIMIT = 1024  # most tasks in flight on one lease, counting those that follow others


class Following:
    """The tasks of one :class:`TaskSubmitter` that wait to follow their producers."""

    def __init__(self, submitter: TaskSubmitter) -> None:
        self.submitter = submitter
        self.core = submitter.core
        #: producer task id -> tasks waiting for it to be pushed, to follow it
        self.waiting: dict[str, list[PendingTask]] = {}
        self._work: deque[PendingTask] | None = None  # pushed()'s work list
        self._owner: Any = None  # how a worker reaches this owner (Local): set on first use

    def follow(self, pending: PendingTask) -> None:
        """Push a task still waiting for its arguments right behind the tasks that make them,
        when they all went (or go) to one worker: that worker runs it after them with their
        results (Local arguments), with no round trip to this owner between the two. A task
        whose producer is not pushed yet waits for that push. A chain of short tasks then
        runs at the worker's pace instead of one owner round trip per link."""
        if pending.strategy == "SPREAD" or self.submitter.closed:
            return
        state = self.submitter.shapes.get(shape_key(pending))
        if state is None:
            return
        lease: HeldLease | None = None
        resolved: list[Payload | Local] = []
        entries = self.core.objects.entries
        for ref in pending.deps:
            entry = entries.get(ref.id) if ref.core is self.core else None
            if entry is not None and entry.payload is not None:
                resolved.append(entry.payload)
                continue
            producer = self.submitter.by_return.get(ref.id)
            if (producer is None or producer.strategy == "SPREAD"
                    or producer.shape != state.shape
                    or (producer.retry_exceptions is not False and producer.retries_left > 0)):
                # made elsewhere, or it may be re-run here after its worker answered (a
                # retried exception): wait for its final value here
                return
            if producer.lease is None:  # not pushed yet: try again when it is
                self.waiting.setdefault(producer.spec.task_id, []).append(pending)
                return
            if lease is None:
                lease = producer.lease
            if producer.lease is not lease or lease.lost or lease.state is not state:
                return
            if self._owner is None:
                assert self.core.owner_ref is not None
                self._owner = self.core.owner_ref.__reduce__()[1]
            resolved.append(Local(ref.id, self._owner))
        if lease is None or lease.inflight >= FOLLOW_LIMIT:
            return
        pending.waiting = 0
        pending.follows = True
        pending.spec.resolved = tuple(resolved)
        self.core.sending(resolved)
        self.submitter.push(pending, lease)

    def pushed(self, pending: PendingTask) -> None:
        """``pending`` went to a worker: the tasks waiting to follow it may go too (in a loop
        here, not by recursion: a chain can be long)."""
        followers = self.waiting.pop(pending.spec.task_id, None)
        if not followers:
            return
        if self._work is not None:
            self._work.extend(followers)
            return
        self._work = work = deque(followers)
        try:
            while work:
                follower = work.popleft()
                if follower.waiting and not follower.cancelled:
                    self.follow(follower)
        finally:
            self._work = None

    def forget(self, producer: PendingTask) -> None:
        """``producer`` is done: the tasks that waited to follow it wait for its value."""
        self.waiting.pop(producer.spec.task_id, None)
