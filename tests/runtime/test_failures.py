"""What a failure does: the failing ask, the queued asks, spawn, kills."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rt_support import Boom, Probe, ended, hold, settle, suspended_in, within

from actorflow import ActorDiedError, ActorUnavailableError
from actorflow.runtime import ActorState, ActorSystem, ExitReason
from actorflow.supervision import ChildSpec, start_supervisor


async def test_handler_exception_fails_that_ask_and_crashes_the_actor(
    system: ActorSystem,
) -> None:
    log: list[Any] = []
    ref = await system.spawn(Probe, log, name="victim")
    death = ended(system, ref)
    busy, release = await hold(ref)
    boom = Boom("scripted")
    crash = await suspended_in(ref.ask(("crash", boom)))
    queued = [await suspended_in(ref.ask(("rec", i))) for i in range(3)]
    await within(ref.tell(("rec", "a tell")))
    before = system.statistics()["dead_letters"]
    release.set()
    await within(busy)
    with pytest.raises(Boom) as info:
        await within(crash)
    assert info.value is boom
    for task in queued:
        with pytest.raises(ActorDiedError) as died:
            await within(task)
        assert died.value.cause is boom
        assert died.value.actor == "victim"
        assert "before handling the call" in died.value.reason
    notice = await within(death)
    assert (notice.reason, notice.cause) == (ExitReason.CRASHED, boom)
    assert system.statistics()["dead_letters"] == before + 1  # the tell, counted
    assert not ref.alive
    assert ("stop", "p") not in log  # on_stop does not run after a crash
    assert [e for e in log if e[0] == "got"] == []


async def test_queued_asks_of_a_restarting_actor_get_actor_unavailable(
    system: ActorSystem,
) -> None:
    tree = await start_supervisor(system, [ChildSpec(factory=Probe, name="w")], name="sup")
    worker = tree["w"]
    busy, release = await hold(worker)
    crash = await suspended_in(worker.ask(("crash", Boom())))
    queued = [await suspended_in(worker.ask(("rec", i))) for i in range(3)]
    release.set()
    await within(busy)
    with pytest.raises(Boom):
        await within(crash)
    for task in queued:
        with pytest.raises(ActorUnavailableError, match="before handling the call"):
            await within(task)
    await within(tree.which_children())
    assert await within(worker.ask(("rec", "new incarnation"))) == "new incarnation"


class FailingStart(Probe):
    error = Boom("on_start failed")

    async def on_start(self) -> None:
        raise FailingStart.error


async def test_on_start_exception_is_raised_from_spawn(system: ActorSystem) -> None:
    with pytest.raises(Boom) as info:
        await within(system.spawn(FailingStart, name="doomed"))
    assert info.value is FailingStart.error
    assert system.lookup("doomed") is None
    assert system.statistics()["actors"] == 0
    assert system.statistics()["slots"] == 0
    ref = await within(system.spawn(Probe, name="doomed"))  # the name is free again
    assert await within(ref.ask(("rec", 1))) == 1


async def test_factory_that_is_not_an_actor_is_a_type_error(system: ActorSystem) -> None:
    with pytest.raises(TypeError, match="not an Actor"):
        await within(system.spawn(lambda: object()))  # type: ignore[arg-type,return-value]


async def test_kill_answers_the_ask_in_hand(system: ActorSystem) -> None:
    """A serial actor killed while handling an ask must answer that ask with an error; the
    in-hand message is out of the mailbox, so _terminate's sweep of the mailbox misses it."""
    log: list[Any] = []
    ref = await system.spawn(Probe, log, name="stuck")
    death = ended(system, ref)
    busy, _release = await hold(ref)
    system.kill(ref)
    notice = await within(death)
    assert notice.reason is ExitReason.KILLED
    assert ("cancelled", "p") in log
    with pytest.raises(ActorDiedError) as info:
        await settle(busy, 2.0)
    assert "killed" in info.value.reason


async def test_stop_timeout_answers_the_ask_in_hand(system: ActorSystem) -> None:
    ref = await system.spawn(Probe, name="stuck")
    busy, _release = await hold(ref)
    await within(system.stop(ref, timeout=0.05))
    with pytest.raises(ActorDiedError):
        await settle(busy, 2.0)


async def test_stop_lets_the_message_in_hand_finish_and_fails_the_queued(
    system: ActorSystem,
) -> None:
    log: list[Any] = []
    ref = await system.spawn(Probe, log, name="graceful")
    busy, release = await hold(ref)
    queued = await suspended_in(ref.ask(("rec", "queued")))
    stopping = asyncio.create_task(system.stop(ref))
    release.set()
    assert await within(busy) == "released"
    await within(stopping)
    with pytest.raises(ActorDiedError) as info:
        await within(queued)
    assert info.value.cause is None
    assert "it stopped before handling the call" in str(info.value)
    assert log == [("start", "p"), ("stop", "p")]


async def test_self_stop_is_a_normal_exit(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = await system.spawn(Probe, log)
    death = ended(system, ref)
    assert await within(ref.ask("exit")) is None
    notice = await within(death)
    assert (notice.reason, notice.cause, notice.incarnation) == (ExitReason.NORMAL, None, 0)
    assert log == [("start", "p"), ("stop", "p")]
    assert not ref.alive


async def test_states_of_an_incarnation(system: ActorSystem) -> None:
    states: list[ActorState] = []

    class Spy(Probe):
        def cell_state(self) -> ActorState:
            return self.ref._slot.cell.state  # type: ignore[union-attr]

        async def on_start(self) -> None:
            states.append(self.cell_state())

        async def receive(self, message: Any) -> Any:
            states.append(self.cell_state())
            return await super().receive(message)

        async def on_stop(self) -> None:
            states.append(self.cell_state())

    ref = await system.spawn(Spy)
    await within(ref.ask(("rec", 1)))
    cell = ref._slot.cell
    assert cell is not None
    await within(system.stop(ref))
    assert states == [ActorState.STARTING, ActorState.RUNNING, ActorState.STOPPING]
    assert cell.state is ActorState.STOPPED


async def test_a_cancelled_spawn_kills_the_half_started_actor(system: ActorSystem) -> None:
    entered, release, cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()

    class SlowStart(Probe):
        async def on_start(self) -> None:
            entered.set()
            try:
                await within(release.wait())
            except asyncio.CancelledError:
                cancelled.set()  # the cell ends in this same step, right after
                raise

    spawning = asyncio.create_task(system.spawn(SlowStart, name="slow"))
    await within(entered.wait())
    spawning.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(spawning)
    await within(cancelled.wait())
    assert system.lookup("slow") is None
    assert system.statistics()["actors"] == 0
    ref = await within(system.spawn(Probe, name="slow"))  # the name is free again
    assert ref.alive
