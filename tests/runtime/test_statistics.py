"""statistics(): a mailbox's counts through an actor's ref, and the system's."""

from __future__ import annotations

from typing import Any

import pytest
from rt_support import Boom, Probe, hold, suspended_in, within

from actorflow.runtime import ActorSystem, MailboxStatistics
from actorflow.supervision import ChildSpec, start_supervisor


async def test_ref_statistics_track_queued_processed_and_max_depth(system: ActorSystem) -> None:
    ref = await system.spawn(Probe, mailbox_size=8)
    assert ref.statistics() == MailboxStatistics(0, 0, 0, 8, 0)
    busy, release = await hold(ref)
    for i in range(5):
        await within(ref.tell(("rec", i)))
    assert ref.statistics() == MailboxStatistics(
        queued=5, processed=1, max_depth=5, capacity=8, waiting_putters=0
    )
    release.set()
    await within(busy)
    assert await within(ref.ask(("rec", "last"))) == "last"
    assert ref.statistics() == MailboxStatistics(
        queued=0, processed=7, max_depth=5, capacity=8, waiting_putters=0
    )


async def test_ref_statistics_are_none_without_a_running_incarnation(system: ActorSystem) -> None:
    ref = await system.spawn(Probe)
    await within(system.stop(ref))
    assert ref.statistics() is None


async def test_mailbox_size_defaults_to_the_class_attribute(system: ActorSystem) -> None:
    class Small(Probe):
        mailbox_size = 3

    ref = await system.spawn(Small)
    stats = ref.statistics()
    assert stats is not None and stats.capacity == 3
    other = await system.spawn(Small, mailbox_size=5)
    stats = other.statistics()
    assert stats is not None and stats.capacity == 5


async def test_system_statistics_count_actors_slots_and_dead_letters(system: ActorSystem) -> None:
    assert system.statistics() == {"actors": 0, "slots": 0, "dead_letters": 0}
    a = await system.spawn(Probe)
    b = await system.spawn(Probe)
    assert system.statistics() == {"actors": 2, "slots": 2, "dead_letters": 0}
    busy, release = await hold(b)
    crash = await suspended_in(b.ask(("crash", Boom())))
    for i in range(3):
        await within(b.tell(("rec", i)))
    release.set()
    await within(busy)
    with pytest.raises(Boom):
        await within(crash)
    assert system.statistics() == {"actors": 1, "slots": 1, "dead_letters": 3}
    await within(system.stop(a))
    assert system.statistics() == {"actors": 0, "slots": 0, "dead_letters": 3}


async def test_supervision_counts_and_its_notices_are_not_dead_letters(
    system: ActorSystem,
) -> None:
    """Dead letters are tells dropped at death. A supervisor stopping its children receives
    their Terminated notices while in on_stop; those runtime notices are not dropped tells."""
    log: list[Any] = []
    tree = await start_supervisor(
        system, [ChildSpec(factory=Probe, args=(log, n), name=n) for n in ("a", "b")], name="s"
    )
    assert system.statistics() == {"actors": 3, "slots": 3, "dead_letters": 0}
    await within(tree.stop())
    assert log[-2:] == [("stop", "b"), ("stop", "a")]
    assert system.statistics() == {"actors": 0, "slots": 0, "dead_letters": 0}
