"""A bounded, single-consumer mailbox.

The mailbox is the only queue on the in-process message path, so it is written for that path
alone: a deque, at most one waiting getter (the actor's own loop), and a FIFO of waiting
putters. A full mailbox pushes back: ``put`` waits for room and ``put_nowait`` raises
:class:`~actorflow.MailboxFullError`; nothing is ever dropped silently. ``put_system`` is for the
runtime's own notices (termination notices, stop requests): they bypass the bound, because a
supervisor must hear that its child died even when its mailbox is full.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from actorflow._errors import MailboxFullError

__all__ = ["Mailbox", "MailboxClosed", "MailboxStatistics"]


class MailboxClosed(Exception):
    """Raised inside the runtime when a put meets a mailbox whose actor has terminated."""


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    """A snapshot of a mailbox: what waits now, what was processed, the deepest it has been."""

    queued: int
    processed: int
    max_depth: int
    capacity: int
    waiting_putters: int


class Mailbox:
    """Bounded FIFO with one consumer. Items are ``(message, reply)`` pairs."""

    __slots__ = (
        "_capacity",
        "_closed",
        "_getter",
        "_items",
        "_max_depth",
        "_processed",
        "_putters",
    )

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"mailbox capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._items: deque[Any] = deque()
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        self._processed = 0
        self._max_depth = 0
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def full(self) -> bool:
        return len(self._items) >= self._capacity

    def put_nowait(self, item: Any) -> None:
        """Append, or raise MailboxFullError when full (MailboxClosed when closed)."""
        items = self._items
        if self._closed:
            raise MailboxClosed
        if len(items) >= self._capacity:
            raise MailboxFullError(
                f"mailbox full ({self._capacity} messages queued); await tell() to wait for room"
            )
        items.append(item)
        depth = len(items)
        if depth > self._max_depth:
            self._max_depth = depth
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    async def put(self, item: Any) -> None:
        """Append, waiting (FIFO among waiting putters) while the mailbox is full."""
        while len(self._items) >= self._capacity or (self._putters and not self._closed):
            if self._closed:
                raise MailboxClosed
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            try:
                await fut
            except BaseException:
                if fut in self._putters:
                    self._putters.remove(fut)
                elif not self._closed:
                    self._wake_putter()  # we were woken but won't use the room: pass it on
                raise
            if len(self._items) < self._capacity:
                break
        self.put_nowait(item)

    def put_system(self, item: Any, *, front: bool = False) -> None:
        """Runtime notices: never blocked by the bound. ``front`` jumps the queue."""
        if self._closed:
            raise MailboxClosed
        if front:
            self._items.appendleft(item)
        else:
            self._items.append(item)
        getter = self._getter
        if getter is not None:
            self._getter = None
            if not getter.done():
                getter.set_result(None)

    def get_nowait(self) -> Any:
        """Pop the oldest item; IndexError when empty."""
        item = self._items.popleft()
        self._processed += 1
        if self._putters:
            self._wake_putter()
        return item

    async def get(self) -> Any:
        """Wait for and pop the oldest item."""
        while not self._items:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getter = fut
            try:
                await fut
            finally:
                if self._getter is fut:
                    self._getter = None
        return self.get_nowait()

    def _wake_putter(self) -> None:
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def close(self) -> list[Any]:
        """Refuse further puts, wake waiting putters (they raise MailboxClosed), and return
        the items still queued so the caller can answer them."""
        self._closed = True
        left = list(self._items)
        self._items.clear()
        for fut in self._putters:
            if not fut.done():
                fut.set_result(None)
        self._putters.clear()
        return left

    def __iter__(self) -> Iterator[Any]:  # pragma: no cover - debugging aid
        return iter(list(self._items))

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            queued=len(self._items),
            processed=self._processed,
            max_depth=self._max_depth,
            capacity=self._capacity,
            waiting_putters=len(self._putters),
        )
