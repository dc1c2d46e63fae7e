"""permanent / transient / temporary, each under a normal exit, a crash and a kill."""

from __future__ import annotations

from typing import Any

import pytest
from sup_support import Boom, Journal, crash, ended, settled, spec, within

from actorflow import ActorDiedError
from actorflow.runtime import ActorRef, ActorSystem, ExitReason
from actorflow.supervision import Tree, start_supervisor


async def end_child(system: ActorSystem, ref: ActorRef, how: str) -> Any:
    """End the child's current incarnation by ``how``; returns its Terminated notice."""
    death = ended(system, ref)
    if how == "crash":
        await crash(ref)
    elif how == "exit":
        assert await within(ref.ask("exit")) is None
    else:
        system.kill(ref)
    return await within(death)


# (kind, how) -> restarted?
CASES = [
    ("permanent", "exit", True), ("permanent", "crash", True), ("permanent", "kill", True),
    ("transient", "exit", False), ("transient", "crash", True), ("transient", "kill", True),
    ("temporary", "exit", False), ("temporary", "crash", False), ("temporary", "kill", False),
]


@pytest.mark.parametrize(("kind", "how", "restarted"), CASES)
async def test_restart_kind(
    system: ActorSystem, journal: Journal, kind: str, how: str, restarted: bool
) -> None:
    tree: Tree = await start_supervisor(
        system, [spec(journal, "x", restart=kind), spec(journal, "y")], name="sup"
    )
    journal.take()
    ref = tree["x"]
    notice = await end_child(system, ref, how)
    assert notice.reason is {"exit": ExitReason.NORMAL, "crash": ExitReason.CRASHED,
                             "kill": ExitReason.KILLED}[how]
    assert isinstance(notice.cause, Boom) == (how == "crash")
    children = await settled(tree)
    own = [("stop", "x")] if how == "exit" else []  # on_stop runs only on a normal exit
    if restarted:
        assert journal.take() == [*own, ("start", "x", 1)]
        assert [(c.name, c.running, c.restart) for c in children] == [
            ("x", True, kind), ("y", True, "permanent")
        ]
        assert ref.alive and tree["x"] == ref
        assert await within(ref.ask("whoami")) == ("x", 1)
    else:
        assert journal.take() == own
        assert [c.name for c in children] == ["y"]  # forgotten, as OTP does
        assert not ref.alive
        with pytest.raises(KeyError):
            tree["x"]
        with pytest.raises(ActorDiedError) as info:
            await within(ref.ask("whoami"))
        if how == "crash":
            assert isinstance(info.value.cause, Boom)
    assert await within(tree["y"].ask("whoami")) == ("y", 0)  # the sibling never noticed


async def test_temporary_siblings_are_dropped_when_the_strategy_restarts_them(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(
        system,
        [spec(journal, "a"), spec(journal, "tmp", restart="temporary"), spec(journal, "c")],
        name="sup", strategy="one_for_all",
    )
    journal.take()
    tmp = tree["tmp"]
    await crash(tree["a"])
    children = await settled(tree)
    assert journal.take() == [
        ("stop", "c"), ("stop", "tmp"), ("start", "a", 1), ("start", "c", 1),
    ]
    assert [c.name for c in children] == ["a", "c"]
    assert not tmp.alive


async def test_stopping_a_child_from_outside_removes_it(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(system, [spec(journal, "a"), spec(journal, "b")], name="sup")
    journal.take()
    a = tree["a"]
    await within(system.stop(a))
    children = await settled(tree)
    assert journal.take() == [("stop", "a")]
    assert [c.name for c in children] == ["b"]
    assert not a.alive


async def test_kill_no_restart_removes_even_a_permanent_child(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(system, [spec(journal, "a")], name="sup")
    journal.take()
    a = tree["a"]
    death = ended(system, a)
    system.kill(a, no_restart=True)
    assert (await within(death)).reason is ExitReason.KILLED
    assert await settled(tree) == []
    assert journal.take() == []
    assert not a.alive
