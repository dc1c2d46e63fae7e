"""max_concurrency > 1: handlers interleave; a crash cancels and answers the others."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rt_support import Boom, Probe, ended, settle, suspended_in, within

from actorflow import ActorDiedError, ActorUnavailableError
from actorflow.runtime import ActorSystem, ExitReason
from actorflow.supervision import ChildSpec, start_supervisor


class Parallel(Probe):
    max_concurrency = 3


async def start_hold(ref: Any) -> tuple[asyncio.Task[Any], asyncio.Event, asyncio.Event]:
    entered, release = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(ref.ask(("hold", entered, release)))
    return task, entered, release


async def test_two_handlers_are_in_flight_at_once(system: ActorSystem) -> None:
    ref = await system.spawn(Parallel)
    a, a_in, a_release = await start_hold(ref)
    b, b_in, b_release = await start_hold(ref)
    # both handlers are inside receive at the same time: neither was released yet
    await within(a_in.wait())
    await within(b_in.wait())
    assert not a.done() and not b.done()
    b_release.set()  # the second finishes first: no head-of-line blocking
    assert await within(b) == "released"
    assert not a.done()
    a_release.set()
    assert await within(a) == "released"


async def test_the_limit_holds_and_start_order_is_mailbox_order(system: ActorSystem) -> None:
    ref = await system.spawn(Probe, max_concurrency=2)
    holds = [await start_hold(ref) for _ in range(3)]
    await within(holds[0][1].wait())
    await within(holds[1][1].wait())
    # the third waits for room; a message behind it does not overtake it
    later = asyncio.create_task(ref.ask(("rec", "later")))
    assert not holds[2][1].is_set()
    holds[0][2].set()
    await within(holds[2][1].wait())
    assert not later.done()
    holds[1][2].set()
    assert await within(later) == "later"
    holds[2][2].set()
    assert [await within(h[0]) for h in holds] == ["released"] * 3


async def test_a_crash_cancels_and_answers_the_handlers_in_flight(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = await system.spawn(Parallel, log, name="par")
    death = ended(system, ref)
    a, a_in, _ = await start_hold(ref)
    b, b_in, _ = await start_hold(ref)
    await within(a_in.wait())
    await within(b_in.wait())
    boom = Boom("one handler failed")
    crash = await suspended_in(ref.ask(("crash", boom)))
    with pytest.raises(Boom) as info:
        await within(crash)
    assert info.value is boom
    for task in (a, b):
        with pytest.raises(ActorDiedError) as died:
            await settle(task)
        assert died.value.cause is boom
    notice = await within(death)
    assert (notice.reason, notice.cause) == (ExitReason.CRASHED, boom)
    assert sorted(e for e in log if e[0] == "cancelled") == [("cancelled", "p")] * 2
    assert not ref.alive


async def test_a_crash_answers_the_queued_asks_too(system: ActorSystem) -> None:
    ref = await system.spawn(Probe, max_concurrency=2)
    death = ended(system, ref)
    a, a_in, _ = await start_hold(ref)
    crash_in, crash_release, boom = asyncio.Event(), asyncio.Event(), Boom()
    crash = asyncio.create_task(ref.ask(("hold-crash", crash_in, crash_release, boom)))
    await within(a_in.wait())
    await within(crash_in.wait())
    # both slots are taken: the first queued ask is in the loop's hand, waiting for room;
    # the second is still in the mailbox
    queued = [await suspended_in(ref.ask(("rec", i))) for i in range(2)]
    crash_release.set()
    with pytest.raises(Boom):
        await settle(crash)
    for task in (a, *queued):
        with pytest.raises(ActorDiedError) as info:
            await settle(task)
        assert info.value.cause is boom
    assert (await within(death)).cause is boom


async def test_kill_answers_handlers_in_flight_with_killed(system: ActorSystem) -> None:
    ref = await system.spawn(Parallel, name="par")
    a, a_in, _ = await start_hold(ref)
    await within(a_in.wait())
    death = ended(system, ref)
    system.kill(ref)
    assert (await within(death)).reason is ExitReason.KILLED
    with pytest.raises(ActorDiedError) as info:
        await settle(a)
    assert "killed" in info.value.reason  # not "crashed": nothing raised, it was killed


async def test_graceful_stop_waits_for_handlers_in_flight(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = await system.spawn(Parallel, log)
    a, a_in, a_release = await start_hold(ref)
    await within(a_in.wait())
    stopping = asyncio.create_task(system.stop(ref))
    a_release.set()
    assert await within(a) == "released"
    await within(stopping)
    assert log == [("start", "p"), ("stop", "p")]


async def test_a_supervised_concurrent_child_answers_in_flight_asks_as_unavailable(
    system: ActorSystem,
) -> None:
    tree = await start_supervisor(
        system, [ChildSpec(factory=Probe, name="w", max_concurrency=2)], name="sup"
    )
    worker = tree["w"]
    a, a_in, _ = await start_hold(worker)
    await within(a_in.wait())
    with pytest.raises(Boom):
        await within(worker.ask(("crash", Boom())))
    with pytest.raises(ActorUnavailableError):
        await settle(a)  # it will be restarted: retry later
    await within(tree.which_children())
    assert await within(worker.ask(("rec", "restarted"))) == "restarted"
