"""Streaming generators: a remote function or actor method that ``yield``\\s.

``.remote()`` on one returns an :class:`ObjectRefGenerator` at once; each value the generator
yields becomes an ObjectRef that the caller owns, and ``async for ref in gen`` hands them over
in order as they are made, while the task still runs.

How the values travel: the worker runs :func:`pump_for`'s wrapper in the generator's place. It
encodes each value as it would a task's result (inline when small, shared memory when large)
and asks the caller's :class:`~actorflow.cluster.core.ObjectOwner` to take it
(:class:`StreamItem`); the owner files it under an object id of the stream and answers with the
*credit*: the first index it may not send yet (with ``generator_backpressure=B``, the index of
the next value the caller takes plus B; without, unbounded). The worker keeps up to
``WINDOW`` values in flight and, out of credit, parks on :class:`StreamWait` until the caller
takes more. The task's own result is the number of values sent; it is answered only once every
value was taken in, so when the count arrives the stream is complete.

Faults: a retried task (its worker died) sends its values again from the first; the owner
keeps the first copy of each index and drops repeats. An error raised by the generator reaches
the caller as one more ref, after the values sent before it, which raises that error when
read. A caller that drops its generator before the end releases the worker: the owner answers
``-1`` to its next ask and the worker closes the user's generator and returns.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actorflow.cluster.protocol import Failed, Payload
from actorflow.objects.ref import ObjectRef, current_core

if TYPE_CHECKING:
    from actorflow.cluster.core import Core
    from actorflow.runtime import ActorRef

__all__ = ["ObjectRefGenerator", "StreamItem", "StreamWait", "accept", "is_generator",
           "pump_for", "wait"]

#: Values a worker keeps in flight to the owner before it waits for the first one's answer.
WINDOW = 64
#: The credit of a stream without backpressure.
_UNBOUNDED = 1 << 62
#: The answer that tells a worker its caller is gone: it stops.
_STOP = -1


@dataclass(frozen=True, slots=True)
class StreamItem:
    """Worker -> owner: value ``index`` of stream ``stream_id``; answered with the credit."""

    stream_id: str
    index: int
    payload: Payload


@dataclass(frozen=True, slots=True)
class StreamWait:
    """Worker -> owner: answer once value ``index`` of the stream may be sent (the credit), or
    -1 when the caller is gone."""

    stream_id: str
    index: int


def is_generator(fn: Any) -> bool:
    """Does calling ``fn`` make a generator (plain or async)?"""
    return inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)


# -- the owner's side --------------------------------------------------------------------------


class _Stream:
    """What the owner knows of one stream: values taken in and not yet handed over, the index
    of the next one to hand over, senders waiting for credit, and how the task ended."""

    __slots__ = ("backpressure", "changed", "count", "ended", "failed", "next", "refs",
                 "stopped", "waits")

    def __init__(self, backpressure: int | None) -> None:
        self.backpressure = backpressure
        self.refs: dict[int, ObjectRef] = {}
        self.next = 0
        self.waits: list[tuple[int, asyncio.Future[int]]] = []
        self.changed: asyncio.Future[None] | None = None
        self.ended = False  # the task's result came
        self.failed = False  # ... and it is an error
        self.count: int | None = None
        self.stopped = False  # the caller dropped the generator

    def credit(self) -> int:
        if self.stopped:
            return _STOP
        return _UNBOUNDED if self.backpressure is None else self.next + self.backpressure

    def wake(self) -> None:
        changed = self.changed
        if changed is not None and not changed.done():
            changed.set_result(None)
        if self.waits:
            credit = self.credit()
            keep = []
            for index, fut in self.waits:
                if credit == _STOP or index < credit:
                    if not fut.done():
                        fut.set_result(credit)
                else:
                    keep.append((index, fut))
            self.waits = keep


_streams: weakref.WeakKeyDictionary[Core, dict[str, _Stream]] = weakref.WeakKeyDictionary()


def _table(core: Core) -> dict[str, _Stream]:
    table = _streams.get(core)
    if table is None:
        table = _streams[core] = {}
    return table


def accept(core: Core, item: StreamItem) -> int:
    """(Owner, on the loop.) Take value ``item.index`` in (once); answer the credit."""
    stream = _table(core).get(item.stream_id)
    object_id = f"{item.stream_id}.y{item.index}"
    if stream is None or stream.stopped:
        core.objects.resolve(object_id, item.payload)  # nobody wants it: freed here
        return _STOP
    if item.index < stream.next or item.index in stream.refs:  # a retried task's repeat
        core.objects.resolve(object_id, item.payload)  # (its first copy is kept)
        return stream.credit()
    ref = core.new_pending(object_id)
    core.objects.resolve(object_id, item.payload)
    stream.refs[item.index] = ref
    stream.wake()
    return stream.credit()


async def wait(core: Core, message: StreamWait) -> int:
    """(Owner.) Answer the credit once value ``message.index`` may be sent."""
    stream = _table(core).get(message.stream_id)
    if stream is None or stream.stopped:
        return _STOP
    credit = stream.credit()
    if message.index < credit:
        return credit
    fut: asyncio.Future[int] = core.loop.create_future()
    stream.waits.append((message.index, fut))
    return await fut


class ObjectRefGenerator:
    """What ``.remote()`` on a generator returns: ``async for ref in gen`` yields an ObjectRef
    per value, in order, as the task makes them (``await ref`` reads it). An error raised in
    the generator comes as one last ref, which raises it when read. ``af.cancel(gen)`` cancels
    the task. Dropping the generator before the end stops the task at its next value."""

    __slots__ = ("__weakref__", "_core", "_given_error", "_id", "_stream", "_task_ref")

    def __init__(self, core: Core, stream_id: str, task_ref: ObjectRef,
                 backpressure: int | None) -> None:
        self._core = core
        self._id = stream_id
        self._task_ref = task_ref
        self._given_error = False
        stream = self._stream = _Stream(backpressure)
        _table(core)[stream_id] = stream
        core.when_ready(task_ref, functools.partial(_ended, core, stream_id, stream))

    @property
    def task_ref(self) -> ObjectRef:
        """The ref of the generator task itself: its value is the number of values made."""
        return self._task_ref

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef:
        stream = self._stream
        while True:
            ref = stream.refs.pop(stream.next, None)
            if ref is not None:
                stream.next += 1
                stream.wake()
                return ref
            if stream.ended:
                if stream.failed and not self._given_error:
                    self._given_error = True
                    return self._task_ref  # reading it raises the generator's error
                self._forget()
                raise StopAsyncIteration
            changed = stream.changed = self._core.loop.create_future()
            await changed

    def completed(self) -> bool:
        """Has the task ended (every value it made taken in here)?"""
        return self._stream.ended

    def _forget(self) -> None:
        _table(self._core).pop(self._id, None)

    def __del__(self) -> None:
        stream = getattr(self, "_stream", None)
        if stream is None or stream.stopped:
            return
        core = self._core
        try:
            core.loop.call_soon_threadsafe(_stop, core, self._id, stream)
        except RuntimeError:  # the loop is closed: nothing runs any more
            pass

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._id})"


def _ended(core: Core, stream_id: str, stream: _Stream, payload: Payload) -> None:
    """(Owner.) The generator task's result came: the count of values, or its error."""
    stream.ended = True
    if type(payload) is Failed:
        stream.failed = True
    else:
        try:
            stream.count = int(core.materialize(payload))
        except Exception:
            stream.failed = True
    stream.wake()
    if stream.stopped:
        _table(core).pop(stream_id, None)


