"""A child's ``shutdown``: seconds of grace for on_stop, or "brutal_kill"."""

from __future__ import annotations

import asyncio

import pytest
from sup_support import Journal, ended, spec, within

from actorflow import SupervisionError
from actorflow.runtime import ActorSystem, ExitReason
from actorflow.supervision import start_supervisor


@pytest.mark.parametrize(
    ("shutdown", "hangs", "reason", "events"),
    [
        ("brutal_kill", False, ExitReason.KILLED, []),
        (2.0, False, ExitReason.NORMAL, [("stop", "c")]),
        (0.05, True, ExitReason.KILLED, [("stop", "c"), ("killed in on_stop", "c")]),
        ("brutal_kill", True, ExitReason.KILLED, []),
    ],
)
async def test_terminate_child_honours_shutdown(
    system: ActorSystem, journal: Journal, shutdown: object, hangs: bool, reason: ExitReason,
    events: list[tuple[str, str]],
) -> None:
    if hangs:
        journal.hang_on_stop.add("c")
    tree = await start_supervisor(system, [spec(journal, "c", shutdown=shutdown)], name="sup")
    journal.take()
    death = ended(system, tree["c"])
    await within(tree.terminate_child("c"))
    assert (await within(death)).reason is reason
    assert journal.take() == events


async def test_supervisor_stop_uses_each_childs_shutdown(
    system: ActorSystem, journal: Journal
) -> None:
    journal.hang_on_stop.add("slow")
    tree = await start_supervisor(
        system,
        [
            spec(journal, "graceful", shutdown=2.0),
            spec(journal, "slow", shutdown=0.05),
            spec(journal, "brutal", shutdown="brutal_kill"),
        ],
        name="sup",
    )
    journal.take()
    deaths = {n: ended(system, tree[n]) for n in ("graceful", "slow", "brutal")}
    await within(tree.stop())
    assert {n: (await within(d)).reason for n, d in deaths.items()} == {
        "graceful": ExitReason.NORMAL, "slow": ExitReason.KILLED, "brutal": ExitReason.KILLED,
    }
    assert journal.take() == [  # reverse start order
        ("stop", "slow"), ("killed in on_stop", "slow"), ("stop", "graceful"),
    ]
    await within(tree.wait())  # a stopped tree ends normally


async def test_a_killed_supervisor_takes_its_children_with_it(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(system, [spec(journal, "a"), spec(journal, "b")], name="sup")
    refs = [tree[n] for n in "ab"]
    cells = [ref._slot.cell for ref in refs]  # the incarnations themselves (white box)
    assert all(cell is not None for cell in cells)
    system.kill(tree.ref)
    for cell in cells:
        assert cell is not None
        await within(asyncio.wait([cell.terminated]))
        assert cell.reason is ExitReason.KILLED
    assert not any(r.alive for r in refs)
    assert journal.take() == [("start", "a", 0), ("start", "b", 0)]  # no on_stop: killed
    with pytest.raises(SupervisionError, match="ended abnormally"):
        await within(tree.wait())
    assert system.statistics()["actors"] == 0


async def test_watchers_of_children_of_a_killed_supervisor_hear_the_truth(
    system: ActorSystem, journal: Journal
) -> None:
    """Terminated means the incarnation has ended. When a supervisor is killed, its children
    are killed too: a watcher of a child must hear KILLED, once that child has ended, not a
    NORMAL notice made up while the child still runs."""
    tree = await start_supervisor(system, [spec(journal, "a")], name="sup")
    ref = tree["a"]
    cell = ref._slot.cell
    assert cell is not None
    heard: list[tuple[ExitReason, bool]] = []
    system.on_terminated(ref, lambda n: heard.append((n.reason, cell.terminated.done())))
    system.kill(tree.ref)
    await within(asyncio.wait([cell.terminated]))
    assert heard == [(ExitReason.KILLED, True)]


async def test_a_supervisor_killed_while_stopping_a_child_kills_that_child(
    system: ActorSystem, journal: Journal
) -> None:
    """The supervisor's stop timeout runs out while it waits for a child whose on_stop hangs
    (the child's own shutdown is longer). Killing the supervisor must kill that child too, or
    it lives on with no owner until the whole system shuts down."""
    journal.hang_on_stop.add("stuck")
    tree = await start_supervisor(system, [spec(journal, "stuck", shutdown=30.0)], name="sup")
    cell = tree["stuck"]._slot.cell  # the incarnation itself (white box)
    assert cell is not None
    sup_end = ended(system, tree.ref)
    await within(tree.stop(timeout=0.05))
    assert (await within(sup_end)).reason is ExitReason.KILLED
    done, _ = await asyncio.wait([cell.terminated], timeout=2.0)
    assert done, "the child outlived its killed supervisor (an orphan task still in on_stop)"
    assert cell.reason is ExitReason.KILLED
    assert journal.take()[-2:] == [("stop", "stuck"), ("killed in on_stop", "stuck")]
    assert system.statistics()["actors"] == 0
