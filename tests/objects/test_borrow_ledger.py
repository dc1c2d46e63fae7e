"""The owner's ledger of refs outside its process (actorflow/objects/borrows.py), alone: pure
data, so its rules are checked without processes (with processes:
tests/cluster/test_borrowers.py)."""

from __future__ import annotations

from actorflow.objects.borrows import Borrows, Lends, lending


def test_ledger_holders_and_lends() -> None:
    b = Borrows()
    b.lend("x")  # pickled here into a call's arguments
    assert b.busy("x")
    assert b.apply("w1", held=["x"]) == []  # the worker unpickled it
    assert b.apply(None, discarded=["x"]) == []  # the call is done; w1 still holds it
    assert b.apply("w1", released=["x"]) == ["x"]
    assert not b.busy("x")


def test_ledger_a_report_adds_before_it_removes() -> None:
    b = Borrows()
    b.apply("w1", held=["x"])
    assert b.apply("w1", released=["x"], lent=["x"]) == []  # handed on in the same batch
    assert b.busy("x")


def test_ledger_a_dead_keeper_and_holder_count_nothing() -> None:
    b = Borrows()
    b.apply("w1", lent=["x"])  # a worker returned it inside a result...
    b.apply("caller", kept=["x"], held=["y"])  # ...that the caller keeps
    assert b.busy("x") and b.busy("y")
    assert sorted(b.holder_gone("caller")) == ["x", "y"]
    assert not b.busy("x") and not b.busy("y")
    assert b.holder_gone("caller") == []


def test_lending_collects_per_block_and_nests() -> None:
    with lending() as outer:
        outer.append(("o", "a"))
        with lending() as inner:
            inner.append(("o", "b"))
        outer.append(("o", "c"))
    assert outer == [("o", "a"), ("o", "c")]
    assert inner == [("o", "b")]


def test_lends_are_discarded_when_their_record_goes() -> None:
    seen: list[list[tuple[str, str]]] = []
    lends = Lends([("o", "x")], seen.append)
    assert seen == []
    del lends
    assert seen == [[("o", "x")]]
