"""Where plain-``def`` user code runs: on a thread of its own, or on the loop when it is short.

Plain ``def`` tasks and actor methods must not block the worker's loop (heartbeats, cancels and
other messages go on while they run), so by default they run on one thread owned by the worker
actor, one call at a time, in order: the call goes through a ``queue.SimpleQueue`` and its
result comes back with one ``call_soon_threadsafe``.

That hand-off is the largest fixed cost of a short call: two thread wake-ups and a write to the
loop's self-pipe, 60-90 us per call on a small VM, where the call itself may take 0.1 us. So a
:class:`SyncRunner` also learns, per callable, whether it is *short*: a callable whose first
``PROBE_RUNS`` calls each ran under ``INLINE_MAX_S`` on the thread runs on the loop itself from
then on, with no hand-off. Every inline call is timed too, and the first call of a callable
that takes ``INLINE_MAX_S`` or more (on the loop or on the thread) sends it back to the thread
for good. So the loop is blocked by at most one over-long call per callable: code that always
runs in microseconds costs microseconds, and code that may take long keeps the thread.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Hashable
from contextvars import Context
from typing import Any

__all__ = ["INLINE_MAX_S", "PROBE_RUNS", "Outcome", "SyncRunner", "run_one"]

#: A callable whose calls all ran under this many seconds may run on the loop (see above).
INLINE_MAX_S = 0.001
#: Calls a callable makes on the thread, each under INLINE_MAX_S, before it runs on the loop.
PROBE_RUNS = 2

#: What one call did: ``(ok, value or exception, seconds it ran)``.
Outcome = tuple[bool, Any, float]

_BANNED = -1  # a _stats value: this callable ran long once; it stays on the thread


def run_one(ctx: Context | None, fn: Callable[..., Any], args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> Outcome:
    """Call ``fn`` (in ``ctx`` when given), catching what it raises; time it."""
    start = time.perf_counter()
    try:
        value = fn(*args, **kwargs) if ctx is None else ctx.run(fn, *args, **kwargs)
        ok = True
    except BaseException as exc:  # the user's code raised: the awaiting task gets it
        value, ok = exc, False
    return ok, value, time.perf_counter() - start


def _settle(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():  # the awaiting task was cancelled meanwhile
        fut.set_result(value)


class SyncRunner:
    """One daemon thread, owned by a worker actor, plus the per-callable inline policy.

    ``await runner.run(ctx, fn, args, kwargs)`` runs one call on the thread;
    ``runner.inline(key)`` says whether the callable ``key`` names may run on the loop instead,
    and ``runner.record(key, seconds)`` feeds the policy after each call, wherever it ran.
    """

    def __init__(self, name: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        #: key -> short runs so far, or _BANNED
        self._stats: dict[Hashable, int] = {}

    # -- the inline policy ------------------------------------------------------------------------

    def inline(self, key: Hashable) -> bool:
        """True when the callable ``key`` has proved short: run it on the loop."""
        return self._stats.get(key, 0) >= PROBE_RUNS

    def record(self, key: Hashable, seconds: float) -> None:
        """One call of ``key`` ran ``seconds``."""
        runs = self._stats.get(key, 0)
        if runs == _BANNED:
            return
        self._stats[key] = _BANNED if seconds >= INLINE_MAX_S else runs + 1

    # -- the thread -----------------------------------------------------------------------------

    def run(self, ctx: Context, fn: Callable[..., Any], args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> asyncio.Future[Outcome]:
        """Run one call on the thread; the future's result is its :data:`Outcome`."""
        fut: asyncio.Future[Outcome] = self._loop.create_future()
        self._queue.put((ctx, fn, args, kwargs, fut))
        return fut

    def run_many(self, calls: list[tuple[Context, Callable[..., Any], tuple[Any, ...],
                                        dict[str, Any]]]) -> asyncio.Future[list[Outcome]]:
        """Run several calls back to back in one hop; the future's result is the list of
        their outcomes, in order (an exception of one call does not stop the others)."""
        fut: asyncio.Future[list[Outcome]] = self._loop.create_future()
        self._queue.put((None, calls, None, None, fut))
        return fut

    def close(self) -> None:
        """Stop after the call in hand (a call that never returns keeps the daemon thread)."""
        self._queue.put(None)

    def _main(self) -> None:
        loop = self._loop
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            ctx, fn, args, kwargs, fut = item
            if ctx is None:  # a batch: fn is the list of calls
                value: Any = [run_one(*call) for call in fn]
            else:
                value = run_one(ctx, fn, args, kwargs)
            # hold nothing of this call while waiting for the next one: its arguments may be
            # views of shared memory that their owner reuses once no one holds them
            del item, ctx, fn, args, kwargs
            try:
                loop.call_soon_threadsafe(_settle, fut, value)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return
            del fut, value
