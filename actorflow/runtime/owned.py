"""Background coroutines with an owner: the one helper for work that outlives a call.

No coroutine is started and forgotten: an object that needs work in the background makes an
:class:`OwnedTasks`, starts the work with :meth:`OwnedTasks.spawn`, and ends it all with
:meth:`OwnedTasks.close` (cancelled, or let finish, and awaited). A task that fails is
logged with its owner's name; its error is never lost with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any

__all__ = ["OwnedTasks"]


class OwnedTasks:
    """The running background tasks of one owner (see the module docstring)."""

    __slots__ = ("_closed", "_log", "_owner", "_tasks")

    def __init__(self, owner: str, log: logging.Logger) -> None:
        self._owner = owner
        self._log = log
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None
              ) -> asyncio.Task[Any] | None:
        """Run ``coro`` as a task of this owner; None (and ``coro`` closed, never run) once
        :meth:`close` has begun."""
        if self._closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("background work of %s failed (%s)", self._owner,
                            task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    async def close(self, *, cancel: bool = True) -> None:
        """Take no more work; cancel what runs (unless ``cancel`` is False: let it finish),
        and wait until every task has ended, those started meanwhile included."""
        self._closed = True
        while self._tasks:
            pending = list(self._tasks)
            if cancel:
                for task in pending:
                    task.cancel()
            await asyncio.wait(pending)
