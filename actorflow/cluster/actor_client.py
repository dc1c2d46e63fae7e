"""The caller's side of one actor: resolve its location, push calls in order, survive restarts.

Calls made before the actor's location is known queue here and leave in submission order once
it is, so calls from one caller run in the order they were made. When the incarnation serving
the calls dies, the client asks the head what happened: if the actor is restarting, calls that
were in flight fail with ActorUnavailableError (or are re-sent while ``max_task_retries``
allows) and queued ones wait for the new incarnation; if it is dead for good, every pending and
later call fails with ActorDiedError and its cause.

``cancel`` drops a call that has not left, or asks the actor's process (its WorkerControl, at a
well-known slot) to cancel one that has; the call's refs then raise TaskCancelledError, unless
its answer came first (it finished before the cancel reached the actor: the answer and the
cancel's acknowledgement travel back in that order on one link).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from actorflow._errors import (
    ActorDiedError,
    ActorUnavailableError,
    PeerUnreachableError,
    TaskCancelledError,
)
from actorflow.cluster.actor_creation import ActorCreation
from actorflow.cluster.calls import note_child
from actorflow.cluster.head_link import WaitClock, head_answered, retry_while_head_away
from actorflow.cluster.protocol import (
    CONTROL_ID,
    ActorCall,
    ActorLocation,
    ActorSpec,
    CancelCall,
    Failed,
    InShm,
    ResolveActor,
    TaskReply,
    WaitActorDown,
    reply_returns,
    with_call_id,
)
from actorflow.runtime import ActorRef, CallbackReply, restore_ref

if TYPE_CHECKING:
    from actorflow.cluster.core import Core
    from actorflow.objects.ref import ObjectRef

__all__ = ["ActorClient", "PendingCall"]


@dataclass(slots=True)
class PendingCall:
    call: ActorCall | bytes  # bytes: the quick form (no ObjectRef arguments)
    return_ids: tuple[str, ...]
    retries_left: int
    deps: list[ObjectRef]
    ready: bool = True
    keep: Any = None  # what keeps its arguments until it is done (see Core.pack_args)
    sent_to: ActorLocation | None = None  # the incarnation it went to last
    cancelled: bool = False


def _call_id(return_ids: tuple[str, ...]) -> str:
    """A call's id: its return's id, without the index of one of several returns."""
    first = return_ids[0]
    return first if len(return_ids) == 1 else first.rpartition(".")[0]


class ActorClient:
    """The calls of this process to one actor (see the module docstring)."""

    def __init__(self, core: Core, actor_id: str, class_name: str, max_task_retries: int) -> None:
        self.core = core
        self.actor_id = actor_id
        self.class_name = class_name
        self.max_task_retries = max_task_retries
        self.location: ActorLocation | None = None
        self.queue: deque[PendingCall] = deque()  # waiting for a location (or for deps)
        self.inflight: dict[int, PendingCall] = {}
        self.resolving = False
        self.dead: ActorDiedError | None = None
        self._seq = 0
        self._closed = False
        self._creating = False  # calls wait until the head has accepted the actor
        self._stale_after = -1  # resolve an incarnation newer than this one
        self._unsent: list[tuple[int, PendingCall]] = []  # failed before leaving: resend
        self._orphans: list[PendingCall] = []  # in flight when their incarnation died
        self._following = WaitClock()  # (the head was away when it followed: head_link.py)

    def creating(self, spec: ActorSpec, deps: list[ObjectRef], get_if_exists: bool) -> None:
        """Have the head create the actor (``cluster/actor_creation.py``); calls wait until
        it has accepted it."""
        self._creating = True
        ActorCreation(self, spec, get_if_exists).start(deps)

    def created(self, actor_id: str) -> None:
        """The head accepted the actor (``actor_id``: get_if_exists may have found another)."""
        self._creating = False
        self.actor_id = actor_id
        self._flush()

    def not_created(self, exc: BaseException) -> None:
        """The actor could not be created: every call fails, naming ``exc``."""
        self._creating = False
        self.die(ActorDiedError(self.class_name, "it could not be created", exc))

    def call(self, pending: PendingCall) -> None:
        call_id = _call_id(pending.return_ids)
        c = pending.call
        if type(c) is bytes:
            pending.call = with_call_id(c, call_id)
        elif type(c) is ActorCall and not c.call_id:
            pending.call = replace(c, call_id=call_id)
        note_child(self.core, pending.return_ids[0])  # (for a recursive cancel of its caller)
        if pending.deps:
            pending.ready = False
            self.queue.append(pending)
            self._resolve_deps(pending)
        else:
            self.queue.append(pending)
        self._flush()

    def _resolve_deps(self, pending: PendingCall) -> None:
        def on_deps(payloads: list[Any]) -> None:
            if pending.cancelled:  # dropped meanwhile
                return
            for payload in payloads:
                if type(payload) is Failed:
                    self.queue.remove(pending)
                    self._finish(pending, (payload,) * len(pending.return_ids))
                    self._flush()
                    return
            c = pending.call
            assert type(c) is ActorCall  # a call with ObjectRef arguments is never quick
            pending.call = ActorCall(c.method, c.args, tuple(payloads), c.num_returns,
                                     c.call_id, c.job)
            self.core.sending(payloads)
            pending.deps = []
            pending.ready = True
            self._flush()

        self.core.reads.when_all_ready(pending.deps, on_deps)

    def _flush(self) -> None:
        if self.dead is not None:
            while self.queue:
                self._fail(self.queue.popleft(), self.dead)
            return
        loc = self.location
        if self._creating:
            return
        if loc is None:
            if self.queue and not self.resolving:
                self._resolve(self._stale_after)
            return
        queue = self.queue
        while queue and queue[0].ready:  # order: a call waiting on deps holds back later ones
            pending = queue.popleft()
            self._seq += 1
            key = self._seq
            self.inflight[key] = pending
            pending.sent_to = loc
            call = pending.call
            if type(call) is ActorCall and type(call.args) is InShm:
                self.core.store.lent(call.args.name)  # the actor says when it is done with it
            try:
                loc.worker.ask_nowait(pending.call, CallbackReply(self._done, key, loc))
            except Exception as exc:
                del self.inflight[key]
                queue.appendleft(pending)
                self._lost(loc, exc)
                return

    def _done(self, key: int, loc: ActorLocation, reply: Any, exc: BaseException | None
              ) -> None:
        """The actor answered call ``key`` (``reply``), or its push failed (``exc``)."""
        pending = self.inflight.pop(key, None)
        if pending is None:  # settled otherwise (close, or the actor died)
            return
        if exc is None:
            if type(reply) is TaskReply and reply.released:
                self.core.store.returned(reply.released)
            returns = reply_returns(reply)[0]
            nested = reply.nested if type(reply) is TaskReply else ()
            self._finish(pending, returns,
                         self.core.kept_lends(nested, len(returns)) if nested else None)
            return
        # the incarnation that had the call is gone: ask the head what happens next
        if pending.cancelled:  # (never sent again)
            self._fail(pending, self._cancelled_error())
        elif isinstance(exc, PeerUnreachableError) and exc.delivered is False:
            # it never reached that process: send it to the next incarnation, in order
            self._unsent.append((key, pending))
        else:
            self._orphans.append(pending)
        self._lost(loc, exc)

    def _lost(self, loc: ActorLocation, exc: BaseException) -> None:
        if self.location is loc:
            self.location = None
        if not self.resolving:
            self._resolve(loc.incarnation)

    def _resolve(self, after: int) -> None:
        if self._closed:
            return
        self.resolving = True
        self._after = after
        try:
            fut = self.core.head.ask_nowait(ResolveActor(self.actor_id, after))
        except Exception as exc:
            self.resolving = False
            self.die(ActorDiedError(self.class_name, "the cluster head is unreachable", exc))
            return
        fut.add_done_callback(self._resolved)

    def _resolved(self, fut: asyncio.Future[Any]) -> None:
        self.resolving = False
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:  # the head is away (restarting): ask again, within a grace period
            exc = retry_while_head_away(self, self.core.head, exc,
                                        lambda: self._resolve(self._after))
            if exc is None:
                self.resolving = True
                return
            error = exc if isinstance(exc, ActorDiedError) else ActorDiedError(
                self.class_name, "its state could not be resolved", exc)
            self.die(error)
            return
        head_answered(self)
        head_answered(self._following)
        self.location = fut.result()
        self._follow(self.location)
        unsent, self._unsent = sorted(self._unsent, key=lambda kp: kp[0]), []
        for _, pending in reversed(unsent):  # never delivered: they keep their place in line
            self.queue.appendleft(pending)
        orphans, self._orphans = self._orphans, []
        # calls that were running when the old incarnation died
        for pending in reversed(orphans):
            if pending.retries_left > 0:
                pending.retries_left -= 1
                self.queue.appendleft(pending)
            else:
                self._fail(pending, ActorUnavailableError(
                    self.class_name, "its process died during the call"))
        self._flush()

    def _follow(self, loc: ActorLocation) -> None:
        """Hear from the head when this incarnation ends, so later calls wait for the next one
        instead of going to a process that is gone (the head knows first: a node's death, a
        crash seen by the node)."""
        try:
            fut = self.core.head.ask_nowait(WaitActorDown(self.actor_id, loc.incarnation))
        except Exception:
            return

        def ended(f: asyncio.Future[Any]) -> None:
            exc = None if f.cancelled() else f.exception()
            if isinstance(exc, PeerUnreachableError) and self.location is loc:
                # the head is away, not the actor: follow it again once the head is back
                retry_while_head_away(self._following, self.core.head, exc,
                                      lambda: self._follow(loc) if self.location is loc
                                      else None)
                return
            if self.location is loc:
                self.invalidate()

        fut.add_done_callback(ended)

    def invalidate(self) -> None:
        """The current incarnation was killed on purpose: later calls wait for a newer one
        instead of going to the dead process."""
        loc = self.location
        if loc is not None:
            self.location = None
            self._stale_after = loc.incarnation
        if self.queue and not self.resolving:
            self._resolve(self._stale_after)

    def die(self, error: ActorDiedError) -> None:
        """The actor is dead for good (``error`` says why): every pending and later call
        fails with it."""
        self.dead = error
        self.location = None
        for pending in self._orphans:
            self._fail(pending, error)
        self._orphans = []
        for _, pending in self._unsent:
            self._fail(pending, error)
        self._unsent = []
        for pending in list(self.inflight.values()):
            self._fail(pending, error)
        self.inflight.clear()
        self._flush()

    def _finish(self, pending: PendingCall, returns: tuple[Any, ...],
                lends: list[Any] | None = None) -> None:
        """``lends``: per return, those of the refs inside it (see Core.kept_lends)."""
        for i, (oid, payload) in enumerate(zip(pending.return_ids, returns, strict=False)):
            self.core.objects.resolve(oid, payload, lends[i] if lends is not None else None)

    def _fail(self, pending: PendingCall, error: BaseException) -> None:
        self._finish(pending, (Failed(error),) * len(pending.return_ids))

    # -- cancel ----------------------------------------------------------------------------------

    def cancel(self, object_id: str, recursive: bool = True) -> bool:
        """Cancel the call returning ``object_id`` if it is one of this client's and not done:
        one that has not left is dropped here; for one that has, the actor's process is asked
        to (``CancelCall``). Its refs raise TaskCancelledError once that is settled, unless its
        answer came first. False when no such call is pending here."""
        pending = self._find(object_id)
        if pending is None:
            return False
        if pending.cancelled:
            return True
        pending.cancelled = True
        error = self._cancelled_error()
        for waiting in (self.queue, self._orphans):
            if pending in waiting:
                waiting.remove(pending)
                self._fail(pending, error)
                self._flush()  # (it may have held back later calls)
                return True
        for i, (_, unsent) in enumerate(self._unsent):
            if unsent is pending:
                del self._unsent[i]
                self._fail(pending, error)
                return True
        loc = pending.sent_to
        assert loc is not None  # in flight
        uid, address, _, _ = loc.worker.__reduce__()[1]
        control: ActorRef = restore_ref(uid, address, CONTROL_ID, CONTROL_ID)
        call_id = _call_id(pending.return_ids)
        try:
            control.ask_nowait(CancelCall(call_id, recursive),
                               CallbackReply(self._cancel_settled, pending))
        except Exception:  # that process is gone: the call fails with it, as cancelled
            self._fail(pending, error)
        return True

    def _cancel_settled(self, pending: PendingCall, _answer: Any, _exc: BaseException | None
                        ) -> None:
        """The actor's process took the cancel (or is gone): the call's refs raise
        TaskCancelledError, unless its answer, which came before, settled them already."""
        self._fail(pending, self._cancelled_error())

    def _cancelled_error(self) -> TaskCancelledError:
        return TaskCancelledError(f"a call to actor {self.class_name!r} was cancelled")

    def pending(self, object_id: str) -> bool:
        """Whether the call returning ``object_id`` is one of this client's, not done."""
        return self._find(object_id) is not None

    def _find(self, object_id: str) -> PendingCall | None:
        """The call of this client that returns ``object_id``, if it is pending."""
        for pending in self._calls():
            if object_id in pending.return_ids:
                return pending
        return None

    def _calls(self) -> Iterator[PendingCall]:
        """Every call of this client not done: queued, in flight, orphaned, unsent."""
        yield from self.queue
        yield from self.inflight.values()
        yield from self._orphans
        for _, pending in self._unsent:
            yield pending

    def close(self) -> None:
        self._closed = True
        error = ActorDiedError(self.class_name, "the caller shut down")
        for pending in list(self._calls()):
            self._fail(pending, error)
        self._unsent = []
        self.queue.clear()
        self.inflight.clear()
        self._orphans = []
