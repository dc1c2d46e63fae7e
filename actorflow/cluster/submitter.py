"""Task submission: direct pushes onto leased workers, retries.

The owner asks its node for a *lease* on a worker for a resource shape (``cluster/leasing.py``),
then pushes that shape's tasks straight to the leased worker; the worker answers straight to the
owner. The node sees leases, not tasks. Per lease, tasks are pipelined (several in flight) only
while they are short: the depth adapts to the measured run time, so long tasks spread over
workers instead of queueing behind each other. An idle lease is returned after a short linger,
so a burst of sequential tasks reuses the same worker. A task whose arguments are still being
made by tasks on one worker follows them there (``cluster/following.py``).

Nothing here awaits: submission is synchronous (``.remote()`` returns at once) and progress is
driven by future callbacks; the only timers are loop handles owned and cancelled here.
"""

from __future__ import annotations

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
from actorflow.cluster.following import Following
from actorflow.cluster.leasing import HeldLease, Leasing, Shape, shape_key
from actorflow.cluster.protocol import (
    CancelTask,
    Failed,
    InShm,
    MissingFunction,
    Payload,
    TaskReply,
    TaskSpec,
    quick_task,
    reply_returns,
)
from actorflow.placement.resources import Resources
from actorflow.runtime import CallbackReply

if TYPE_CHECKING:
    from actorflow.cluster.core import Core
    from actorflow.objects.borrows import Lends
    from actorflow.objects.ref import ObjectRef

__all__ = ["PendingTask", "TaskSubmitter"]

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
    lease: HeldLease | None = None
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


