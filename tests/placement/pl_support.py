"""Helpers for the placement tests: clusters in one line, and a brute-force model of the
policy (every node, every time) that the fast indexes are checked against."""

from __future__ import annotations

from collections.abc import Mapping

from actorflow.placement.resources import Resources
from actorflow.placement.view import BUCKETS, ClusterView, NodeView


def R(**amounts: float) -> Resources:  # reads like a literal: R(CPU=1, GPU=0.5)
    return Resources.of(amounts)


def cluster(*totals: Mapping[str, float], threshold: float = 0.5) -> ClusterView:
    """Nodes ``n0, n1, ...`` with these totals, idle."""
    nodes = []
    for i, t in enumerate(totals):
        res = Resources.of(t)
        nodes.append(NodeView(f"n{i}", res, res))
    return ClusterView(nodes, spread_threshold=threshold)


def same(count: int, threshold: float = 0.5, **total: float) -> ClusterView:
    return cluster(*([total] * count), threshold=threshold)


def fits(demand: Resources, available: Resources) -> bool:
    return all(units <= available[name] for name, units in demand.items())


def util_after(node: NodeView, demand: Resources) -> float:
    """The model's utilization after the grant: max of used / total over the node's resources."""
    u = 0.0
    for name, t in node.total.items():
        used = t - node.available[name] + demand[name]
        u = max(u, used / t)
    return u


def bucket(u: float) -> int:
    return min(int(u * BUCKETS), BUCKETS)


def check_default(
    view: ClusterView, demand: Resources, chosen: str, local: str | None, thr: float
) -> None:
    """The chosen node is one that the DEFAULT rules allow (ties within one bucket)."""
    nodes = {n.node_id: n for n in view.nodes() if n.alive}
    free = {nid: n for nid, n in nodes.items() if fits(demand, n.available)}
    assert chosen in free, f"{chosen} does not have {demand} free"
    u = {nid: util_after(n, demand) for nid, n in free.items()}
    if local in free and u[local] <= thr:
        assert chosen == local
        return
    under = [nid for nid in free if u[nid] <= thr]
    if under:
        assert u[chosen] <= thr
        assert bucket(u[chosen]) == max(bucket(u[nid]) for nid in under), (chosen, u)
    else:
        assert bucket(u[chosen]) == min(bucket(v) for v in u.values()), (chosen, u)
