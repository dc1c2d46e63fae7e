"""The leases an owner holds for the tasks it submits (see ``cluster/submitter.py``).

Per resource shape, scheduling strategy and runtime environment (a :class:`Shape`), the owner
asks its node for leases on workers (:class:`RequestLease`); a node whose placement chose
another node answers ``Spillback`` and the owner asks that one. A granted lease
(:class:`HeldLease`) is used until it has been idle for :data:`LINGER_S`, or until its worker
is lost: the owner watches each leased worker (as its node watches each lease owner), so a
lease whose worker died is dropped when the link to that worker is lost, not when the next task
pushed to it has waited for the transport to give up redialing a process that is gone
(``peer_timeout_s``). A request that fails costs one retry of the task it was for, and the
shape asks again after a backoff; a demand that can never fit fails the shape's queue at once.

:class:`Leasing` answers one question: which workers may this owner push a shape's tasks to,
and what happens when it cannot get one. What runs on them, and when, is the submitter's.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actorflow._errors import (
    ActorDiedError,
    InfeasibleError,
    PeerUnreachableError,
    TaskCancelledError,
    WorkerCrashedError,
)
from actorflow.cluster.head_link import HEAD_GRACE_S
from actorflow.cluster.memory_guard import MemoryKilled
from actorflow.cluster.protocol import Lease, RequestLease, ReturnLease, Spillback
from actorflow.placement.resources import Resources
from actorflow.runtime import ActorRef, Terminated

if TYPE_CHECKING:
    from actorflow.cluster.submitter import PendingTask, TaskSubmitter

__all__ = ["LINGER_S", "HeldLease", "Leasing", "Shape", "shape_key"]

LINGER_S = 0.1  # how long an idle lease is kept for the next task of its shape
MAX_DEPTH = 64  # most tasks in flight on one lease (for tasks that run in microseconds)
SHORT_TASK_S = 0.002  # tasks shorter than this on average get pipelined
MAX_BACKOFF_S = 1.0  # longest wait before asking for a lease again after failed requests
#: How long a memory guard's notice is kept for a crash that follows it.
MEMORY_KILL_MEMO_S = 60.0


def shape_key(pending: PendingTask) -> tuple[Resources, Any, str]:
    """The :class:`Shape` a task waits in: tasks of one shape, strategy and runtime
    environment."""
    return (pending.shape, pending.strategy, pending.env.key if pending.env is not None else "")


class HeldLease:
    """A lease granted to this owner: its worker, the tasks in flight on it."""

    __slots__ = ("idle_handle", "inflight", "lease", "lost", "state", "unwatch")

    def __init__(self, lease: Lease, state: Shape) -> None:
        self.lease = lease
        self.state = state
        self.inflight = 0
        self.idle_handle: asyncio.TimerHandle | None = None
        self.lost = False
        self.unwatch: Callable[[], None] | None = None  # ends the watch on its worker


class Shape:
    """The tasks of one resource shape, scheduling strategy and runtime environment, and
    their leases."""

    __slots__ = ("avg_run_s", "backoff", "env", "failures", "leases", "max_requests", "queue",
                 "requesting", "shape", "strategy", "unreached_since")

    def __init__(self, shape: Resources, strategy: Any, env: Any = None) -> None:
        self.shape = shape
        self.strategy = strategy
        self.env = env
        self.queue: deque[PendingTask] = deque()
        self.leases: list[HeldLease] = []
        self.requesting = 0
        # SPREAD wants many workers at once (one lease request per task, up to a bound)
        self.max_requests = 16 if strategy == "SPREAD" else 1
        self.avg_run_s = 1.0  # unknown until measured: assume long, pipeline nothing
        self.failures = 0  # lease requests failed in a row (a dead node, a dead worker)
        self.backoff: asyncio.TimerHandle | None = None  # no requests until it fires
        self.unreached_since: float | None = None  # lease requests have not left since

    def depth(self) -> int:
        """How many of its tasks may be in flight on one lease: many while they are short."""
        if self.strategy == "SPREAD":
            return 1
        return MAX_DEPTH if self.avg_run_s < SHORT_TASK_S else 1


class Leasing:
    """The leases of one owner's :class:`TaskSubmitter` (see the module docstring)."""

    def __init__(self, submitter: TaskSubmitter) -> None:
        self.submitter = submitter
        self.core = submitter.core
        #: per leased worker, the functions sent to it already (sent once, then by id)
        self.sent_fns: dict[ActorRef, set[str]] = {}
        #: (node_id, lease_id) -> what a node's memory guard said before it killed that worker
        self.memory_kills: dict[tuple[str, int], MemoryKilled] = {}

    def request(self, state: Shape, node: ActorRef, *, no_spill: bool,
                bundle: tuple[str, int] | None = None,
                bound: PendingTask | None = None) -> None:
        """Ask ``node`` for a lease; ``bound`` is the one task it is for (SPREAD)."""
        state.requesting += 1
        try:
            fut = node.ask_nowait(RequestLease(
                state.shape, owner=self.core.worker_id or "driver", strategy=state.strategy,
                no_spill=no_spill, owner_ref=self.core.owner_ref, bundle=bundle, env=state.env,
            ))
        except Exception as exc:
            state.requesting -= 1
            self._failed(state, exc, bound, node)
            return
        fut.add_done_callback(lambda f: self._granted(state, f, node, bound))

    def _granted(self, state: Shape, fut: asyncio.Future[Any], node: ActorRef,
                 bound: PendingTask | None = None) -> None:
        state.requesting -= 1
        submitter = self.submitter
        if fut.cancelled():
            if bound is not None:
                submitter.cancelled(bound)
            return
        exc = fut.exception()
        if exc is not None:
            self._failed(state, exc, bound, node)
            return
        answer = fut.result()
        if type(answer) is Spillback:  # the placement chose another node: ask it
            if (state.queue or bound is not None) and not submitter.closed:
                self.request(state, answer.node, no_spill=True, bundle=answer.bundle,
                             bound=bound)
            return
        state.failures = 0
        state.unreached_since = None
        lease = HeldLease(answer, state)
        if submitter.closed:
            self.give_back(lease)
            if bound is not None:
                submitter.fail(bound, TaskCancelledError("shut down"))
            return
        state.leases.append(lease)
        self._watch(lease)
        if bound is not None:
            if bound.cancelled:
                submitter.cancelled(bound)
            else:
                submitter.push(bound, lease)
        submitter.pump(state)

    def _failed(self, state: Shape, exc: BaseException, bound: PendingTask | None,
                node: ActorRef) -> None:
        """A lease request failed. A demand that can never fit fails every task of the shape
        at once; anything else (the node or its worker died, the link to it was lost) costs
        one retry of the task it was for (``bound``, else the first queued), and the shape asks
        again after a backoff. Only a task whose retries are used up fails. A request that
        never left (its node could not be dialed: a head's node that restarts), or one to this
        process's own node whose link was lost before it answered (the head's node of a driver,
        killed with its head), costs nothing while such failures have lasted less than the grace
        period of a head restart: no task ran, and this process can lease only through its own
        node (which, alive, releases what it granted to a link that was lost)."""
        submitter = self.submitter
        if isinstance(exc, InfeasibleError) or submitter.closed:
            if bound is not None:
                state.queue.appendleft(bound)
            submitter.fail_queue(state, exc)
            return
        if self._unreached(state, exc, node == self.core.node):  # (its node is being
            # redialed: a head that restarts): nothing ran, so no retry is charged, for a while
            victim = None
            if bound is not None and bound.cancelled:
                submitter.cancelled(bound)
            elif bound is not None:
                state.queue.appendleft(bound)
        else:
            victim = bound if bound is not None else (
                state.queue.popleft() if state.queue else None)
        if victim is not None:
            if victim.cancelled:
                submitter.cancelled(victim)
            elif victim.retries_left > 0:
                victim.retries_left -= 1
                state.queue.appendleft(victim)
            else:
                error = WorkerCrashedError(
                    f"no worker could be leased for task {victim.spec.name!r} "
                    f"({type(exc).__name__}: {exc}) and its retries are used up; raise "
                    "max_retries to retry longer")
                error.__cause__ = exc
                submitter.fail(victim, error)
        state.failures += 1
        if state.backoff is None:
            delay = min(MAX_BACKOFF_S, 0.02 * 2 ** min(state.failures - 1, 10))
            state.backoff = self.core.loop.call_later(delay, self._backoff_over, state)

    @staticmethod
    def _unreached(state: Shape, exc: BaseException, own_node: bool) -> bool:
        """``exc`` says the request never reached a node (it never left; or its process had no
        node yet: ``#node``, the transport's name for a slot that does not run there, as in a
        head that is starting again), or that the link to this process's own node (``own_node``)
        was lost, and requests of the shape have not been served for less than the grace period
        given to a head that restarts (head_link.HEAD_GRACE_S)."""
        never_left = isinstance(exc, PeerUnreachableError) and (exc.delivered is False
                                                                 or own_node)
        if not never_left and not (isinstance(exc, ActorDiedError) and exc.actor == "#node"):
            return False
        now = time.monotonic()
        if state.unreached_since is None:
            state.unreached_since = now
        return now - state.unreached_since < HEAD_GRACE_S

    def _backoff_over(self, state: Shape) -> None:
        state.backoff = None
        if not self.submitter.closed:
            self.submitter.pump(state)

    def _watch(self, lease: HeldLease) -> None:
        """Drop ``lease`` when its worker ends (its process died: the link to it is lost), so
        no task is pushed to a worker that is gone: such a push would wait in the transport's
        backlog until it gives up redialing (``peer_timeout_s``)."""
        try:
            lease.unwatch = self.core.system.on_terminated(
                lease.lease.worker, functools.partial(self._worker_gone, lease))
        except Exception:  # (its link is closing: a push to it fails, as it did before)
            lease.unwatch = None

    def _worker_gone(self, lease: HeldLease, notice: Terminated) -> None:
        lease.unwatch = None  # (a watch fires once)
        if lease.lost:
            return
        self.lost(lease)  # (its tasks in flight fail with the link, and go again)
        if not self.submitter.closed:
            self.submitter.pump(lease.state)

    def idle(self, lease: HeldLease) -> None:
        """``lease`` has nothing in flight: returned unless a task of its shape comes within
        :data:`LINGER_S`."""
        if lease.idle_handle is None:
            lease.idle_handle = self.core.loop.call_later(LINGER_S, self._linger_over, lease)

    def busy(self, lease: HeldLease) -> None:
        """A task goes to ``lease``: it is not returned for being idle."""
        if lease.idle_handle is not None:
            lease.idle_handle.cancel()
            lease.idle_handle = None

    def _linger_over(self, lease: HeldLease) -> None:
        lease.idle_handle = None
        if lease.inflight == 0 and not lease.state.queue and lease in lease.state.leases:
            lease.state.leases.remove(lease)
            self.give_back(lease)

    def give_back(self, lease: HeldLease, worker_ok: bool = True) -> None:
        """Return ``lease`` to its node (``worker_ok``: its worker may serve others)."""
        self.busy(lease)
        unwatch, lease.unwatch = lease.unwatch, None
        if unwatch is not None:
            unwatch()
        try:
            node = lease.lease.node if lease.lease.node is not None else self.core.node
            node.tell_nowait(ReturnLease(lease.lease.lease_id, worker_ok))
        except Exception:
            pass  # the node is gone: the lease went with it

    def lost(self, lease: HeldLease) -> None:
        """``lease``'s worker died, or the link to it did."""
        if lease.lost:
            return
        lease.lost = True
        state = lease.state
        if lease in state.leases:
            state.leases.remove(lease)
        self.sent_fns.pop(lease.lease.worker, None)
        self.give_back(lease, worker_ok=False)

    def memory_killed(self, notice: MemoryKilled) -> None:
        """A node's memory guard is about to kill the worker of one of our leases: its tasks
        fail with OutOfMemoryError, not WorkerCrashedError, when their retries are used up."""
        key = (notice.node_id, notice.lease_id)
        self.memory_kills[key] = notice
        # forgotten once the crash was handled (a lease that had no task in flight: later)
        self.core.loop.call_later(MEMORY_KILL_MEMO_S, self.memory_kills.pop, key, None)

    def close(self, state: Shape) -> None:
        """The owner ends: the shape's leases go back."""
        if state.backoff is not None:
            state.backoff.cancel()
            state.backoff = None
        for lease in state.leases:
            # a worker still running a task of ours is not handed out again: its node
            # kills it (the job ends: its running tasks end too)
            self.give_back(lease, worker_ok=lease.inflight == 0)
        state.leases.clear()
