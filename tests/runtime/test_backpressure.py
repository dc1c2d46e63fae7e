"""A full mailbox pushes back: tell waits, tell_nowait raises, nothing is dropped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rt_support import Boom, Probe, hold, suspended_in, within

from actorflow import ActorDiedError, MailboxFullError
from actorflow.runtime import ActorSystem, MailboxStatistics


async def test_tell_waits_until_the_actor_drains(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = await system.spawn(Probe, log, mailbox_size=2)
    busy, release = await hold(ref)  # taken out of the mailbox: the actor is blocked on it
    await within(ref.tell(("rec", 1)))
    await within(ref.tell(("rec", 2)))
    with pytest.raises(MailboxFullError):
        ref.tell_nowait(("rec", "refused"))
    blocked = await suspended_in(ref.tell(("rec", 3)))
    blocked_ask = await suspended_in(ref.ask(("rec", 4)))
    assert not blocked.done() and not blocked_ask.done()
    assert ref.statistics() == MailboxStatistics(
        queued=2, processed=1, max_depth=2, capacity=2, waiting_putters=2
    )
    release.set()  # the actor drains; room appears; the waiting sends go in, in order
    await within(blocked)
    assert await within(blocked_ask) == 4
    assert await within(busy) == "released"
    got = [e[2] for e in await within(ref.ask("log")) if e[0] == "got"]
    assert got == [1, 2, 3, 4]  # "refused" was refused loudly, everything else arrived
    stats = ref.statistics()
    assert stats is not None
    assert (stats.queued, stats.waiting_putters, stats.max_depth) == (0, 0, 2)


async def test_many_senders_through_a_tiny_mailbox_lose_nothing(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = await system.spawn(Probe, log, mailbox_size=1)
    senders, per_sender = 8, 50
    refused = 0

    async def sender(s: int) -> None:
        nonlocal refused
        for i in range(per_sender):
            try:
                ref.tell_nowait(("rec", (s, i, "nowait")))
            except MailboxFullError:
                refused += 1
            await ref.tell(("rec", (s, i, "tell")))

    await within(asyncio.gather(*(sender(s) for s in range(senders))))
    got = [e[2] for e in await within(ref.ask("log")) if e[0] == "got"]
    tells = [g for g in got if g[2] == "tell"]
    nowaits = [g for g in got if g[2] == "nowait"]
    assert len(tells) == senders * per_sender
    assert len(nowaits) + refused == senders * per_sender
    assert refused > 0  # the mailbox really was full at times
    stats = ref.statistics()
    assert stats is not None
    assert stats.max_depth == 1
    assert stats.processed == len(got) + 1  # + the "log" ask
    assert system.statistics()["dead_letters"] == 0


async def test_a_blocked_tell_fails_when_the_actor_dies(system: ActorSystem) -> None:
    ref = await system.spawn(Probe, mailbox_size=1)
    busy, release = await hold(ref)
    boom = Boom("while you waited")
    crash = await suspended_in(ref.ask(("crash", boom)))  # queued: the mailbox is full
    blocked = await suspended_in(ref.tell(("rec", "waits for room")))
    assert not blocked.done()
    release.set()
    await within(busy)
    with pytest.raises(Boom):
        await within(crash)
    with pytest.raises(ActorDiedError) as info:
        await within(blocked)
    assert info.value.cause is boom
