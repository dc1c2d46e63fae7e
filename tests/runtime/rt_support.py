"""Actors and helpers shared by the runtime tests.

Every wait is bounded (``within``); order comes from asyncio Events and futures, never sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from actorflow.runtime import Actor, ActorRef, ActorSystem, Terminated

T = TypeVar("T")

#: the bound on every wait that is expected to succeed; only a bug makes one run out
WAIT = 5.0


async def within(aw: Awaitable[T], timeout: float = WAIT) -> T:
    return await asyncio.wait_for(aw, timeout)


class Boom(Exception):
    """The scripted crash."""


def ended(system: ActorSystem, ref: ActorRef) -> asyncio.Future[Terminated]:
    """A future resolved with the Terminated notice of ``ref``'s current incarnation."""
    fut: asyncio.Future[Terminated] = asyncio.get_running_loop().create_future()

    def deliver(notice: Terminated) -> None:
        if not fut.done():
            fut.set_result(notice)

    system.on_terminated(ref, deliver)
    return fut


class Probe(Actor):
    """A scripted actor. Its lifecycle and what it handles go to ``log``:

    - ``("rec", x)``: log ``("got", name, x)``, answer ``x``;
    - ``("hold", entered, release)``: set ``entered``, wait for ``release``, answer "released"
      (a cancellation is logged as ``("cancelled", name)``);
    - ``("crash", exc)``: raise ``exc``;
    - ``("hold-crash", entered, release, exc)``: like hold, then raise ``exc``;
    - ``"exit"``: stop itself;
    - ``"log"``: answer a copy of the log.
    """

    def __init__(self, log: list[Any] | None = None, name: str = "p") -> None:
        self.log: list[Any] = [] if log is None else log
        self.name = name

    async def on_start(self) -> None:
        self.log.append(("start", self.name))

    async def on_stop(self) -> None:
        self.log.append(("stop", self.name))

    async def receive(self, message: Any) -> Any:
        match message:
            case ("rec", item):
                self.log.append(("got", self.name, item))
                return item
            case ("hold", entered, release):
                entered.set()
                try:
                    await within(release.wait())
                except asyncio.CancelledError:
                    self.log.append(("cancelled", self.name))
                    raise
                return "released"
            case ("crash", exc):
                raise exc
            case ("hold-crash", entered, release, exc):
                entered.set()
                await within(release.wait())
                raise exc
            case "exit":
                self.stop()
                return None
            case "log":
                return list(self.log)
        return await super().receive(message)


async def hold(ref: ActorRef) -> tuple[asyncio.Task[Any], asyncio.Event]:
    """Make ``ref`` busy: returns the ask's task (once the handler is running) and the
    event that releases it."""
    entered, release = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(ref.ask(("hold", entered, release)))
    await within(entered.wait())
    return task, release


async def suspended_in(coro: Awaitable[T]) -> asyncio.Task[T]:
    """Start ``coro`` in a task and return once it has run up to its first suspension.

    The task sets an event right before awaiting ``coro``; everything ``coro`` does before it
    first suspends runs in that same step, so when the event wakes us the task is parked.
    """
    started = asyncio.Event()

    async def run() -> T:
        started.set()
        return await coro

    task = asyncio.create_task(run())
    await within(started.wait())
    return task


async def settle(task: asyncio.Task[T], timeout: float = WAIT) -> T:
    """The task's result; a clear failure (not a bare TimeoutError) if it hangs."""
    done, _ = await asyncio.wait([task], timeout=timeout)
    if not done:
        task.cancel()
        await asyncio.wait([task])
        raise AssertionError(f"hangs: {task.get_coro()!r} got no answer within {timeout} s")
    return task.result()
