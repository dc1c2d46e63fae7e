"""start_child / terminate_child / which_children."""

from __future__ import annotations

import pytest
from sup_support import Journal, crash, ended, settled, spec, within

from actorflow import ActorDiedError
from actorflow.runtime import ActorSystem, ExitReason
from actorflow.supervision import ChildInfo, start_supervisor


async def test_start_child_appends_and_is_supervised(system: ActorSystem, journal: Journal) -> None:
    tree = await start_supervisor(system, [spec(journal, "a"), spec(journal, "b")], name="sup",
                                  strategy="rest_for_one")
    dyn = await within(tree.start_child(spec(journal, "dyn", restart="transient")))
    assert dyn.path == "sup/dyn"
    assert tree["dyn"] == dyn
    assert await within(tree.which_children()) == [
        ChildInfo("a", tree["a"], True, "permanent"),
        ChildInfo("b", tree["b"], True, "permanent"),
        ChildInfo("dyn", dyn, True, "transient"),
    ]
    assert journal.take() == [("start", "a", 0), ("start", "b", 0), ("start", "dyn", 0)]
    # a dynamic child is last in start order: rest_for_one from b takes it along
    await crash(tree["b"])
    await settled(tree)
    assert journal.take() == [
        ("stop", "dyn"), ("start", "b", 1), ("start", "dyn", 1),
    ]
    assert await within(dyn.ask("whoami")) == ("dyn", 1)


async def test_terminate_child_stops_it_for_good(system: ActorSystem, journal: Journal) -> None:
    tree = await start_supervisor(system, [spec(journal, "a")], name="sup")
    dyn = await within(tree.start_child(spec(journal, "dyn")))
    journal.take()
    death = ended(system, dyn)
    await within(tree.terminate_child("dyn"))
    assert (await within(death)).reason is ExitReason.NORMAL
    assert journal.take() == [("stop", "dyn")]  # on_stop ran, and no restart followed
    assert [c.name for c in await within(tree.which_children())] == ["a"]
    assert not dyn.alive
    with pytest.raises(ActorDiedError):
        await within(dyn.ask("whoami"))
    # the name is free again
    again = await within(tree.start_child(spec(journal, "dyn")))
    assert again != dyn
    assert await within(again.ask("whoami")) == ("dyn", 1)


async def test_terminate_a_static_child(system: ActorSystem, journal: Journal) -> None:
    tree = await start_supervisor(system, [spec(journal, "a"), spec(journal, "b")], name="sup",
                                  strategy="one_for_all")
    journal.take()
    await within(tree.terminate_child("a"))
    await crash(tree["b"])  # one_for_all no longer includes a
    await settled(tree)
    assert journal.take() == [("stop", "a"), ("start", "b", 1)]


# -- misuse answers the caller and leaves the tree running (OTP returns {error, ...}) ---------


async def test_terminate_unknown_child_fails_the_call_not_the_supervisor(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(system, [spec(journal, "a")], name="sup")
    a = tree["a"]
    journal.take()
    with pytest.raises(KeyError, match="nope"):
        await within(tree.terminate_child("nope"))
    assert tree.ref.alive, "a wrong child name took the whole supervision tree down"
    assert [c.name for c in await within(tree.which_children())] == ["a"]
    assert await within(a.ask("whoami")) == ("a", 0)
    assert journal.take() == []


async def test_start_child_with_a_taken_name_fails_the_call_not_the_supervisor(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(system, [spec(journal, "a")], name="sup")
    journal.take()
    with pytest.raises(ValueError, match="'a'"):
        await within(tree.start_child(spec(journal, "a")))
    assert tree.ref.alive, "a duplicate child name took the whole supervision tree down"
    assert await within(tree["a"].ask("whoami")) == ("a", 0)
    assert journal.take() == []


async def test_start_child_whose_on_start_fails_fails_the_call_not_the_supervisor(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(system, [spec(journal, "a")], name="sup")
    journal.take()
    journal.fail_start[("bad", 0)] = ValueError("bad config")
    with pytest.raises(ValueError, match="bad config"):
        await within(tree.start_child(spec(journal, "bad")))
    assert tree.ref.alive, "a child failing to start took the whole supervision tree down"
    assert [c.name for c in await within(tree.which_children())] == ["a"]
    assert system.lookup("sup/bad") is None
    assert journal.take() == [("start failed", "bad")]
