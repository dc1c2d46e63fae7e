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

Faults: a task whose worker died runs again (within ``max_retries``) only while none of its
values was read: the values the dead attempt sent are dropped and the new attempt makes them
again; once one was read, the caller gets ``af.WorkerCrashedError`` after the values it had.
(A late repeat of a value already taken in is dropped: the first copy is kept.) An error
raised by the generator reaches the caller as one more ref, after the values sent before it,
which raises that error when read. A caller that drops its generator before the end (or
cancels it: ``af.cancel(gen)``) releases the worker: the owner answers ``-1`` to its next ask
and the worker closes the user's generator and returns. A streaming actor call retried after
a restart (``max_task_retries``) sends its values again; those already taken in are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading
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

__all__ = ["ObjectRefGenerator", "StreamItem", "StreamWait", "accept", "close", "is_generator",
           "pump_for", "wait"]

#: The most values a worker sends in one message (more wait for the owner's answer).
BATCH = 256
#: The most values a plain generator's thread makes ahead of the worker's loop.
WINDOW = 256
#: The credit of a stream without backpressure.
_UNBOUNDED = 1 << 62
#: The answer that tells a worker its caller is gone: it stops.
_STOP = -1


@dataclass(frozen=True, slots=True)
class StreamItem:
    """Worker -> owner: values ``index``, ``index + 1``, ... of stream ``stream_id`` (one
    payload each); answered with the credit."""

    stream_id: str
    index: int
    payloads: tuple[Payload, ...]


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
    """(Owner, on the loop.) Take the values in (each index once); answer the credit."""
    stream = _table(core).get(item.stream_id)
    prefix = item.stream_id + ".y"
    gone = stream is None or stream.stopped
    for index, payload in enumerate(item.payloads, item.index):
        object_id = prefix + str(index)
        if gone or index < stream.next or index in stream.refs:  # type: ignore[union-attr]
            # nobody wants it, or a retried task's repeat (the first copy is kept)
            core.objects.resolve(object_id, payload)  # (no entry: its segment is freed)
            continue
        ref = core.new_pending(object_id)
        core.objects.resolve(object_id, payload)
        stream.refs[index] = ref  # type: ignore[union-attr]
    if stream is None or gone:
        return _STOP
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
        core.reads.when_ready(task_ref, functools.partial(_ended, core, stream_id, stream))

    def rerun_check(self) -> Callable[[], bool]:
        """What the submitter asks before it runs the task again after its worker died: only
        when no value was read yet (the values of the attempt that died are dropped; the new
        one makes them again). It holds the stream, not this generator, which may be dropped."""
        return functools.partial(_may_rerun, self._stream)

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


def _may_rerun(stream: _Stream) -> bool:
    if stream.next > 0 or stream.stopped:
        return False
    stream.refs.clear()
    return True


def _stop(core: Core, stream_id: str, stream: _Stream) -> None:
    """(Owner, on the loop.) The caller dropped its generator: free what it did not take, let
    the worker go."""
    stream.stopped = True
    stream.refs.clear()
    stream.wake()
    if stream.ended:
        _table(core).pop(stream_id, None)


def close(core: Core) -> None:
    """(Owner, on the loop.) This process's runtime closes: every stream it reads stops, and
    the workers waiting to send to it are released."""
    for stream_id, stream in list(_table(core).items()):
        _stop(core, stream_id, stream)
    _streams.pop(core, None)


# -- the worker's side -------------------------------------------------------------------------

_DONE = object()


class _Sender:
    """Sends one stream's values to its owner, within the owner's credit, in batches: a value
    goes at once when no batch is on its way, else with the next batch, which leaves when the
    owner answers the one on its way (or once BATCH values wait)."""

    def __init__(self, core: Core, owner: ActorRef, stream_id: str,
                 backpressure: int | None, what: str) -> None:
        self.core = core
        self.owner = owner
        self.stream_id = stream_id
        self.what = what
        self.index = 0  # values taken from the generator
        self.credit = _UNBOUNDED if backpressure is None else backpressure
        self.stopped = False
        self.error: BaseException | None = None
        self.batch: list[Payload] = []
        self.first = 0  # the index of batch[0]
        self.inflight = 0
        self.changed: asyncio.Future[None] | None = None
        #: called when the credit grew (a plain generator's thread may go on)
        self.on_credit: Callable[[], None] | None = None

    def _wake(self) -> None:
        changed = self.changed
        if changed is not None and not changed.done():
            changed.set_result(None)

    def _took(self, credit: int) -> None:
        """The owner answered ``credit`` (-1: the caller is gone)."""
        if credit == _STOP:
            self.stopped = True
        elif credit > self.credit:
            self.credit = credit
            if self.on_credit is not None:
                self.on_credit()

    def _answered(self, fut: asyncio.Future[int]) -> None:
        self.inflight -= 1
        if fut.cancelled():
            self.error = self.error or asyncio.CancelledError()
        elif (exc := fut.exception()) is not None:
            self.error = self.error or exc
        else:
            self._took(fut.result())
        if self.batch and not self.stopped and self.error is None:
            self._ship()
        self._wake()

    def _ship(self) -> None:
        batch, self.batch = tuple(self.batch), []
        first, self.first = self.first, self.first + len(batch)
        self.inflight += 1
        self.owner.ask_nowait(StreamItem(self.stream_id, first, batch)).add_done_callback(
            self._answered)

    async def _change(self) -> None:
        """Wait until an answer comes (or, with nothing on its way, for more credit)."""
        if self.inflight:
            self.changed = self.core.loop.create_future()
            await self.changed
        else:
            self._took(await self.owner.ask(StreamWait(self.stream_id, self.index)))
        if self.error is not None:
            raise self.error

    async def room(self) -> bool:
        """Wait until the next value may be sent; False: the caller is gone."""
        while self.index >= self.credit and not self.stopped:
            await self._change()
        return not self.stopped

    async def send(self, value: Any) -> bool:
        """Send the next value (waiting for credit first); False: the caller is gone."""
        if not await self.room():
            return False
        self.batch.append(self.core.encode(value, f"value {self.index} of {self.what}",
                                           owned=False))
        self.index += 1
        if not self.inflight:
            self._ship()
        elif len(self.batch) >= BATCH:
            await self._change()
        return not self.stopped

    async def flush(self) -> None:
        """Wait until the owner has taken every value sent."""
        while (self.batch or self.inflight) and not self.stopped:
            if self.batch and not self.inflight:
                self._ship()
            await self._change()
        if self.error is not None:
            raise self.error


