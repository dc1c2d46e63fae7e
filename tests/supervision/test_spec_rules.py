"""The pure rules: restart intensity (add_restart), restart kinds, backoff, option models."""

from __future__ import annotations

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sup_support import Worker

from actorflow.runtime import ExitReason
from actorflow.supervision import (
    Backoff,
    ChildSpec,
    SupervisorOptions,
    add_restart,
    backoff_delay,
    should_restart,
    supervisor_spec,
)

# -- add_restart ------------------------------------------------------------------------------


def test_add_restart_examples() -> None:
    assert add_restart((), 0.0, 3, 5.0) == ((0.0,), False)
    assert add_restart((0.0, 1.0), 2.0, 3, 5.0) == ((0.0, 1.0, 2.0), False)
    assert add_restart((0.0, 1.0, 2.0), 3.0, 3, 5.0) == ((0.0, 1.0, 2.0, 3.0), True)
    # a restart exactly within_s old has left the window
    assert add_restart((0.0, 1.0, 2.0), 5.0, 3, 5.0) == ((1.0, 2.0, 5.0), False)
    assert add_restart((0.0, 1.0, 2.0), 4.999, 3, 5.0) == ((0.0, 1.0, 2.0, 4.999), True)
    # max_restarts=0: no restart is allowed at all
    assert add_restart((), 7.0, 0, 5.0) == ((7.0,), True)


@settings(max_examples=300, deadline=None)
@given(
    max_restarts=st.integers(0, 5),
    within_s=st.integers(1, 20).map(float),
    gaps=st.lists(st.integers(0, 12), min_size=1, max_size=40),
)
def test_add_restart_keeps_the_intensity_invariant(
    max_restarts: int, within_s: float, gaps: list[int]
) -> None:
    """Feed sorted timestamps as a supervisor does (stopping at the first "exceeded"). What is
    kept is exactly the history inside the window; never more than max_restarts are kept after
    a restart that was allowed; "exceeded" comes exactly when the window would hold
    max_restarts + 1."""
    now = 0.0
    history: list[float] = []
    kept: tuple[float, ...] = ()
    for gap in gaps:
        now += gap
        history.append(now)
        in_window = [t for t in history if now - t < within_s]
        assert len(kept) <= max_restarts
        kept, exceeded = add_restart(kept, now, max_restarts, within_s)
        assert list(kept) == in_window
        assert kept[-1] == now
        assert exceeded == (len(in_window) == max_restarts + 1)
        if exceeded:
            break
        assert len(kept) <= max_restarts
    else:
        # never exceeded: no window of within_s ever held more than max_restarts restarts
        for i, start in enumerate(history):
            assert sum(1 for t in history[i:] if t - start < within_s) <= max_restarts


# -- should_restart ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("permanent", {ExitReason.NORMAL: True, ExitReason.CRASHED: True,
                       ExitReason.KILLED: True, ExitReason.PEER_LOST: True}),
        ("transient", {ExitReason.NORMAL: False, ExitReason.CRASHED: True,
                       ExitReason.KILLED: True, ExitReason.PEER_LOST: True}),
        ("temporary", {ExitReason.NORMAL: False, ExitReason.CRASHED: False,
                       ExitReason.KILLED: False, ExitReason.PEER_LOST: False}),
    ],
)
def test_should_restart(kind: str, expected: dict[ExitReason, bool]) -> None:
    for reason, restart in expected.items():
        assert should_restart(kind, reason) is restart, (kind, reason)  # type: ignore[arg-type]


def test_abnormal_reasons() -> None:
    assert {r for r in ExitReason if r.abnormal} == {
        ExitReason.CRASHED, ExitReason.KILLED, ExitReason.PEER_LOST
    }


# -- backoff_delay -----------------------------------------------------------------------------


def test_backoff_delay() -> None:
    b = Backoff(initial_s=0.1, factor=3.0, max_s=2.0)
    assert backoff_delay(None, 5) == 0.0
    assert [backoff_delay(b, k) for k in range(7)] == pytest.approx(
        [0.0, 0.0, 0.1, 0.3, 0.9, 2.0, 2.0]
    )
    flat = Backoff(initial_s=0.5, factor=1.0)
    assert [backoff_delay(flat, k) for k in (1, 2, 3, 10)] == [0.0, 0.5, 0.5, 0.5]


@given(
    initial=st.floats(0.001, 10), factor=st.floats(1, 4), cap=st.floats(0.001, 60),
    k=st.integers(2, 50),
)
def test_backoff_delay_is_monotone_and_capped(
    initial: float, factor: float, cap: float, k: int
) -> None:
    b = Backoff(initial_s=initial, factor=factor, max_s=cap)
    assert 0 < backoff_delay(b, k) <= cap
    assert backoff_delay(b, k) <= backoff_delay(b, k + 1)
    assert backoff_delay(b, 2) == min(cap, initial)


@pytest.mark.parametrize(
    "kwargs", [{"initial_s": 0}, {"max_s": -1}, {"factor": 0.5}, {"jitter": 1}]
)
def test_backoff_rejects_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(pydantic.ValidationError):
        Backoff(**kwargs)


# -- the option models -------------------------------------------------------------------------


def test_supervisor_options_validate_and_list_the_choices() -> None:
    with pytest.raises(pydantic.ValidationError, match="one_for_one"):
        SupervisorOptions(strategy="all_for_one")  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError):
        SupervisorOptions(max_restarts=-1)
    with pytest.raises(pydantic.ValidationError):
        SupervisorOptions(within_s=0)


def test_child_spec_validation() -> None:
    ChildSpec(factory=Worker, name="ok", shutdown="brutal_kill")
    assert ChildSpec(factory=Worker, name="ok", shutdown=1).shutdown == 1.0
    for bad in (
        {"name": "a/b"},
        {"name": ""},
        {"name": "x", "restart": "sometimes"},
        {"name": "x", "shutdown": -1.0},
        {"name": "x", "shutdown": "gently"},
        {"name": "x", "max_concurrency": 0},
        {"name": "x", "mailbox_size": 0},
        {"name": "x", "unknown": 1},
    ):
        with pytest.raises(pydantic.ValidationError):
            ChildSpec(factory=Worker, **bad)  # type: ignore[arg-type]


def test_supervisor_spec_builds_a_nested_supervisor_spec() -> None:
    inner = supervisor_spec("inner", [ChildSpec(factory=Worker, name="w")],
                            strategy="one_for_all", max_restarts=1)
    assert inner.name == "inner"
    assert inner.restart == "permanent"
    assert inner.shutdown == 30.0
    assert inner.kwargs == {"strategy": "one_for_all", "max_restarts": 1}
