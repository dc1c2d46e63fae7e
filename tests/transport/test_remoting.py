"""The remoting layer's own rules, on the in-memory transport: two actor systems in one
process, talking only through links (refs are resolved through the remoting layer, never as
local shortcuts). The real-process behaviour is in test_remote.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tp_support import config, within

from actorflow import ActorDiedError, PeerUnreachableError, SerializationError
from actorflow.runtime import (
    Actor,
    ActorRef,
    ActorSystem,
    ExitReason,
    MailboxStatistics,
    Terminated,
)
from actorflow.supervision import ChildSpec, start_supervisor
from actorflow.transport import MemoryTransport
from actorflow.transport.remote import Remoting, serve_system
from actorflow.transport.remote_ref import RemoteActorRef

_EMPTY = MailboxStatistics(queued=0, processed=0, max_depth=0, capacity=0, waiting_putters=0)


class Gate(Actor):
    """Logs what it gets; blocks on ("wait", event) until the event is set."""

    mailbox_size = 2

    def __init__(self) -> None:
        self.log: list[Any] = []

    async def receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "wait":
            await message[1].wait()
            return "released"
        if message == "log":
            return list(self.log)
        if message == "crash":
            raise RuntimeError("crashed on purpose")
        self.log.append(message)
        return message


class Pair:
    def __init__(self, a: ActorSystem, ra: Remoting, b: ActorSystem, rb: Remoting) -> None:
        self.a, self.ra, self.b, self.rb = a, ra, b, rb

    def ref_in_b(self, ref: ActorRef) -> RemoteActorRef:
        """A's view of one of B's actors, through the remoting layer."""
        remote = self.ra._resolve(self.b.uid, self.b.address, ref.id, ref.path)
        assert isinstance(remote, RemoteActorRef)
        return remote


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    transport = MemoryTransport()
    a, b = ActorSystem("a", restart_wait_s=5.0), ActorSystem("b", restart_wait_s=5.0)
    ra = await serve_system(a, config=config(), transport=transport)
    rb = await serve_system(b, config=config(), transport=transport)
    try:
        yield Pair(a, ra, b, rb)
    finally:
        for system, remoting in ((a, ra), (b, rb)):
            await within(system.shutdown())
            await within(remoting.aclose())


async def test_a_full_mailbox_keeps_order_and_nothing_is_lost(pair: Pair) -> None:
    gate = await pair.b.spawn(Gate)
    remote = pair.ref_in_b(gate)
    release = asyncio.Event()
    # The event cannot travel (it is not picklable): block the actor from its own side.
    blocked = gate.ask_nowait(("wait", release))
    for i in range(50):  # a mailbox of 2: most of these wait in the remoting's queue
        remote.tell_nowait(i)
    answers = [remote.ask_nowait(("n", i)) for i in range(5)]
    await _until(lambda: len(pair.rb._overflow) == 1)  # B queues for the full mailbox
    release.set()
    assert await within(blocked) == "released"
    assert await within(asyncio.gather(*answers)) == [("n", i) for i in range(5)]
    assert await within(remote.ask("log")) == [*range(50), *[("n", i) for i in range(5)]]


async def test_unknown_actor(pair: Pair) -> None:
    ghost = pair.ra._resolve(pair.b.uid, pair.b.address, "999", "ghost")
    with pytest.raises(ActorDiedError, match="no such actor"):
        await within(ghost.ask("hello?"))


async def test_a_message_that_cannot_be_unpickled_there(pair: Pair) -> None:
    gate = await pair.b.spawn(Gate)
    remote = pair.ref_in_b(gate)
    with pytest.raises(SerializationError, match="could not be unpickled"):
        await within(remote.ask(_FailsToLoad()))
    assert await within(remote.ask("fine")) == "fine"


async def test_calls_wait_for_a_restart(pair: Pair) -> None:
    tree = await start_supervisor(
        pair.b, [ChildSpec(factory=Gate, name="g", restart="permanent")], name="sup"
    )
    remote = pair.ref_in_b(tree["g"])
    with pytest.raises(RuntimeError, match="crashed on purpose"):
        await within(remote.ask("crash"))
    # sent while the supervisor restarts it: they reach the new incarnation
    assert await within(remote.ask("after")) == "after"
    assert await within(remote.ask("log")) == ["after"]


async def test_refs_to_the_same_peer_share_one_link(pair: Pair) -> None:
    one = pair.ref_in_b(await pair.b.spawn(Gate))
    two = pair.ref_in_b(await pair.b.spawn(Gate))
    await within(one.ask("x"))
    await within(two.ask("y"))
    assert one._peer is two._peer
    assert one._peer.channel is not None
    # and B, answering, reuses the link A dialed rather than dialing A back
    back = pair.rb._resolve(pair.a.uid, pair.a.address, "1", "x")
    assert isinstance(back, RemoteActorRef) and back._peer.channel is not None


async def _until(condition: Any, turns: int = 10_000) -> None:
    """Let the loop turn (the links carry what is queued) until ``condition()`` holds."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not reached within {turns} loop turns")


class _FailsToLoad:
    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, ())


def _explode() -> None:
    raise RuntimeError("not here")


async def test_a_lost_link_fails_what_waits_and_the_next_call_redials(pair: Pair) -> None:
    gate = await pair.b.spawn(Gate)
    remote = pair.ref_in_b(gate)
    assert await within(remote.ask("first")) == "first"
    heard: asyncio.Future[Terminated] = asyncio.get_running_loop().create_future()
    pair.a.on_terminated(remote, lambda notice: heard.done() or heard.set_result(notice))
    release = asyncio.Event()
    blocked = gate.ask_nowait(("wait", release))  # B's actor is busy ...
    stuck = remote.ask_nowait("answered too late")  # ... so this waits in its mailbox
    [b_side] = list(pair.rb._channels)
    await _until(lambda: b_side.served and (gate.statistics() or _EMPTY).queued == 1)
    await b_side.link.aclose()  # cut the link from B's side
    with pytest.raises(PeerUnreachableError, match="lost before the actor answered"):
        await within(stuck)
    assert (await within(heard)).reason is ExitReason.PEER_LOST
    release.set()
    assert await within(blocked) == "released"
    assert await within(remote.ask("again")) == "again"  # dialed anew: the same actor
    assert await within(remote.ask("log")) == ["first", "answered too late", "again"]
