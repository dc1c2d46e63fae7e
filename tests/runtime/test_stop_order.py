"""Stopping: reverse start order, on_stop, kills after the timeout, nothing left behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from rt_support import Probe, ended, within

from actorflow.runtime import ActorSystem, ExitReason
from actorflow.supervision import Backoff, ChildSpec, start_supervisor


async def test_shutdown_stops_top_level_actors_in_reverse_start_order() -> None:
    log: list[Any] = []
    system = ActorSystem("order")
    for name in ("a", "b", "c", "d"):
        await system.spawn(Probe, log, name, name=name)
    await within(system.shutdown())
    assert log == [("start", n) for n in "abcd"] + [("stop", n) for n in "dcba"]


async def test_supervisors_stop_their_children_in_reverse() -> None:
    log: list[Any] = []
    system = ActorSystem("order")
    await system.spawn(Probe, log, "before", name="before")
    await start_supervisor(
        system,
        [ChildSpec(factory=Probe, args=(log, n), name=n) for n in ("x", "y", "z")],
        name="sup",
    )
    await system.spawn(Probe, log, "after", name="after")
    await within(system.shutdown())
    starts = [("start", n) for n in ("before", "x", "y", "z", "after")]
    stops = [("stop", n) for n in ("after", "z", "y", "x", "before")]
    assert log == starts + stops


class HangingStop(Probe):
    async def on_stop(self) -> None:
        self.log.append(("stop", self.name))
        try:
            await within(asyncio.Event().wait(), 30)
        except asyncio.CancelledError:
            self.log.append(("killed in on_stop", self.name))
            raise


async def test_an_actor_whose_on_stop_hangs_is_killed_after_the_timeout() -> None:
    log: list[Any] = []
    system = ActorSystem("hang", stop_timeout_s=0.05)
    hanging = await system.spawn(HangingStop, log, "hangs")
    fine = await system.spawn(Probe, log, "fine")
    hanging_end, fine_end = ended(system, hanging), ended(system, fine)
    await within(system.shutdown())
    assert (await within(fine_end)).reason is ExitReason.NORMAL
    assert (await within(hanging_end)).reason is ExitReason.KILLED
    assert log == [
        ("start", "hangs"), ("start", "fine"),
        ("stop", "fine"), ("stop", "hangs"), ("killed in on_stop", "hangs"),
    ]


async def test_stop_with_a_timeout_kills_a_hanging_on_stop(system: ActorSystem) -> None:
    log: list[Any] = []
    ref = await system.spawn(HangingStop, log, "hangs")
    death = ended(system, ref)
    await within(system.stop(ref, timeout=0.05))
    assert (await within(death)).reason is ExitReason.KILLED
    assert log[-1] == ("killed in on_stop", "hangs")
    assert not ref.alive


async def test_on_stop_that_raises_still_stops_normally(system: ActorSystem) -> None:
    class BadStop(Probe):
        async def on_stop(self) -> None:
            raise RuntimeError("on_stop bug")

    ref = await system.spawn(BadStop)
    death = ended(system, ref)
    await within(system.stop(ref))
    assert (await within(death)).reason is ExitReason.NORMAL


async def tell_hold(ref: Any) -> None:
    """Make ``ref`` busy with a tell (no asker waits on it)."""
    entered = asyncio.Event()
    await within(ref.tell(("hold", entered, asyncio.Event())))
    await within(entered.wait())


async def test_nothing_of_the_system_is_left_after_shutdown() -> None:
    before = asyncio.all_tasks()
    system = ActorSystem("busy", stop_timeout_s=0.05)
    # a mix: idle, busy serial, busy concurrent (handlers in their own tasks), a hanging
    # on_stop, a supervision tree with a restart pending behind a backoff timer
    await system.spawn(Probe)
    await tell_hold(await system.spawn(Probe))
    par = await system.spawn(Probe, max_concurrency=4)
    for _ in range(3):
        await tell_hold(par)
    await system.spawn(HangingStop, [], "hangs")
    tree = await start_supervisor(
        system, [ChildSpec(factory=Probe, name="w")], name="sup",
        backoff=Backoff(initial_s=30.0), max_restarts=10,
    )
    for _ in range(2):  # the second restart waits 30 s on a timer
        with pytest.raises(RuntimeError, match="again"):
            await within(tree["w"].ask(("crash", RuntimeError("again"))))
    children = await within(tree.which_children())
    assert [c.running for c in children] == [False]
    assert len(asyncio.all_tasks() - before) >= 8  # 6 actors + 3 handlers - 1 crashed

    loop = asyncio.get_running_loop()

    def restart_timers() -> list[asyncio.TimerHandle]:
        return [h for h in getattr(loop, "_scheduled", [])
                if not h.cancelled() and "Supervisor" in getattr(h._callback, "__qualname__", "")]

    assert len(restart_timers()) == 1
    await within(system.shutdown())
    assert asyncio.all_tasks() - before == set()
    assert restart_timers() == []  # the supervisor cancelled its pending restart
    assert system.statistics()["actors"] == 0
    assert system.statistics()["slots"] == 0
    with pytest.raises(RuntimeError, match="shutting down"):
        await system.spawn(Probe)
