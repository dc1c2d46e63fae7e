"""``af.util.ActorPool``: calls spread over a fixed set of actors, one call per actor at a time.

The pool follows Ray's ``ActorPool`` (same methods, same meaning), the async way: ``map`` and
``map_unordered`` are async iterators, ``get_next`` and ``get_next_unordered`` are coroutines;
``submit``, ``has_next``, ``has_free``, ``pop_idle`` and ``push`` are plain methods.

How a call moves (each call is a :class:`_Call`)::

    submitted --(an actor is idle)--> running --(its ObjectRef is ready)--> done --> returned
        |                                ^
        +--(every actor busy)--> pending-+  (started, first in first out, when an actor frees)

An actor is busy from the moment ``fn(actor, value)`` is called until the pool sees the
call's ObjectRef ready; then it takes the oldest pending call. The pool has no background
task: it sees refs become ready while a coroutine of it waits (``get_next*``, an iteration of
``map*``), as Ray's pool returns actors only in ``get_next*``. Unlike Ray's, an actor is
freed when its call finishes, not when its result is taken, so a slow first result of
``map`` does not idle the other actors (``map`` looks ahead a bounded window, see
:meth:`ActorPool.map`).

Results of ``submit`` are taken with ``get_next*``; a ``map``'s results only through its own
iterator (the two never mix). A result that is dropped (``ignore_if_timedout``, or a ``map``
left early) still keeps its actor busy until its call finishes.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import actorflow as af

if TYPE_CHECKING:
    from actorflow import ActorHandle, ObjectRef

__all__ = ["ActorPool"]

V = TypeVar("V")
#: ``fn(actor, value)``: makes one call on ``actor`` and returns its ObjectRef.
CallFn = Callable[["ActorHandle", V], "ObjectRef"]


class _State(enum.Enum):
    PENDING = "pending"  # waiting for an idle actor; holds fn and value
    RUNNING = "running"  # fn was called: ref and actor are set, the actor is busy
    DONE = "done"        # the ref is ready (or fn raised: error is set); the actor is free


class _Call:
    """One value given to the pool, from submission until its result is returned or dropped."""

    __slots__ = ("actor", "dropped", "error", "fn", "index", "order", "ref", "state", "value")

    def __init__(self, index: int, fn: CallFn[Any], value: Any) -> None:
        self.index = index  # submission order, over the pool's life
        self.fn: CallFn[Any] | None = fn  # (fn, value): kept only while pending
        self.value: Any = value
        self.state = _State.PENDING
        self.ref: ObjectRef | None = None
        self.actor: ActorHandle | None = None  # while running
        self.error: Exception | None = None  # fn raised when the pool started the call
        self.order = 0  # when it finished, among the pool's calls (for the unordered gets)
        self.dropped = False  # nobody will take its result


def _is_done(call: _Call) -> bool:
    return call.state is _State.DONE


class ActorPool:
    """A fixed set of actors that calls are spread over, one call per actor at a time.

    ``actors`` are actor handles (of one class, usually). Each call is made by a function
    ``fn(actor, value)`` that calls one method and returns its ObjectRef, such as
    ``lambda a, v: a.work.remote(v)``. Use the pool from async code (a driver, an async task or
    actor); it is not thread-safe. See the module docstring for how calls move.
    """

    def __init__(self, actors: Iterable[ActorHandle]) -> None:
        self._idle: list[ActorHandle] = list(actors)
        self._pending: deque[_Call] = deque()
        self._running: dict[ObjectRef, _Call] = {}
        #: calls of submit() whose result nobody has taken yet, by index (submission order)
        self._results: dict[int, _Call] = {}
        #: those of _results that are done, in the order they finished
        self._finished: dict[int, _Call] = {}
        self._next_index = 0
        self._next_order = 0

    def __repr__(self) -> str:
        return (f"<ActorPool {len(self._idle)} idle, {len(self._running)} busy, "
                f"{len(self._pending)} pending>")

    # -- plain methods -------------------------------------------------------------------------

    def submit(self, fn: CallFn[V], value: V) -> None:
        """Schedule ``fn(actor, value)`` on an idle actor, or, if none is idle, as soon as one
        frees (first in, first out). Synchronous. Take the result with ``get_next`` or
        ``get_next_unordered``. When an actor is idle, ``fn`` runs now and what it raises (a
        ``TypeError`` if it returns no ObjectRef) is raised here; when it runs later, what it
        raises is raised by the ``get_next*`` that takes its result."""
        call = self._add(fn, value)
        self._results[call.index] = call

    def has_next(self) -> bool:
        """Whether results of ``submit`` are waiting to be taken with ``get_next*``
        (synchronous; a ``map``'s results are not counted)."""
        return bool(self._results)

    def has_free(self) -> bool:
        """Whether an actor is idle (synchronous). An actor whose call finished counts as idle
        once the pool has seen it finish (in a ``get_next*`` or ``map*``)."""
        return bool(self._idle) and not self._pending

    def pop_idle(self) -> ActorHandle | None:
        """Remove an idle actor from the pool and return it; ``None`` if none is idle
        (synchronous). The pool forgets the actor; it is not killed."""
        return self._idle.pop() if self.has_free() else None

    def push(self, actor: ActorHandle) -> None:
        """Add ``actor`` to the pool as idle; it takes a pending call at once, if there is
        one (synchronous). Raises ``ValueError`` if the actor is in the pool already."""
        if actor in self._idle or any(c.actor == actor for c in self._running.values()):
            raise ValueError(f"{actor!r} is in this pool already")
        self._idle.append(actor)
        self._start_pending()

    # -- taking results of submit() --------------------------------------------------------

    async def get_next(self, timeout: float | None = None,
                       ignore_if_timedout: bool = False) -> Any:
        """The next result of ``submit``, in submission order (a coroutine).

        Waits for it; raises what its call raised (``af.TaskError``, also the remote
        exception's type; ``af.ActorDiedError`` when the actor is dead). After ``timeout``
        seconds it raises ``af.GetTimeoutError`` (a ``TimeoutError``) and the result stays
        next, unless ``ignore_if_timedout``: then that result is dropped and the next call of
        ``get_next`` waits for the one after. Raises ``ValueError`` when no result is
        waiting (see ``has_next``), and ``RuntimeError`` when the result waits for an actor
        and the pool has none (``push`` one).
        """
        if not self._results:
            raise ValueError("no result of submit() is waiting: check has_next() first")
        call = self._results.pop(next(iter(self._results)))  # taken: concurrent callers skip it
        self._finished.pop(call.index, None)
        try:
            finished = await self._wait_until(functools.partial(_is_done, call), timeout)
        except BaseException:
            self._give_back(call)
            raise
        if not finished:
            if ignore_if_timedout:
                self._drop(call)
            else:
                self._give_back(call)
            raise af.GetTimeoutError(
                f"the next result of the pool was not ready within {timeout} s"
                + (" and was dropped" if ignore_if_timedout else "; it is still the next one"))
        return await self._take(call, requeue=True)

    async def get_next_unordered(self, timeout: float | None = None,
                                 ignore_if_timedout: bool = False) -> Any:
        """Any next result of ``submit``: the one that finished first (a coroutine).

        As ``get_next`` otherwise; with ``ignore_if_timedout``, a timeout drops the oldest
        result still waiting.
        """
        if not self._results:
            raise ValueError("no result of submit() is waiting: check has_next() first")
        finished = await self._wait_until(
            lambda: bool(self._finished) or not self._results, timeout)
        if not finished:
            if ignore_if_timedout and self._results:
                self._drop(self._results.pop(next(iter(self._results))))
            raise af.GetTimeoutError(
                f"no result of the pool was ready within {timeout} s"
                + ("; the oldest was dropped" if ignore_if_timedout else ""))
        if not self._finished:  # other callers took the rest meanwhile
            raise ValueError("no result of submit() is waiting: other callers took them")
        index = next(iter(self._finished))
        del self._finished[index]
        return await self._take(self._results.pop(index), requeue=True)

    # -- map -----------------------------------------------------------------------------------

    def map(self, fn: CallFn[V], values: Iterable[V]) -> AsyncIterator[Any]:
        """``fn(actor, value)`` for each of ``values``, spread over the actors; an async
        iterator of the results in the order of ``values``.

        ``values`` is read as the work goes (it may be a generator): at most twice as many
        values as the pool has actors are taken ahead of the result to be returned next, so
        a slow call holds back what is returned, not the other actors. A call that raised
        raises from the iterator and ends it. Leaving the iteration early (``break``, an
        error) drops the results not returned yet; their calls still finish on their actors.
        """
        return self._map(fn, values, ordered=True)

    def map_unordered(self, fn: CallFn[V], values: Iterable[V]) -> AsyncIterator[Any]:
        """As :meth:`map`, but each result comes as soon as its call finished."""
        return self._map(fn, values, ordered=False)

    async def _map(self, fn: CallFn[V], values: Iterable[V], *, ordered: bool
                   ) -> AsyncIterator[Any]:
        source = iter(values)
        mine: deque[_Call] = deque()  # started or pending, result not returned, in order
        exhausted = False
        try:
            while True:
                while not exhausted and len(mine) < max(1, 2 * self._size()):
                    try:
                        value = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    mine.append(self._add(fn, value))
                if not mine:
                    return
                if ordered:
                    await self._wait_until(functools.partial(_is_done, mine[0]), None)
                    call = mine.popleft()
                else:
                    await self._wait_until(
                        lambda: any(c.state is _State.DONE for c in mine), None)
                    call = min((c for c in mine if c.state is _State.DONE),
                               key=lambda c: c.order)
                    mine.remove(call)
                result = await self._take(call)
                yield result
        finally:  # runs when the iteration ends, raises or is closed early
            for call in mine:
                self._drop(call)

    # -- the machinery -------------------------------------------------------------------------

    def _size(self) -> int:
        """Actors in the pool: idle and busy (with a call of its own or a dropped one)."""
        return len(self._idle) + len(self._running)

    def _add(self, fn: CallFn[V], value: V) -> _Call:
        """A new call, started now on an idle actor (what ``fn`` raises is raised here) or
        left pending."""
        call = _Call(self._next_index, fn, value)
        if self._idle and not self._pending:
            actor = self._idle.pop()
            try:
                self._start(call, actor)
            except BaseException:
                self._idle.append(actor)
                raise
        else:
            self._pending.append(call)
        self._next_index += 1
        return call

    def _start(self, call: _Call, actor: ActorHandle) -> None:
        fn, value = call.fn, call.value
        assert fn is not None
        call.fn = call.value = None
        ref = fn(actor, value)
        if not isinstance(ref, af.ObjectRef):
            raise TypeError(
                "the pool's fn(actor, value) must return the ObjectRef of one call, such as "
                f"actor.method.remote(value); it returned {type(ref).__name__}")
        call.ref = ref
        call.actor = actor
        call.state = _State.RUNNING
        self._running[ref] = call

    def _start_pending(self) -> None:
        """Give pending calls to idle actors, oldest first."""
        while self._pending and self._idle:
            call = self._pending.popleft()
            actor = self._idle.pop()
            try:
                self._start(call, actor)
            except Exception as exc:  # raised to whoever takes this call's result
                self._idle.append(actor)
                call.error = exc
                self._done(call)

    def _finish(self, ref: ObjectRef) -> None:
        """``ref`` is ready: its call is done, its actor free (idempotent: several waiters
        may see the same ref ready)."""
        call = self._running.pop(ref, None)
        if call is None:
            return
        assert call.actor is not None
        self._idle.append(call.actor)
        call.actor = None
        self._done(call)
        self._start_pending()

    def _done(self, call: _Call) -> None:
        call.state = _State.DONE
        call.order = self._next_order
        self._next_order += 1
        if call.index in self._results:
            self._finished[call.index] = call

    def _give_back(self, call: _Call) -> None:
        """A result taken by a get_next that did not return it is waiting again, in its place
        (the calls of one pool are few; the rare re-sort is cheap)."""
        last = next(reversed(self._results), -1)
        self._results[call.index] = call
        if call.index < last:
            self._results = dict(sorted(self._results.items()))
        if call.state is _State.DONE:
            self._finished[call.index] = call

    def _drop(self, call: _Call) -> None:
        """Nobody will take this call's result: a pending one never starts; a running one
        keeps its actor until it finishes."""
        call.dropped = True
        if call.state is _State.PENDING:
            self._pending.remove(call)
        self._finished.pop(call.index, None)

    async def _wait_until(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``ready()``, freeing actors as their calls finish; False when
        ``timeout`` passed first (``0``: look once, without waiting)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not ready():
            if not self._running:
                # nothing will finish: what is waited for is pending and no actor can take it
                raise RuntimeError("the pool has pending calls but no actor to run them: "
                                   "push() an actor into it")
            left = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await af.wait(list(self._running), num_returns=1, timeout=left)
            if not done:
                return ready()
            for ref in done:
                self._finish(ref)
        return True

    async def _take(self, call: _Call, *, requeue: bool = False) -> Any:
        """The result of a done call: its value, or what it raised. With ``requeue`` (a
        result of submit()), one whose fetch is cancelled goes back to wait, in its place."""
        if call.error is not None:
            raise call.error
        assert call.ref is not None
        try:
            return await af.get(call.ref)
        except asyncio.CancelledError:
            if requeue:
                self._give_back(call)
            raise
