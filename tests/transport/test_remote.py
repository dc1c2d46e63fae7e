"""Refs across processes: tell, ask and watch behave as in-process, across two real OS
processes; a SIGKILLed peer is noticed, and what waited on it fails, within peer_timeout_s."""

from __future__ import annotations

import asyncio
import pickle
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from tp_support import PeerProcess, config, within

from actorflow import (
    ActorDiedError,
    GetTimeoutError,
    PeerUnreachableError,
    SerializationError,
)
from actorflow._errors import RemoteException
from actorflow.runtime import (
    Actor,
    ActorRef,
    ActorSystem,
    ExitReason,
    Terminated,
    current_system,
    restore_ref,
)
from actorflow.transport.remote import Remoting, serve_system
from actorflow.transport.remote_ref import RemoteActorRef

PEER_TIMEOUT = 1.5


@pytest.fixture
def peer() -> Iterator[PeerProcess]:
    process = PeerProcess("system", peer_timeout_s=PEER_TIMEOUT)
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
async def local() -> AsyncIterator[tuple[ActorSystem, Remoting]]:
    system = ActorSystem("driver", stop_timeout_s=2.0)
    remoting = await serve_system(system, config=config(peer_timeout_s=PEER_TIMEOUT))
    _SYSTEM.append(system)
    try:
        yield system, remoting
    finally:
        _SYSTEM.remove(system)
        await within(system.shutdown())
        await within(remoting.aclose())


_SYSTEM: list[ActorSystem] = []  # the test's own system (set by the local fixture)


def rebuild(*info: Any) -> ActorRef:
    """``restore_ref`` on behalf of this test's system (other tests' systems may linger)."""
    token = current_system.set(_SYSTEM[-1])
    try:
        return restore_ref(*info)
    finally:
        current_system.reset(token)


def remote(peer: PeerProcess, name: str = "echo") -> ActorRef:
    return rebuild(*peer.info["refs"][name])


def ended(system: ActorSystem, ref: ActorRef) -> asyncio.Future[Terminated]:
    fut: asyncio.Future[Terminated] = asyncio.get_running_loop().create_future()
    system.on_terminated(ref, lambda notice: fut.done() or fut.set_result(notice))
    return fut


class Recorder(Actor):
    async def receive(self, message: Any) -> Any:
        return ("local", message)


async def test_ask_and_tell_across_processes(peer: PeerProcess, local: Any) -> None:
    ref = remote(peer)
    assert isinstance(ref, RemoteActorRef)
    assert ref.path == "echo" and ref.alive
    assert await within(ref.ask(41)) == 41
    for i in range(100):
        ref.tell_nowait(("tell", i))
    await within(ref.tell(("tell", 100)))
    fut = ref.ask_nowait(("ask", 101))
    assert await within(fut) == ("ask", 101)
    log = await within(ref.ask(("log",)))
    assert log == [41, *[("tell", i) for i in range(101)], ("ask", 101)]  # in send order


async def test_refs_pickle_to_the_same_actor(peer: PeerProcess, local: Any) -> None:
    ref = remote(peer)
    token = current_system.set(_SYSTEM[-1])
    try:
        again = pickle.loads(pickle.dumps(ref))
    finally:
        current_system.reset(token)
    assert again == ref and hash(again) == hash(ref)
    assert await within(again.ask("same")) == "same"
    assert ref != remote(peer, "other")


async def test_a_ref_travels_and_calls_back(peer: PeerProcess, local: Any) -> None:
    system, _ = local
    mine = await system.spawn(Recorder, name="recorder")
    # The peer gets our ref inside a message, asks it (over a link it dials to us), replies.
    assert await within(remote(peer).ask(("call", mine, "hello"))) == ("local", "hello")


async def test_remote_exceptions(peer: PeerProcess, local: Any) -> None:
    ref = remote(peer)
    with pytest.raises(KeyError, match="missing"):
        await within(ref.ask(("raise", "missing")))
    with pytest.raises(RemoteException) as rebuilt:  # pickles there, cannot be rebuilt here
        await within(ref.ask(("raise-unrebuildable",)))
    assert rebuilt.value.type_name.endswith("Unrebuildable")
    assert rebuilt.value.text == "x/y"
    assert "Traceback" in rebuilt.value.traceback_str
    assert await within(ref.ask("still alive")) == "still alive"


async def test_unpicklable_message_fails_at_the_sender(peer: PeerProcess, local: Any) -> None:
    ref = remote(peer)
    await within(ref.ask("connected"))
    with pytest.raises(SerializationError, match="lock"):
        ref.tell_nowait(("x", threading.Lock()))
    with pytest.raises(SerializationError, match="lock"):
        ref.ask_nowait(threading.Lock())
    with pytest.raises(SerializationError, match="lock"):  # the answer: fails at the actor
        await within(ref.ask(("unpicklable-result",)))
    assert await within(ref.ask("fine")) == "fine"


