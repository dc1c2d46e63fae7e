"""``af.util.Queue``: a first-in, first-out queue held by an actor, for the whole cluster.

A :class:`Queue` is a handle: it pickles with its actor's handle, so every task, actor and
driver it is passed to uses the same queue. Its methods are coroutines (each is one call to the
actor); ``maxsize`` makes ``put`` wait for room, which is backpressure on producers.

The actor (:class:`_QueueActor`) is an async actor: every method runs on its event loop, a
waiting ``put`` or ``get`` is a pending future there, and ``max_concurrency`` is high so that
waiting callers never hold back the calls that would wake them. It is never restarted (a
restarted queue would be empty: its items silently gone); when it dies (``shutdown``,
``af.kill``, its process or node lost) every waiting and later call raises
``af.ActorDiedError``, never hangs.

Nothing is lost to a caller that stops waiting. A ``get`` whose caller is cancelled (as
``asyncio.wait_for`` and ``asyncio.timeout`` do) tells the actor to end that wait (``abort``);
if the actor had already handed an item out, the item comes back to the head of the queue
(``settle``). A cancelled ``put`` is likewise ended before its item goes in, or, if it went in
first, leaves it there. Each waiting call carries a token naming it for ``abort`` and
``settle``. This costs the cancelled caller one or two more calls to the actor. An item handed
to a caller whose process dies on the way is lost with that process.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import actorflow as af

if TYPE_CHECKING:
    from actorflow import ActorClass, ActorHandle

__all__ = ["Empty", "Full", "Queue", "QueueStatistics"]

T = TypeVar("T")
logger = logging.getLogger("actorflow.util")

#: what the actor's methods answer (with the item, for gets)
_OK, _TIMEOUT, _ABORTED, _NONE = 0, 1, 2, 3
#: how long a cancelled caller may spend giving back what its call took
_SETTLE_S = 30.0
#: waiting puts and gets the actor serves at once (a waiting call holds one of them)
_MAX_CONCURRENCY = 100_000


class Full(asyncio.QueueFull, af.ActorflowError):
    """The queue is full: from ``put_nowait``, ``put_nowait_batch``, or ``put`` whose
    ``timeout`` passed. Also an ``asyncio.QueueFull``.

    ``maxsize`` is the queue's, ``timeout`` the seconds ``put`` waited (``None``: it did not
    wait), ``count`` the number of items that did not fit.
    """

    def __init__(self, maxsize: int, timeout: float | None = None, count: int = 1) -> None:
        self.maxsize = maxsize
        self.timeout = timeout
        self.count = count
        what = "an item" if count == 1 else f"{count} items"
        text = f"the queue (maxsize={maxsize}) has no room for {what}"
        if timeout is not None:
            text += f" after waiting {timeout} s"
        super().__init__(text + "; get items out, wait longer, or make a larger queue")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.maxsize, self.timeout, self.count))


class Empty(asyncio.QueueEmpty, af.ActorflowError):
    """The queue has no item (or too few): from ``get_nowait``, ``get_nowait_batch``, or
    ``get`` whose ``timeout`` passed. Also an ``asyncio.QueueEmpty``.

    ``timeout`` is the seconds ``get`` waited (``None``: it did not wait), ``count`` the
    number of items asked for.
    """

    def __init__(self, timeout: float | None = None, count: int = 1) -> None:
        self.timeout = timeout
        self.count = count
        text = "the queue is empty" if count == 1 else f"the queue holds fewer than {count} items"
        if timeout is not None:
            text += f" after waiting {timeout} s"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.timeout, self.count))


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """What a queue holds and who waits on it, at one moment (``await q.statistics()``)."""

    size: int           #: items in the queue
    maxsize: int        #: its bound (0: none)
    getters: int        #: gets waiting for an item
    putters: int        #: puts waiting for room (backpressure)
    puts: int           #: items put since the queue was made
    gets: int           #: items taken since the queue was made
    node_id: str        #: the node of the queue's actor
    pid: int            #: its process


class Queue:
    """A FIFO queue held by an actor, usable from any task, actor or driver (API.md §11).

    ``Queue(maxsize=0)`` creates the actor (synchronous; ``maxsize`` <= 0: no bound). Every
    other method is a coroutine. ``actor_options`` go to the actor's ``.options()`` (by
    default it needs no CPU, and runs where the DEFAULT strategy puts it); ``max_restarts``
    is refused, since a restarted queue would have lost its items.
    """

    def __init__(self, maxsize: int = 0, *, actor_options: dict[str, Any] | None = None
                 ) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError(f"maxsize must be an int, got {type(maxsize).__name__}")
        options: dict[str, Any] = {"num_cpus": 0, "max_concurrency": _MAX_CONCURRENCY}
        options.update(actor_options or {})
        if options.get("max_restarts"):
            raise ValueError("a Queue's actor cannot be restarted: its items would be lost")
        self.maxsize = max(0, maxsize)
        self._actor: ActorHandle = _actor_class().options(**options).remote(self.maxsize)

    @classmethod
    def _of(cls, actor: ActorHandle, maxsize: int) -> Queue:
        queue = cls.__new__(cls)
        queue._actor = actor
        queue.maxsize = maxsize
        return queue

    def __reduce__(self) -> tuple[Any, ...]:
        return (Queue._of, (self._actor, self.maxsize))

    def __repr__(self) -> str:
        return f"<af.util.Queue maxsize={self.maxsize} {self._actor!r}>"

    @property
    def actor(self) -> ActorHandle:
        """The handle of the actor that holds the items (for ``af.kill`` or watching it)."""
        return self._actor

    # -- sizes ---------------------------------------------------------------------------------

    async def qsize(self) -> int:
        """The number of items in the queue now (a coroutine)."""
        return int(await self._actor.qsize.remote())

    async def empty(self) -> bool:
        """Whether the queue holds no item now (a coroutine)."""
        return await self.qsize() == 0

    async def full(self) -> bool:
        """Whether the queue is at its ``maxsize`` now (a coroutine; never, without one)."""
        return self.maxsize > 0 and await self.qsize() >= self.maxsize

    async def statistics(self) -> QueueStatistics:
        """Sizes, waiting callers, counts and where the actor runs (a coroutine)."""
        return QueueStatistics(**await self._actor.statistics.remote())

    # -- putting -------------------------------------------------------------------------------

    async def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``item`` at the tail, waiting for room while the queue is full (a coroutine).

        After ``timeout`` seconds without room it raises :class:`Full`; ``block=False`` is
        ``put_nowait``. An ObjectRef item stays a ref (it is not resolved). If the caller is
        cancelled while it waits, the item is not put.
        """
        if not block:
            return await self.put_nowait(item)
        _check_timeout(timeout)
        token = _token()
        outcome = await self._call(self._actor.put.remote(token, (item,), timeout), token)
        if outcome == _TIMEOUT:
            raise Full(self.maxsize, timeout)

    async def put_nowait(self, item: Any) -> None:
        """Put ``item`` if there is room now, else raise :class:`Full` (a coroutine: one call
        to the actor, which does not wait for room)."""
        if await self._actor.put.remote(None, (item,), 0) == _TIMEOUT:
            raise Full(self.maxsize)

    async def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Put all of ``items`` in order if they all fit now; else put none and raise
        :class:`Full` (a coroutine)."""
        batch = tuple(items)
        if await self._actor.put.remote(None, batch, 0) == _TIMEOUT:
            raise Full(self.maxsize, count=len(batch))

    # -- getting -------------------------------------------------------------------------------

    async def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the item at the head, waiting for one while the queue is empty (a coroutine).

        After ``timeout`` seconds without an item it raises :class:`Empty`; ``block=False``
        is ``get_nowait``. If the caller is cancelled, no item is lost: one the actor had
        handed out goes back to the head of the queue.
        """
        if not block:
            return await self.get_nowait()
        _check_timeout(timeout)
        token = _token()
        outcome, items = await self._call(self._actor.get.remote(token, 1, timeout), token)
        if outcome == _TIMEOUT:
            raise Empty(timeout)
        return items[0]

    async def get_nowait(self) -> Any:
        """Take the item at the head if there is one, else raise :class:`Empty` (a
        coroutine: one call to the actor, which does not wait for an item)."""
        token = _token()
        outcome, items = await self._call(self._actor.get.remote(token, 1, 0), token)
        if outcome == _TIMEOUT:
            raise Empty()
        return items[0]

    async def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Take ``num_items`` items from the head if the queue holds that many now; else take
        none and raise :class:`Empty` (a coroutine)."""
        if not isinstance(num_items, int) or num_items < 0:
            raise ValueError(f"num_items must be an int >= 0, got {num_items!r}")
        token = _token()
        outcome, items = await self._call(self._actor.get.remote(token, num_items, 0), token)
        if outcome == _TIMEOUT:
            raise Empty(count=num_items)
        return list(items)

    # -- the end -------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Kill the queue's actor (a coroutine). Its items are gone; waiting and later calls,
        through any copy of this queue, raise ``af.ActorDiedError``."""
        await af.kill(self._actor)

    # -- cancellation ----------------------------------------------------------------------

    async def _call(self, ref: Any, token: str) -> Any:
        """The outcome of a put or get call; if the caller is cancelled meanwhile, first end
        the call at the actor and give back what it took (see the module docstring)."""
        try:
            return await ref
        except asyncio.CancelledError:
            await _to_the_end(self._settle(ref, token))
            raise

    async def _settle(self, ref: Any, token: str) -> None:
        try:
            async with asyncio.timeout(_SETTLE_S):
                ended = await self._actor.abort.remote(token)
                outcome = await ref
                got = isinstance(outcome, tuple)  # a get's (code, items), or a put's code
                code = outcome[0] if got else outcome
                if not ended and code != _ABORTED:  # it ended first: the actor noted the token
                    taken = outcome[1] if got and code == _OK else ()
                    await self._actor.settle.remote(token, taken)  # and takes the items back
        except af.ActorflowError:
            pass  # the queue is gone (or the call failed): nothing to give back to
        except TimeoutError:
            logger.error("a cancelled call to %r could not settle within %s s; "
                       "an item it took may be lost", self, _SETTLE_S)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be None or a number >= 0, got {timeout!r}")


