"""The public strategy objects and the parsers of user input."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import pytest

from actorflow.placement.strategies import (
    GROUP_STRATEGIES,
    NodeAffinity,
    PlacementGroupStrategy,
    parse_group_strategy,
    parse_strategy,
)


@dataclass(frozen=True)
class FakeGroup:
    id: str


def test_default_and_spread_names() -> None:
    assert parse_strategy(None) == "DEFAULT"
    assert parse_strategy("DEFAULT") == "DEFAULT"
    assert parse_strategy("SPREAD") == "SPREAD"


def test_objects_pass_through() -> None:
    aff = NodeAffinity("node-1", soft=True)
    pgs = PlacementGroupStrategy(FakeGroup("pg-1"), 2)
    assert parse_strategy(aff) is aff
    assert parse_strategy(pgs) is pgs
    assert pgs.group_id == "pg-1"
    assert PlacementGroupStrategy(FakeGroup("pg")).bundle_index == -1
    assert NodeAffinity("n").soft is False


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("spread", "names are upper case: 'SPREAD'"),
        ("STRICT_PACK", "is a placement-group strategy"),
        ("nearest", "use \"DEFAULT\""),
    ],
)
def test_unknown_names_are_value_errors_listing_choices(value: str, hint: str) -> None:
    with pytest.raises(ValueError, match="scheduling_strategy") as info:
        parse_strategy(value)
    text = str(info.value)
    assert hint in text
    for choice in ('"DEFAULT"', '"SPREAD"', "af.NodeAffinity", "af.PlacementGroupStrategy"):
        assert choice in text


@pytest.mark.parametrize("value", [3, 1.5, ["SPREAD"], {"node_id": "x"}, object()])
def test_other_types_are_type_errors_listing_choices(value: object) -> None:
    with pytest.raises(TypeError, match=r"af\.NodeAffinity") as info:
        parse_strategy(value)
    assert type(value).__name__ in str(info.value)


def test_node_affinity_checks_its_fields() -> None:
    with pytest.raises(TypeError, match="node id string"):
        NodeAffinity("")
    with pytest.raises(TypeError, match="node id string"):
        NodeAffinity(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="True or False"):
        NodeAffinity("n", soft="yes")  # type: ignore[arg-type]


def test_placement_group_strategy_checks_its_fields() -> None:
    with pytest.raises(TypeError, match=r"af\.placement_group"):
        PlacementGroupStrategy("pg-1")
    for bad in (-2, 1.0, True, "0"):
        with pytest.raises(ValueError, match="bundle_index"):
            PlacementGroupStrategy(FakeGroup("pg"), bad)  # type: ignore[arg-type]


def test_strategies_are_frozen_hashable_and_pickle() -> None:
    aff = NodeAffinity("n1", soft=True)
    pgs = PlacementGroupStrategy(FakeGroup("g"), 0)
    assert pickle.loads(pickle.dumps(aff)) == aff
    assert pickle.loads(pickle.dumps(pgs)) == pgs
    assert len({aff, NodeAffinity("n1", soft=True), pgs}) == 2
    with pytest.raises(AttributeError):
        aff.node_id = "other"  # type: ignore[misc]


def test_group_strategies() -> None:
    assert parse_group_strategy(None) == "PACK"
    for name in GROUP_STRATEGIES:
        assert parse_group_strategy(name) == name
    with pytest.raises(ValueError, match="upper case: 'STRICT_SPREAD'"):
        parse_group_strategy("strict_spread")
    with pytest.raises(ValueError, match="'PACK', 'SPREAD', 'STRICT_PACK', 'STRICT_SPREAD'"):
        parse_group_strategy("DEFAULT")
    with pytest.raises(TypeError, match="one of"):
        parse_group_strategy(1)
