"""Restarts spaced out by a Backoff: the first in the window is immediate, later ones wait on a
timer the supervisor owns. Asserted by order of events (and loop-clock lower bounds), never by
sleeping."""

from __future__ import annotations

import asyncio

import pytest
from sup_support import (
    Journal,
    crash,
    live_restart_timers,
    settled,
    spec,
    wait_event,
    within,
)

from actorflow import ActorDiedError
from actorflow.runtime import ActorSystem
from actorflow.supervision import Backoff, start_supervisor

DELAY = 0.05


async def test_restarts_in_a_window_are_delayed_in_order(
    system: ActorSystem, journal: Journal
) -> None:
    loop = asyncio.get_running_loop()
    tree = await start_supervisor(
        system, [spec(journal, "a"), spec(journal, "b")], name="sup", max_restarts=10,
        within_s=60, backoff=Backoff(initial_s=DELAY, factor=2.0, max_s=DELAY * 1.5),
    )
    a = tree["a"]
    journal.take()

    # 1st restart in the window: immediate, done by the time the supervisor answers
    await crash(a)
    assert [c.running for c in await settled(tree)] == [True, True]
    assert journal.take() == [("start", "a", 1)]

    for n, delay in ((2, DELAY), (3, DELAY * 1.5)):  # initial_s, then capped at max_s
        started = journal.started["a"] = asyncio.Event()
        await crash(a)
        t0 = loop.time()
        # the restart is pending: the supervisor answers first, with a not running
        assert [(c.name, c.running) for c in await settled(tree)] == [("a", False), ("b", True)]
        assert journal.take() == []
        # a call made meanwhile waits for the new incarnation and reaches it
        assert await within(a.ask("whoami")) == ("a", n)
        assert started.is_set()
        assert loop.time() - t0 >= delay - 0.01  # never earlier than the backoff
        assert journal.take() == [("start", "a", n)]
    assert await within(tree["b"].ask("whoami")) == ("b", 0)  # one_for_one: b untouched


async def test_a_delayed_one_for_all_restart_stops_siblings_first(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(
        system, [spec(journal, n) for n in "abc"], name="sup", strategy="one_for_all",
        max_restarts=10, within_s=60, backoff=Backoff(initial_s=DELAY),
    )
    await crash(tree["b"])
    await settled(tree)
    journal.take()
    started = journal.started["c"] = asyncio.Event()
    await crash(tree["b"])
    # siblings are stopped at once, in reverse; the restart of all waits for the timer
    assert [c.running for c in await settled(tree)] == [False, False, False]
    assert journal.take() == [("stop", "c"), ("stop", "a")]
    await within(started.wait())
    assert journal.take() == [("start", "a", 2), ("start", "b", 2), ("start", "c", 2)]


async def test_a_failed_start_after_a_delay_is_retried(
    system: ActorSystem, journal: Journal
) -> None:
    """A restart that runs from the backoff timer and whose on_start raises must count as a
    failure and be retried (as an immediate restart's failure is), not leave the child
    restarting forever."""
    tree = await start_supervisor(
        system, [spec(journal, "a")], name="sup", max_restarts=10, within_s=60,
        backoff=Backoff(initial_s=0.01, max_s=0.02),
    )
    a = tree["a"]
    await crash(a)
    await settled(tree)
    journal.fail_start[("a", 2)] = ValueError("first try after the delay fails")
    started = journal.started["a"] = asyncio.Event()
    journal.take()
    await crash(a)
    assert await wait_event(started, 2.0), "never restarted after its delayed start failed"
    assert journal.take() == [("start failed", "a"), ("start", "a", 2)]
    assert await within(a.ask("whoami")) == ("a", 2)


async def test_stopping_a_child_while_its_restart_is_pending(
    system: ActorSystem, journal: Journal
) -> None:
    """A child stopped for good during its backoff delay must not be started again when the
    timer fires; its siblings due for the same restart still start."""
    tree = await start_supervisor(
        system, [spec(journal, "a"), spec(journal, "b")], name="sup", strategy="one_for_all",
        max_restarts=10, within_s=60, backoff=Backoff(initial_s=DELAY),
    )
    a = tree["a"]
    await crash(a)
    await settled(tree)
    await crash(a)
    await settled(tree)  # a and b wait for the timer
    journal.take()
    started_b = journal.started["b"] = asyncio.Event()
    await within(system.stop(a))  # a is restarting: this marks it dead at once
    assert not a.alive
    assert await wait_event(started_b, 2.0), (
        "the supervisor got stuck restarting a child that was stopped meanwhile"
    )
    children = await settled(tree)
    assert [(c.name, c.running) for c in children] == [("b", True)]
    assert journal.take() == [("start", "b", 2)]
    with pytest.raises(ActorDiedError):
        await within(a.ask("whoami"))


async def test_a_restart_is_not_delayed_without_backoff(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(system, [spec(journal, "a")], name="sup", max_restarts=10)
    for n in range(1, 5):
        await crash(tree["a"])
        assert [c.running for c in await settled(tree)] == [True]
        assert journal.take()[-1] == ("start", "a", n)


async def test_a_pending_restart_dies_with_the_supervisor(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(
        system, [spec(journal, "a")], name="sup", max_restarts=10,
        backoff=Backoff(initial_s=30.0),
    )
    a = tree["a"]
    await crash(a)
    await settled(tree)
    await crash(a)
    await settled(tree)
    assert len(live_restart_timers()) == 1
    journal.take()
    await within(tree.stop())
    assert live_restart_timers() == []
    assert not a.alive
    assert journal.take() == []


async def test_rest_for_one_never_starts_a_child_before_an_earlier_sibling(
    system: ActorSystem, journal: Journal
) -> None:
    """rest_for_one: the children after a failed one depend on it, so they start after it.
    Here b's delayed restart (timer T1, for [b, c]) is still pending when a crashes; a's
    restart (timer T2, for [a, b, c]) is later. T1 must not start b and c while a is down:
    the order must be a, b, c."""
    tree = await start_supervisor(
        system, [spec(journal, n) for n in "abc"], name="sup", strategy="rest_for_one",
        max_restarts=10, within_s=60, backoff=Backoff(initial_s=0.3, factor=2.0, max_s=5.0),
    )
    await crash(tree["b"])  # 1st restart in the window: immediate
    await settled(tree)
    journal.take()
    all_up = journal.started["a"] = asyncio.Event()
    await crash(tree["b"])  # 2nd: c stopped, [b, c] due in 0.3 s
    await crash(tree["a"])  # 3rd: [a, b, c] due in 0.6 s
    children = await settled(tree)
    assert [c.running for c in children] == [False, False, False]  # T1 has not fired yet
    assert journal.take() == [("stop", "c")]
    assert await wait_event(all_up)
    for name in "bc":
        assert await within(tree[name].ask("whoami")) == (name, 2)
    assert journal.take() == [("start", "a", 1), ("start", "b", 2), ("start", "c", 2)]
