"""Task submission: leases per resource shape, direct pushes, retries.

The owner asks its node for a *lease* on a worker for a resource shape, then pushes that shape's
tasks straight to the leased worker; the worker answers straight to the owner. The node sees
leases, not tasks. Per lease, tasks are pipelined (several in flight) only while they are short:
the depth adapts to the measured run time, so long tasks spread over workers instead of queueing
behind each other. An idle lease is returned after a short linger, so a burst of sequential
tasks reuses the same worker.

Nothing here awaits: submission is synchronous (``.remote()`` returns at once) and progress is
driven by future callbacks; the only timers are loop handles owned and cancelled here.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actorflow._errors import (
    ActorDiedError,
    ActorflowError,
    InfeasibleError,
    OutOfMemoryError,
    PeerUnreachableError,
    TaskCancelledError,
    TaskError,
    WorkerCrashedError,
)
from actorflow.cluster.calls import note_child
from actorflow.cluster.head_link import HEAD_GRACE_S
from actorflow.cluster.memory_guard import MemoryKilled
from actorflow.cluster.protocol import (
    CancelTask,
    Failed,
    InShm,
    Lease,
    Local,
    MissingFunction,
    Payload,
    RequestLease,
    ReturnLease,
    Spillback,
    TaskReply,
    TaskSpec,
    quick_task,
    reply_returns,
)
from actorflow.placement.resources import Resources
from actorflow.runtime import ActorRef, CallbackReply

if TYPE_CHECKING:
    from actorflow.cluster.core import Core
    from actorflow.objects.borrows import Lends
    from actorflow.objects.ref import ObjectRef

__all__ = ["PendingTask", "TaskSubmitter"]

LINGER_S = 0.1  # how long an idle lease is kept for the next task of its shape
MAX_DEPTH = 64  # most tasks in flight on one lease (for tasks that run in microseconds)
SHORT_TASK_S = 0.002  # tasks shorter than this on average get pipelined
FOLLOW_LIMIT = 1024  # most tasks in flight on one lease, counting those that follow others
MAX_BACKOFF_S = 1.0  # longest wait before asking for a lease again after failed requests


#: How long a memory guard's notice is kept for a crash that follows it.
MEMORY_KILL_MEMO_S = 60.0

@dataclass(slots=True)
class PendingTask:
    spec: TaskSpec
    return_ids: tuple[str, ...]
    shape: Resources
    retries_left: int
    retry_exceptions: bool | tuple[type[BaseException], ...]
    fn_blob: bytes
    strategy: Any = None
    cancelled: bool = False
    lease: _Lease | None = None
    deps: list[ObjectRef] = field(default_factory=list)  # its ObjectRef arguments, held
    #: what keeps its arguments (their segment's ObjectRef, the lends of the refs inside them:
    #: see Core.pack_args) until it is done, or as long as its lineage is kept
    keep: Any = None
    waiting: int = 0  # >0 while it waits for its deps here: the generation of that wait
    follows: bool = False  # pushed behind its producers, with Local arguments
    env: Any = None  # its runtime environment (a ResolvedEnv): leases are per env too
    #: asked before the task runs again after its worker died: False keeps it from running
    #: again (a generator whose values were read: see cluster/streaming.py)
    may_rerun: Callable[[], bool] | None = None


def _key(pending: PendingTask) -> tuple[Resources, Any, str]:
    """The queue a task waits in: tasks of one shape, strategy and runtime environment."""
    return (pending.shape, pending.strategy, pending.env.key if pending.env is not None else "")


class _Lease:
    __slots__ = ("idle_handle", "inflight", "lease", "lost", "state")

    def __init__(self, lease: Lease, state: _Shape) -> None:
        self.lease = lease
        self.state = state
        self.inflight = 0
        self.idle_handle: asyncio.TimerHandle | None = None
        self.lost = False


class _Shape:
    """The tasks of one resource shape, scheduling strategy and runtime environment, and
    their leases."""

    __slots__ = ("avg_run_s", "backoff", "env", "failures", "leases", "max_requests", "queue",
                 "requesting", "shape", "strategy", "unreached_since")

    def __init__(self, shape: Resources, strategy: Any, env: Any = None) -> None:
        self.shape = shape
        self.strategy = strategy
        self.env = env
        self.queue: deque[PendingTask] = deque()
        self.leases: list[_Lease] = []
        self.requesting = 0
        # SPREAD wants many workers at once (one lease request per task, up to a bound)
        self.max_requests = 16 if strategy == "SPREAD" else 1
        self.avg_run_s = 1.0  # unknown until measured: assume long, pipeline nothing
        self.failures = 0  # lease requests failed in a row (a dead node, a dead worker)
        self.backoff: asyncio.TimerHandle | None = None  # no requests until it fires
        self.unreached_since: float | None = None  # lease requests have not left since

    def depth(self) -> int:
        if self.strategy == "SPREAD":
            return 1
        return MAX_DEPTH if self.avg_run_s < SHORT_TASK_S else 1


class TaskSubmitter:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.shapes: dict[tuple[Resources, Any, str], _Shape] = {}
        self.by_return: dict[str, PendingTask] = {}
        self.sent_fns: dict[ActorRef, set[str]] = {}
        self._closed = False
        self._waits = 0  # dependency waits started (their generations)
        # producer task id -> tasks waiting for it to be pushed, to follow it
        self._followers: dict[str, list[PendingTask]] = {}
        self._following: deque[PendingTask] | None = None  # _pushed's work list
        self._owner: Any = None  # how a worker reaches this owner (Local): set on first use
        #: (node_id, lease_id) -> what a node's memory guard said before it killed that worker
        self.memory_kills: dict[tuple[str, int], MemoryKilled] = {}
        #: Tasks submitted here, and those settled (a value or a final error): what
        #: `actorflow run --progress` shows.
        self.submitted = 0
        self.settled = 0

    # -- submission ----------------------------------------------------------------------------

    def submit(self, pending: PendingTask) -> None:
        self.submitted += 1
        note_child(self.core, pending.return_ids[0])  # (for a recursive cancel of its parent)
        for oid in pending.return_ids:
            self.by_return[oid] = pending
        if not pending.deps:
            self._enqueue(pending)
            return
        self._wait_deps(pending)
        if pending.waiting:  # not ready at once: perhaps it can follow its producers
            self._follow(pending)

    def _wait_deps(self, pending: PendingTask) -> None:
        """Queue the task once its ObjectRef arguments are ready here (a failed one fails it).
        A newer wait, or following its producers meanwhile, makes this one moot."""
        self._waits += 1
        generation = pending.waiting = self._waits

        def on_deps(payloads: list[Payload]) -> None:
            if pending.waiting != generation:
                return
            pending.waiting = 0
            for payload in payloads:
                if type(payload) is Failed:
                    self._finish(pending, (payload,) * len(pending.return_ids))
                    return
            pending.spec.resolved = tuple(payloads)
            self.core.sending(payloads)
            if pending.cancelled:
                self._cancelled(pending)
            else:
                self._enqueue(pending)

        self.core.when_all_ready(pending.deps, on_deps)

    def _follow(self, pending: PendingTask) -> None:
        """Push a task still waiting for its arguments right behind the tasks that make them,
        when they all went (or go) to one worker: that worker runs it after them with their
        results (Local arguments), with no round trip to this owner between the two. A task
        whose producer is not pushed yet waits for that push. A chain of short tasks then
        runs at the worker's pace instead of one owner round trip per link."""
        if pending.strategy == "SPREAD" or self._closed:
            return
        state = self.shapes.get(_key(pending))
        if state is None:
            return
        lease: _Lease | None = None
        resolved: list[Payload | Local] = []
        entries = self.core.objects.entries
        for ref in pending.deps:
            entry = entries.get(ref.id) if ref.core is self.core else None
            if entry is not None and entry.payload is not None:
                resolved.append(entry.payload)
                continue
            producer = self.by_return.get(ref.id)
            if (producer is None or producer.strategy == "SPREAD"
                    or producer.shape != state.shape
                    or (producer.retry_exceptions is not False and producer.retries_left > 0)):
                # made elsewhere, or it may be re-run here after its worker answered (a
                # retried exception): wait for its final value here
                return
            if producer.lease is None:  # not pushed yet: try again when it is
                self._followers.setdefault(producer.spec.task_id, []).append(pending)
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
        self._push(pending, lease)

    def _pushed(self, pending: PendingTask) -> None:
        """``pending`` went to a worker: the tasks waiting to follow it may go too (in a loop
        here, not by recursion: a chain can be long)."""
        followers = self._followers.pop(pending.spec.task_id, None)
        if not followers:
            return
        if self._following is not None:
            self._following.extend(followers)
            return
        self._following = work = deque(followers)
        try:
            while work:
                follower = work.popleft()
                if follower.waiting and not follower.cancelled:
                    self._follow(follower)
        finally:
            self._following = None

    def _requeue(self, pending: PendingTask, *, front: bool) -> None:
        """Queue a task again (a retry, a lost push). One that followed its producers waits
        for its arguments here again: they may be re-running elsewhere."""
        if pending.follows:
            pending.follows = False
            pending.spec.resolved = ()
            self._wait_deps(pending)
            return
        state = self.shapes[_key(pending)]
        if front:
            state.queue.appendleft(pending)
        else:
            state.queue.append(pending)

    def _enqueue(self, pending: PendingTask) -> None:
        if self._closed:
            self._finish(pending, self._failed(pending, TaskCancelledError("actorflow shut down")))
            return
        key = _key(pending)
        state = self.shapes.get(key)
        if state is None:
            state = self.shapes[key] = _Shape(pending.shape, pending.strategy, pending.env)
        state.queue.append(pending)
        self._pump(state)

    def _pump(self, state: _Shape) -> None:
        queue = state.queue
        if state.backoff is not None:  # lease requests failed lately: wait before asking again
            self._push_queued(state)
            return
        if state.strategy == "SPREAD":
            # every SPREAD task gets its own placement decision and its own lease
            while queue and state.requesting < state.max_requests and not self._closed:
                self._request_lease(state, self.core.node, no_spill=False,
                                    bound=queue.popleft())
            return
        if queue:
            self._push_queued(state)
            wanted = min(len(queue), state.max_requests)
            while state.requesting < wanted and not self._closed and state.backoff is None:
                self._request_lease(state, self.core.node, no_spill=False)
        for lease in state.leases:
            if lease.inflight == 0 and lease.idle_handle is None and not queue:
                lease.idle_handle = self.core.loop.call_later(LINGER_S, self._linger_over, lease)

    def _push_queued(self, state: _Shape) -> None:
        """Push queued tasks onto the shape's leases that have room (the least loaded first)."""
        queue = state.queue
        if not queue or state.strategy == "SPREAD":
            return
        depth = state.depth()
        leases = state.leases
        while queue:
            best: _Lease | None = None
            for lease in leases:
                if lease.inflight < depth and (best is None or lease.inflight < best.inflight):
                    best = lease
            if best is None:
                break
            self._push(queue.popleft(), best)

    def _push(self, pending: PendingTask, lease: _Lease) -> None:
        if lease.idle_handle is not None:
            lease.idle_handle.cancel()
            lease.idle_handle = None
        spec = pending.spec
        worker = lease.lease.worker
        sent = self.sent_fns.setdefault(worker, set())
        if spec.fn_id in sent:
            spec.fn_blob = None
        else:
            spec.fn_blob = pending.fn_blob
            sent.add(spec.fn_id)
        spec.gpu_ids = lease.lease.gpu_ids
        lease.inflight += 1
        pending.lease = lease
        if type(spec.args) is InShm:  # the worker says when it is done with it
            self.core.store.lent(spec.args.name)
        try:
            worker.ask_nowait(quick_task(spec) or spec,
                              CallbackReply(self._task_done, pending, lease))
        except Exception as exc:  # the worker is gone (or its mailbox is full)
            lease.inflight -= 1
            pending.lease = None
            self._lease_lost(lease, exc)
            self._requeue(pending, front=True)
            return
        self._pushed(pending)

    def _task_done(self, pending: PendingTask, lease: _Lease, reply: Any,
                   exc: BaseException | None) -> None:
        """The worker answered (``reply``), or the task's push failed (``exc``)."""
        lease.inflight -= 1
        pending.lease = None
        state = lease.state
        if state.strategy == "SPREAD" and lease.inflight == 0 and lease in state.leases:
            # SPREAD: every task gets its own placement decision, so no lease is reused
            state.leases.remove(lease)
            self._return(lease)
        if exc is not None and not isinstance(exc, PeerUnreachableError):
            # the worker answered, but the answer cannot be used here (it did not unpickle):
            # the task failed; the worker is fine
            self._finish(pending, self._failed(pending, exc))
        elif exc is not None and getattr(exc, "delivered", None) is False and not pending.cancelled:
            # the push never left this process (the link to that worker was already down):
            # the task did not run there, so it goes again without spending a retry
            self._lease_lost(lease, exc)
            self._requeue(pending, front=True)
        elif exc is not None:
            # the worker died (or the link to it did) with the task in flight
            self._lease_lost(lease, exc)
            if pending.cancelled:  # af.cancel(force=True) ended its process on purpose
                cancelled = TaskCancelledError(
                    f"task {pending.spec.name!r} was cancelled (force)")
                self._finish(pending, self._failed(pending, cancelled))
            elif pending.retries_left > 0 and (pending.may_rerun is None
                                               or pending.may_rerun()):
                pending.retries_left -= 1
                self._requeue(pending, front=True)
            else:
                oom = self.memory_kills.get((lease.lease.node_id, lease.lease.lease_id))
                error: BaseException
                if oom is not None:
                    error = OutOfMemoryError(pending.spec.name, oom.node_id, oom.used,
                                             oom.total, oom.threshold)
                else:
                    why = ("its retries are used up; raise max_retries to retry on another "
                           "worker" if pending.retries_left <= 0 else "some of the values it "
                           "had made were read already, so it is not run again")
                    error = WorkerCrashedError(
                        f"the worker running task {pending.spec.name!r} died ({exc}) and {why}")
                self._finish(pending, self._failed(pending, error))
        else:
            returns, run_s = reply_returns(reply)
            if type(reply) is TaskReply and reply.released:
                self.core.store.returned(reply.released)
            state.avg_run_s = 0.8 * state.avg_run_s + 0.2 * run_s
            first = returns[0] if returns else None
            if isinstance(first, Failed) and self._should_retry(pending, first.error):
                pending.retries_left -= 1
                self._requeue(pending, front=False)
            elif isinstance(first, Failed) and isinstance(first.error, MissingFunction):
                self.sent_fns.pop(lease.lease.worker, None)
                self._requeue(pending, front=True)
            else:
                nested = reply.nested if type(reply) is TaskReply else ()
                self._finish(pending, returns,
                             self.core.kept_lends(nested, len(returns)) if nested else None)
        self._pump(state)

    def _should_retry(self, pending: PendingTask, error: BaseException) -> bool:
        if pending.retries_left <= 0 or pending.cancelled or not isinstance(error, TaskError):
            return False
        allowed = pending.retry_exceptions
        if allowed is False or (allowed is not True and not isinstance(error.cause, allowed)):
            return False
        return pending.may_rerun is None or pending.may_rerun()  # (last: it may act)

    def _finish(self, pending: PendingTask, returns: tuple[Payload, ...],
                lends: list[Lends | None] | None = None) -> None:
        """``lends``: per return, those of the refs inside it (see Core.kept_lends)."""
        self.settled += 1
        pending.waiting = 0
        deps, pending.deps = pending.deps, []
        self._followers.pop(pending.spec.task_id, None)  # they wait for their deps anyway
        if not pending.cancelled and type(returns[0]) is not Failed:
            self.core.lineage.remember(pending, returns, deps)  # (kept for large returns)
        objects = self.core.objects
        for i, (oid, payload) in enumerate(zip(pending.return_ids, returns, strict=False)):
            self.by_return.pop(oid, None)
            objects.resolve(oid, payload, lends[i] if lends is not None else None)

    @staticmethod
    def _failed(pending: PendingTask, error: BaseException) -> tuple[Payload, ...]:
        return (Failed(error),) * len(pending.return_ids)

    # -- leases --------------------------------------------------------------------------------

    def _request_lease(self, state: _Shape, node: ActorRef, *, no_spill: bool,
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
            self._lease_failed(state, exc, bound)
            return
        fut.add_done_callback(lambda f: self._lease_granted(state, f, bound))

    def _lease_granted(self, state: _Shape, fut: asyncio.Future[Any],
                       bound: PendingTask | None = None) -> None:
        state.requesting -= 1
        if fut.cancelled():
            if bound is not None:
                self._cancelled(bound)
            return
        exc = fut.exception()
        if exc is not None:
            self._lease_failed(state, exc, bound)
            return
        answer = fut.result()
        if type(answer) is Spillback:  # the placement chose another node: ask it
            if (state.queue or bound is not None) and not self._closed:
                self._request_lease(state, answer.node, no_spill=True, bundle=answer.bundle,
                                    bound=bound)
            return
        state.failures = 0
        state.unreached_since = None
        lease = _Lease(answer, state)
        if self._closed:
            self._return(lease)
            if bound is not None:
                self._finish(bound, self._failed(bound, TaskCancelledError("shut down")))
            return
        state.leases.append(lease)
        if bound is not None:
            if bound.cancelled:
                self._cancelled(bound)
            else:
                self._push(bound, lease)
        self._pump(state)

    def _lease_failed(self, state: _Shape, exc: BaseException,
                      bound: PendingTask | None) -> None:
        """A lease request failed. A demand that can never fit fails every task of the shape
        at once; anything else (the node or its worker died, the link to it was lost) costs
        one retry of the task it was for (``bound``, else the first queued), and the shape asks
        again after a backoff. Only a task whose retries are used up fails. A request that
        never left (its node could not be dialed: a head's node that restarts) costs nothing
        while such failures have lasted less than the grace period of a head restart."""
        if isinstance(exc, InfeasibleError) or self._closed:
            if bound is not None:
                state.queue.appendleft(bound)
            self._fail_queue(state, exc)
            return
        if self._unreached(state, exc):  # the request never left (its node is being redialed:
            # a head that restarts): nothing ran, so no retry is charged, for a while
            victim = None
            if bound is not None and bound.cancelled:
                self._cancelled(bound)
            elif bound is not None:
                state.queue.appendleft(bound)
        else:
            victim = bound if bound is not None else (
                state.queue.popleft() if state.queue else None)
        if victim is not None:
            if victim.cancelled:
                self._cancelled(victim)
            elif victim.retries_left > 0:
                victim.retries_left -= 1
                state.queue.appendleft(victim)
            else:
                error = WorkerCrashedError(
                    f"no worker could be leased for task {victim.spec.name!r} "
                    f"({type(exc).__name__}: {exc}) and its retries are used up; raise "
                    "max_retries to retry longer")
                error.__cause__ = exc
                self._finish(victim, self._failed(victim, error))
        state.failures += 1
        if state.backoff is None:
            delay = min(MAX_BACKOFF_S, 0.02 * 2 ** min(state.failures - 1, 10))
            state.backoff = self.core.loop.call_later(delay, self._backoff_over, state)

    @staticmethod
    def _unreached(state: _Shape, exc: BaseException) -> bool:
        """``exc`` says the request never reached a node (it never left; or its process had no
        node yet: ``#node``, the transport's name for a slot that does not run there, as in a
        head that is starting again), and requests of the shape have not for less than the
        grace period given to a head that restarts (head_link.HEAD_GRACE_S)."""
        never_left = isinstance(exc, PeerUnreachableError) and exc.delivered is False
        if not never_left and not (isinstance(exc, ActorDiedError) and exc.actor == "#node"):
            return False
        now = time.monotonic()
        if state.unreached_since is None:
            state.unreached_since = now
        return now - state.unreached_since < HEAD_GRACE_S

    def _backoff_over(self, state: _Shape) -> None:
        state.backoff = None
        if not self._closed:
            self._pump(state)

    def _fail_queue(self, state: _Shape, exc: BaseException) -> None:
        if not isinstance(exc, (InfeasibleError, ActorflowError)):
            exc = WorkerCrashedError(f"could not get a worker: {type(exc).__name__}: {exc}")
        while state.queue:
            pending = state.queue.popleft()
            self._finish(pending, self._failed(pending, exc))

    def _linger_over(self, lease: _Lease) -> None:
        lease.idle_handle = None
        if lease.inflight == 0 and not lease.state.queue and lease in lease.state.leases:
            lease.state.leases.remove(lease)
            self._return(lease)

    def _return(self, lease: _Lease, worker_ok: bool = True) -> None:
        if lease.idle_handle is not None:
            lease.idle_handle.cancel()
            lease.idle_handle = None
        try:
            self._node_of(lease).tell_nowait(ReturnLease(lease.lease.lease_id, worker_ok))
        except Exception:
            pass  # the node is gone: the lease went with it

    def _node_of(self, lease: _Lease) -> ActorRef:
        return lease.lease.node if lease.lease.node is not None else self.core.node

    def memory_killed(self, notice: MemoryKilled) -> None:
        """A node's memory guard is about to kill the worker of one of our leases: its tasks
        fail with OutOfMemoryError, not WorkerCrashedError, when their retries are used up."""
        key = (notice.node_id, notice.lease_id)
        self.memory_kills[key] = notice
        # forgotten once the crash was handled (a lease that had no task in flight: later)
        self.core.loop.call_later(MEMORY_KILL_MEMO_S, self.memory_kills.pop, key, None)

    def _lease_lost(self, lease: _Lease, exc: BaseException) -> None:
        if lease.lost:
            return
        lease.lost = True
        state = lease.state
        if lease in state.leases:
            state.leases.remove(lease)
        self.sent_fns.pop(lease.lease.worker, None)
        self._return(lease, worker_ok=False)

    # -- cancel and close ----------------------------------------------------------------------

    def cancel(self, object_id: str, force: bool, recursive: bool = True) -> bool:
        """Cancel the task producing ``object_id`` (``recursive``: and what it submitted).
        Returns False if it is already done."""
        pending = self.by_return.get(object_id)
        if pending is None:
            return False
        pending.cancelled = True
        state = self.shapes.get(_key(pending))
        if state is not None and pending in state.queue:
            state.queue.remove(pending)
            self._cancelled(pending)
        elif pending.lease is not None:
            try:
                target = pending.lease.lease.control or pending.lease.lease.worker
                target.tell_nowait(CancelTask(pending.spec.task_id, force, recursive))
            except Exception:
                pass
        return True

    def _cancelled(self, pending: PendingTask) -> None:
        error = TaskCancelledError(f"task {pending.spec.name!r} was cancelled before it ran")
        self._finish(pending, self._failed(pending, error))

    async def close(self) -> None:
        self._closed = True
        for state in self.shapes.values():
            if state.backoff is not None:
                state.backoff.cancel()
                state.backoff = None
            self._fail_queue(state, TaskCancelledError("actorflow shut down"))
            for lease in state.leases:
                # a worker still running a task of ours is not handed out again: its node
                # kills it (the job ends: its running tasks end too)
                self._return(lease, worker_ok=lease.inflight == 0)
            state.leases.clear()
