"""Restart intensity: past it the supervisor stops its children and crashes with
SupervisionError; a nested supervisor escalates to its parent; Tree.wait reports it."""

from __future__ import annotations

import pytest
from sup_support import Boom, Journal, crash, ended, settled, spec, within

from actorflow import ActorDiedError, SupervisionError
from actorflow.runtime import ActorSystem, ExitReason
from actorflow.supervision import start_supervisor, supervisor_spec


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_intensity_exceeded_stops_children_and_raises(
    system: ActorSystem, journal: Journal
) -> None:
    clock = FakeClock()
    tree = await start_supervisor(
        system, [spec(journal, n) for n in "abc"], name="sup",
        max_restarts=2, within_s=10.0, clock=clock,
    )
    refs = {n: tree[n] for n in "abc"}
    journal.take()
    sup_end = ended(system, tree.ref)
    for t in (0.0, 4.0):  # two restarts within 10 s: allowed
        clock.now = t
        await crash(refs["b"])
        await settled(tree)
    assert journal.take() == [("start", "b", 1), ("start", "b", 2)]
    clock.now = 9.5  # a third inside the window: one too many
    last = await crash(refs["b"])
    notice = await within(sup_end)
    assert notice.reason is ExitReason.CRASHED
    error = notice.cause
    assert isinstance(error, SupervisionError)
    assert error.__cause__ is last
    assert "gave up" in str(error) and "'b'" in str(error) and "max_restarts" in str(error)
    assert journal.take() == [("stop", "c"), ("stop", "a")]  # the others, in reverse
    with pytest.raises(SupervisionError) as info:
        await within(tree.wait())
    assert info.value is error
    for ref in refs.values():
        assert not ref.alive
        with pytest.raises(ActorDiedError):
            await within(ref.ask("whoami"))
    assert system.statistics()["actors"] == 0


async def test_children_of_a_supervisor_that_gave_up_say_why(
    system: ActorSystem, journal: Journal
) -> None:
    """_give_up -> _stop_all(reason="its supervisor gave up", cause=error) means a caller of a
    stopped child should learn that; the child's own normal end marks its slot dead first
    ("it stopped", no cause), so _stop_all's mark_dead is a no-op and the why is lost."""
    tree = await start_supervisor(system, [spec(journal, "a"), spec(journal, "b")],
                                  name="sup", max_restarts=0)
    a = tree["a"]
    sup_end = ended(system, tree.ref)
    await crash(tree["b"])
    error = (await within(sup_end)).cause
    assert isinstance(error, SupervisionError)
    with pytest.raises(ActorDiedError) as died:
        await within(a.ask("whoami"))
    assert "gave up" in died.value.reason
    assert died.value.cause is error


async def test_restarts_outside_the_window_do_not_count(
    system: ActorSystem, journal: Journal
) -> None:
    clock = FakeClock()
    tree = await start_supervisor(system, [spec(journal, "a")], name="sup",
                                  max_restarts=1, within_s=10.0, clock=clock)
    for n in range(1, 6):  # one restart every 10 s: never two in a window
        clock.now = 10.0 * n
        await crash(tree["a"])
        await settled(tree)
        assert await within(tree["a"].ask("whoami")) == ("a", n)
    clock.now += 9.999
    await crash(tree["a"])
    with pytest.raises(SupervisionError):
        await within(tree.wait())


async def test_max_restarts_zero_gives_up_at_the_first_crash(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(system, [spec(journal, "a")], name="sup", max_restarts=0)
    await crash(tree["a"])
    with pytest.raises(SupervisionError):
        await within(tree.wait())
    assert journal.take() == [("start", "a", 0)]


async def test_a_normal_exit_of_a_transient_child_is_no_restart(
    system: ActorSystem, journal: Journal
) -> None:
    tree = await start_supervisor(system, [spec(journal, "t", restart="transient"),
                                           spec(journal, "p")],
                                  name="sup", max_restarts=0)
    assert await within(tree["t"].ask("exit")) is None
    assert [c.name for c in await settled(tree)] == ["p"]  # no restart counted, no give-up
    assert tree.ref.alive


async def test_nested_supervisor_escalates_and_restarts_multiply(
    system: ActorSystem, journal: Journal
) -> None:
    clock = FakeClock()
    inner_max, outer_max = 1, 2
    tree = await start_supervisor(
        system,
        [
            spec(journal, "first"),
            supervisor_spec("inner", [spec(journal, "w")], max_restarts=inner_max,
                            within_s=100.0, clock=clock),
            spec(journal, "last"),
        ],
        name="top", strategy="one_for_one", max_restarts=outer_max, within_s=100.0,
        clock=clock,
    )
    assert journal.take() == [("start", "first", 0), ("start", "w", 0), ("start", "last", 0)]
    inner = tree["inner"]
    worker_crashes = 0
    for round_ in range(outer_max + 1):
        inner_end = ended(system, inner)
        worker = system.lookup("top/inner/w")
        assert worker is not None
        for _ in range(inner_max + 1):  # one crash more than the inner supervisor allows
            clock.now += 1.0
            await crash(worker)
            worker_crashes += 1
        notice = await within(inner_end)
        assert notice.reason is ExitReason.CRASHED
        assert isinstance(notice.cause, SupervisionError)
        assert isinstance(notice.cause.__cause__, Boom)
        if round_ < outer_max:
            children = await settled(tree)
            assert [(c.name, c.running) for c in children] == [
                ("first", True), ("inner", True), ("last", True)
            ]
            assert tree["inner"] == inner  # the nested supervisor's ref is stable too
    with pytest.raises(SupervisionError) as info:
        await within(tree.wait())
    assert "'top' gave up" in str(info.value)
    assert "'inner'" in str(info.value)
    assert isinstance(info.value.__cause__, SupervisionError)  # the inner one's
    assert worker_crashes == (inner_max + 1) * (outer_max + 1)
    # each inner incarnation starts w once and restarts it inner_max times
    assert journal.starts["w"] == (inner_max + 1) * (outer_max + 1)
    # siblings of inner were never restarted; at the give-up they stopped in reverse
    assert [e for e in journal.events if e[1] in ("first", "last")] == [
        ("stop", "last"), ("stop", "first"),
    ]


async def test_tree_wait_returns_after_a_normal_stop(system: ActorSystem, journal: Journal) -> None:
    tree = await start_supervisor(system, [spec(journal, "a")], name="sup")
    await within(tree.stop())
    await within(tree.wait())
    assert journal.take() == [("start", "a", 0), ("stop", "a")]
