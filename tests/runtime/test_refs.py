"""Refs and names: identity, lookup, pickling within the process, misuse."""

from __future__ import annotations

import pickle

import pytest
from rt_support import Boom, Probe, within

from actorflow import ActorDiedError, MailboxFullError
from actorflow.runtime import ActorSystem, ErrorReply
from actorflow.supervision import ChildSpec, start_supervisor


async def test_names_are_unique_while_alive_and_lookup_finds_them(system: ActorSystem) -> None:
    ref = await system.spawn(Probe, name="svc")
    assert ref.path == "svc"
    assert system.lookup("svc") == ref
    assert system.lookup("nobody") is None
    with pytest.raises(ValueError, match="'svc' is already running"):
        await system.spawn(Probe, name="svc")
    anonymous = await system.spawn(Probe)
    assert anonymous.path == f"${anonymous.id}"
    await within(system.stop(ref))
    assert system.lookup("svc") is None
    assert (await system.spawn(Probe, name="svc")) != ref


async def test_refs_are_equal_hashable_and_pickle_to_the_same_actor(system: ActorSystem) -> None:
    ref = await system.spawn(Probe, name="svc")
    copy = pickle.loads(pickle.dumps(ref))
    assert copy == ref and hash(copy) == hash(ref)
    assert {ref, copy} == {ref}
    assert await within(copy.ask(("rec", "via the copy"))) == "via the copy"
    assert "svc" in repr(ref) and "live" in repr(ref)
    await within(system.stop(ref))
    assert "dead" in repr(ref)
    stale = pickle.loads(pickle.dumps(ref))  # a ref to an actor that has gone
    with pytest.raises(ActorDiedError):
        await within(stale.ask(("rec", 1)))


async def test_refs_are_stable_across_restarts(system: ActorSystem) -> None:
    tree = await start_supervisor(system, [ChildSpec(factory=Probe, name="w")], name="sup")
    before = tree["w"]
    with pytest.raises(Boom):
        await within(before.ask(("crash", Boom())))
    await within(tree.which_children())
    assert tree["w"] == before
    assert system.lookup("sup/w") == before
    assert await within(before.ask(("rec", "new"))) == "new"


async def test_stop_refuses_a_ref_of_another_system(system: ActorSystem) -> None:
    async with ActorSystem("other") as other:
        foreign = await other.spawn(Probe)
        with pytest.raises(ValueError, match="another ActorSystem"):
            await system.stop(foreign)


async def test_ask_nowait_queues_at_once_and_answers_later(system: ActorSystem) -> None:
    ref = await system.spawn(Probe, mailbox_size=2)
    first = ref.ask_nowait(("rec", 1))
    second = ref.ask_nowait(("rec", 2))
    with pytest.raises(MailboxFullError):
        ref.ask_nowait(("rec", 3))
    assert await within(first) == 1
    assert await within(second) == 2
    await within(system.stop(ref))
    with pytest.raises(ActorDiedError):
        ref.ask_nowait(("rec", 4))


async def test_error_reply_fails_the_ask_without_crashing(system: ActorSystem) -> None:
    rejected = KeyError("no such thing")

    class Picky(Probe):
        async def receive(self, message: object) -> object:
            if message == "bad request":
                return ErrorReply(rejected)
            return await super().receive(message)

    ref = await system.spawn(Picky)
    with pytest.raises(KeyError) as info:
        await within(ref.ask("bad request"))
    assert info.value is rejected
    assert ref.alive
    assert await within(ref.ask(("rec", "still here"))) == "still here"