async def test_unpicklable_message_fails_before_the_first_dial(
    peer: PeerProcess, local: Any
) -> None:
    ref = remote(peer, "other")  # not connected yet: the message would wait for the dial
    with pytest.raises(SerializationError, match="lock"):
        ref.tell_nowait(threading.Lock())
    assert await within(ref.ask("ok")) == "ok"


async def test_watch_a_remote_actor_that_stops(peer: PeerProcess, local: Any) -> None:
    system, _ = local
    ref = remote(peer, "victim")
    notice = ended(system, ref)
    assert await within(ref.ask(("stop",))) == "stopping"
    got = await within(notice)
    assert got.ref == ref and got.reason is ExitReason.NORMAL
    with pytest.raises(ActorDiedError):
        await within(ref.ask("anyone?"))
    late = await within(ended(system, ref))  # watching the dead: told at once
    assert late.reason is ExitReason.NOPROC


async def test_watch_a_remote_actor_that_crashes(peer: PeerProcess, local: Any) -> None:
    system, _ = local
    ref = remote(peer, "victim")
    notice = ended(system, ref)
    with pytest.raises(RuntimeError, match="kaboom") as info:
        await within(ref.ask(("crash", "kaboom")))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback" in notes and "tp_peer.py" in notes
    got = await within(notice)
    assert got.reason is ExitReason.CRASHED
    assert isinstance(got.cause, RuntimeError) and str(got.cause) == "kaboom"


async def test_unwatch(peer: PeerProcess, local: Any) -> None:
    system, _ = local
    ref = remote(peer, "victim")
    heard: list[Terminated] = []
    remove = system.on_terminated(ref, heard.append)
    await within(ref.ask("watch registered"))
    remove()
    await within(ref.ask(("stop",)))
    final = await within(ended(system, ref))  # a later watch hears the end: the first does not
    assert final.reason in (ExitReason.NORMAL, ExitReason.NOPROC)
    assert heard == []


async def test_ask_timeout(peer: PeerProcess, local: Any) -> None:
    ref = remote(peer)
    with pytest.raises(GetTimeoutError, match=r"no answer within 0\.2 s"):
        await ref.ask(("sleep", 2.0), timeout=0.2)
    assert await within(ref.ask("after")) == "after"


async def test_sigkill_fails_asks_and_tells_watchers(peer: PeerProcess, local: Any) -> None:
    system, _ = local
    ref = remote(peer)
    other = remote(peer, "other")
    assert await within(ref.ask("up")) == "up"
    notices = [ended(system, ref), ended(system, other)]
    await within(other.ask("watch registered"))
    pending = ref.ask_nowait(("sleep", 60))  # in flight when the process dies
    loop = asyncio.get_running_loop()
    peer.signal(signal.SIGKILL)
    start = loop.time()
    with pytest.raises(PeerUnreachableError, match="lost before the actor answered"):
        await within(pending)
    for notice in notices:
        got = await within(notice)
        assert got.reason is ExitReason.PEER_LOST
    assert loop.time() - start < PEER_TIMEOUT
    with pytest.raises(PeerUnreachableError, match="cannot reach"):  # bounded redial
        await within(ref.ask("anyone?"))
    assert loop.time() - start < 3 * PEER_TIMEOUT


async def test_a_stopped_peer_is_busy_and_answers_when_it_resumes(peer: PeerProcess,
                                                                  local: Any) -> None:
    system, _ = local
    ref = remote(peer)
    assert await within(ref.ask("up")) == "up"
    notice = ended(system, ref)
    peer.signal(signal.SIGSTOP)  # as a loop held by user code: alive, answering nothing
    try:
        stuck = ref.ask_nowait("held")
        done, _ = await asyncio.wait([stuck, notice], timeout=3 * PEER_TIMEOUT)
        assert not done, "a stopped (busy) peer was declared lost"
    finally:
        peer.signal(signal.SIGCONT)
    assert await within(stuck) == "held"


async def test_a_peer_that_never_existed(local: Any) -> None:
    system, _ = local
    ref = rebuild("f" * 16, "ws://127.0.0.1:9", "1", "ghost")  # nothing listens on port 9
    notice = ended(system, ref)
    with pytest.raises(PeerUnreachableError, match="cannot reach actor 'ghost'"):
        await within(ref.ask("hello?"))
    assert (await within(notice)).reason is ExitReason.PEER_LOST


async def test_same_host_peers_use_the_unix_socket(peer: PeerProcess, local: Any) -> None:
    ref = remote(peer)
    assert await within(ref.ask("via unix")) == "via unix"
    assert isinstance(ref, RemoteActorRef)
    channel = ref._peer.channel
    assert channel is not None and channel.link.peer.startswith("ws+unix://")


async def test_tcp_when_the_peer_serves_no_unix_socket(local: Any) -> None:
    process = PeerProcess("system", unix_path=None)
    try:
        ref = remote(process)
        assert await within(ref.ask("via tcp")) == "via tcp"
        assert isinstance(ref, RemoteActorRef)
        channel = ref._peer.channel
        assert channel is not None and channel.link.peer.startswith("ws://127.0.0.1:")
    finally:
        process.close()