def _stop(core: Core, stream_id: str, stream: _Stream) -> None:
    """(Owner, on the loop.) The caller dropped its generator: free what it did not take, let
    the worker go."""
    stream.stopped = True
    stream.refs.clear()
    stream.wake()
    if stream.ended:
        _table(core).pop(stream_id, None)


# -- the worker's side -------------------------------------------------------------------------

_DONE = object()


class _Sender:
    """Sends one stream's values to its owner, within the owner's credit."""

    def __init__(self, core: Core, owner: ActorRef, stream_id: str,
                 backpressure: int | None) -> None:
        self.core = core
        self.owner = owner
        self.stream_id = stream_id
        self.index = 0
        self.credit = _UNBOUNDED if backpressure is None else backpressure
        self.stopped = False
        self.pending: deque[asyncio.Future[int]] = deque()

    def _took(self, credit: int) -> None:
        if credit == _STOP:
            self.stopped = True
        elif credit > self.credit:
            self.credit = credit

    async def send(self, value: Any, what: str) -> bool:
        """Send the next value (waiting for credit first); False: the caller is gone."""
        index = self.index
        while index >= self.credit and not self.stopped:
            if self.pending:
                self._took(await self.pending.popleft())
            else:
                self._took(await self.owner.ask(StreamWait(self.stream_id, index)))
        if self.stopped:
            return False
        payload = self.core.encode(value, f"value {index} of {what}", owned=False)
        answer: asyncio.Future[int] = self.core.loop.create_future()
        await self.owner.deliver(StreamItem(self.stream_id, index, payload), answer)
        self.pending.append(answer)
        self.index += 1
        if len(self.pending) >= WINDOW:
            self._took(await self.pending.popleft())
        return not self.stopped

    async def flush(self) -> None:
        """Wait until the owner has taken every value sent."""
        while self.pending:
            self._took(await self.pending.popleft())

    def abandon(self) -> None:
        for fut in self.pending:
            fut.cancel()
        self.pending.clear()


def pump_for(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    """The ``async def`` a worker runs in place of generator function ``fn`` (``what`` names
    it in errors): called as ``(owner, stream_id, backpressure, *args, **kwargs)``, it sends
    each value ``fn(*args, **kwargs)`` yields to ``owner`` and returns how many it sent."""

    async def pump(owner: ActorRef, stream_id: str, backpressure: int | None,
                   *args: Any, **kwargs: Any) -> int:
        sender = _Sender(current_core(), owner, stream_id, backpressure)
        gen = fn(*args, **kwargs)
        try:
            if inspect.isasyncgen(gen):
                try:
                    async for value in gen:
                        if not await sender.send(value, what):
                            break
                finally:
                    await gen.aclose()
            else:
                try:
                    while True:  # each step on a thread: the user's code may block
                        value = await asyncio.to_thread(next, gen, _DONE)
                        if value is _DONE or not await sender.send(value, what):
                            break
                finally:
                    gen.close()
            await sender.flush()
        except asyncio.CancelledError:
            sender.abandon()
            raise
        except BaseException:
            try:  # what came before the error is delivered before it
                await sender.flush()
            except BaseException:
                sender.abandon()
            raise
        return sender.index

    pump.__qualname__ = pump.__name__ = getattr(fn, "__name__", "generator")
    return pump
