"""Property test with real actors: random crash / kill / exit / ok commands to random children
of a supervisor with a random strategy, restart kinds and intensity, driven by a fake clock.

A plain model (the OTP rules, written out here independently, with spec.add_restart as the
intensity rule) predicts every start and stop in order, which children remain, and the exact
command after which the supervisor gives up; the real tree must match it step by step.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sup_support import Boom, Journal, ended, settled, spec, within

from actorflow import ActorDiedError, SupervisionError
from actorflow.runtime import ActorSystem, ExitReason
from actorflow.supervision import add_restart, start_supervisor

KINDS = ("permanent", "transient", "temporary")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
OPS = ("crash", "kill", "exit", "ok")
REASON = {"crash": ExitReason.CRASHED, "kill": ExitReason.KILLED, "exit": ExitReason.NORMAL}
WITHIN_S = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Model:
    """What OTP says happens, as lists of ("start", name, n) / ("stop", name) events."""

    order: list[str]
    kinds: dict[str, str]
    strategy: str
    max_restarts: int
    n: dict[str, int] = field(default_factory=dict)
    restarts: tuple[float, ...] = ()
    gave_up: bool = False

    def __post_init__(self) -> None:
        self.n = dict.fromkeys(self.order, 0)

    def child_ended(self, name: str, op: str, now: float) -> list[tuple[Any, ...]]:
        events: list[tuple[Any, ...]] = [("stop", name)] if op == "exit" else []
        kind = self.kinds[name]
        restart = kind == "permanent" or (kind == "transient" and op != "exit")
        if not restart:
            self.order.remove(name)
            return events
        self.restarts, exceeded = add_restart(self.restarts, now, self.max_restarts, WITHIN_S)
        if exceeded:
            events += [("stop", other) for other in reversed(self.order) if other != name]
            self.order = []
            self.gave_up = True
            return events
        i = self.order.index(name)
        targets = {"one_for_one": [name], "one_for_all": list(self.order),
                   "rest_for_one": self.order[i:]}[self.strategy]
        events += [("stop", other) for other in reversed(targets) if other != name]
        for target in targets:
            if self.kinds[target] == "temporary":
                self.order.remove(target)  # a temporary sibling is not restarted
                continue
            self.n[target] += 1
            events.append(("start", target, self.n[target]))
        return events


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    size = draw(st.integers(1, 4))
    return {
        # permanent children weigh double: they stay around for more commands
        "kinds": draw(st.lists(st.sampled_from((*KINDS, "permanent")), min_size=size,
                               max_size=size)),
        "strategy": draw(st.sampled_from(STRATEGIES)),
        "max_restarts": draw(st.integers(0, 4)),
        # (op, which child among those present, seconds the clock advances first)
        "commands": draw(st.lists(
            st.tuples(st.sampled_from(OPS), st.integers(0, 3), st.integers(0, 12)),
            min_size=8, max_size=30,
        )),
    }


async def run_scenario(kinds: list[str], strategy: str, max_restarts: int,
                       commands: list[tuple[str, int, int]]) -> None:
    journal, clock = Journal(), FakeClock()
    names = [f"c{i}" for i in range(len(kinds))]
    model = Model(list(names), dict(zip(names, kinds, strict=True)), strategy, max_restarts)
    system = ActorSystem("prop", stop_timeout_s=2.0, restart_wait_s=5.0)
    tree = await start_supervisor(
        system, [spec(journal, n, restart=k) for n, k in zip(names, kinds, strict=True)],
        name="sup", strategy=strategy, max_restarts=max_restarts,  # type: ignore[arg-type]
        within_s=WITHIN_S, clock=clock,
    )
    refs = {n: tree[n] for n in names}
    assert journal.take() == [("start", n, 0) for n in names]
    ran = 0
    for step, (op, which, dt) in enumerate(commands):
        if model.gave_up or not model.order:
            break
        ran += 1
        name = model.order[which % len(model.order)]
        ref = refs[name]
        clock.now += dt
        where = f"step {step}: {op} {name} at t={clock.now}"
        if op == "ok":
            assert await within(ref.ask("whoami")) == (name, model.n[name]), where
            assert journal.take() == [], where
            continue
        death = ended(system, ref)
        if op == "crash":
            with pytest.raises(Boom):
                await within(ref.ask("crash"))
        elif op == "kill":
            system.kill(ref)
        else:
            assert await within(ref.ask("exit")) is None
        assert (await within(death)).reason is REASON[op], where
        expected = model.child_ended(name, op, clock.now)
        if model.gave_up:
            # the ask is queued behind the notice: the supervisor dies handling the notice
            # and answers it with ActorDiedError (an answer, at once, if it did not give up)
            with pytest.raises(ActorDiedError):
                await settled(tree)
            with pytest.raises(SupervisionError):
                await within(tree.wait())
            assert not tree.ref.alive, where
        else:
            children = await settled(tree)  # raises if the supervisor gave up too early
            assert [(c.name, c.running) for c in children] == [
                (n, True) for n in model.order
            ], where
        assert journal.take() == expected, where
        for n in names:
            assert refs[n].alive == (n in model.order), (where, n)
    event(f"gave up: {model.gave_up}")
    event(f"restarts in the window at the end: {len(model.restarts)}")
    event(f"commands run: {'<4' if ran < 4 else '4-10' if ran <= 10 else '>10'}")
    await within(system.shutdown(), 10)
    assert journal.take() == [("stop", n) for n in reversed(model.order)]
    assert asyncio.all_tasks() == {asyncio.current_task()}


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenarios())
def test_supervisor_matches_the_otp_model(scenario: dict[str, Any]) -> None:
    asyncio.run(run_scenario(**scenario))


def test_the_model_itself() -> None:
    """The model against hand-worked cases, so the property test checks something real."""
    m = Model(["a", "b", "c"], {"a": "permanent", "b": "temporary", "c": "transient"},
              "rest_for_one", 1)
    assert m.child_ended("a", "crash", 0.0) == [
        ("stop", "c"), ("stop", "b"), ("start", "a", 1), ("start", "c", 1)
    ]
    assert m.order == ["a", "c"]
    assert m.child_ended("c", "exit", 1.0) == [("stop", "c")]  # transient, normal: gone
    assert m.child_ended("a", "kill", 5.0) == []  # 2 restarts within 10 s > 1: give up
    assert m.gave_up and m.order == []