class _ThreadFeed:
    """A plain generator run on a thread of its own, its values handed to the loop in
    batches: the thread makes value ``i`` only while ``i`` is under the sender's credit and
    fewer than WINDOW values wait, so it runs no further ahead than an async generator would,
    and costs no thread hop per value."""

    def __init__(self, gen: Any, sender: _Sender) -> None:
        self.gen = gen
        self.sender = sender
        self.loop = asyncio.get_running_loop()
        self.cond = threading.Condition()
        self.ready: deque[Any] = deque()
        self.made = 0  # values the thread made
        self.done = False  # the generator ended, raised, or was stopped
        self.error: BaseException | None = None
        self.stopped = False
        self.waiter: asyncio.Future[None] | None = None
        sender.on_credit = self.more

    def blocked(self) -> bool:
        """(Loop.) Does the thread wait for credit?"""
        return self.made >= self.sender.credit

    def run(self) -> None:
        """(On the thread.)"""
        try:
            while True:
                with self.cond:
                    while not self.stopped and (len(self.ready) >= WINDOW
                                                or self.made >= self.sender.credit):
                        self.cond.wait()
                    if self.stopped:
                        return
                value = next(self.gen, _DONE)
                if value is _DONE:
                    return
                with self.cond:
                    self.ready.append(value)
                    self.made += 1
                    wake = len(self.ready) == 1
                if wake:
                    self.loop.call_soon_threadsafe(self._wake)
        except BaseException as exc:
            self.error = exc
        finally:
            self.gen.close()
            with self.cond:
                self.done = True
            with contextlib.suppress(RuntimeError):  # (a closed loop: nobody waits)
                self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> list[Any]:
        """(Loop.) The values made since the last take."""
        with self.cond:
            batch = list(self.ready)
            self.ready.clear()
            self.cond.notify()
        return batch

    async def wait(self) -> None:
        """(Loop.) Until the thread made a value or ended."""
        with self.cond:
            if self.ready or self.done:
                return
            self.waiter = self.loop.create_future()
        await self.waiter

    def more(self) -> None:
        """The credit grew: the thread may go on."""
        with self.cond:
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()


def pump_for(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    """The ``async def`` a worker runs in place of generator function ``fn`` (``what`` names
    it in errors): called as ``(owner, stream_id, backpressure, *args, **kwargs)``, it sends
    each value ``fn(*args, **kwargs)`` yields to ``owner`` and returns how many it sent. A
    plain generator runs on a thread of its own (:class:`_ThreadFeed`)."""

    async def pump(owner: ActorRef, stream_id: str, backpressure: int | None,
                   *args: Any, **kwargs: Any) -> int:
        sender = _Sender(current_core(), owner, stream_id, backpressure, what)
        gen = fn(*args, **kwargs)
        try:
            if inspect.isasyncgen(gen):
                try:
                    async for value in gen:
                        if not await sender.send(value):
                            break
                finally:
                    await gen.aclose()
            else:
                await _pump_plain(gen, sender)
        except asyncio.CancelledError:
            raise
        except BaseException:
            await sender.flush()  # what came before the error is delivered before it
            raise
        await sender.flush()
        return sender.index

    pump.__qualname__ = pump.__name__ = getattr(fn, "__name__", "generator")
    return pump


async def _pump_plain(gen: Any, sender: _Sender) -> None:
    feed = _ThreadFeed(gen, sender)
    thread = asyncio.get_running_loop().run_in_executor(
        None, contextvars.copy_context().run, feed.run)
    try:
        while True:
            for value in feed.take():
                if not await sender.send(value):
                    return
            if feed.done and not feed.ready:
                break
            if feed.blocked():
                if not await sender.room():
                    return
                feed.more()
            else:
                await feed.wait()
        if feed.error is not None:
            raise feed.error
    finally:
        feed.stop()
        await asyncio.shield(thread)  # (it ends at its next step: let it, then go on)
