"""A thread that runs plain-``def`` user code for an event loop, one call at a time, in order.

Plain ``def`` tasks and actor methods must not block the worker's loop (heartbeats, cancels and
other messages go on while they run), so they run here. This is cheaper per call than a
``ThreadPoolExecutor`` hand-off (no concurrent future, no chaining, no pool bookkeeping): the
call goes through a ``queue.SimpleQueue`` and its result comes back with one
``call_soon_threadsafe``; profiles put the executor's hand-off first among a worker's costs.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from contextvars import Context
from typing import Any

__all__ = ["SyncRunner"]


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the awaiting task was cancelled meanwhile
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class SyncRunner:
    """One daemon thread, owned by a worker actor: ``await runner.run(ctx, fn, *args)``."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def run(self, ctx: Context, fn: Callable[..., Any], *args: Any, **kwargs: Any
            ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((ctx, fn, args, kwargs, fut))
        return fut

    def close(self) -> None:
        """Stop after the call in hand (a call that never returns keeps the daemon thread)."""
        self._queue.put(None)

    def run_many(self, calls: list[tuple[Context, Callable[..., Any], tuple[Any, ...],
                                        dict[str, Any]]]) -> asyncio.Future[Any]:
        """Run several calls back to back in one hop; the future's result is a list of
        ``(ok, value)`` in order (an exception of one call does not stop the others)."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put((None, calls, None, None, fut))
        return fut

    def _main(self) -> None:
        loop = self._loop
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            ctx, fn, args, kwargs, fut = item
            if ctx is None:  # a batch: fn is the list of calls
                value: Any = [_one(*call) for call in fn]
                ok = True
            else:
                ok, value = _one(ctx, fn, args, kwargs)
            try:
                loop.call_soon_threadsafe(_settle, fut, ok, value)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return


def _one(ctx: Context, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
         ) -> tuple[bool, Any]:
    try:
        return True, ctx.run(fn, *args, **kwargs)
    except BaseException as exc:  # the user's code raised: the awaiting task gets it
        return False, exc
