"""Each strategy restarts exactly the children it prescribes, in the order OTP prescribes:
siblings stopped in reverse start order, then started again in start order."""

from __future__ import annotations

import pytest
from sup_support import Journal, busy_supervisor, crash, ended, settled, spec, within

from actorflow import SupervisionError
from actorflow.runtime import ActorSystem
from actorflow.supervision import start_supervisor

ABC = ("a", "b", "c", "d")


@pytest.mark.parametrize(
    ("strategy", "victim", "expected"),
    [
        ("one_for_one", "b", [("start", "b", 1)]),
        ("one_for_all", "b", [
            ("stop", "d"), ("stop", "c"), ("stop", "a"),
            ("start", "a", 1), ("start", "b", 1), ("start", "c", 1), ("start", "d", 1),
        ]),
        ("rest_for_one", "b", [
            ("stop", "d"), ("stop", "c"),
            ("start", "b", 1), ("start", "c", 1), ("start", "d", 1),
        ]),
        ("rest_for_one", "d", [("start", "d", 1)]),
        ("rest_for_one", "a", [
            ("stop", "d"), ("stop", "c"), ("stop", "b"),
            ("start", "a", 1), ("start", "b", 1), ("start", "c", 1), ("start", "d", 1),
        ]),
        ("one_for_all", "d", [
            ("stop", "c"), ("stop", "b"), ("stop", "a"),
            ("start", "a", 1), ("start", "b", 1), ("start", "c", 1), ("start", "d", 1),
        ]),
    ],
)
async def test_a_crash_restarts_what_the_strategy_says(
    system: ActorSystem, journal: Journal, strategy: str, victim: str,
    expected: list[tuple[str, ...]],
) -> None:
    tree = await start_supervisor(
        system, [spec(journal, n) for n in ABC], name="sup", strategy=strategy,  # type: ignore[arg-type]
    )
    assert journal.take() == [("start", n, 0) for n in ABC]
    refs = {n: tree[n] for n in ABC}
    await crash(refs[victim])
    children = await settled(tree)
    assert journal.take() == expected
    assert [(c.name, c.running) for c in children] == [(n, True) for n in ABC]
    restarted = {e[1] for e in expected if e[0] == "start"}
    for name, ref in refs.items():
        assert tree[name] == ref  # refs are stable across restarts
        assert await within(ref.ask("whoami")) == (name, 1 if name in restarted else 0)


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
async def test_a_kill_is_restarted_like_a_crash(
    system: ActorSystem, journal: Journal, strategy: str,
) -> None:
    tree = await start_supervisor(
        system, [spec(journal, n) for n in "ab"], name="sup", strategy=strategy,  # type: ignore[arg-type]
    )
    journal.take()
    death = ended(system, tree["a"])
    system.kill(tree["a"])
    await within(death)
    await settled(tree)
    if strategy == "one_for_one":
        assert journal.take() == [("start", "a", 1)]
    else:  # a is first: for both others, everything after it comes back
        assert journal.take() == [("stop", "b"), ("start", "a", 1), ("start", "b", 1)]


async def test_repeated_crashes_count_incarnations(system: ActorSystem, journal: Journal) -> None:
    tree = await start_supervisor(system, [spec(journal, "a")], name="sup",
                                  max_restarts=10, within_s=60)
    ref = tree["a"]
    for n in range(1, 6):
        err = await crash(ref)
        assert str(err) == f"a#{n - 1}"
        await settled(tree)
        assert await within(ref.ask("whoami")) == ("a", n)
    assert journal.take() == [("start", "a", n) for n in range(6)]


async def test_children_start_in_order_and_a_failed_start_unwinds(
    system: ActorSystem, journal: Journal
) -> None:
    journal.fail_start[("c", 0)] = ValueError("bad config")
    with pytest.raises(SupervisionError) as info:
        await within(start_supervisor(system, [spec(journal, n) for n in ABC], name="sup"))
    assert isinstance(info.value.__cause__, ValueError)
    assert "'c'" in str(info.value)
    assert journal.take() == [
        ("start", "a", 0), ("start", "b", 0), ("start failed", "c"), ("stop", "b"), ("stop", "a"),
    ]
    assert system.lookup("sup") is None
    assert system.lookup("sup/a") is None
    assert system.statistics()["actors"] == 0


async def test_a_failed_restart_counts_and_is_retried_in_order(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(
        system, [spec(journal, n) for n in "abc"], name="sup", strategy="one_for_all",
        max_restarts=2,
    )
    journal.take()
    journal.fail_start[("b", 1)] = ValueError("b cannot start yet")
    await crash(tree["a"])
    children = await settled(tree)
    assert journal.take() == [
        ("stop", "c"), ("stop", "b"),
        ("start", "a", 1), ("start failed", "b"),  # restart 1 fails half-way: restart 2
        ("stop", "a"),
        ("start", "a", 2), ("start", "b", 1), ("start", "c", 1),
    ]
    assert [(c.name, c.running) for c in children] == [(n, True) for n in "abc"]
    assert tree.ref.alive


async def test_a_failed_restart_can_exceed_the_intensity(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(system, [spec(journal, "a"), spec(journal, "b")], name="sup",
                                  max_restarts=1)
    journal.take()
    bad = ValueError("a cannot start")
    journal.fail_start[("a", 1)] = bad
    await crash(tree["a"])
    with pytest.raises(SupervisionError) as info:
        await within(tree.wait())
    assert info.value.__cause__ is bad
    assert journal.take() == [("start failed", "a"), ("stop", "b")]


async def test_a_child_stopped_while_its_restart_waits_is_not_restarted(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(system, [spec(journal, "a"), spec(journal, "b")], name="sup")
    a = tree["a"]
    starting, release = await busy_supervisor(tree, journal)  # the crash notice must wait
    journal.take()
    await crash(a)
    await within(system.stop(a))  # a is restarting: dead for good at once
    assert not a.alive
    release.set()
    await within(starting)
    children = await settled(tree)
    assert [c.name for c in children] == ["b", "gate"]
    assert journal.take() == [("start", "gate", 0)]