class TaskSubmitter:
    """An owner's tasks from submission to their values: waiting for their arguments, queued
    per shape, pushed onto the shape's leases (``cluster/leasing.py``), retried, finished."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.shapes: dict[tuple[Resources, Any, str], Shape] = {}
        self.by_return: dict[str, PendingTask] = {}
        self.leasing = Leasing(self)
        self.closed = False
        self._waits = 0  # dependency waits started (their generations)
        self.following = Following(self)
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
            self.following.follow(pending)

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
                self.cancelled(pending)
            else:
                self._enqueue(pending)

        self.core.reads.when_all_ready(pending.deps, on_deps)

    def _requeue(self, pending: PendingTask, *, front: bool) -> None:
        """Queue a task again (a retry, a lost push). One that followed its producers waits
        for its arguments here again: they may be re-running elsewhere."""
        if pending.follows:
            pending.follows = False
            pending.spec.resolved = ()
            self._wait_deps(pending)
            return
        state = self.shapes[shape_key(pending)]
        if front:
            state.queue.appendleft(pending)
        else:
            state.queue.append(pending)

    def _enqueue(self, pending: PendingTask) -> None:
        if self.closed:
            self.fail(pending, TaskCancelledError("actorflow shut down"))
            return
        key = shape_key(pending)
        state = self.shapes.get(key)
        if state is None:
            state = self.shapes[key] = Shape(pending.shape, pending.strategy, pending.env)
        state.queue.append(pending)
        self.pump(state)

    def pump(self, state: Shape) -> None:
        queue = state.queue
        if state.backoff is not None:  # lease requests failed lately: wait before asking again
            self._push_queued(state)
            return
        if state.strategy == "SPREAD":
            # every SPREAD task gets its own placement decision and its own lease
            while queue and state.requesting < state.max_requests and not self.closed:
                self.leasing.request(state, self.core.node, no_spill=False,
                                    bound=queue.popleft())
            return
        if queue:
            self._push_queued(state)
            wanted = min(len(queue), state.max_requests)
            while state.requesting < wanted and not self.closed and state.backoff is None:
                self.leasing.request(state, self.core.node, no_spill=False)
        if not queue:
            for lease in state.leases:
                if lease.inflight == 0:
                    self.leasing.idle(lease)

    def _push_queued(self, state: Shape) -> None:
        """Push queued tasks onto the shape's leases that have room (the least loaded first)."""
        queue = state.queue
        if not queue or state.strategy == "SPREAD":
            return
        depth = state.depth()
        leases = state.leases
        while queue:
            best: HeldLease | None = None
            for lease in leases:
                if lease.inflight < depth and (best is None or lease.inflight < best.inflight):
                    best = lease
            if best is None:
                break
            self.push(queue.popleft(), best)

    def push(self, pending: PendingTask, lease: HeldLease) -> None:
        self.leasing.busy(lease)
        spec = pending.spec
        worker = lease.lease.worker
        sent = self.leasing.sent_fns.setdefault(worker, set())
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
        except Exception:  # the worker is gone (or its mailbox is full)
            lease.inflight -= 1
            pending.lease = None
            self.leasing.lost(lease)
            self._requeue(pending, front=True)
            return
        self.following.pushed(pending)

    def _task_done(self, pending: PendingTask, lease: HeldLease, reply: Any,
                   exc: BaseException | None) -> None:
        """The worker answered (``reply``), or the task's push failed (``exc``)."""
        lease.inflight -= 1
        pending.lease = None
        state = lease.state
        if state.strategy == "SPREAD" and lease.inflight == 0 and lease in state.leases:
            # SPREAD: every task gets its own placement decision, so no lease is reused
            state.leases.remove(lease)
            self.leasing.give_back(lease)
        if exc is not None and not isinstance(exc, PeerUnreachableError | ActorDiedError):
            # the worker answered, but the answer cannot be used here (it did not unpickle):
            # the task failed; the worker is fine
            self.fail(pending, exc)
        elif exc is not None and getattr(exc, "delivered", None) is False and not pending.cancelled:
            # the push never left this process (the link to that worker was already down):
            # the task did not run there, so it goes again without spending a retry
            self.leasing.lost(lease)
            self._requeue(pending, front=True)
        elif exc is not None:
            # the worker died (or the link to it did) with the task in flight; or another
            # process listens where it did now (ActorDiedError: no such actor there)
            self.leasing.lost(lease)
            if pending.cancelled:  # af.cancel(force=True) ended its process on purpose
                cancelled = TaskCancelledError(
                    f"task {pending.spec.name!r} was cancelled (force)")
                self.fail(pending, cancelled)
            elif pending.retries_left > 0 and (pending.may_rerun is None
                                               or pending.may_rerun()):
                pending.retries_left -= 1
                self._requeue(pending, front=True)
            else:
                oom = self.leasing.memory_kills.get((lease.lease.node_id, lease.lease.lease_id))
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
                self.fail(pending, error)
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
                self.leasing.sent_fns.pop(lease.lease.worker, None)
                self._requeue(pending, front=True)
            else:
                nested = reply.nested if type(reply) is TaskReply else ()
                self._finish(pending, returns,
                             self.core.kept_lends(nested, len(returns)) if nested else None)
        self.pump(state)

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
        self.following.forget(pending)  # (its followers wait for its values)
        if not pending.cancelled and type(returns[0]) is not Failed:
            self.core.lineage.remember(pending, returns, deps)  # (kept for large returns)
        objects = self.core.objects
        for i, (oid, payload) in enumerate(zip(pending.return_ids, returns, strict=False)):
            self.by_return.pop(oid, None)
            objects.resolve(oid, payload, lends[i] if lends is not None else None)

    # -- cancel and close ----------------------------------------------------------------------

    def cancel(self, object_id: str, force: bool, recursive: bool = True) -> bool:
        """Cancel the task producing ``object_id`` (``recursive``: and what it submitted).
        Returns False if it is already done."""
        pending = self.by_return.get(object_id)
        if pending is None:
            return False
        pending.cancelled = True
        state = self.shapes.get(shape_key(pending))
        if state is not None and pending in state.queue:
            state.queue.remove(pending)
            self.cancelled(pending)
        elif pending.lease is not None:
            try:
                target = pending.lease.lease.control or pending.lease.lease.worker
                target.tell_nowait(CancelTask(pending.spec.task_id, force, recursive))
            except Exception:
                pass
        return True

    def fail_queue(self, state: Shape, exc: BaseException) -> None:
        """Every task queued in ``state`` ends with ``exc`` (or a WorkerCrashedError naming it,
        when it is not one of ours)."""
        if not isinstance(exc, (InfeasibleError, ActorflowError)):
            exc = WorkerCrashedError(f"could not get a worker: {type(exc).__name__}: {exc}")
        while state.queue:
            self.fail(state.queue.popleft(), exc)

    def cancelled(self, pending: PendingTask) -> None:
        """``pending`` was cancelled before it ran."""
        self.fail(pending, TaskCancelledError(f"task {pending.spec.name!r} was cancelled "
                                              "before it ran"))

    def fail(self, pending: PendingTask, error: BaseException) -> None:
        """``pending`` ends with ``error`` (each of its returns raises it)."""
        self._finish(pending, (Failed(error),) * len(pending.return_ids))

    async def close(self) -> None:
        self.closed = True
        for state in self.shapes.values():
            self.fail_queue(state, TaskCancelledError("actorflow shut down"))
            self.leasing.close(state)
