"""watch / on_terminated: who hears what when an actor ends."""

from __future__ import annotations

from typing import Any

from rt_support import Boom, Probe, ended, within

from actorflow.runtime import Actor, ActorRef, ActorSystem, ExitReason, Terminated


class Watcher(Actor):
    """Keeps the Terminated notices it receives; "notices" answers them."""

    def __init__(self) -> None:
        self.notices: list[Terminated] = []

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Terminated):
            self.notices.append(message)
            return None
        if message == "notices":
            return list(self.notices)
        return await super().receive(message)


async def notices(watcher: ActorRef) -> list[Terminated]:
    """The watcher's notices so far. A notice is put in the watcher's mailbox synchronously
    when the target ends, so once the target has ended this ask is queued behind it."""
    found: list[Terminated] = await within(watcher.ask("notices"))
    return found


async def test_normal_stop(system: ActorSystem) -> None:
    watcher = await system.spawn(Watcher)
    target = await system.spawn(Probe, name="t")
    system.watch(watcher, target)
    await within(system.stop(target))
    assert await notices(watcher) == [Terminated(target, ExitReason.NORMAL, None, 0)]


async def test_crash_carries_the_exception(system: ActorSystem) -> None:
    watcher = await system.spawn(Watcher)
    target = await system.spawn(Probe, name="t")
    system.watch(watcher, target)
    boom = Boom("scripted")
    try:
        await within(target.ask(("crash", boom)))
    except Boom:
        pass
    [notice] = await notices(watcher)
    assert notice == Terminated(target, ExitReason.CRASHED, boom, 0)
    assert notice.cause is boom
    assert notice.reason.abnormal


async def test_kill(system: ActorSystem) -> None:
    watcher = await system.spawn(Watcher)
    target = await system.spawn(Probe, name="t")
    system.watch(watcher, target)
    death = ended(system, target)
    system.kill(target)
    await within(death)
    assert await notices(watcher) == [Terminated(target, ExitReason.KILLED, None, 0)]


async def test_watch_on_a_dead_actor_is_noproc_at_once(system: ActorSystem) -> None:
    watcher = await system.spawn(Watcher)
    crashed = await system.spawn(Probe, name="crashed")
    boom = Boom()
    try:
        await within(crashed.ask(("crash", boom)))
    except Boom:
        pass
    stopped = await system.spawn(Probe, name="stopped")
    await within(system.stop(stopped))
    system.watch(watcher, crashed)
    system.watch(watcher, stopped)
    assert await notices(watcher) == [
        Terminated(crashed, ExitReason.NOPROC, boom, 0),
        Terminated(stopped, ExitReason.NOPROC, None, 0),
    ]
    heard: list[Terminated] = []
    system.on_terminated(stopped, heard.append)  # the callback form: called at once
    assert heard == [Terminated(stopped, ExitReason.NOPROC, None, 0)]


async def test_unwatch(system: ActorSystem) -> None:
    watcher = await system.spawn(Watcher)
    target = await system.spawn(Probe, name="t")
    other = await system.spawn(Probe, name="o")
    unwatch = system.watch(watcher, target)
    system.watch(watcher, other)
    unwatch()
    unwatch()  # idempotent
    await within(system.stop(target))
    await within(system.stop(other))
    assert await notices(watcher) == [Terminated(other, ExitReason.NORMAL, None, 0)]


async def test_every_watcher_hears_even_if_a_callback_fails(system: ActorSystem) -> None:
    target = await system.spawn(Probe, name="t")
    heard: list[str] = []

    def bad(notice: Terminated) -> None:
        raise RuntimeError("watcher bug")

    system.on_terminated(target, lambda n: heard.append("first"))
    system.on_terminated(target, bad)
    system.on_terminated(target, lambda n: heard.append("third"))
    await within(system.stop(target))
    assert heard == ["first", "third"]


async def test_a_dead_watcher_hears_nothing_and_nothing_breaks(system: ActorSystem) -> None:
    watcher = await system.spawn(Watcher)
    target = await system.spawn(Probe, name="t")
    system.watch(watcher, target)
    await within(system.stop(watcher))
    await within(system.stop(target))
    assert not target.alive and not watcher.alive
