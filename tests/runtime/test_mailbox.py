"""The bounded mailbox on its own: FIFO, backpressure, close, statistics."""

from __future__ import annotations

import asyncio

import pytest
from rt_support import suspended_in, within

from actorflow import MailboxFullError
from actorflow.runtime import Mailbox, MailboxStatistics
from actorflow.runtime.mailbox import MailboxClosed


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1, got 0"):
        Mailbox(0)


async def test_fifo_and_statistics() -> None:
    box = Mailbox(3)
    assert box.statistics() == MailboxStatistics(
        queued=0, processed=0, max_depth=0, capacity=3, waiting_putters=0
    )
    for i in range(3):
        box.put_nowait(i)
    assert box.full()
    assert [box.get_nowait(), await within(box.get())] == [0, 1]
    box.put_nowait(3)
    assert box.statistics() == MailboxStatistics(
        queued=2, processed=2, max_depth=3, capacity=3, waiting_putters=0
    )
    assert [box.get_nowait(), box.get_nowait()] == [2, 3]
    assert box.statistics().processed == 4
    assert box.statistics().max_depth == 3
    with pytest.raises(IndexError):
        box.get_nowait()


async def test_put_nowait_on_full_raises_and_keeps_everything() -> None:
    box = Mailbox(2)
    box.put_nowait("a")
    box.put_nowait("b")
    with pytest.raises(MailboxFullError, match=r"mailbox full \(2 messages queued\)"):
        box.put_nowait("c")
    assert len(box) == 2
    assert [box.get_nowait(), box.get_nowait()] == ["a", "b"]


async def test_put_waits_for_room_and_putters_are_fifo() -> None:
    box = Mailbox(1)
    box.put_nowait(0)
    putters = [await suspended_in(box.put(i)) for i in (1, 2, 3)]
    assert not any(p.done() for p in putters)
    assert box.statistics().waiting_putters == 3
    got = []
    for _ in range(4):
        got.append(await within(box.get()))
    await within(asyncio.gather(*putters))
    assert got == [0, 1, 2, 3]
    assert box.statistics() == MailboxStatistics(
        queued=0, processed=4, max_depth=1, capacity=1, waiting_putters=0
    )


async def test_cancelled_putter_passes_the_room_on() -> None:
    box = Mailbox(1)
    box.put_nowait(0)
    first = await suspended_in(box.put(1))
    second = await suspended_in(box.put(2))
    box.get_nowait()  # wakes `first`, which is then cancelled before it can use the room
    first.cancel()
    await within(second)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert box.get_nowait() == 2
    assert box.statistics().waiting_putters == 0


async def test_get_waits_for_an_item() -> None:
    box = Mailbox(2)
    getter = await suspended_in(box.get())
    assert not getter.done()
    box.put_nowait("x")
    assert await within(getter) == "x"


async def test_close_returns_queued_items_and_fails_waiting_putters() -> None:
    box = Mailbox(1)
    box.put_nowait("queued")
    putter = await suspended_in(box.put("waiting"))
    assert box.close() == ["queued"]
    with pytest.raises(MailboxClosed):
        await within(putter)
    assert box.closed
    with pytest.raises(MailboxClosed):
        box.put_nowait("late")
    with pytest.raises(MailboxClosed):
        box.put_system("late")
    assert box.statistics().queued == 0


async def test_put_system_ignores_the_bound_and_can_jump_the_queue() -> None:
    box = Mailbox(1)
    box.put_nowait("user")
    box.put_system("notice")
    box.put_system("urgent", front=True)
    assert [box.get_nowait() for _ in range(3)] == ["urgent", "user", "notice"]
