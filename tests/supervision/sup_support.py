"""Scripted children for the supervision tests.

A :class:`Journal` is shared by every child of a test. Children append ``("start", name, n)``
in ``on_start`` (``n`` counts that name's successful starts, from 0) and ``("stop", name)`` in
``on_stop``, so a test asserts the exact sequence of lifecycle events. Children crash, exit or
hang on command; starts can be scripted to fail or to wait on a gate.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from actorflow.runtime import Actor, ActorRef, ActorSystem, Terminated
from actorflow.supervision import ChildSpec, StartChild, Tree

T = TypeVar("T")

WAIT = 5.0


async def within(aw: Awaitable[T], timeout: float = WAIT) -> T:
    return await asyncio.wait_for(aw, timeout)


class Boom(Exception):
    """The scripted crash."""


@dataclass
class Journal:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    starts: Counter[str] = field(default_factory=Counter)  # successful starts per name
    attempts: Counter[str] = field(default_factory=Counter)  # on_start calls per name
    #: (name, attempt) -> the exception that on_start raises on that attempt
    fail_start: dict[tuple[str, int], BaseException] = field(default_factory=dict)
    #: (name, attempt) -> (entered, release): on_start waits on that attempt
    gate_start: dict[tuple[str, int], tuple[asyncio.Event, asyncio.Event]] = field(
        default_factory=dict
    )
    #: name -> Event set by on_start of that name, for any attempt (replaced by tests)
    started: dict[str, asyncio.Event] = field(default_factory=dict)
    hang_on_stop: set[str] = field(default_factory=set)

    def take(self) -> list[tuple[Any, ...]]:
        """The events since the last take."""
        out, self.events[:] = list(self.events), []
        return out


class Worker(Actor):
    """Messages: "whoami" -> (name, n); "crash" raises Boom; "exit" stops itself;
    ("hold", entered, release) blocks."""

    def __init__(self, journal: Journal, name: str) -> None:
        self.journal = journal
        self.name = name
        self.n = -1

    async def on_start(self) -> None:
        j, name = self.journal, self.name
        attempt = j.attempts[name]
        j.attempts[name] += 1
        gate = j.gate_start.get((name, attempt))
        if gate is not None:
            gate[0].set()
            await within(gate[1].wait())
        error = j.fail_start.get((name, attempt))
        if error is not None:
            j.events.append(("start failed", name))
            raise error
        self.n = j.starts[name]
        j.starts[name] += 1
        j.events.append(("start", name, self.n))
        if name in j.started:
            j.started[name].set()

    async def on_stop(self) -> None:
        self.journal.events.append(("stop", self.name))
        if self.name in self.journal.hang_on_stop:
            try:
                await within(asyncio.Event().wait(), 30)
            except asyncio.CancelledError:
                self.journal.events.append(("killed in on_stop", self.name))
                raise

    async def receive(self, message: Any) -> Any:
        match message:
            case "whoami":
                return (self.name, self.n)
            case "crash":
                raise Boom(f"{self.name}#{self.n}")
            case "exit":
                self.stop()
                return None
            case ("hold", entered, release):
                entered.set()
                await within(release.wait())
                return "released"
        raise TypeError(f"unexpected {message!r}")


def spec(journal: Journal, name: str, **options: Any) -> ChildSpec:
    return ChildSpec(factory=Worker, args=(journal, name), name=name, **options)


def ended(system: ActorSystem, ref: ActorRef) -> asyncio.Future[Terminated]:
    """A future resolved with the Terminated notice of ``ref``'s current incarnation."""
    fut: asyncio.Future[Terminated] = asyncio.get_running_loop().create_future()

    def deliver(notice: Terminated) -> None:
        if not fut.done():
            fut.set_result(notice)

    system.on_terminated(ref, deliver)
    return fut


async def crash(ref: ActorRef) -> Boom:
    """Make the child crash; returns the exception its ask raised. Its Terminated notice is
    queued at the supervisor before this returns (the child queues it in the same step)."""
    try:
        await within(ref.ask("crash"))
    except Boom as exc:
        return exc
    raise AssertionError(f"{ref!r} did not crash")


async def settled(tree: Tree) -> list[Any]:
    """Ask the supervisor a question; it answers only after everything queued before it (the
    notices of children that ended) has been handled, restarts included."""
    return await within(tree.which_children())


async def busy_supervisor(tree: Tree, journal: Journal) -> tuple[asyncio.Task[Any], asyncio.Event]:
    """Hold the supervisor inside a StartChild (a child whose on_start waits) until the
    returned event is set; the task is the StartChild ask."""
    entered, release = asyncio.Event(), asyncio.Event()
    journal.gate_start[("gate", 0)] = (entered, release)
    task = asyncio.create_task(tree.ref.ask(StartChild(spec(journal, "gate"))))
    await within(entered.wait())
    return task, release


async def wait_event(event: asyncio.Event, timeout: float = WAIT) -> bool:
    """Whether ``event`` gets set within ``timeout`` (for assertions with a clear message)."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


def live_restart_timers() -> list[asyncio.TimerHandle]:
    """The running loop's pending timer handles that belong to a Supervisor (white box: the
    supervisor's restart timers are loop timer handles)."""
    loop = asyncio.get_running_loop()
    return [
        h for h in getattr(loop, "_scheduled", [])
        if not h.cancelled() and "Supervisor" in getattr(h._callback, "__qualname__", "")
    ]
