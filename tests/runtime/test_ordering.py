"""Per-sender ordering: each sender's messages arrive in the order it sent them, however
senders interleave, through backpressure, and across a restart wait."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from rt_support import Boom, Probe, suspended_in, within

from actorflow.runtime import ActorRef, ActorSystem
from actorflow.supervision import ChildSpec, StartChild, start_supervisor

SENDERS = 5
PER_SENDER = 60


def check_per_sender_order(got: list[Any], senders: int, per_sender: int) -> int:
    """Assert each sender's items came in its order and none is missing; return how often
    consecutive items came from different senders (the interleaving)."""
    items = [entry[2] for entry in got if entry[0] == "got"]
    assert len(items) == senders * per_sender
    for s in range(senders):
        assert [seq for who, seq in items if who == s] == list(range(per_sender))
    return sum(1 for a, b in itertools.pairwise(items) if a[0] != b[0])


async def send_all(ref: ActorRef, sender: int, per_sender: int) -> None:
    for seq in range(per_sender):
        if seq % 7 == 3:
            assert await ref.ask(("rec", (sender, seq))) == (sender, seq)
        else:
            await ref.tell(("rec", (sender, seq)))


async def test_interleaved_senders_keep_their_own_order(system: ActorSystem) -> None:
    # a small mailbox makes the senders block and take turns (FIFO among waiting putters)
    ref = await system.spawn(Probe, name="sink", mailbox_size=2)
    await within(asyncio.gather(*(send_all(ref, s, PER_SENDER) for s in range(SENDERS))))
    switches = check_per_sender_order(await within(ref.ask("log")), SENDERS, PER_SENDER)
    assert switches >= SENDERS * 10  # really interleaved, not one sender after the other


async def test_interleaved_senders_with_tell_nowait(system: ActorSystem) -> None:
    ref = await system.spawn(Probe, name="sink", mailbox_size=SENDERS * PER_SENDER)

    async def sender(s: int) -> None:
        for seq in range(PER_SENDER):
            if seq % 3 == 0:  # an ask waits for its answer: the other senders go meanwhile
                assert await ref.ask(("rec", (s, seq))) == (s, seq)
            else:
                ref.tell_nowait(("rec", (s, seq)))

    await within(asyncio.gather(*(sender(s) for s in range(SENDERS))))
    switches = check_per_sender_order(await within(ref.ask("log")), SENDERS, PER_SENDER)
    assert switches >= SENDERS * 10


class Gated(Probe):
    """on_start waits for ``release`` after setting ``entered`` (holds its supervisor)."""

    def __init__(self, entered: asyncio.Event, release: asyncio.Event) -> None:
        super().__init__(name="gate")
        self.entered, self.release = entered, release

    async def on_start(self) -> None:
        self.entered.set()
        await within(self.release.wait())


class Counting(Probe):
    """Answers "incarnation" with how many instances were built before it."""

    built = 0

    def __init__(self) -> None:
        super().__init__(name="worker")
        self.incarnation = Counting.built
        Counting.built += 1

    async def receive(self, message: Any) -> Any:
        if message == "incarnation":
            return self.incarnation
        if message[0] == "rec":
            self.log.append(("got", self.incarnation, message[1]))
            return message[1]
        return await super().receive(message)


async def test_order_is_kept_across_a_restart_wait(system: ActorSystem) -> None:
    Counting.built = 0
    tree = await start_supervisor(system, [ChildSpec(factory=Counting, name="worker")],
                                  name="sup")
    worker = tree["worker"]
    # hold the supervisor inside a StartChild, so the crash notice waits behind it
    entered, release = asyncio.Event(), asyncio.Event()
    starting = asyncio.create_task(
        tree.ref.ask(StartChild(ChildSpec(factory=Gated, args=(entered, release), name="g")))
    )
    await within(entered.wait())
    boom = Boom("scripted")
    try:
        await within(worker.ask(("crash", boom)))
    except Boom as exc:
        assert exc is boom
    else:
        raise AssertionError("the crash ask did not raise")
    assert worker.statistics() is None  # no incarnation runs: the slot is restarting

    per_sender = 20
    senders = [await suspended_in(send_all(worker, s, per_sender)) for s in range(SENDERS)]
    assert not any(task.done() for task in senders)  # every one waits for the restart
    release.set()
    await within(starting)
    await within(asyncio.gather(*senders))

    assert await within(worker.ask("incarnation")) == 1
    log = await within(worker.ask("log"))
    got = [entry for entry in log if entry[0] == "got"]
    assert {entry[1] for entry in got} == {1}  # all handled by the new incarnation
    check_per_sender_order([("got", None, e[2]) for e in got], SENDERS, per_sender)


async def test_blocked_senders_keep_order_across_a_crash_and_nothing_goes_unaccounted(
    system: ActorSystem,
) -> None:
    """Senders blocked on a full mailbox when the actor crashes move on to the new
    incarnation, in order. The tells that sat in the dead mailbox are the only ones lost, and
    each is counted as a dead letter."""
    Counting.built = 0
    tree = await start_supervisor(
        system, [ChildSpec(factory=Counting, name="worker", mailbox_size=2)], name="sup"
    )
    worker = tree["worker"]
    entered, release = asyncio.Event(), asyncio.Event()
    crash = asyncio.create_task(worker.ask(("hold-crash", entered, release, Boom())))
    await within(entered.wait())
    per_sender = 10
    sent = [await suspended_in(send_tells(worker, s, per_sender)) for s in range(SENDERS)]
    stats = worker.statistics()
    assert stats is not None and stats.queued == 2
    # senders 0 and 1 each got one tell in and wait with the next; the others wait too
    assert stats.waiting_putters == SENDERS
    release.set()
    with pytest.raises(Boom):
        await within(crash)
    await within(asyncio.gather(*sent))
    assert await within(worker.ask("incarnation")) == 1
    got = [e[2] for e in await within(worker.ask("log")) if e[0] == "got"]
    dead = system.statistics()["dead_letters"]
    assert dead == 2
    assert len(got) + dead == SENDERS * per_sender
    lost = 0
    for s in range(SENDERS):
        mine = [seq for who, seq in got if who == s]
        first = per_sender - len(mine)
        # in order, and what is missing is exactly what sat in the dead mailbox: its first ones
        assert mine == list(range(first, per_sender))
        lost += first
    assert lost == dead


async def send_tells(ref: ActorRef, sender: int, per_sender: int) -> None:
    for seq in range(per_sender):
        await ref.tell(("rec", (sender, seq)))