def _token() -> str:
    return uuid.uuid4().hex


async def _to_the_end(aw: Awaitable[T]) -> T:
    """Await ``aw`` to its end even if the caller is cancelled again meanwhile (the caller is
    already handling a cancellation, which it re-raises afterwards)."""
    task = asyncio.ensure_future(aw)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise


@functools.cache
def _actor_class() -> ActorClass[Any]:
    return af.remote(_QueueActor)  # type: ignore[no-any-return]


class _QueueActor:
    """Holds a queue's items, its waiting gets and its waiting puts (all on one event loop).

    Invariants: gets wait only while ``items`` is empty, puts only while it is full (``settle``
    may leave it one over ``maxsize`` for a moment); each waits in arrival order. A waiting
    call is a future in ``getters`` or ``putters``, under the caller's token, resolved by the
    call that makes room or brings an item, by its timer, or by ``abort``.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.items: deque[Any] = deque()
        self.getters: dict[str, asyncio.Future[tuple[int, tuple[Any, ...]]]] = {}
        self.putters: dict[str, tuple[asyncio.Future[int], tuple[Any, ...]]] = {}
        self.aborted: set[str] = set()  # tokens aborted before their call came
        self.puts = 0
        self.gets = 0

    def _room(self, n: int) -> bool:
        return self.maxsize <= 0 or len(self.items) + n <= self.maxsize

    @staticmethod
    def _waiting(calls: dict[str, Any]) -> int:
        """Calls still waiting (an ended one leaves its entry when its coroutine resumes)."""
        return sum(1 for entry in calls.values()
                   if not (entry if isinstance(entry, asyncio.Future) else entry[0]).done())

    def _offer(self, item: Any) -> bool:
        """Hand ``item`` to the oldest waiting get, if there is one."""
        while self.getters:
            fut = self.getters.pop(next(iter(self.getters)))
            if not fut.done():
                self.gets += 1
                fut.set_result((_OK, (item,)))
                return True
        return False

    def _add(self, item: Any) -> None:
        self.puts += 1
        if not self._offer(item):
            self.items.append(item)

    def _take(self, n: int) -> tuple[Any, ...]:
        taken = tuple(self.items.popleft() for _ in range(n))
        self.gets += n
        while self.putters and self._room(1):  # the oldest waiting puts go in
            fut, batch = self.putters.pop(next(iter(self.putters)))
            if not fut.done():
                fut.set_result(_OK)
                for item in batch:
                    self._add(item)
        return taken

    def _give_back(self, items: tuple[Any, ...]) -> None:
        """Items taken out come back to the head, in their order (to waiting gets first)."""
        self.gets -= len(items)
        left = deque(items)
        while left and self._offer(left[0]):
            left.popleft()
        self.items.extendleft(reversed(left))

    async def put(self, token: str | None, batch: tuple[Any, ...], timeout: float | None) -> int:
        if token is not None and token in self.aborted:
            self.aborted.discard(token)
            return _ABORTED
        if not self._waiting(self.putters) and self._room(len(batch) - self._waiting(self.getters)):
            for item in batch:
                self._add(item)
            return _OK
        if timeout == 0 or token is None:
            return _TIMEOUT
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.putters[token] = (fut, batch)
        return int(await self._wait(fut, timeout, _TIMEOUT, self.putters, token))

    async def get(self, token: str, n: int, timeout: float | None
                  ) -> tuple[int, tuple[Any, ...]]:
        if token in self.aborted:
            self.aborted.discard(token)
            return (_ABORTED, ())
        if len(self.items) >= n:
            return (_OK, self._take(n))
        if timeout == 0 or n != 1:
            return (_TIMEOUT, ())
        fut: asyncio.Future[tuple[int, tuple[Any, ...]]] = (
            asyncio.get_running_loop().create_future())
        self.getters[token] = fut
        try:
            outcome: tuple[int, tuple[Any, ...]] = await self._wait(
                fut, timeout, (_TIMEOUT, ()), self.getters, token)
        except asyncio.CancelledError:  # the actor stops: an item handed to this call stays
            if fut.done() and not fut.cancelled() and fut.result()[0] == _OK:
                self._give_back(fut.result()[1])
            raise
        return outcome

    @staticmethod
    async def _wait(fut: asyncio.Future[Any], timeout: float | None, expired: Any,
                    waiting: dict[str, Any], token: str) -> Any:
        def expire() -> None:
            if not fut.done():
                fut.set_result(expired)

        timer = None if timeout is None else asyncio.get_running_loop().call_later(
            timeout, expire)
        try:
            return await fut
        finally:
            if timer is not None:
                timer.cancel()
            waiting.pop(token, None)

    async def abort(self, token: str) -> bool:
        """End the waiting call named ``token``: True if it was waiting. Else it has not come
        yet (it will end at once when it does) or has ended (its caller then ``settle``s)."""
        fut = self.getters.get(token)
        if fut is not None and not fut.done():
            fut.set_result((_ABORTED, ()))
            return True
        entry = self.putters.get(token)
        if entry is not None and not entry[0].done():
            entry[0].set_result(_ABORTED)
            return True
        self.aborted.add(token)
        return False

    async def settle(self, token: str, items: tuple[Any, ...]) -> None:
        """After an ``abort`` that came too late: forget the token, and put the items that
        the call took back at the head, in their order (the queue may hold one item over
        ``maxsize`` for a while)."""
        self.aborted.discard(token)
        self._give_back(items)

    async def qsize(self) -> int:
        return len(self.items)

    async def statistics(self) -> dict[str, Any]:
        context = af.get_runtime_context()
        return {"size": len(self.items), "maxsize": self.maxsize,
                "getters": self._waiting(self.getters), "putters": self._waiting(self.putters),
                "puts": self.puts, "gets": self.gets, "node_id": context.node_id,
                "pid": context.worker_pid}
