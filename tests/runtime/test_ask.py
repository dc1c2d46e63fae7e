"""ask: timeouts, dead actors, restarting actors, the bounded restart wait."""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

import pytest
from rt_support import Boom, Probe, hold, suspended_in, within

from actorflow import ActorDiedError, ActorUnavailableError, GetTimeoutError
from actorflow.runtime import ActorSystem
from actorflow.supervision import ChildSpec, StartChild, Tree, start_supervisor


async def test_ask_answers_with_the_handler_result(system: ActorSystem) -> None:
    ref = await system.spawn(Probe)
    assert await within(ref.ask(("rec", 42))) == 42


async def test_ask_timeout_names_the_actor_and_is_a_timeout_error(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = await system.spawn(Probe, log, name="slowpoke")
    busy, release = await hold(ref)
    with pytest.raises(GetTimeoutError) as info:
        await ref.ask(("rec", "late"), timeout=0.05)
    err = info.value
    assert isinstance(err, TimeoutError)
    assert "'slowpoke'" in str(err)
    assert "0.05" in str(err)
    assert "ask(tuple)" in str(err)
    # the message was queued before the timeout: it is still handled, and the actor lives on
    release.set()
    assert await within(busy) == "released"
    assert await within(ref.ask(("rec", "after"))) == "after"
    assert [e for e in log if e[0] == "got"] == [("got", "p", "late"), ("got", "p", "after")]


async def test_ask_timeout_bounds_the_wait_for_room(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = await system.spawn(Probe, log, mailbox_size=1)
    busy, release = await hold(ref)
    await ref.tell(("rec", "fills the mailbox"))
    with pytest.raises(GetTimeoutError, match="'\\$1'"):
        await ref.ask(("rec", "never queued"), timeout=0.05)
    stats = ref.statistics()
    assert stats is not None
    assert (stats.queued, stats.waiting_putters) == (1, 0)  # the give-up left no putter
    release.set()
    await within(busy)
    assert await within(ref.ask("log")) == [("start", "p"), ("got", "p", "fills the mailbox")]


async def test_timed_out_ask_whose_handler_crashes_leaks_nothing(system: ActorSystem) -> None:
    # the reply of a timed-out ask must not end up as an unretrieved exception (the suite's
    # hygiene guard fails the test if it does)
    ref = await system.spawn(Probe)
    busy, release = await hold(ref)
    with pytest.raises(GetTimeoutError):
        await ref.ask(("crash", Boom("after the timeout")), timeout=0.05)
    death = asyncio.get_running_loop().create_future()
    system.on_terminated(ref, death.set_result)
    release.set()
    await within(busy)
    notice = await within(death)
    assert isinstance(notice.cause, Boom)


async def test_ask_to_a_crashed_actor_raises_actor_died_with_the_cause(
    system: ActorSystem,
) -> None:
    ref = await system.spawn(Probe, name="fragile")
    boom = Boom("scripted")
    with pytest.raises(Boom) as info:
        await within(ref.ask(("crash", boom)))
    assert info.value is boom
    assert not ref.alive
    with pytest.raises(ActorDiedError) as died:
        await within(ref.ask(("rec", 1)))
    assert died.value.cause is boom
    assert died.value.actor == "fragile"
    assert "it crashed" in died.value.reason
    assert "Boom: scripted" in str(died.value)
    with pytest.raises(ActorDiedError):
        await within(ref.tell(("rec", 1)))
    with pytest.raises(ActorDiedError):
        ref.tell_nowait(("rec", 1))


async def test_ask_to_a_stopped_actor_raises_actor_died_without_cause(
    system: ActorSystem,
) -> None:
    ref = await system.spawn(Probe, name="done")
    await within(system.stop(ref))
    with pytest.raises(ActorDiedError) as died:
        await within(ref.ask(("rec", 1)))
    assert died.value.cause is None
    assert died.value.actor == "done"
    assert system.lookup("done") is None


async def test_repeated_asks_to_a_dead_actor_do_not_grow_the_error(system: ActorSystem) -> None:
    """Raising one stored ActorDiedError instance again and again chains every raise's frames
    onto its traceback: memory grows with each failed call (and keeps callers' frames alive)."""
    ref = await system.spawn(Probe)
    await within(system.stop(ref))

    async def failed_ask() -> ActorDiedError:
        try:
            await within(ref.ask(("rec", 1)))
        except ActorDiedError as exc:
            return exc
        raise AssertionError("ask to a dead actor did not raise")

    first = await failed_ask()
    depth = len(traceback.extract_tb(first.__traceback__))
    for _ in range(20):
        last = await failed_ask()
    assert len(traceback.extract_tb(last.__traceback__)) == depth
    assert len(traceback.extract_tb(first.__traceback__)) == depth


class Counting(Probe):
    built = 0

    def __init__(self) -> None:
        super().__init__(name="worker")
        self.incarnation = Counting.built
        Counting.built += 1

    async def receive(self, message: Any) -> Any:
        if message == "incarnation":
            return self.incarnation
        return await super().receive(message)


class GatedStart(Probe):
    def __init__(self, entered: asyncio.Event, release: asyncio.Event) -> None:
        super().__init__(name="gate")
        self.entered, self.release = entered, release

    async def on_start(self) -> None:
        self.entered.set()
        await within(self.release.wait())


async def busy_supervisor(tree: Tree) -> tuple[asyncio.Task[Any], asyncio.Event]:
    """Hold the supervisor inside a StartChild until the returned event is set."""
    entered, release = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        tree.ref.ask(StartChild(ChildSpec(factory=GatedStart, args=(entered, release),
                                          name="gate")))
    )
    await within(entered.wait())
    return task, release


async def test_ask_during_restart_waits_for_the_new_incarnation(system: ActorSystem) -> None:
    Counting.built = 0
    tree = await start_supervisor(system, [ChildSpec(factory=Counting, name="worker")],
                                  name="sup")
    worker = tree["worker"]
    assert await within(worker.ask("incarnation")) == 0
    starting, release = await busy_supervisor(tree)
    with pytest.raises(Boom):
        await within(worker.ask(("crash", Boom())))
    assert worker.alive and worker.statistics() is None  # restarting
    asking = await suspended_in(worker.ask("incarnation"))
    assert not asking.done()
    release.set()
    await within(starting)
    assert await within(asking) == 1
    assert tree["worker"] == worker  # the same ref reaches the new incarnation


async def test_restart_wait_is_bounded_by_restart_wait_s() -> None:
    Counting.built = 0
    async with ActorSystem("bounded", restart_wait_s=0.05) as system:
        tree = await start_supervisor(system, [ChildSpec(factory=Counting, name="worker")],
                                      name="sup")
        worker = tree["worker"]
        starting, release = await busy_supervisor(tree)
        with pytest.raises(Boom):
            await within(worker.ask(("crash", Boom())))
        with pytest.raises(ActorUnavailableError) as info:
            await within(worker.ask("incarnation"))
        assert "restart_wait_s=0.05" in str(info.value)
        assert info.value.actor == "sup/worker"
        with pytest.raises(ActorUnavailableError):
            await within(worker.tell(("rec", 1)))
        with pytest.raises(ActorUnavailableError, match="it is restarting"):
            worker.tell_nowait(("rec", 1))
        release.set()
        await within(starting)
        await within(tree.which_children())
        assert await within(worker.ask("incarnation")) == 1
